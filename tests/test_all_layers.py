"""``layers="all"`` and the epoch's pixel budget: real models trained for 2 epochs, read back."""

import glob
import os

import keras
import numpy as np
import pytest
from conftest import expected_tags, read_activations
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tbviz import ActivationLogger
from tbviz.io import tags
from tbviz.numerics import layout as layouts

EPOCHS = 2


def fit(model, x, y, *loggers):
    model.fit(x, y, epochs=EPOCHS, batch_size=8, verbose=0, callbacks=list(loggers))


def descriptions(log_dir):
    """The description of each image tag, read from the raw event files by TensorBoard's loader."""
    found = {}
    for path in glob.glob(os.path.join(log_dir, tags.RUN_NAME, "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                description = value.metadata.summary_description
                if value.tag.startswith(tags.IMAGE + "/") and description:
                    found[value.tag] = description
    return found


def pixels_per_step(result):
    """Total pixels of all pictures of each logged step."""
    totals = {}
    for steps in result.images.values():
        for s in steps:
            totals[s.step] = totals.get(s.step, 0) + s.width * s.height * len(s.pngs)
    return totals


@pytest.fixture
def images12():
    """16 random 12x12 RGB images, 3-class labels, a probe of 2."""
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 3), dtype=np.float32)
    return x, rng.integers(0, 3, 16), x[:2]


def residual_model():
    """Input, preprocessing, a residual block with dropout and padding inside, pooling, head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    branch = keras.layers.Conv2D(8, 3, activation="relu", name="res_a")(stem)
    branch = keras.layers.Dropout(0.3, name="drop")(branch)
    branch = keras.layers.ZeroPadding2D(name="pad")(branch)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="res_b")(branch)
    merged = keras.layers.Add(name="add")([stem, branch])
    out = keras.layers.ReLU(name="out_relu")(merged)
    pooled = keras.layers.MaxPooling2D(name="pool")(out)
    gap = keras.layers.GlobalAveragePooling2D(name="gap")(pooled)
    head = keras.layers.Dense(3, activation="softmax", name="head")(gap)
    model = keras.Model(inputs, head, name="residual")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


RESIDUAL_ALL = ["image", "stem", "res_a", "res_b", "add", "out_relu", "pool", "gap", "head"]


def test_all_layers_of_a_residual_model(tmp_path, images12):
    """layers="all": the input, then every layer in model order but preprocessing and plumbing;
    each layer's output is read by a call of a function traced once per kind of layer, and
    layers whose maps are alike are finished together."""
    x, y, probe = images12
    model = residual_model()
    logger = ActivationLogger(probe, log_dir=tmp_path, layers="all")
    fit(model, x, y, logger)
    assert [p.entry.path for p in logger._built.layers] == RESIDUAL_ALL
    result = read_activations(tmp_path)
    assert not result.problems
    assert result.tags() == expected_tags(RESIDUAL_ALL, inputs=["image"], outputs=["head"])
    for path in RESIDUAL_ALL:
        logged = result.images[tags.tag(tags.IMAGE, path)]
        assert [(s.step, len(s.pngs)) for s in logged] == [(0, 2), (1, 2)], path
    # Shapes: (12,12,3) image; (12,12,8) stem, res_b (after the padding), add, out_relu;
    # (10,10,8) res_a; (6,6,8) pool; (8,) gap; (3,) head. The (12,12,8) ones' maps are
    # alike: 6 groups for 9 layers on every backend.
    step = logger._built.step
    paths = [[RESIDUAL_ALL[i] for i in group] for group in step.groups]
    assert paths == [["image"], ["stem", "res_b", "add", "out_relu"], ["res_a"], ["pool"], ["gap"], ["head"]]
    if keras.backend.backend() != "tensorflow":
        return  # the per-shape functions are how TensorFlow's traced step is built
    graph = step.function.get_concrete_function(step.probe, logger._ranges(), True).graph
    calls = [
        op
        for op in graph.get_operations()
        if op.type in ("PartitionedCall", "StatefulPartitionedCall")
    ]
    # One call a layer: the part that reads its output (see tbviz.numerics.summary).
    assert len(calls) == len(RESIDUAL_ALL)
    assert len({op.get_attr("f").name for op in calls}) == 6


def test_all_layers_reach_into_a_nested_model(tmp_path, images12):
    """A Functional backbone inside a Functional model: its inner layers by path, its own
    input layer and padding left out, the outer model's input first."""
    x, y, probe = images12
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((12, 12, 3), name="backbone_in")
    h = keras.layers.Conv2D(4, 3, name="conv_a")(inner_in)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.ZeroPadding2D(name="pad")(h)
    backbone = keras.Model(inner_in, keras.layers.Conv2D(4, 3, name="conv_b")(h), name="backbone")
    inputs = keras.Input((12, 12, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(pooled))
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = ActivationLogger(probe, log_dir=tmp_path, layers="all")
    fit(model, x, y, logger)
    expected = ["image", "backbone/conv_a", "backbone/bn", "backbone/relu", "backbone/conv_b",
                "gap", "head"]  # fmt: skip
    assert [p.entry.path for p in logger._built.layers] == expected
    assert read_activations(tmp_path).tags() == expected_tags(expected, inputs=["image"], outputs=["head"])


# Pixels of one epoch of the residual model, all layers, 2 probes: the input's 3 maps of 12x12
# in a row (12x38), four (12,12,8) outputs in a 2x4 grid (25x51), res_a (21x43), pool (13x27),
# gap's 8 units (2x4) and head's 3 (1x3).
RESIDUAL_PIXELS = 2 * (12 * 12 + 4 * 25 * 51 + 21 * 43 + 13 * 27 + 2 * 4 + 1 * 3)  # the input: its RGB image


def test_budget_shrinks_pictures_only_when_it_must(tmp_path, images12):
    """Under the budget the pictures are byte for byte those of no budget; over it every
    step fits the budget, the large pictures shrink first and the card says what shrank."""
    x, y, probe = images12
    # Two thirds: room for smaller maps; a sixth: not even for 8x8 maps, so channels go too.
    budgets = {
        "none": None,
        "exact": RESIDUAL_PIXELS,
        "smaller": RESIDUAL_PIXELS * 2 // 3,
        "fewer": RESIDUAL_PIXELS // 6,
    }
    fit(residual_model(), x, y, *(
        ActivationLogger(probe, log_dir=tmp_path / name, layers="all", max_pixels_per_epoch=budget)
        for name, budget in budgets.items()
    ))  # fmt: skip
    full, same, small, fewer = (read_activations(tmp_path / name) for name in budgets)
    assert pixels_per_step(full) == {0: RESIDUAL_PIXELS, 1: RESIDUAL_PIXELS}
    assert set(same.images) == set(full.images)
    for tag, steps in full.images.items():
        assert [s.pngs for s in same.images[tag]] == [s.pngs for s in steps], tag
    assert descriptions(tmp_path / "exact") == descriptions(tmp_path / "none")

    def sizes(result):
        return {tag: (s[-1].height, s[-1].width) for tag, s in result.images.items()}

    stem, gap = (tags.tag(tags.IMAGE, path) for path in ("stem", "gap"))
    for name, result in (("smaller", small), ("fewer", fewer)):
        assert set(result.images) == set(full.images)
        assert all(total <= budgets[name] for total in pixels_per_step(result).values())
        assert sizes(result)[stem] < sizes(full)[stem] == (25, 51)  # the largest shrink ...
        assert sizes(result)[gap] == sizes(full)[gap]  # ... and the small ones keep their size
        said = descriptions(tmp_path / name)
        assert "Made smaller" not in said[gap]
        height, width = sizes(result)[stem]
        assert (
            f"within max_pixels_per_epoch={budgets[name]:,} pixels: "
            f"{height}x{width} px instead of 25x51" in said[stem]
        )
        assert ("channels instead of 8" in said[stem]) == (name == "fewer")


@pytest.mark.backend_independent
def test_budget_keeps_maps_at_the_floor_before_dropping_channels():
    """Maps shrink to MIN_MAP_SIZE first; only then are channels halved; the result fits."""
    floor = layouts.MIN_MAP_SIZE
    layers = [layouts.Layout.default(shape) for shape in ((64, 64, 64), (8, 8, 64), (10,))]
    natural = layouts.fit_pixel_budget(
        layers, probes=2, max_pixels=None, max_channels=64, max_size=256
    )
    assert natural == [(256, 64)] * 3

    def pixels(settings):
        return 2 * sum(
            np.prod(layout.picture(c, m, 1))
            for layout, (m, c) in zip(layers, settings, strict=True)
        )

    at_floor = 2 * (2 * (8 * floor + 7) ** 2 + 2 * 5)  # both grids of 8x8 maps at the floor
    for budget, channels in ((pixels(natural), 64), (at_floor, 64), (at_floor - 1, 32)):
        settings = layouts.fit_pixel_budget(
            layers, probes=2, max_pixels=budget, max_channels=64, max_size=256
        )
        assert pixels(settings) <= budget
        assert {c for _, c in settings} == {channels}
        assert settings[0][0] >= 8 * floor + 7  # the 64x64 maps are never below the floor
