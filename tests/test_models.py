"""Every kind of Keras model and every output rank, trained for 2 epochs and read back from the event files.

Pictures are checked three ways: the exact tag set, steps, sample counts and
sizes (worked out from the documented layout); the layout (which value lands
in which pixel), by checking that with a grey colour map and per-map contrast
the grey level of every cell of a map rises with the true activation there
(computed independently with a Keras sub-model after training); and, where two
runs compute the same values with the same kernels (list vs dict probes, uint8
vs float inputs), pixel by pixel. Mixed precision vs float32 agree within what
the compute dtype's rounding allows.

Nothing here needs a kernel that only some CPUs have: TensorFlow's channels_first
(NCHW) convolutions exist only where oneDNN is on (see the channels_first tests).
"""

import json
import math
import os
import re
import subprocess
import sys
import warnings
from fractions import Fraction

import keras
import numpy as np
import pytest
from conftest import logging_warnings, pictures_at, read_activations

from tbviz import ActivationLogger
from tbviz.io import tags
from tbviz.io.tags import LEVELS
from tbviz.model import capture
from tbviz.model import selection as layer_selection
from tbviz.numerics import pictures as tbviz_pictures
from tbviz.numerics.layout import Layout

EPOCHS = 2
NO_NCHW_WORKER = os.path.join(os.path.dirname(__file__), "_no_nchw_worker.py")
GRAY = {"cmap": "gray", "normalize": "map", "clip_percentile": 0.0}


def render(output, options):
    """The pictures `options` make of a layer output laid out by its shape (as the walk lays out
    a layer with nothing more known about it)."""
    layout = Layout.default(tuple(output.shape)[1:])
    return tbviz_pictures.render(output, layout, options)


# -- helpers ---------------------------------------------------------------------------


def images(result, path):
    return result.images[tags.tag(tags.IMAGE, path)]


def image_tags(paths):
    return {tags.tag(tags.IMAGE, p) for p in paths}


def fit(model, x, y, *loggers, batch_size=8, epochs=EPOCHS):
    """Trains `model` with the loggers; returns tbviz's warnings about its logging meanwhile."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=list(loggers))
    return logging_warnings(caught)


def assert_logged(result, sizes, samples, steps=(0, 1)):
    """Exactly these layers were logged, at these steps, with `samples` pictures of the given (width, height)."""
    assert not result.problems
    assert set(result.images) == image_tags(sizes)
    for path, size in sizes.items():
        logged = images(result, path)
        assert [s.step for s in logged] == list(steps), path
        assert all(len(s.pngs) == samples for s in logged), path
        assert all((s.width, s.height) == size for s in logged), (
            path,
            [(s.width, s.height) for s in logged],
        )


# The near-square grids of the channel counts these tests meet, worked out by hand from
# the documented rule: rows <= cols <= 2 * rows where the count factors so.
GRIDS = {24: (4, 6), 32: (4, 8), 64: (8, 8)}


def expected_size(shape, max_channels=64, max_size=256):
    """(width, height) of the picture of a channels-last output of `shape` (no batch axis).

    The documented layout: the first `max_channels` channels in a near-square grid
    with 1-pixel separators, every map shrunk by one factor (aspect kept, never
    grown) so that the whole grid fits in `max_size` x `max_size` pixels.
    """
    height, width, channels = shape
    rows, cols = GRIDS[min(channels, max_channels)]
    scale = min(
        Fraction(1),
        Fraction(max_size - (rows - 1), rows * height),
        Fraction(max_size - (cols - 1), cols * width),
    )
    tile_height, tile_width = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
    return cols * tile_width + cols - 1, rows * tile_height + rows - 1


def assert_monotone(gray_cells, values, label=""):
    """In one map drawn with per-map contrast and a grey map, a larger value is never darker."""
    gray_cells = np.asarray(gray_cells, float).ravel()
    values = np.asarray(values, float).ravel()
    assert gray_cells.shape == values.shape, label
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(gray_cells[order]) >= 0), label
    if values.max() > values.min():
        assert gray_cells.max() > gray_cells.min(), label  # the map is not flat


def output_of(model, path, probe):
    """The layer's output on `probe`, computed with a plain Keras sub-model (no tbviz)."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.ops.convert_to_numpy(keras.Model(inputs, model.get_layer(path).output)(probe))


def batches_until_refused(model, x, y, logger, message):
    """fit() fails with a ValueError matching `message`; returns how many batches had started.

    0: refused at train begin, before any training; 1: refused at the end of the
    first batch (a model whose inputs only exist once it has run).
    """
    batches = []
    counter = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: batches.append(batch)
    )
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=EPOCHS, batch_size=8, verbose=0, callbacks=[logger, counter])
    return len(batches)


@pytest.fixture
def images12():
    """16 random 12x12 RGB images, 3-class labels, a probe of 2."""
    rng = np.random.default_rng(0)
    x = rng.random((16, 12, 12, 3), dtype=np.float32)
    return x, rng.integers(0, 3, 16), x[:2]


@pytest.fixture
def float32_policy():
    """Restores the global dtype policy whatever the test sets."""
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


# -- output ranks ------------------------------------------------------------------------


def cnn(with_input=True, dropout=True):
    """conv, BN, relu, pool, (dropout), conv2, pooling to a vector, dense, logits: a bit of everything."""
    keras.utils.set_random_seed(0)
    layers = [
        keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Activation("relu", name="relu"),
        keras.layers.MaxPooling2D(name="pool"),
        *([keras.layers.Dropout(0.2, name="drop")] if dropout else []),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(12, activation="relu", name="dense"),
        keras.layers.Dense(3, name="logits"),
        keras.layers.Activation("softmax", dtype="float32", name="softmax"),
    ]
    model = keras.Sequential(
        ([keras.Input((12, 12, 3))] if with_input else []) + layers, name="cnn"
    )
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return model


CNN_SIZES = {"conv": (43, 21), "bn": (43, 21), "relu": (43, 21), "pool": (23, 11), "conv2": (7, 7)}


@pytest.mark.parametrize("with_input", [True, False], ids=["with_input", "without_input"])
def test_sequential_cnn_rank4_grids(tmp_path, images12, with_input):
    """A Sequential CNN, with or without an Input: conv, BN, activation, pooling as channel grids, channels in row-major grid order."""
    x, y, probe = images12
    model = cnn(with_input)
    logger = ActivationLogger(probe, log_dir=tmp_path, **GRAY)
    assert fit(model, x, y, logger) == []
    result = read_activations(tmp_path)
    # Default: every conv/normalisation/activation/pooling layer; dropout, dense and pooling to vectors left out.
    assert_logged(result, CNN_SIZES, samples=2)
    values = output_of(model, "conv2", probe)  # (2, 3, 3, 4) -> 2x2 grid of 3x3 tiles
    for n, picture in enumerate(pictures_at(result, "conv2", 1)):
        for channel in range(4):
            row, col = divmod(channel, 2)
            cell = picture[row * 4 : row * 4 + 3, col * 4 : col * 4 + 3, 0]
            assert_monotone(cell, values[n, :, :, channel], f"sample {n} channel {channel}")


def test_rank2_dense_and_global_pooling_blocks(tmp_path, images12):
    """Dense and global-pooling outputs are blocks of unit intensities, units in row-major order."""
    x, y, probe = images12
    model = cnn()
    logger = ActivationLogger(probe, log_dir=tmp_path, layers=["gap", "dense"], **GRAY)
    assert fit(model, x, y, logger) == []
    result = read_activations(tmp_path)
    assert_logged(
        result, {"gap": (2, 2), "dense": (4, 3)}, samples=2
    )  # 4 units: 2x2; 12 units: 3x4
    for path, (rows, cols) in (("gap", (2, 2)), ("dense", (3, 4))):
        values = output_of(model, path, probe)
        for n, picture in enumerate(pictures_at(result, path, 1)):
            assert_monotone(picture[:, :, 0], values[n].reshape(rows, cols), f"{path} sample {n}")


def sequence_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((20, 3), name="series")
    hidden = keras.layers.Conv1D(6, 3, activation="relu", name="conv1d")(inputs)
    hidden = keras.layers.LSTM(5, return_sequences=True, name="lstm")(hidden)
    hidden = keras.layers.GRU(4, return_sequences=True, name="gru")(hidden)
    hidden, _, _ = keras.layers.LSTM(
        3, return_sequences=True, return_state=True, name="lstm_state"
    )(hidden)
    hidden = keras.layers.GlobalAveragePooling1D(name="gap1d")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_rank3_sequence_layers_heat_strips(tmp_path):
    """Conv1D, LSTM and GRU sequences are time x channel strips: channels down, time across."""
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 20, 3), dtype=np.float32), rng.integers(0, 3, 16)
    model = sequence_model()
    logger = ActivationLogger(x[:3], log_dir=tmp_path, **GRAY)
    assert (
        fit(model, x, y, logger) == []
    )  # lstm_state (three outputs) is left out of the default quietly
    result = read_activations(tmp_path)
    assert_logged(result, {"conv1d": (18, 6), "lstm": (18, 5), "gru": (18, 4)}, samples=3)
    for path in ("conv1d", "lstm", "gru"):
        values = output_of(model, path, x[:3])  # (3, 18, C)
        for n, picture in enumerate(pictures_at(result, path, 1)):
            assert_monotone(picture[:, :, 0], values[n].T, f"{path} sample {n}")


def test_rank5_conv3d_depth_slices(tmp_path):
    """Conv3D outputs are tiled one row per channel, one column per depth slice."""
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 4, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 8)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 8, 8, 1)),
            keras.layers.Conv3D(3, 3, padding="same", activation="relu", name="conv3d"),
            keras.layers.MaxPooling3D((1, 2, 2), name="pool3d"),
            keras.layers.GlobalAveragePooling3D(name="gap3d"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = ActivationLogger(x[:2], log_dir=tmp_path, **GRAY)
    assert fit(model, x, y, logger) == []
    result = read_activations(tmp_path)
    # 3 channels x 4 depth slices of 8x8 (4x4 after pooling), 1-pixel separators.
    assert_logged(result, {"conv3d": (35, 26), "pool3d": (19, 14)}, samples=2)
    values = output_of(model, "conv3d", x[:2])  # (2, 4, 8, 8, 3)
    for n, picture in enumerate(pictures_at(result, "conv3d", 1)):
        for channel in range(3):
            for depth in range(4):
                cell = picture[channel * 9 : channel * 9 + 8, depth * 9 : depth * 9 + 8, 0]
                assert_monotone(cell, values[n, depth, :, :, channel], f"c{channel} d{depth}")


class Positive(keras.layers.Layer):
    """A boolean mask (Keras' Lambda would declare its output float32)."""

    def call(self, x):
        return keras.ops.greater(x, 0.0)


def test_unpicturable_outputs_are_skipped_with_one_warning_each(tmp_path):
    """Rank-1, several-output and boolean layers are skipped, each with one warning naming it and why."""
    ops = keras.ops
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 3))
    seq = keras.layers.Conv1D(4, 3, name="conv1d")(inputs)
    total = keras.layers.Lambda(lambda t: ops.sum(t, axis=[1, 2]), name="total")(seq)
    positive = Positive(name="positive")(seq)
    masked = keras.layers.Lambda(
        lambda ts: ts[0] * ops.cast(ts[1], "float32") + ops.reshape(ts[2], (-1, 1, 1)),
        name="masked",
    )([seq, positive, total])
    states, _, _ = keras.layers.LSTM(
        2, return_sequences=True, return_state=True, name="lstm_state"
    )(masked)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(states)))
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    x = rng.random((8, 10, 3), dtype=np.float32)
    logger = ActivationLogger(
        x[:2], log_dir=tmp_path, layers=["conv1d", "total", "positive", "lstm_state", "masked"]
    )
    caught = fit(model, x, np.zeros(8), logger)
    expected = {
        "total": r"layer 'total' is skipped: its output has rank 1 \(shape \(None,\)\)",
        "positive": r"layer 'positive' is skipped: its output is not numeric \(dtype bool\)",
        "lstm_state": r"layer 'lstm_state' is skipped: it has several outputs \(3\)",
    }
    assert len(caught) == len(expected), caught
    for name, pattern in expected.items():
        assert sum(bool(re.search(pattern, message)) for message in caught) == 1, (name, caught)
    assert_logged(read_activations(tmp_path), {"conv1d": (8, 4), "masked": (8, 4)}, samples=2)


def channels_first_model(rank):
    """Depthwise conv, BN, ReLU, max-pool, all channels_first, on (3, 12) or (3, 12, 12) inputs.

    These train on every CPU: Keras runs channels_first depthwise convolutions and
    pooling on the CPU through channels_last kernels (it transposes), where a plain
    Conv1D/Conv2D needs TensorFlow's NCHW kernels, which exist only with oneDNN
    (see `test_missing_nchw_kernel_is_a_clear_warning`).
    """
    fmt = "channels_first"
    conv, pool = (
        (keras.layers.DepthwiseConv1D, keras.layers.MaxPooling1D)
        if rank == 3
        else (keras.layers.DepthwiseConv2D, keras.layers.MaxPooling2D)
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3, *(12,) * (rank - 2))),
            conv(3, depth_multiplier=2, data_format=fmt, name="conv"),  # 6 channels
            keras.layers.BatchNormalization(axis=1, name="bn"),
            keras.layers.ReLU(name="relu"),  # no data_format: inherited from bn
            pool(data_format=fmt, name="pool"),
            keras.layers.Flatten(data_format=fmt),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("rank", [3, 4])
def test_channels_first_is_read_from_the_layers(tmp_path, rank):
    """A channels_first model (global setting left channels_last): each channel's own map is pictured, in channel order."""
    rng = np.random.default_rng(0)
    x = rng.random((16, 3, *(12,) * (rank - 2)), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    assert keras.config.image_data_format() == "channels_last"
    model = channels_first_model(rank)
    logger = ActivationLogger(x[:2], log_dir=tmp_path, **GRAY)
    assert fit(model, x, y, logger) == []
    assert [p.entry.channels_first for p in logger._built.layers] == [True] * 4
    # Outputs (N, 6, 10[, 10]) and (N, 6, 5[, 5]). Rank 3: a channel x time strip, 6 rows.
    # Rank 4: 6 maps in a 2 x 3 grid with 1-pixel separators. Read as channels_last,
    # the sizes would be other ones (10 or 5 channels).
    sizes = (
        {"conv": (10, 6), "bn": (10, 6), "relu": (10, 6), "pool": (5, 6)}
        if rank == 3
        else {"conv": (32, 21), "bn": (32, 21), "relu": (32, 21), "pool": (17, 11)}
    )
    result = read_activations(tmp_path)
    assert_logged(result, sizes, samples=2)
    for path in sizes:
        values = output_of(model, path, x[:2])  # (2, 6, ...): channels first
        for n, picture in enumerate(pictures_at(result, path, 1)):
            if rank == 3:
                assert_monotone(picture[:, :, 0], values[n], f"{path} sample {n}")
                continue
            side = values.shape[-1]
            for channel in range(6):
                row, col = divmod(channel, 3)
                top, left = row * (side + 1), col * (side + 1)
                cell = picture[top : top + side, left : left + side, 0]
                assert_monotone(cell, values[n, channel], f"{path} sample {n} channel {channel}")


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_missing_nchw_kernel_is_a_clear_warning(tmp_path):
    """Where TensorFlow has no NCHW kernel (oneDNN off), a channels_first model trained under XLA trains on, with one warning naming the layer and why."""
    result_path = tmp_path / "result.json"
    process = subprocess.run(
        [sys.executable, NO_NCHW_WORKER, str(tmp_path / "logs"), str(result_path)],
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result["onednn"] is False  # TensorFlow's own kernels: NHWC only, on any x86-64 CPU
    for model in ("sequential", "subclassed"):
        assert len(result[model]["loss"]) == EPOCHS, model  # training was not stopped
        caught = [m for m in result[model]["warnings"] if "tbviz" in m]
        assert len(caught) == 1, (model, caught)  # said once, not once per epoch
        assert re.search(
            r"TensorFlow has no channels_first \(NCHW\) kernel on this CPU for layer 'conv' "
            rf"\(Conv2D\) of model '{model}', which tbviz runs without XLA; expected "
            r"data_format='channels_last', or TF_ENABLE_ONEDNN_OPTS=1 set before TensorFlow is "
            r"imported .*Received: data_format='channels_first' and \w+Error: .*only supports",
            caught[0],
        ), caught[0]
        assert "{{" not in caught[0] and "Graph execution error" not in caught[0]
        assert not read_activations(tmp_path / "logs" / model).images  # nothing half-written


# -- model kinds ------------------------------------------------------------------------------


def residual_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    branch = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="res_a")(stem)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="res_b")(branch)
    merged = keras.layers.Add(name="add")([stem, branch])
    out = keras.layers.ReLU(name="out_relu")(merged)
    head = keras.layers.Dense(3, activation="softmax", name="head")(
        keras.layers.GlobalAveragePooling2D(name="gap")(out)
    )
    model = keras.Model(inputs, head, name="residual")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_functional_residual_block(tmp_path, images12):
    """A Functional model with a branch and a merge: every layer on both paths is logged; a tight cap keeps the block outputs."""
    x, y, probe = images12
    model = residual_model()
    logger = ActivationLogger(probe, log_dir=tmp_path / "all")
    capped = ActivationLogger(probe, log_dir=tmp_path / "capped", max_layers=2)
    assert fit(model, x, y, logger, capped) == []
    grid = (51, 25)  # 8 channels of 12x12 in a 2x4 grid
    assert_logged(
        read_activations(tmp_path / "all"),
        dict.fromkeys(["stem", "res_a", "res_b", "add", "out_relu"], grid),
        samples=2,
    )
    # With room for 2: the block boundaries (stem, out_relu), not the ReLU inside the branch
    # nor the add whose only consumer is out_relu.
    assert_logged(
        read_activations(tmp_path / "capped"), dict.fromkeys(["stem", "out_relu"], grid), samples=2
    )


MOBILENET = "mobilenetv2_1.00_96"
MOBILENET_DEFAULT = [
    "Conv1_relu", "block_1_expand_relu", "block_2_add", "block_4_add", "block_6_expand_relu",
    "block_7_add", "block_9_add", "block_10_depthwise_relu", "block_12_add", "block_14_add",
    "block_16_expand_relu", "out_relu",
]  # fmt: skip


@pytest.mark.slow
def test_nested_transfer_learning_model(tmp_path):
    """Sequential([Input, MobileNetV2, pooling, Dense]): the default reaches into the backbone; inner layers are tagged and selectable by path."""
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 96, 96, 3), dtype=np.float32), rng.integers(0, 3, 4)
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    model = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    assert backbone.name == MOBILENET
    default = ActivationLogger(x[:2], log_dir=tmp_path / "default")
    first, last = f"{MOBILENET}/block_1_expand_relu", f"{MOBILENET}/block_16_expand_relu"
    chosen = ActivationLogger(
        x[:2], log_dir=tmp_path / "chosen", layers=[first, last, "head"], **GRAY
    )
    assert fit(model, x, y, default, chosen, batch_size=4) == []

    shapes = {layer.name: tuple(layer.output.shape)[1:] for layer in backbone.layers}
    paths = [f"{MOBILENET}/{name}" for name in MOBILENET_DEFAULT]
    assert_logged(
        read_activations(tmp_path / "default"),
        {p: expected_size(shapes[p.split("/")[1]]) for p in paths},
        samples=2,
    )
    result = read_activations(tmp_path / "chosen")
    assert_logged(
        result,
        {
            first: expected_size(shapes["block_1_expand_relu"]),
            last: (31, 31),  # 64 of 960 channels of 3x3 in an 8x8 grid
            "head": (3, 1),
        },
        samples=2,
    )
    # An inner layer's pictures show that layer's output in the trained model.
    inner = keras.Model(backbone.inputs[0], backbone.get_layer("block_16_expand_relu").output)
    values = keras.ops.convert_to_numpy(inner(x[:2]))
    for n, picture in enumerate(pictures_at(result, last, 1)):
        for channel in range(8):  # the first row of tiles
            cell = picture[:3, channel * 4 : channel * 4 + 3, 0]
            assert_monotone(cell, values[n, :, :, channel], f"sample {n} channel {channel}")
    # One forward pass per step, however many inner layers are selected: each convolution
    # of the backbone appears once in the traced step (the step counts the calls of the
    # tapped layers on every backend; here, TensorFlow's graph shows it for all of them).
    if keras.backend.backend() != "tensorflow":
        return
    graph = default._built.step.function.get_concrete_function(default._built.step.probe, default._ranges(), True).graph
    convolutions = [
        op for op in graph.get_operations() if op.type.startswith(("Conv2D", "Depthwise"))
    ]
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)  # siblings, not subclasses
    assert len(convolutions) == sum(isinstance(layer, kinds) for layer in backbone.layers)


class ResidualBlock(keras.layers.Layer):
    """A user-defined layer that holds layers."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name="conv_a"
        )
        self.conv_b = keras.layers.Conv2D(filters, 3, padding="same", name="conv_b")
        self.add = keras.layers.Add(name="add")

    def call(self, x):
        return self.add([x, self.conv_b(self.conv_a(x))])


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__(name="net")
        self.stem = keras.layers.Conv2D(4, 3, activation="relu", name="stem")
        self.block = ResidualBlock(4, name="block")
        self.tail = keras.Sequential(
            [keras.layers.Conv2D(4, 3, name="inner_conv"), keras.layers.ReLU(name="inner_relu")],
            name="tail",
        )
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        self.unused = keras.layers.Dense(5, name="unused")  # tracked, never called
        self.head = keras.layers.Dense(3, activation="softmax", name="head")

    def call(self, x, training=False):
        return self.head(self.pool(self.tail(self.block(self.stem(x)))))


def test_subclassed_model_layers_are_captured(tmp_path, images12):
    """A subclassed model: layers reached through call() are logged by path, match their real outputs, and calls are restored."""
    x, y, probe = images12
    keras.utils.set_random_seed(0)
    model = SubclassedNet()
    model.compile("adam", "sparse_categorical_crossentropy")
    default = ActivationLogger(probe, log_dir=tmp_path / "default", **GRAY)
    chosen = ActivationLogger(
        probe, log_dir=tmp_path / "chosen", layers=["stem", "gap", "head"], **GRAY
    )
    assert fit(model, x, y, default, chosen) == []

    # Default: rank-3..5 layers in call order; `block` itself returns block/add's tensor: drawn once.
    assert_logged(
        read_activations(tmp_path / "default"),
        {
            "stem": (21, 21),  # 4 channels of 10x10 in a 2x2 grid
            "block/conv_a": (21, 21),
            "block/conv_b": (21, 21),
            "block/add": (21, 21),
            "tail/inner_conv": (17, 17),
            "tail/inner_relu": (17, 17),
        },
        samples=2,
    )
    result = read_activations(tmp_path / "chosen")
    assert_logged(result, {"stem": (21, 21), "gap": (2, 2), "head": (3, 1)}, samples=2)
    # The pictures are those of the layers' real outputs in the trained model.
    stem = model.stem(probe)
    expected = {
        "stem": stem,
        "gap": model.pool(model.tail(model.block(stem))),
        "head": model(probe),
    }
    for path, output in expected.items():
        indices, _, _ = render(output, chosen.config.pictures)
        for picture, want in zip(
            pictures_at(result, path, 1), chosen.config.pictures.palette[keras.ops.convert_to_numpy(indices)], strict=True
        ):
            np.testing.assert_array_equal(picture, want, err_msg=path)
    # Every wrapped `call` was restored.
    assert all(
        "call" not in vars(layer) for layer in layer_selection.sublayers(model, recursive=True)
    )


class SubclassedBlock(keras.Model):
    """A subclassed model used as a layer of a Functional one."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")
        self.conv_b = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")

    def call(self, x):
        return x + self.conv_b(self.conv_a(x))


def test_subclassed_model_nested_in_a_functional_one(tmp_path, images12):
    """A subclassed model inside a Functional model: its inner layers are captured and tagged by path."""
    x, y, probe = images12
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    stem = keras.layers.Conv2D(4, 3, activation="relu", name="stem")(inputs)
    block = SubclassedBlock(name="block")(stem)
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(block)
    )
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = ActivationLogger(probe, log_dir=tmp_path)
    assert fit(model, x, y, logger) == []
    # The nested model's own output is its inner layers' business: drawn through them.
    assert_logged(
        read_activations(tmp_path),
        dict.fromkeys(["stem", "block/conv_a", "block/conv_b"], (21, 21)),
        samples=2,
    )


class DataDependentNet(keras.Model):
    """Python control flow on a tensor's value: only runs eagerly (``run_eagerly=True``)."""

    def __init__(self):
        super().__init__(name="eager_net")
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(3, activation="softmax", name="head")

    def call(self, x, training=False):
        x = self.conv(x)
        if float(keras.ops.mean(x)) < 0:  # never true after a ReLU; needs a concrete value
            x = -x
        return self.head(self.pool(x))


# Not on JAX: its trainer builds even a run_eagerly model by tracing it (jax.eval_shape),
# which a model with Python control flow on values cannot go through.
@pytest.mark.tensorflow_only
@pytest.mark.torch_only
def test_run_eagerly_model_is_logged_eagerly(tmp_path, images12):
    """A model that only runs eagerly (compiled with run_eagerly=True) is logged eagerly
    too, with the pictures of its real outputs."""
    x, y, probe = images12
    keras.utils.set_random_seed(0)
    model = DataDependentNet()
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    logger = ActivationLogger(probe, log_dir=tmp_path, layers="conv", **GRAY)
    assert fit(model, x, y, logger) == []
    result = read_activations(tmp_path)
    assert_logged(result, {"conv": (21, 21)}, samples=2)
    indices, _, _ = render(model.conv(probe), logger.config.pictures)
    expected = logger.config.pictures.palette[keras.ops.convert_to_numpy(indices)]
    for picture, want in zip(pictures_at(result, "conv", 1), expected, strict=True):
        np.testing.assert_array_equal(picture, want)


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'net'")
def test_capture_restores_calls_when_the_model_fails(images12):
    """If the model raises during capture, every layer's own call is back afterwards."""
    _, _, probe = images12
    model = SubclassedNet()
    model(probe)
    layers = layer_selection.sublayers(model, recursive=True)
    # 3x3 inputs: stem and block run, then tail/inner_conv's 3x3 kernel meets a 1x1 map.
    # Each backend words the failure its own way; Keras says where it happened.
    with pytest.raises(Exception, match=r"when calling Conv2D\.call\(\)"):
        capture.run(model, layers, np.zeros((2, 3, 3, 3), np.float32))
    assert all("call" not in vars(layer) for layer in layers)
    recorded = capture.run(model, layers, probe)
    assert id(model.unused) not in recorded.outputs and id(model.stem) in recorded.outputs


def two_input_model(dict_inputs):
    keras.utils.set_random_seed(0)
    image = keras.Input((12, 12, 3), name="image")
    meta = keras.Input((5,), name="meta")
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    dense = keras.layers.Dense(6, activation="relu", name="meta_dense")(meta)
    merged = keras.layers.Concatenate(name="merge")(
        [keras.layers.GlobalAveragePooling2D(name="gap")(conv), dense]
    )
    out = keras.layers.Dense(3, activation="softmax", name="head")(merged)
    model = keras.Model({"image": image, "meta": meta} if dict_inputs else [image, meta], out)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize(
    "kind",
    ["list", "dict_by_input_name", "dict_model", pytest.param("dataset", marks=pytest.mark.tensorflow_only)],
)
def test_multi_input_probes(tmp_path, images12, kind):
    """A two-input model (list or dict inputs) takes a list, a dict or a tf.data.Dataset of probes."""
    x, y, _ = images12
    meta = np.random.default_rng(1).random((16, 5), dtype=np.float32)
    dict_inputs = kind in ("dict_model", "dataset")
    model = two_input_model(dict_inputs)
    data = {"image": x, "meta": meta} if dict_inputs else [x, meta]
    if kind == "dataset":
        import tensorflow as tf

        probe = tf.data.Dataset.from_tensor_slices(({"image": x, "meta": meta}, y)).batch(2)
    else:
        probe = {
            "list": [x[:2], meta[:2]],
            "dict_by_input_name": {"image": x[:2], "meta": meta[:2]},
            "dict_model": {"meta": meta[:2], "image": x[:2]},
        }[kind]
    logger = ActivationLogger(
        probe, log_dir=tmp_path / kind, layers=["conv", "meta_dense", "merge"], **GRAY
    )
    assert fit(model, data, y, logger) == []
    result = read_activations(tmp_path / kind)
    assert_logged(result, {"conv": (21, 21), "meta_dense": (3, 2), "merge": (5, 2)}, samples=2)
    # The second input reaches its own branch: meta_dense shows the dense output of meta[:2].
    meta_dense = keras.Model(model.inputs, model.get_layer("meta_dense").output)
    values = keras.ops.convert_to_numpy(meta_dense([x[:2], meta[:2]]))
    for n, picture in enumerate(pictures_at(result, "meta_dense", 1)):
        assert_monotone(picture[:, :, 0], values[n].reshape(2, 3), f"sample {n}")


@pytest.mark.tensorflow_only
def test_dataset_probe_is_one_batch_taken_once(tmp_path, images12):
    """A tf.data.Dataset probe is read once, when the logger is made: every epoch pictures that same first batch."""
    import tensorflow as tf

    x, y, _ = images12
    passes = []

    def batches():
        passes.append(len(passes))
        start = 2 * len(passes)  # each pass over the dataset would give other samples
        for i in range(start, 16, 2):
            yield x[i : i + 2], y[i : i + 2]

    dataset = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, 12, 12, 3), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ),
    )
    from_dataset = ActivationLogger(dataset, log_dir=tmp_path / "dataset", layers=["conv", "pool"])
    from_arrays = ActivationLogger(x[2:4], log_dir=tmp_path / "arrays", layers=["conv", "pool"])
    assert passes == [0]
    assert fit(cnn(), x, y, from_dataset, from_arrays) == []
    assert passes == [0]
    ours, theirs = read_activations(tmp_path / "dataset"), read_activations(tmp_path / "arrays")
    assert_logged(ours, {"conv": CNN_SIZES["conv"], "pool": CNN_SIZES["pool"]}, samples=2)
    for path in ("conv", "pool"):
        for step in (0, 1):
            pairs = zip(pictures_at(ours, path, step), pictures_at(theirs, path, step), strict=True)
            for a, b in pairs:
                np.testing.assert_array_equal(a, b)


def test_multi_input_probes_agree(tmp_path, images12):
    """The same two-input model and probe give identical pictures whichever way the probe is given."""
    x, y, _ = images12
    meta = np.random.default_rng(1).random((16, 5), dtype=np.float32)
    runs = {}
    for kind, dict_inputs, probe in (
        ("list", False, [x[:2], meta[:2]]),
        ("dict", True, {"image": x[:2], "meta": meta[:2]}),
    ):
        model = two_input_model(dict_inputs)
        data = {"image": x, "meta": meta} if dict_inputs else [x, meta]
        fit(
            model,
            data,
            y,
            ActivationLogger(probe, log_dir=tmp_path / kind, layers=["conv", "meta_dense"]),
        )
        runs[kind] = read_activations(tmp_path / kind)
    for path in ("conv", "meta_dense"):
        ours, theirs = pictures_at(runs["list"], path, 1), pictures_at(runs["dict"], path, 1)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


APPLICATIONS = {
    "ResNet50": (
        keras.applications.ResNet50,
        32,
        [
            "conv1_relu", "conv2_block1_out", "conv2_block2_out", "conv3_block1_out",
            "conv3_block2_out", "conv3_block4_out", "conv4_block1_out", "conv4_block3_out",
            "conv4_block4_out", "conv4_block6_out", "conv5_block1_out", "conv5_block3_out",
        ],
    ),
    "MobileNetV2": (keras.applications.MobileNetV2, 96, MOBILENET_DEFAULT),
    "EfficientNetB0": (
        keras.applications.EfficientNetB0,
        32,
        [
            "stem_activation", "block2a_expand_activation", "block2b_add", "block3a_activation",
            "block4a_expand_activation", "block4b_add", "block5a_activation", "block5c_add",
            "block6a_activation", "block6c_add", "block7a_expand_activation", "top_activation",
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_keras_applications_default_selection(tmp_path, name):
    """ResNet50, MobileNetV2 and EfficientNetB0 (weights=None): the default is 12 block outputs spread over the depth.

    Chosen as fit() has the logger choose them (set_model, on_train_begin), on the
    untrained model; test_nested_transfer_learning_model trains and pictures such
    a selection.
    """
    constructor, size, expected = APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    model = constructor(weights=None, input_shape=(size, size, 3), classes=3)
    probe = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32) * 255
    logger = ActivationLogger(probe, log_dir=tmp_path)
    logger.set_model(model)
    logger.on_train_begin()
    assert [p.entry.path for p in logger._built.layers] == expected
    in_depth_order = [layer.name for layer in model.layers if layer.name in expected]
    assert in_depth_order == expected
    logger.on_train_end()
    assert not any(tmp_path.iterdir())  # choosing layers writes nothing


# -- precision and dtypes ---------------------------------------------------------------------


def _levels_by_step(result, paths):
    """Every pixel's colour level (0..253) in the grey pictures of `paths`, per step."""
    levels = {}
    for step in (0, 1):
        pictures = [np.stack(pictures_at(result, p, step)) for p in paths]
        for picture in pictures:  # grey everywhere: no magenta NaN/Inf marker
            assert (picture == picture[..., :1]).all()
        levels[step] = np.concatenate(
            [np.round(p[..., 0] * (LEVELS - 1) / 255).ravel() for p in pictures]
        )
    return levels


# How far a mixed-precision run's pictures may be from float32's. Both start from the same
# weights (variables stay float32; no dropout, whose masks are drawn in the compute dtype) and
# train on the same batches; what differs is that activations (and gradients) are rounded to
# the compute dtype, whose unit roundoff u is 2**-11 for float16 (11 significant bits) and
# 2**-8 for bfloat16 (8). A relative change u of a value at the top of its map's range moves
# its pixel by 253 * u of the 254 colour levels (the pictures are grey, so each pixel reads
# back as its level): 0.12 for float16, 0.99 for bfloat16. That is the limit on the mean
# difference: values are rounded several times over a few layers and 4 training steps, but
# most lie well inside their map's range, and roundings partly cancel. The limit follows from
# the dtypes alone, not from one CPU's kernels (TensorFlow's own and oneDNN's, at whichever
# instruction set the CPU has, round differently; with either, the mean was about 0.001 and
# 0.007 on an AMD EPYC). The few pixels next to where a ReLU or a max-pooling switches may be
# far off; only the mean bounds them.
UNIT_ROUNDOFF = {"mixed_float16": 2.0**-11, "mixed_bfloat16": 2.0**-8}
PRECISION_LAYERS = ["conv", "bn", "relu", "pool", "conv2", "gap", "dense", "logits"]


@pytest.fixture(scope="module")
def float32_pictures(tmp_path_factory):
    """The float32 run the mixed-precision runs are compared with."""
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 12, 12, 3), dtype=np.float32), rng.integers(0, 3, 16)
    log_dir = tmp_path_factory.mktemp("float32")
    logger = ActivationLogger(x[:3], log_dir=log_dir, layers=PRECISION_LAYERS, **GRAY)
    fit(cnn(dropout=False), x, y, logger)
    return x, y, _levels_by_step(read_activations(log_dir), PRECISION_LAYERS)


@pytest.mark.parametrize("policy", list(UNIT_ROUNDOFF))
def test_mixed_precision_pictures_match_float32(tmp_path, float32_pictures, float32_policy, policy):
    """Under mixed_float16 / mixed_bfloat16 the pictures equal float32's within rounding."""
    x, y, reference = float32_pictures
    keras.mixed_precision.set_global_policy(policy)
    model = cnn(dropout=False)  # dropout draws its masks in the compute dtype: other masks
    assert model.get_layer("conv").compute_dtype == policy.removeprefix("mixed_")
    logger = ActivationLogger(x[:3], log_dir=tmp_path, layers=PRECISION_LAYERS, **GRAY)
    assert fit(model, x, y, logger) == []
    keras.mixed_precision.set_global_policy("float32")
    result = read_activations(tmp_path)
    assert_logged(
        result, {**CNN_SIZES, "gap": (2, 2), "dense": (4, 3), "logits": (3, 1)}, samples=3
    )
    mean_limit = (LEVELS - 1) * UNIT_ROUNDOFF[policy]
    for step, levels in _levels_by_step(result, PRECISION_LAYERS).items():
        assert levels.shape == reference[step].shape
        difference = np.abs(levels - reference[step])
        assert difference.mean() <= mean_limit, (step, difference.mean(), mean_limit)


def uint8_model(input_dtype):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3), dtype=input_dtype),
            keras.layers.Rescaling(1 / 255, name="scale"),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_uint8_probe_images(tmp_path, images12):
    """uint8 probes (0-255) are taken as they are by a uint8 model, and cast (not rescaled) for a float one."""
    x, y, _ = images12
    pixels = np.round(x * 255).astype(np.uint8)
    runs = {}
    for input_dtype in ("uint8", "float32"):
        model = uint8_model(input_dtype)
        data = pixels if input_dtype == "uint8" else pixels.astype(np.float32)
        logger = ActivationLogger(
            pixels[:2], log_dir=tmp_path / input_dtype, layers=["scale", "conv"]
        )
        assert fit(model, data, y, logger) == []
        runs[input_dtype] = read_activations(tmp_path / input_dtype)
        assert_logged(runs[input_dtype], {"scale": (38, 12), "conv": (21, 21)}, samples=2)
    for path in ("scale", "conv"):
        for step in (0, 1):
            for a, b in zip(
                pictures_at(runs["uint8"], path, step),
                pictures_at(runs["float32"], path, step),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b)


# -- unreachable layers ----------------------------------------------------------------------


def test_layer_of_another_model_is_refused_at_train_begin(tmp_path, images12):
    """A layer object from a different model: ValueError at train begin naming it and why."""
    x, y, probe = images12
    stranger = cnn().get_layer("conv2")
    model = residual_model()
    logger = ActivationLogger(probe, log_dir=tmp_path, layers=["stem", stranger])
    message = r"layer object 'conv2' \(Conv2D\) cannot be reached from the inputs of model 'residual': it is not a layer of that model"
    assert batches_until_refused(model, x, y, logger, message) == 0


@pytest.mark.parametrize("by", ["name", "object"])
def test_disconnected_branch_is_refused_at_train_begin(tmp_path, images12, by):
    """A layer called on the model's tensors whose output leads nowhere: ValueError at train begin naming it and why."""
    x, y, probe = images12
    inputs = keras.Input((12, 12, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    side = keras.layers.Conv2D(2, 1, name="side")
    side(conv)  # a branch that does not lead to the outputs
    model = keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(conv)), name="m"
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = ActivationLogger(probe, log_dir=tmp_path, layers=["side" if by == "name" else side])
    message = (
        r"layer 'side' \(Conv2D\) cannot be reached from the inputs of model 'm': it is called on the "
        r"output of 'conv', but its output does not lead to the model's outputs \(a disconnected branch\)"
    )
    assert batches_until_refused(model, x, y, logger, message) == 0


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'net'")
def test_subclassed_layer_never_called_is_refused(tmp_path, images12):
    """A layer a subclassed model tracks but never calls: ValueError naming it, after the first batch builds the model."""
    x, y, probe = images12
    model = SubclassedNet()
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = ActivationLogger(probe, log_dir=tmp_path, layers=["stem", "unused"])
    message = r"layer 'unused' \(Dense\) cannot be reached from the inputs of model 'net': model 'net' tracks it but its `call` never ran"
    assert batches_until_refused(model, x, y, logger, message) == 1
