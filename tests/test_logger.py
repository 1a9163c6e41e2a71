"""ActivationLogger end to end on real Keras models: what lands in the event files."""

import os
import re
import shutil
import warnings

import keras
import numpy as np
import pytest
from conftest import expected_tags, pictures_at, read_activations, small_cnn

from tbviz import ActivationLogger, LayerHealthWarning
from tbviz.io import tags
from tbviz.io.png import palette
from tbviz.io.tags import LEVELS, NONFINITE_COLOR

DEFAULT_LAYERS = ["conv_a", "pool_a", "conv_b"]


def gray(unit):
    """The grey value of a normalised value: its level floor(v * 253 + 0.5), spread over 0..255."""
    levels = np.floor(np.asarray(unit, np.float64) * (LEVELS - 1) + 0.5)
    return np.round(levels * 255 / (LEVELS - 1)).astype(np.uint8)


def image_tags(layers):
    return {tags.tag(tags.IMAGE, name) for name in layers}


def run_dirs(log_dir):
    return sorted(d for d in os.listdir(log_dir) if os.path.isdir(os.path.join(log_dir, d)))


def test_default_layers_every_epoch(tmp_path, data):
    """Default: each conv/pool layer gets an image tag per epoch with one picture per probe sample."""
    x, y, probe = data
    model = small_cnn()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[ActivationLogger(probe, log_dir=tmp_path)])  # fmt: skip
    result = read_activations(tmp_path)
    assert result.problems == []
    assert result.tags() == expected_tags(DEFAULT_LAYERS)
    sizes = {"conv_a": (10, 10, 8), "pool_a": (5, 5, 8), "conv_b": (3, 3, 4)}
    for name, (h, w, channels) in sizes.items():
        steps = result.images[tags.tag(tags.IMAGE, name)]
        assert [s.step for s in steps] == [0, 1, 2]
        rows, cols = {8: (2, 4), 4: (2, 2)}[channels]
        for s in steps:
            assert len(s.pngs) == len(probe)
            assert (s.width, s.height) == (cols * w + cols - 1, rows * h + rows - 1)
        assert pictures_at(result, name, 2)[0].shape == (s.height, s.width, 3)
        assert [step for step, _ in result.scalars[tags.tag(tags.MEAN, name)]] == [0, 1, 2]


def test_sequential_without_input_builds_lazily(tmp_path, data):
    """A Sequential model with no Input (no inputs until its first batch) is logged all the same."""
    x, y, probe = data
    model = small_cnn(with_input=False)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ActivationLogger(probe, log_dir=tmp_path)])
    result = read_activations(tmp_path)
    assert {t for t in result.images} == image_tags(DEFAULT_LAYERS)
    assert [s.step for s in result.images["feature_maps/conv_a"]] == [0, 1]


def fixed_kernel_model(weights):
    """Input (4, 4, 1) -> frozen 1x1 conv with the given per-filter weights, no bias -> trainable head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(len(weights), 1, use_bias=False, trainable=False, name="fixed")
    features = conv(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(features))
    conv.set_weights([np.array(weights, np.float32).reshape(1, 1, 1, -1)])
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def test_exact_pixels_of_known_activations(tmp_path):
    """A frozen 1x1 conv (weights 2 and -1) on a 0..15 ramp gives exactly computable grey levels."""
    ramp = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    model = fixed_kernel_model([2.0, -1.0])
    logger = ActivationLogger(ramp, log_dir=tmp_path, layers="fixed", cmap="gray", clip_percentile=0)
    model.fit(np.repeat(ramp, 4, 0), np.zeros(4), epochs=2, verbose=0, callbacks=[logger])
    (picture,) = pictures_at(read_activations(tmp_path), "fixed", 1)
    assert picture.shape == (4, 9, 3)  # 2 maps of 4x4 side by side, a 1-pixel separator
    unit = np.arange(16).reshape(4, 4) / 15
    np.testing.assert_array_equal(picture[:, :4, 0], gray(unit))  # 2 * ramp, min-max scaled
    np.testing.assert_array_equal(picture[:, 5:, 0], gray(1 - unit))  # -ramp: reversed
    np.testing.assert_array_equal(picture[:, 4], 255)  # separator
    assert (picture[..., 0] == picture[..., 1]).all() and (picture[..., 1] == picture[..., 2]).all()


def test_exact_statistics_of_known_activations(tmp_path):
    """Mean, std, zero fraction and histogram equal NumPy's on the known activations."""
    ramp = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    model = fixed_kernel_model([2.0, 0.0])
    model.fit(np.repeat(ramp, 4, 0), np.zeros(4), epochs=1, verbose=0,
              callbacks=[ActivationLogger(ramp, log_dir=tmp_path, layers="fixed")])  # fmt: skip
    result = read_activations(tmp_path)
    values = np.concatenate([2 * np.arange(16), np.zeros(16)])
    scalars = {kind: result.scalars[tags.tag(kind, "fixed")][0][1] for kind in tags.SCALAR_KINDS}
    assert scalars["mean"] == pytest.approx(values.mean())
    assert scalars["std"] == pytest.approx(values.std(), rel=1e-5)
    assert scalars["zero_fraction"] == pytest.approx(17 / 32)  # 16 zeros of the 0-filter and ramp[0]
    (_, histogram), = result.histograms[tags.tag(tags.DISTRIBUTION, "fixed")]
    assert histogram.shape == (30, 3) and histogram[:, 2].sum() == 32
    assert histogram[0, 0] == 0 and histogram[-1, 1] == pytest.approx(30)


def reference_pictures(activations, mode, fixed_range=None):
    """NumPy reference of the per-map / per-layer / fixed grey pictures of a (1, 4, 4, C) output."""
    maps = np.transpose(activations, [0, 3, 1, 2]).astype(np.float64)
    if mode == "map":
        lo = maps.min(axis=(2, 3), keepdims=True)
        hi = maps.max(axis=(2, 3), keepdims=True)
    else:
        lo, hi = fixed_range if fixed_range else (maps.min(), maps.max())
    unit = np.clip((maps - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return np.floor(unit * (LEVELS - 1) + 0.5)


@pytest.mark.parametrize("mode", ["map", "layer", "fixed"])
def test_normalisation_modes_match_reference(tmp_path, mode):
    """Each normalisation mode gives, at each epoch, the pictures of a NumPy reference."""
    rng = np.random.default_rng(3)
    probe = rng.normal(size=(1, 4, 4, 1)).astype(np.float32)
    keras.utils.set_random_seed(0)  # the initial weights and the batch order
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    seen = []  # the layer's activations at each epoch end, computed independently
    probe_model = keras.Model(inputs, conv.output)
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(keras.ops.convert_to_numpy(probe_model(probe)))
    )
    logger = ActivationLogger(probe, log_dir=tmp_path, layers="conv", normalize=mode,
                              cmap="gray", clip_percentile=0)  # fmt: skip
    x = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    model.fit(x, np.arange(8) % 2, epochs=3, verbose=0, callbacks=[record, logger])
    result = read_activations(tmp_path)
    first = (seen[0].min(), seen[0].max())
    for epoch, activations in enumerate(seen):
        expected = reference_pictures(activations, mode, first if mode == "fixed" else None)
        (picture,) = pictures_at(result, "conv", epoch)
        got = np.stack([picture[:, :4, 0], picture[:, 5:, 0]]).astype(np.float64)
        got_levels = np.round(got * (LEVELS - 1) / 255)  # grey value back to its level
        assert np.abs(got_levels - expected[0]).max() <= 1  # float32 vs float64 rounding at .5
    assert not np.allclose(seen[0], seen[-1])  # the weights did change between epochs


def test_value_range_pins_fixed_scale(tmp_path):
    """normalize='fixed' with value_range uses exactly that range from the first epoch on."""
    ramp = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    model = fixed_kernel_model([1.0])
    logger = ActivationLogger(ramp, log_dir=tmp_path, layers="fixed", normalize="fixed",
                              value_range=(0.0, 30.0), cmap="gray", clip_percentile=0)  # fmt: skip
    model.fit(np.repeat(ramp, 4, 0), np.zeros(4), epochs=1, verbose=0, callbacks=[logger])
    (picture,) = pictures_at(read_activations(tmp_path), "fixed", 0)
    np.testing.assert_array_equal(picture[..., 0], gray(np.arange(16).reshape(4, 4) / 30))


@pytest.mark.parametrize("stats", [True, False])
def test_nan_activations_are_marked_and_training_goes_on(tmp_path, data, stats):
    """NaN in a layer's output: one warning names the layer, the pixels are magenta, fit completes."""
    x, y, probe = data
    probe = probe.copy()
    probe[0, 5, 5, 0] = np.nan
    keras.utils.set_random_seed(0)
    # A linear conv: TensorFlow's fused conv+ReLU kernels turn NaN into 0 in graph mode.
    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, name="linear"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.warns(LayerHealthWarning, match=r"'linear' has NaN/Inf activations since epoch 1: 36 NaN/Inf values") as said:
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[
            ActivationLogger(probe, log_dir=tmp_path, stats=stats, histograms=stats)])  # fmt: skip
    assert len([w for w in said if w.category is LayerHealthWarning]) == 1  # at its onset only
    assert len(history.history["loss"]) == 2
    result = read_activations(tmp_path)
    first, second = pictures_at(result, "linear", 1)[:2]
    magenta = np.all(first == NONFINITE_COLOR, axis=-1)
    assert magenta.sum() == 36  # the 3x3 neighbourhood of the NaN pixel, in each of 4 maps
    assert not np.all(second == NONFINITE_COLOR, axis=-1).any()  # only the sample with the NaN
    if stats:
        assert np.isfinite(result.scalars["mean/linear"][0][1])  # statistics skip the NaN


@pytest.mark.tensorflow_only
def test_side_by_side_with_keras_tensorboard(tmp_path, data):
    """Beside keras.callbacks.TensorBoard(update_freq=1) in the same log_dir, no image is lost."""
    x, y, probe = data
    model = small_cnn()
    model.fit(x, y, epochs=3, batch_size=8, validation_data=(x, y), verbose=0, callbacks=[
        keras.callbacks.TensorBoard(log_dir=tmp_path, update_freq=1),
        ActivationLogger(probe, log_dir=tmp_path),
    ])  # fmt: skip
    assert run_dirs(tmp_path) == [tags.RUN_NAME, "train", "validation"]
    result = read_activations(tmp_path)
    assert result.tags() == expected_tags(DEFAULT_LAYERS)
    for tag in image_tags(DEFAULT_LAYERS):
        assert [s.step for s in result.images[tag]] == [0, 1, 2]


def test_resume_continues_steps(tmp_path, data):
    """A second fit() with initial_epoch continues the steps, with one instance or a new one."""
    x, y, probe = data
    model = small_cnn()
    logger = ActivationLogger(probe, log_dir=tmp_path, layers="conv_a")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[logger])
    model.fit(x, y, initial_epoch=2, epochs=4, verbose=0, callbacks=[logger])
    model.fit(x, y, initial_epoch=4, epochs=5, verbose=0,
              callbacks=[ActivationLogger(probe, log_dir=tmp_path, layers="conv_a")])  # fmt: skip
    result = read_activations(tmp_path)
    assert [s.step for s in result.images["feature_maps/conv_a"]] == [0, 1, 2, 3, 4]


def test_freq_logs_every_nth_epoch(tmp_path, data):
    """freq=2 logs epochs 0, 2, 4."""
    x, y, probe = data
    small_cnn().fit(x, y, epochs=5, verbose=0,
                    callbacks=[ActivationLogger(probe, log_dir=tmp_path, freq=2, layers="pool_a")])  # fmt: skip
    steps = [s.step for s in read_activations(tmp_path).images["feature_maps/pool_a"]]
    assert steps == [0, 2, 4]


@pytest.mark.parametrize(
    "layers, expected",
    [
        ("conv_b", ["conv_b"]),
        ("conv_*", ["conv_a", "conv_b"]),
        (re.compile(r"pool_.|conv_b"), ["pool_a", "conv_b"]),
        (keras.layers.MaxPooling2D, ["pool_a"]),
        (["head", keras.layers.Conv2D], ["conv_a", "conv_b", "head"]),
    ],
)
def test_layer_selection(tmp_path, data, layers, expected):
    """Layers are chosen by name, glob, regular expression, class, or a list of these."""
    x, y, probe = data
    small_cnn().fit(x, y, epochs=1, verbose=0,
                    callbacks=[ActivationLogger(probe, log_dir=tmp_path, layers=layers)])  # fmt: skip
    assert set(read_activations(tmp_path).images) == image_tags(expected)


def test_stats_and_histograms_can_be_switched_off(tmp_path, data):
    """stats, histograms and health False leave only the images (and each layer's info)."""
    x, y, probe = data
    small_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[
        ActivationLogger(probe, log_dir=tmp_path, stats=False, histograms=False, health=False)])  # fmt: skip
    infos = {tags.tag(tags.LAYER, name) for name in DEFAULT_LAYERS}
    assert read_activations(tmp_path).tags() == image_tags(DEFAULT_LAYERS) | infos


def test_each_epoch_is_on_disk_before_the_next_ends(tmp_path, data):
    """Every logged epoch is flushed: it can be read back while training is still running."""
    x, y, probe = data
    seen = {}
    logger = ActivationLogger(probe, log_dir=tmp_path, layers="conv_a")

    def read_back(epoch, logs):
        logger._wait_for_writes()  # the write of this epoch runs on tbviz's writer thread
        seen[epoch] = [s.step for s in read_activations(tmp_path).images["feature_maps/conv_a"]]

    small_cnn().fit(x, y, epochs=3, verbose=0,
                    callbacks=[logger, keras.callbacks.LambdaCallback(on_epoch_end=read_back)])  # fmt: skip
    assert seen == {0: [0], 1: [0, 1], 2: [0, 1, 2]}


def test_colormaps(tmp_path, data):
    """viridis is the default; any matplotlib name works; diverging maps centre zero."""
    x, y, probe = data
    for cmap in ("viridis", "RdBu_r"):
        log_dir = tmp_path / cmap
        small_cnn().fit(x, y, epochs=1, verbose=0, callbacks=[
            ActivationLogger(probe, log_dir=log_dir, layers="conv_a", cmap=cmap)])  # fmt: skip
        picture = pictures_at(read_activations(log_dir), "conv_a", 0)[0]
        colours = {tuple(c) for c in picture.reshape(-1, 3)} - {(255, 255, 255)}
        assert colours <= {tuple(c) for c in palette(cmap)}
    assert ActivationLogger(probe, log_dir=tmp_path, cmap="RdBu_r").config.pictures.symmetric
    assert not ActivationLogger(probe, log_dir=tmp_path).config.pictures.symmetric


def test_write_failure_warns_and_training_goes_on(tmp_path, data):
    """The log directory removed mid-training: a warning says so, every epoch still trains."""
    x, y, probe = data
    log_dir = tmp_path / "logs"

    def remove_logs(epoch, logs):
        if epoch == 1:
            shutil.rmtree(log_dir)

    model = small_cnn()
    with pytest.warns(RuntimeWarning, match="could not write epoch .*was removed"):
        history = model.fit(x, y, epochs=4, verbose=0, callbacks=[
            ActivationLogger(probe, log_dir=log_dir, layers="conv_a"),
            keras.callbacks.LambdaCallback(on_epoch_end=remove_logs),
        ])  # fmt: skip
    assert len(history.history["loss"]) == 4
    # Writing resumes in a new event file once the old one is found gone.
    steps = [s.step for s in read_activations(log_dir).images.get("feature_maps/conv_a", [])]
    assert steps and steps[-1] == 3


# -- bad input: clear errors before any training work ---------------------------------


class CountBatches(keras.callbacks.Callback):
    """Counts the training batches that started: 0 means refused before any training."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


def fit_expecting_error(model, x, y, logger, match):
    """fit() fails with a ValueError matching `match`; returns how many batches had started."""
    counter = CountBatches()
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[logger, counter])
    return counter.batches


def test_probe_shape_mismatch_names_both_shapes(tmp_path, data):
    """A probe of the wrong shape fails at train begin, naming expected and received shapes."""
    x, y, _ = data
    logger = ActivationLogger(np.zeros((2, 10, 10, 1), np.float32), log_dir=tmp_path)
    batches = fit_expecting_error(small_cnn(), x, y, logger,
                                  r"expected shape \(N, 12, 12, 1\), received shape \(2, 10, 10, 1\)")  # fmt: skip
    assert batches == 0


def test_probe_shape_mismatch_without_input_costs_one_batch(tmp_path, data):
    """With no Input the shape is known only after the first batch: the error comes right then."""
    x, y, _ = data
    logger = ActivationLogger(np.zeros((2, 10, 10, 1), np.float32), log_dir=tmp_path)
    batches = fit_expecting_error(small_cnn(with_input=False), x, y, logger, "expected shape")
    # On TensorFlow, raised at the end of the first batch, before a second one; JAX's and
    # PyTorch's fit() build the model before the callbacks' on_train_begin, so it is raised there.
    assert batches == (1 if keras.backend.backend() == "tensorflow" else 0)


def test_float_probe_for_integer_input_is_refused(tmp_path):
    """A float probe for a model that takes integers is refused, naming both dtypes."""
    inputs = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(10, 4, name="embed")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    model.compile("adam", "mse")
    logger = ActivationLogger(np.zeros((2, 6), np.float32), log_dir=tmp_path)
    batches = fit_expecting_error(model, np.zeros((4, 6), np.int32), np.zeros(4), logger,
                                  "float32 but the model's input .* takes int32")  # fmt: skip
    assert batches == 0


def test_unknown_layer_lists_close_matches(tmp_path, data):
    """An unknown layer name fails before training and suggests the closest real names."""
    x, y, probe = data
    logger = ActivationLogger(probe, log_dir=tmp_path, layers=["conv_c"])
    message = r"'conv_c' matches no layer.*Closest names: conv_[ab], conv_[ab]\."
    batches = fit_expecting_error(small_cnn(), x, y, logger, message)
    assert batches == 0


@pytest.mark.parametrize(
    "probe, message",
    [
        (np.zeros((0, 12, 12, 1), np.float32), r"empty; expected at least one sample. Received: shape=\(0, 12, 12, 1\)"),
        (np.array([["a", "b"]]), "must be numeric"),
        (np.zeros(5, np.float32), "batch"),
    ],
)
def test_bad_probe_is_refused_at_construction(tmp_path, probe, message):
    """Empty, non-numeric or unbatched probes are refused when the logger is made."""
    with pytest.raises(ValueError, match=message):
        ActivationLogger(probe, log_dir=tmp_path)


def test_unusable_log_dir(tmp_path, data):
    """A log_dir at or under a file is refused when the logger is made; nothing is created."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for log_dir in (blocker, blocker / "logs"):
        with pytest.raises(ValueError, match=r"log_dir.*is a file.*Received: log_dir='.*file"):
            ActivationLogger(data[2], log_dir=log_dir)
    ActivationLogger(data[2], log_dir=tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()  # created by the writer, when it first writes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"freq": 0}, "freq"),
        ({"freq": True}, r"`freq` must be a positive integer\. Received: freq=True"),
        ({"max_size": 2.5}, "max_size"),
        ({"max_channels": 0}, "max_channels"),
        ({"max_probes": -1}, "max_probes"),
        ({"max_pixels_per_epoch": 0}, r"positive integer or None \(no budget\)"),
        ({"max_layers": 0}, "max_layers"),
        ({"value_range": (0, 1)}, "value_range.*normalize='fixed'"),
        ({"value_range": (1, 0), "normalize": "fixed"}, "low < high"),
        ({"cmap": "nope"}, "cmap"),
    ],
)
def test_bad_options_are_refused(tmp_path, data, kwargs, message):
    """Bad options fail at construction with the argument named."""
    with pytest.raises(ValueError, match=message):
        ActivationLogger(data[2], log_dir=tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stats": "yes"}, r"`stats` must be True or False\. Received: stats='yes'"),
        ({"histograms": 1}, "histograms"),
        ({"cmap": 3}, "cmap"),
        ({"model": "generator"}, "must be a keras.Model"),
        ({"log_dir": 5}, "log_dir"),
    ],
)
def test_options_of_the_wrong_type_are_refused(tmp_path, data, kwargs, message):
    """An option of the wrong type is a TypeError naming it, what was expected and what was received."""
    with pytest.raises(TypeError, match=message):
        ActivationLogger(data[2], **{"log_dir": tmp_path, **kwargs})


def test_no_warnings_on_a_clean_run(tmp_path, data):
    """An ordinary run emits no tbviz warning."""
    x, y, probe = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        small_cnn().fit(x, y, epochs=2, verbose=0, callbacks=[ActivationLogger(probe, log_dir=tmp_path)])
