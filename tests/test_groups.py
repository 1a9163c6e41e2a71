"""The step's per-layer work in groups: layers alike finished together, the lean and careful
steps, constant channels found from the sample first, and the byte bound of an epoch."""

import math

import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from tbviz.io import tags
from tbviz.io.png import encode_picture, largest_png, palette
from tbviz.io.summaries import LAYER_EXTRA_BYTES, LayerRecord, layer_summary
from tbviz.numerics import health, stats, summary
from tbviz.numerics.layout import BYTES_PER_BUDGET_PIXEL, Layout, fit_pixel_budget
from tbviz.numerics.pictures import PictureOptions
from tbviz.numerics.summary import LayerNumbers, LayerSummary, finish_group


def outputs(rng, shapes, nan_at=None):
    """Float32 layer outputs of 3 samples, ReLU-like, one of them with a dead channel."""
    made = [np.maximum(rng.normal(size=(3, *shape)), 0).astype(np.float32) for shape in shapes]
    made[0][..., 1] = 0.0
    if nan_at is not None:
        made[nan_at][1, 2, 3, 0] = np.nan
    return made


def finished(summaries, reduced, ranges, finite=True):
    """`finish_group`'s three tensors, as NumPy arrays."""
    return tuple(to_np(t) for t in finish_group(reduced, ranges, summaries, finite=finite))


@pytest.mark.parametrize("normalize", ["map", "layer", "fixed"])
def test_a_group_is_finished_as_each_of_its_layers_alone(normalize):
    """Layers alike finished together give each layer's pictures byte for byte and its
    numbers as finishing it alone does, each with its own fixed range."""
    rng = np.random.default_rng(0)
    options = PictureOptions(normalize=normalize, max_channels=16, max_size=64)
    # Different output shapes, maps alike: shrunk to one size (64 px for a 4x4 grid).
    shapes = [(40, 40, 16), (30, 30, 16), (40, 40, 20)]
    alike = [LayerSummary(options, Layout("maps", shape), True, health=True) for shape in shapes]
    assert len({s.group_key for s in alike}) == 1
    xs = outputs(rng, shapes)
    ranges = np.array([[0.0, 2.0], [np.nan, np.nan], [0.5, 1.5]], np.float32)
    reduced = [s.reduce(x) for s, x in zip(alike, xs, strict=True)]
    together = finished(alike, reduced, ranges)
    for i, (s, r) in enumerate(zip(alike, reduced, strict=True)):
        alone = finished([s], [r], ranges[i : i + 1])
        rows = slice(3 * i, 3 * (i + 1))
        np.testing.assert_array_equal(together[0][rows], alone[0])
        np.testing.assert_allclose(together[1][i], alone[1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together[2][rows], alone[2], rtol=1e-6)
    numbers = [LayerNumbers.unpack(v) for v in together[1]]
    assert [n.constant for n in numbers] == [1, 0, 0]
    if normalize == "fixed":
        assert [(n.lo, n.hi) for n in numbers][::2] == [(0.0, 2.0), (0.5, 1.5)]


def test_the_careful_step_pictures_a_clean_layer_as_the_lean_one_does():
    """Where no value is NaN/Inf, the careful step's pictures are the lean step's and its
    numbers theirs; where one is, the lean step only flags it and the careful one counts it."""
    rng = np.random.default_rng(1)
    options = PictureOptions(max_channels=16, max_size=64)
    s = LayerSummary(options, Layout("maps", (40, 40, 16)), True, health=True)
    clean, dirty = outputs(rng, [(40, 40, 16), (40, 40, 16)], nan_at=1)
    ranges = np.full((1, 2), np.nan, np.float32)
    lean = finished([s], [s.reduce(clean, finite=True)], ranges, finite=True)
    careful = finished([s], [s.reduce(clean, finite=False)], ranges, finite=False)
    np.testing.assert_array_equal(lean[0], careful[0])
    np.testing.assert_allclose(lean[1], careful[1], rtol=1e-5, atol=1e-6)
    assert LayerNumbers.unpack(lean[1][0]).nonfinite == 0
    flagged = finished([s], [s.reduce(dirty, finite=True)], ranges, finite=True)
    assert LayerNumbers.unpack(flagged[1][0]).nonfinite == 1  # a flag: run the careful step
    counted = finished([s], [s.reduce(dirty, finite=False)], ranges, finite=False)
    assert LayerNumbers.unpack(counted[1][0]).nonfinite == 1  # one NaN, counted
    assert (counted[0] == tags.NONFINITE_INDEX).sum() > 0


@pytest.mark.parametrize(
    "shape, channels_first",
    [((40, 40, 24), False), ((24, 40, 40), True), ((7, 7, 960), False), ((5, 5, 6), False)],
)
def test_constant_channels_from_the_sample_first_are_those_of_the_whole_output(shape, channels_first):
    """The sample's look first gives health's count exactly: none, dead channels, a channel
    constant in the sample only, an output small enough to be its own sample."""
    rng = np.random.default_rng(2)
    layout = Layout("maps", shape, channels_first)
    full = (4, *shape)
    axis = 1 if channels_first else 3
    channel_of = np.unravel_index(np.arange(math.prod(full)), full)[axis]
    sampled = np.zeros(math.prod(full), bool)
    sampled[:: stats.sample_stride(full)] = True
    cases = {"none": [], "dead": [0, 3], "sample only": [2]}
    for name, constant in cases.items():
        y = rng.normal(size=full).astype(np.float32).reshape(-1)
        for c in constant:
            y[channel_of == c] = 0.0 if c != 3 else 2.5
        if name == "sample only":
            unsampled = np.flatnonzero((channel_of == 2) & ~sampled)
            if len(unsampled) == 0:
                continue  # the sample is the whole output
            y[unsampled[len(unsampled) // 2]] = 1.0
        y = y.reshape(full)
        expected = to_np(health.constant_channels(y, layout))
        assert expected == (len(constant) if name != "sample only" else 0)
        assert to_np(summary._constant_channels(y, layout, stats.sample(y))) == expected, name


@pytest.mark.backend_independent
def test_an_epoch_of_noise_stays_within_its_bytes():
    """Whatever the pictures hold (uniform noise compresses hardly at all), an epoch planned
    by the budget is at most BYTES_PER_BUDGET_PIXEL bytes per pixel of it, statistics and
    health findings included; each PNG at most `largest_png`."""
    rng = np.random.default_rng(3)
    layouts = [Layout("maps", (56, 56, 64))] * 40 + [Layout("maps", (14, 14, 256))] * 40
    budget, probes = 1_500_000, 8
    settings = fit_pixel_budget(
        layouts, probes=probes, max_pixels=budget, max_channels=64, max_size=256,
        layer_bytes=LAYER_EXTRA_BYTES,
    )  # fmt: skip
    colours = palette("viridis")
    total = 0
    for k, (layout, (size, channels)) in enumerate(zip(layouts, settings, strict=True)):
        height, width = layout.picture(channels, size, 1)
        pictures = rng.integers(0, 256, (probes, height, width), dtype=np.uint8)
        for picture in pictures[:1]:
            assert len(encode_picture(picture, colours)) <= largest_png(height, width)
        findings = [
            tags.Finding(f"block_{k}/conv", kind, 3, "warning", 0.5, "x" * 120)
            for kind in (tags.DEAD, tags.SATURATED, tags.NONFINITE_FINDING)
        ]
        record = LayerRecord(
            f"block_{k:03d}/some_nested_model/conv",
            pictures,
            colours,
            scalars=dict.fromkeys(tags.SCALAR_KINDS + tags.HEALTH_SCALAR_KINDS + (tags.CHANGE,), 0.5),
            histogram=rng.random((30, 3)),
            findings=findings,
        )
        total += len(layer_summary(record)) + 40  # the event's framing
    assert total <= budget * BYTES_PER_BUDGET_PIXEL
