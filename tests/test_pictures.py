"""Exact tests of the numerics: maps, grids, normalisation, colour maps, tiling."""

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from tbviz.io.png import palette
from tbviz.io.tags import (
    LEVELS,
    NONFINITE_COLOR,
    NONFINITE_INDEX,
    SEPARATOR_COLOR,
    SEPARATOR_INDEX,
)
from tbviz.numerics import layout as layouts
from tbviz.numerics import pictures
from tbviz.numerics.layout import Layout
from tbviz.numerics.pictures import PictureOptions

SEP = SEPARATOR_INDEX


def to_maps(x, channels_first=False, max_channels=64, **options):
    """`pictures.to_maps` of `x` by its shape's default layout; returns ``(maps, grid)``."""
    layout = Layout.default(tuple(np.shape(x))[1:], channels_first)
    maps = pictures.to_maps(x, layout, max_channels=max_channels, **options)
    return maps, layout.grid(max_channels)


def render(x, options, **kw):
    """`pictures.render` of `x` by its shape's default layout."""
    return pictures.render(x, Layout.default(tuple(np.shape(x))[1:]), options, **kw)


def level(unit):
    """The documented quantisation: floor(v * 253 + 0.5)."""
    return np.floor(np.asarray(unit, np.float64) * (LEVELS - 1) + 0.5).astype(np.uint8)


@pytest.mark.parametrize(
    "count, expected",
    [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (7, (2, 4)), (10, (3, 4)), (16, (4, 4)),
     (32, (4, 8)), (64, (8, 8)), (96, (8, 12)), (512, (16, 32))],
)  # fmt: skip
def test_grid_shape(count, expected):
    """Channel counts get near-square grids; 32 gives the article's 4 x 8."""
    assert layouts.grid_shape(count) == expected
    rows, cols = expected
    assert rows * cols >= count > (rows - 1) * cols


def test_block_shape_is_exact_factorisation():
    """Dense units form a block with no empty cells, as square as the count allows."""
    assert layouts.block_shape(500) == (20, 25)
    assert layouts.block_shape(10) == (2, 5)
    assert layouts.block_shape(13) == (1, 13)


def test_palette_layout():
    """254 evenly spaced levels of the colour map, then the separator and NaN colours."""
    gray = palette("gray")
    assert gray.shape == (256, 3) and gray.dtype == np.uint8
    expected = np.round(np.arange(LEVELS) * 255 / (LEVELS - 1))
    np.testing.assert_array_equal(gray[:LEVELS, 0], expected)
    np.testing.assert_array_equal(gray[SEPARATOR_INDEX], SEPARATOR_COLOR)
    np.testing.assert_array_equal(gray[NONFINITE_INDEX], NONFINITE_COLOR)
    viridis = palette("viridis")
    np.testing.assert_array_equal(viridis[0], [68, 1, 84])  # viridis' dark purple end
    np.testing.assert_array_equal(viridis[LEVELS - 1], [253, 231, 37])  # and its yellow end


def test_unknown_cmap_names_close_matches():
    """A misspelt colour map is refused with the nearest real names."""
    with pytest.raises(ValueError, match=r"viridis.*Received: cmap='viridiss'"):
        palette("viridiss")


def test_to_maps_channels_last_and_first_agree():
    """A rank-4 output gives one map per channel, the same for both data formats."""
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # N, H, W, C
    maps, grid = to_maps(x)
    assert maps.shape == (2, 3, 4, 5) and grid == (2, 3)
    np.testing.assert_array_equal(maps[1, :, :, 2], x[1, :, :, 2])
    first, grid_first = to_maps(np.transpose(x, [0, 3, 1, 2]), channels_first=True)
    np.testing.assert_array_equal(first, maps)
    assert grid_first == grid


def test_to_maps_caps_channels():
    """Only the first max_channels channels are kept."""
    maps, grid = to_maps(np.zeros((1, 2, 2, 100), np.float32), max_channels=32)
    assert maps.shape == (1, 2, 2, 32) and grid == (4, 8)


def test_to_maps_other_ranks():
    """Ranks 2, 3 and 5 become a unit block, a channel x time strip and depth tiles."""
    dense = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)
    maps, grid = to_maps(dense)
    assert maps.shape == (2, 2, 3, 1) and grid == (1, 1)
    np.testing.assert_array_equal(maps[1, :, :, 0], [[6, 7, 8], [9, 10, 11]])

    seq = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)  # N, T, C
    maps, grid = to_maps(seq)
    assert maps.shape == (2, 3, 5, 1) and grid == (1, 1)
    np.testing.assert_array_equal(maps[0, :, :, 0], seq[0].T)

    vol = np.random.default_rng(0).random((1, 4, 3, 3, 2)).astype(np.float32)  # N, D, H, W, C
    maps, grid = to_maps(vol)
    assert maps.shape == (1, 3, 3, 8) and grid == (2, 4)
    np.testing.assert_array_equal(maps[0, :, :, 4 + 2], vol[0, 2, :, :, 1])  # channel 1, depth 2


def test_to_maps_casts_float16():
    """float16 activations are computed in float32."""
    maps, _ = to_maps(np.ones((1, 2, 2, 1), np.float16))
    assert keras.backend.standardize_dtype(maps.dtype) == "float32"


def test_tile_size_fits_max_size():
    """Maps shrink, keeping aspect, so that the grid with separators fits max_size."""
    assert layouts.tile_size((27, 27), (4, 8), max_size=512, padding=1) == (27, 27)
    h, w = layouts.tile_size((112, 112), (8, 8), max_size=256, padding=1)
    assert (h, w) == (31, 31) and 8 * w + 7 <= 256


def test_downsample_averages_areas():
    """Shrinking by 2 averages 2x2 blocks."""
    images = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    small = to_np(pictures.downsample(images, (2, 2)))
    np.testing.assert_allclose(small[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    # 3 -> 2 pixels: each output pixel covers 1.5 input pixels, the middle one half each.
    row = to_np(pictures.downsample(np.array([[[[3.0], [6.0], [9.0]]]], np.float32), (1, 2)))
    np.testing.assert_allclose(row.ravel(), [(3 + 0.5 * 6) / 1.5, (0.5 * 6 + 9) / 1.5], rtol=1e-6)


@pytest.mark.parametrize("channels_first", [False, True])
def test_to_maps_shrinks_before_transposing(channels_first):
    """With max_size, each map is the area average of the full-size map, in either data format."""
    x = np.random.default_rng(2).random((2, 8, 8, 4)).astype(np.float32)
    maps, grid = to_maps(x, max_size=9, padding=1)  # 2x2 grid of 4x4 maps: 4 + 1 + 4
    assert grid == (2, 2) and maps.shape == (2, 4, 4, 4)
    expected = x.reshape(2, 4, 2, 4, 2, 4).mean(axis=(2, 4))
    if channels_first:
        maps, _ = to_maps(np.transpose(x, [0, 3, 1, 2]), channels_first=True, max_size=9)
    np.testing.assert_allclose(maps, expected, rtol=1e-6)


def test_to_maps_shrinks_volumes_and_sequences():
    """Depth slices and heat strips shrink too, to fit max_size."""
    vol = np.random.default_rng(0).random((1, 2, 8, 8, 3)).astype(np.float32)
    maps, grid = to_maps(vol, max_size=17)  # 3 channel rows x 2 depth columns
    assert grid == (3, 2) and maps.shape == (1, 5, 5, 6)  # 3 rows of 5 + 2 separators = 17
    np.testing.assert_allclose(
        to_np(maps)[0, :, :, 1],
        to_np(pictures.downsample(vol[:, 1, :, :, :1], (5, 5)))[0, :, :, 0],
        rtol=1e-6,
    )
    strip, _ = to_maps(np.ones((1, 100, 6), np.float32), max_size=50)
    assert strip.shape == (1, 6, 50, 1)  # time shrinks; the 6 channels keep their rows
    long, _ = to_maps(np.ones((1, 2000, 300), np.float32), max_size=256, max_channels=300)
    assert long.shape == (1, 256, 256, 1)  # each axis shrinks on its own
    cut, _ = to_maps(np.tile(np.arange(300, dtype=np.float32), (1, 2000, 1)), max_size=256)
    assert cut.shape == (1, 64, 256, 1)  # the first max_channels=64 channels, as for images
    np.testing.assert_allclose(to_np(cut)[0, :, 0, 0], np.arange(64), rtol=1e-5)


def test_value_range_per_map_and_per_layer():
    """'map' gives each map its own min/max; otherwise one range covers all maps and samples."""
    maps = np.array([[[[0, 1]], [[10, 30]]], [[[-5, 2]], [[4, 4]]]], np.float32)  # (N, M, h, w)
    maps = maps.transpose(0, 2, 3, 1)  # (N, h, w, M) = (2, 1, 2, 2)
    lo, hi = pictures.value_range(maps, per_map=True)
    np.testing.assert_array_equal(to_np(lo).ravel(), [0, 10, -5, 4])
    np.testing.assert_array_equal(to_np(hi).ravel(), [1, 30, 2, 4])
    lo, hi = pictures.value_range(maps, per_map=False)
    assert (to_np(lo).item(), to_np(hi).item()) == (-5.0, 30.0)


def test_value_range_percentile_ignores_outlier():
    """A single outlier is clipped instead of squeezing every other value to black."""
    values = np.concatenate([np.linspace(0, 1, 199), [1000.0]]).astype(np.float32)
    maps = values.reshape(1, 10, 20, 1)
    lo, hi = pictures.value_range(maps, per_map=True, clip_percentile=1.0)
    assert to_np(lo).item() == pytest.approx(values[2]) and to_np(hi).item() == pytest.approx(values[197])
    _, hi_raw = pictures.value_range(maps, per_map=True)
    assert to_np(hi_raw).item() == 1000.0


def _nearest_rank(values, q):
    finite = np.sort(values[np.isfinite(values)])
    return finite[int(np.round(np.float32(q) * np.float32(len(finite) - 1)))]


@pytest.mark.parametrize("clip", [0.0, 1.0, 5.0, 25.0])
@pytest.mark.parametrize("per_map", [True, False])
def test_value_range_percentiles_match_numpy(clip, per_map):
    """Nearest-rank percentiles, per map or per layer, as NumPy ranks them: with every value
    finite (the partial ranking) and with a NaN in another map (the sorting)."""
    maps = np.random.default_rng(3).normal(size=(3, 9, 7, 5)).astype(np.float32)  # (N, h, w, M)
    for data in (maps, np.where(np.arange(5) == 4, np.nan, maps).astype(np.float32)):
        lo, hi = pictures.value_range(data, per_map=per_map, clip_percentile=clip)
        groups = data.transpose(0, 3, 1, 2).reshape(15, -1) if per_map else data.reshape(1, -1)
        for got, q in ((lo, clip / 100), (hi, 1 - clip / 100)):
            expected = [_nearest_rank(g, q) if np.isfinite(g).any() else 0 for g in groups]
            np.testing.assert_array_equal(to_np(got).ravel(), expected)


def test_value_range_ignores_nonfinite_and_can_be_symmetric():
    """NaN/Inf do not enter the range; symmetric ranges centre 0."""
    maps = np.array([np.nan, -2.0, 1.0, np.inf], np.float32).reshape(1, 2, 2, 1)
    lo, hi = pictures.value_range(maps, per_map=True)
    assert (to_np(lo).item(), to_np(hi).item()) == (-2.0, 1.0)
    lo, hi = pictures.value_range(maps, per_map=True, symmetric=True)
    assert (to_np(lo).item(), to_np(hi).item()) == (-2.0, 2.0)
    empty = np.full((1, 1, 2, 1), np.nan, np.float32)
    assert [to_np(v).item() for v in pictures.value_range(empty, per_map=True)] == [0.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_constant_map_gives_no_nan(dtype):
    """A constant map (dead channel) normalises to 0, in float16 too."""
    maps, _ = to_maps(np.full((1, 3, 3, 1), 7.0, dtype))
    lo, hi = pictures.value_range(maps, per_map=True)
    unit = to_np(pictures.normalize(maps, lo, hi))
    assert not np.isnan(unit).any() and (unit == 0).all()


def test_quantize_exact_levels_and_nonfinite_marker():
    """Values land on level floor(v * 253 + 0.5); NaN and Inf get the marker index."""
    unit = np.array([[0.0, 0.5, 1.0, np.nan, np.inf, 2 / 253, 0.3]], np.float32)
    got = to_np(pictures.quantize(unit))
    np.testing.assert_array_equal(got[0], [0, 127, 253, NONFINITE_INDEX, NONFINITE_INDEX, 2, 76])


def test_tile_layout_with_separators():
    """Tiles go row by row with 1-pixel separators; empty cells are separator-coloured."""
    maps = np.zeros((1, 2, 2, 3), np.uint8)  # (N, h, w, M)
    for m in range(3):
        maps[0, :, :, m] = 10 * (m + 1)
    image = to_np(pictures.tile(maps, (2, 2), padding=1))
    assert image.shape == (1, 5, 5)
    np.testing.assert_array_equal(image[0, 0:2, 0:2], 10)
    np.testing.assert_array_equal(image[0, 0:2, 3:5], 20)
    np.testing.assert_array_equal(image[0, 3:5, 0:2], 30)
    np.testing.assert_array_equal(image[0, 3:5, 3:5], SEP)
    np.testing.assert_array_equal(image[0, 2, :], SEP)
    np.testing.assert_array_equal(image[0, :, 2], SEP)
    assert to_np(pictures.tile(maps, (1, 3), padding=0)).shape == (1, 2, 6)


def test_render_exact_pixels_per_map():
    """A 2-channel map renders to the exact levels of its per-map min-max scaling."""
    x = np.zeros((1, 2, 2, 2), np.float32)
    x[0, :, :, 0] = [[0, 1], [2, 3]]
    x[0, :, :, 1] = [[-1, -1], [-1, 1]]
    options = PictureOptions(cmap="gray", clip_percentile=0.0)
    image, _, _ = render(x, options)
    image = to_np(image)
    assert image.shape == (1, 2, 5) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, :, :2], level([[0, 1 / 3], [2 / 3, 1]]))
    np.testing.assert_array_equal(image[0, :, 2], SEP)
    np.testing.assert_array_equal(image[0, :, 3:], [[0, 0], [0, LEVELS - 1]])


def test_render_layer_and_fixed_ranges():
    """'layer' shares one range; 'fixed' uses the range it is given instead of the measured one."""
    x = np.zeros((1, 1, 2, 2), np.float32)
    x[0, 0, :, 0] = [0, 4]
    x[0, 0, :, 1] = [1, 2]
    layer = PictureOptions(normalize="layer", cmap="gray", clip_percentile=0.0)
    image, lo, hi = render(x, layer)
    assert (to_np(lo).item(), to_np(hi).item()) == (0.0, 4.0)
    np.testing.assert_array_equal(to_np(image)[0, 0, [0, 1, 3, 4]], level([0, 1, 0.25, 0.5]))
    fixed = PictureOptions(normalize="fixed", cmap="gray", clip_percentile=0.0)
    image, lo, hi = render(x, fixed, fixed_range=(np.float32(0), np.float32(8)))
    assert (to_np(lo).item(), to_np(hi).item()) == (0.0, 8.0)
    np.testing.assert_array_equal(to_np(image)[0, 0, [0, 1, 3, 4]], level([0, 0.5, 0.125, 0.25]))
    _, lo, hi = render(x, fixed, fixed_range=(np.float32(np.nan), np.float32(np.nan)))
    assert (to_np(lo).item(), to_np(hi).item()) == (0.0, 4.0)


@pytest.mark.parametrize("normalize", ["map", "layer"])
def test_render_all_at_once_and_one_sample_at_a_time_agree(normalize):
    """Maps as large as the output are pictured one sample at a time, smaller ones all at
    once; both give the same pixels and ranges."""
    x = np.random.default_rng(5).normal(size=(3, 6, 5, 130)).astype(np.float32)
    x[1, 2, 3, 7] = np.nan
    options = PictureOptions(normalize=normalize, max_channels=64)
    at_once = render(x, options)  # 64 of 130 channels: maps under half the output
    per_sample = render(x[..., :64], options)  # maps are the whole output
    np.testing.assert_array_equal(at_once[0], per_sample[0])
    assert at_once[0][1, 2, 3 + 7 * 6] == NONFINITE_INDEX
    for a, b in zip(at_once[1:], per_sample[1:], strict=True):
        np.testing.assert_array_equal(np.broadcast_to(a, b.shape), b)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_render_marks_nan_and_inf(value):
    """NaN and +-Inf pixels get the marker index, not the end of the colour range."""
    x = np.random.default_rng(6).random((1, 4, 4, 1)).astype(np.float32)
    x[0, 1, 2, 0] = value
    image = to_np(render(x, PictureOptions())[0])
    assert image[0, 1, 2] == NONFINITE_INDEX
    assert (np.delete(image.ravel(), 6) < LEVELS).all()


def test_render_does_not_modify_input():
    """The caller's array is left as it was."""
    x = np.random.default_rng(1).random((2, 4, 4, 3)).astype(np.float32)
    before = x.copy()
    render(x, PictureOptions())
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"normalize": "global"}, "normalize"),
        ({"clip_percentile": 50}, "clip_percentile"),
        ({"max_channels": 0}, "max_channels"),
        ({"max_size": 2.5}, "max_size"),
        ({"padding": -1}, "padding"),
    ],
)
def test_options_are_validated(kwargs, message):
    """Bad picture options are refused with the argument's name and the value received."""
    with pytest.raises(ValueError, match=f"{message}.*Received"):
        PictureOptions(**kwargs)


@pytest.mark.parametrize(
    "size, new_size", [(112, 31), (56, 28), (7, 1), (10, 9), (13, 5), (224, 82), (3, 2)]
)
def test_downsample_is_the_area_weighted_mean(size, new_size):
    """Shrinking gives each output pixel the mean of the input pixels it covers, weighted by
    how much of each it covers (each row of weights sums to 1), along both axes."""
    weights = pictures.area_weights(size, new_size)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert ((weights > 0).sum(axis=1) <= -(-size // new_size) + 1).all()  # a few pixels each
    x = np.random.default_rng(size).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    expected = np.einsum(
        "ih,jw,bhwk->bijk", weights, pictures.area_weights(size + 1, new_size), x.astype(np.float64)
    )
    got = to_np(pictures.downsample(x, (new_size, new_size)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_downsample_marks_only_the_pixels_covering_a_nonfinite_one(value):
    """A NaN/Inf makes NaN exactly the shrunk pixels whose area covers it; the others are the
    area means they are without it (a matrix product alone would spread it along its line)."""
    x = np.random.default_rng(7).normal(size=(2, 12, 10, 3)).astype(np.float32)
    x[1, 5, 7, 2] = value
    got = to_np(pictures.downsample(x, (4, 3)))
    expected = np.einsum(
        "ih,jw,bhwk->bijk",
        pictures.area_weights(12, 4),
        pictures.area_weights(10, 3),
        np.where(np.isfinite(x), x, 0.0).astype(np.float64),
    )
    covering = np.zeros(got.shape, bool)
    rows = np.flatnonzero(pictures.area_weights(12, 4)[:, 5] > 0)
    cols = np.flatnonzero(pictures.area_weights(10, 3)[:, 7] > 0)
    covering[1, rows[:, None], cols[None, :], 2] = True
    assert np.isnan(got[covering]).all()
    np.testing.assert_allclose(got[~covering], expected[~covering], rtol=1e-5, atol=1e-5)
    # The same where the caller has checked and says so.
    np.testing.assert_array_equal(to_np(pictures.downsample(x, (4, 3), finite=False)), got)
