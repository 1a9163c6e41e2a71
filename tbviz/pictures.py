"""How one layer's output becomes one picture per probe sample.

Pure numerics in ``keras.ops``, one implementation for every backend: every
function takes and returns tensors of the backend Keras runs on (NumPy arrays
work too), runs eagerly or inside the backend's compiled step (a
``tf.function``, a ``jax.jit``), and never modifies its input. Shapes must be
known. The pipeline, in `render`:

1. `to_maps`: the output of any supported rank becomes a stack of 2-D maps,
   channels last, ``(N, h, w, M)``, and a grid shape ``(rows, cols)``:

   - ``(N, H, W, C)`` (or ``(N, C, H, W)`` for ``channels_first``): one map
     per channel, the first `max_channels` channels, in a near-square grid;
   - ``(N, D, H, W, C)`` (or channels first): one row per channel, one column
     per depth slice;
   - ``(N, T, C)``: one time x channel heat strip (channels down, time across;
     each axis shrinks to ``max_size`` on its own, so long sequences keep
     their channels);
   - ``(N, units)``: one block of unit intensities, as square as the unit
     count allows (500 units -> 20 x 25).
   On the way, maps shrink (`downsample`: area averaging, aspect kept) so
   that the tiled grid fits in ``max_size`` x ``max_size`` pixels; they never
   grow.
2. `value_range` + `normalize`: values map to [0, 1] by a range taken at
   percentiles so one outlier cannot wash a map out; constant maps give 0,
   never NaN.
3. `quantize`: [0, 1] becomes one of `LEVELS` (254) colour levels,
   ``floor(v * 253 + 0.5)``, clipped; NaN/Inf pixels get `NONFINITE_INDEX`.
4. `tile`: maps are laid out in the grid with `padding`-pixel separators
   (`SEPARATOR_INDEX`); empty cells are separator-coloured too.

Pictures are thus 8-bit *palette indices*: `palette` turns a colour map into
the 256 colours they index (254 levels of the map, the separator colour, the
NaN marker). Written as palette PNGs they take about a third of the bytes and
encoding time of RGB PNGs; TensorBoard and every PNG reader show them as the
same colours.

Memory: maps stay channels last, the layout of the layer's output, until
they are 8-bit. Beyond the maps themselves, `render` needs one float copy of
them at a time (for a per-map percentile range, then for normalising) plus
the 8-bit result.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from keras import ops

# The palette layout is part of the on-disk contract (`tbviz.metadata`).
from tbviz.metadata import LEVELS, NONFINITE_COLOR, NONFINITE_INDEX, SEPARATOR_INDEX

NORMALIZATIONS = ("map", "layer", "fixed")
SEPARATOR_COLOR = (255, 255, 255)
_EPSILON = 1e-12


def grid_shape(count: int) -> tuple[int, int]:
    """Returns ``(rows, cols)`` of a near-square grid holding `count` cells.

    An exact factorisation with ``rows <= cols <= 2 * rows`` is preferred
    (32 -> 4 x 8, the article's grid; 64 -> 8 x 8); otherwise the grid is
    ``floor(sqrt(count))`` rows with the last one partly empty (7 -> 2 x 4).
    """
    if count < 1:
        raise ValueError(f"A grid needs at least one cell. Received: count={count}")
    rows = math.isqrt(count)
    for r in range(rows, 0, -1):
        if count % r == 0 and count // r <= 2 * r:
            return r, count // r
    return rows, math.ceil(count / rows)


def block_shape(units: int) -> tuple[int, int]:
    """Returns ``(rows, cols)`` with ``rows * cols == units`` and rows <= cols, as square as possible."""
    rows = math.isqrt(units)
    while units % rows:
        rows -= 1
    return rows, units // rows


def tile_size(
    map_hw: tuple[int, int], grid: tuple[int, int], *, max_size: int | None, padding: int
) -> tuple[int, int]:
    """Returns the ``(h, w)`` each map is shrunk to so the grid fits in ``max_size`` px.

    Maps never grow; the aspect ratio is kept; None means no limit.
    """
    (h, w), (rows, cols) = map_hw, grid
    if max_size is None:
        return h, w
    scale = min(
        1.0,
        max(1, max_size - (rows - 1) * padding) / (rows * h),
        max(1, max_size - (cols - 1) * padding) / (cols * w),
    )
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def _layout(
    shape: tuple, channels_first: bool, max_channels: int
) -> tuple[tuple[int, int], tuple[int, int], bool] | None:
    """How `to_maps` lays out an output of `shape` (no batch axis): ``(cell (h, w) before
    shrinking, grid (rows, cols), strip)``; a strip's axes shrink each on its own. None if
    a size it depends on is unknown."""
    shape = tuple(shape)
    if len(shape) == 1:  # (units,): one block
        return (block_shape(shape[0]), (1, 1), False) if shape[0] else None
    if len(shape) == 2:  # (T, C) or (C, T): one strip, channels down
        cell = shape if channels_first else shape[::-1]
        return (cell, (1, 1), True) if None not in cell else None
    if len(shape) == 3:
        channels, *map_hw = shape if channels_first else (shape[2], *shape[:2])
        if None in shape:
            return None
        return tuple(map_hw), grid_shape(min(channels, max_channels)), False
    if len(shape) == 4:
        channels, depth, *map_hw = shape if channels_first else (shape[3], *shape[:3])
        if None in shape:
            return None
        return tuple(map_hw), (min(channels, max(1, max_channels // depth)), depth), False
    return None


def map_grid(shape: tuple, *, channels_first: bool = False, max_channels: int = 64) -> tuple[int, int]:
    """The ``(rows, cols)`` grid `to_maps` lays out the maps of an output of `shape` (no batch axis) in."""
    layout = _layout(shape, channels_first, max_channels)
    if layout is None:
        raise ValueError(f"Expected a layer output of known shape. Received: shape={tuple(shape)}")
    return layout[1]


def _cell_size(
    layout: tuple, max_size: int | None, padding: int
) -> tuple[int, int]:
    cell, grid, strip = layout
    if strip:
        limit = max_size or max(cell)
        return min(cell[0], limit), min(cell[1], limit)
    return tile_size(cell, grid, max_size=max_size, padding=padding)


def picture_shape(
    shape: tuple,
    *,
    channels_first: bool = False,
    max_channels: int = 64,
    max_size: int | None = None,
    padding: int = 1,
) -> tuple[int, int] | None:
    """The ``(H, W)`` of the pictures `render` makes of an output of `shape` (no batch axis).

    Computed from the shape alone, as `to_maps` and `tile` lay the picture
    out; None if a size it depends on is unknown.
    """
    layout = _layout(shape, channels_first, max_channels)
    if layout is None:
        return None
    (rows, cols), (h, w) = layout[1], _cell_size(layout, max_size, padding)
    return rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding


def channels_shown(shape: tuple, *, channels_first: bool = False, max_channels: int = 64) -> int:
    """How many channels of an output of `shape` (no batch axis) its picture shows; 1 for
    Dense and sequence outputs, whose picture is one block or strip of all channels."""
    shape = tuple(shape)
    if len(shape) == 3:
        channels = shape[0] if channels_first else shape[2]
        return min(channels, max_channels) if channels else max_channels
    if len(shape) == 4:
        channels, depth = (shape[0], shape[1]) if channels_first else (shape[3], shape[0])
        keep = max(1, max_channels // depth) if depth else 1
        return min(channels, keep) if channels else keep
    return 1


MIN_MAP_SIZE = 8


def fit_pixel_budget(
    layers: list[tuple[tuple, bool]],
    *,
    probes: int,
    max_pixels: int | None,
    max_channels: int,
    max_size: int,
    padding: int = 1,
) -> list[tuple[int, int]]:
    """Per layer, the ``(max_size, max_channels)`` that keep one epoch's pictures within a budget.

    One epoch is ``probes`` pictures of each layer; together they may have at
    most `max_pixels` pixels. Under the budget every layer keeps `max_size`
    and `max_channels`. Over it, one common limit on the picture side
    replaces `max_size`, the largest that fits: large pictures shrink first
    and small ones (deep layers' small maps) keep their size until the limit
    reaches them. No map (a channel's cell; the whole picture of a Dense or
    sequence layer) shrinks below `MIN_MAP_SIZE` pixels on its longer side
    (nor grows to it). Only if that floor does not fit are channels dropped:
    `max_channels` is halved until it does (one channel at the floor is the
    least a layer gets, budget or not).

    Args:
        layers: each layer's output shape without the batch axis, and whether
            it is channels first.
        probes: pictures per layer and epoch.
        max_pixels: the budget; None: no budget.
        max_channels, max_size, padding: as in `PictureOptions`.
    """
    unchanged = [(max_size, max_channels)] * len(layers)
    if max_pixels is None:
        return unchanged

    def pixels(settings: list[tuple[int, int]]) -> int:
        total = 0
        for (shape, channels_first), (size, channels) in zip(layers, settings, strict=True):
            hw = picture_shape(
                shape,
                channels_first=channels_first,
                max_channels=channels,
                max_size=size,
                padding=padding,
            )
            total += hw[0] * hw[1] if hw else size * size  # unknown: at most the whole square
        return probes * total

    if pixels(unchanged) <= max_pixels:
        return unchanged

    def floor(shape: tuple, channels_first: bool, channels: int) -> int:
        """The smallest picture side that keeps this layer's maps at the floor."""
        layout = _layout(shape, channels_first, channels)
        if layout is None:
            return MIN_MAP_SIZE
        wanted = min(MIN_MAP_SIZE, max(layout[0]))
        low, high = 1, max_size
        while low < high:
            middle = (low + high) // 2
            if max(_cell_size(layout, middle, padding)) >= wanted:
                high = middle
            else:
                low = middle + 1
        return low

    def at(limit: int, channels: int) -> list[tuple[int, int]]:
        """Every layer's settings under a common `limit`, none below its floor."""
        floors = [floor(shape, first, channels) for shape, first in layers]
        return [(min(max_size, max(limit, f)), channels) for f in floors]

    channels = max_channels
    while channels > 1 and pixels(at(1, channels)) > max_pixels:
        channels = max(1, channels // 2)
    low, high = 1, max_size  # the largest common limit that fits (1 if none does)
    while low < high:
        middle = (low + high + 1) // 2
        if pixels(at(middle, channels)) <= max_pixels:
            low = middle
        else:
            high = middle - 1
    return at(low, channels)


def area_weights(size: int, new_size: int) -> np.ndarray:
    """The ``(new_size, size)`` matrix that shrinks an axis of `size` pixels by area averaging.

    Output pixel ``i`` covers ``[i * s, (i + 1) * s)`` of the input, ``s = size /
    new_size``, and is the mean of the input pixels weighted by how much of each
    it covers (TensorFlow's ``area`` resizing).
    """
    scale = size / new_size
    start = np.arange(new_size)[:, np.newaxis] * scale
    pixel = np.arange(size)[np.newaxis, :]
    overlap = np.minimum(start + scale, pixel + 1) - np.maximum(start, pixel)
    return (np.clip(overlap, 0.0, None) / scale).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _area_matrix(size: int, new_size: int) -> np.ndarray:
    """`area_weights`, made once per pair of sizes (shared by every call: not to be modified)."""
    return area_weights(size, new_size)


def _shrink_axis(x: Any, axis: int, new_size: int) -> Any:
    """Area-averages `axis` (1 or 2) of float32 ``(B, H, W, K)`` `x` down to `new_size` pixels.

    One batched matrix product with the `area_weights`, on a reshaped view of
    `x` (no transposed copy): ``(new_size, H) @ (B, H, W * K)``, or
    ``(new_size, W) @ (B * H, W, K)``. Each output pixel multiplies every
    input pixel of its line, most of them by 0, but one product runs faster
    than the few gathers, products and sums of only the pixels each output
    pixel covers (3 to 14 of them at the shrink factors of 2 to 12 of a
    layer's maps): 0.14 vs 1.5 ms for ``(8, 112, 112, 32)`` to 9 x 9 on 2
    cores, 3.4 vs 7.8 ms to 63 x 63 (``(8, 112, 112, 64)``).
    """
    weights = ops.convert_to_tensor(_area_matrix(x.shape[axis], new_size))
    b, h, w, k = x.shape
    if axis == 1:
        return ops.reshape(ops.matmul(weights, ops.reshape(x, [b, h, w * k])), [b, new_size, w, k])
    return ops.reshape(ops.matmul(weights, ops.reshape(x, [b * h, w, k])), [b, h, new_size, k])


def downsample(
    images: Any, size: tuple[int, int], channels: int | None = None, *, finite: Any = None
) -> Any:
    """Shrinks ``(B, H, W, K)`` to ``(B, *size, K)`` float32 by area averaging.

    The same numbers on every backend: TensorFlow's ``area`` resizing (see
    `area_weights`), one axis at a time; an axis that keeps its size is left
    alone. With `channels`, only the first `channels` of K are kept (cut
    first, so that no more than they are copied). A shrunk pixel is NaN if
    any input pixel it covers is NaN or infinite, and only then.

    `finite` says whether `images` may hold NaN/Inf (see `when_finite`): a
    matrix product spreads one NaN along its whole line, so then the
    non-finite pixels are shrunk as a mask of their own.
    """
    (height, width), (new_height, new_width) = images.shape[1:3], size
    if channels is not None and channels < images.shape[3]:
        images = images[..., :channels]
    images = ops.cast(images, "float32")
    if (new_height, new_width) == (height, width):
        return images

    def shrink(x: Any) -> Any:
        if new_height != height:
            x = _shrink_axis(x, 1, new_height)
        if new_width != width:
            x = _shrink_axis(x, 2, new_width)
        return x

    def masked() -> Any:
        bad = ops.logical_not(ops.isfinite(images))
        shrunk = shrink(ops.where(bad, 0.0, images))
        return ops.where(shrink(ops.cast(bad, "float32")) > 0.0, np.nan, shrunk)

    return when_finite(finite, images, lambda: shrink(images), masked)


def when_finite(finite: Any, x: Any, lean: Any, careful: Any) -> Any:
    """``lean()`` if `x` holds no NaN/Inf, else ``careful()``.

    `finite`: True or False when the caller knows; a boolean scalar tensor
    (the check made once for a whole layer, see `tbviz.summarize`), which
    picks a branch at run time; None to check `x` here (one sum).
    """
    if finite is None:
        finite = _all_finite(x)
    if isinstance(finite, bool):
        return lean() if finite else careful()
    return ops.cond(finite, lean, careful)


def to_maps(
    x: Any,
    *,
    channels_first: bool = False,
    max_channels: int = 64,
    max_size: int | None = None,
    padding: int = 1,
    finite: Any = None,
) -> tuple[Any, tuple[int, int]]:
    """Turns a layer output of rank 2 to 5 into float32 maps ``(N, h, w, M)`` and a grid shape.

    Map ``m`` is ``maps[:, :, :, m]``, for grid cell ``divmod(m, cols)``.
    Channels past `max_channels` are dropped first and maps are shrunk (see
    `tile_size`) before any transpose, so no full-size copy of a large
    activation is made beyond the float32 one a float16 output needs.

    Args:
        x: the layer's output for N probe samples, of a known shape (float16 is fine).
        channels_first: the layer's ``data_format`` is ``channels_first``.
            Defaults to `False`.
        max_channels: at most this many channels are kept (the first ones).
            Defaults to `64`.
        max_size: the grid of maps, with separators, fits in
            ``max_size x max_size`` pixels; None: maps keep their size.
            Defaults to `None`.
        padding: separator width the grid will get. Defaults to `1`.
        finite: whether `x` may hold NaN/Inf, see `when_finite`. Defaults to
            `None` (checked).
    """
    x = ops.convert_to_tensor(x)
    rank = len(x.shape)
    if rank not in (2, 3, 4, 5):
        raise ValueError(f"Expected a layer output of rank 2 to 5. Received: shape={tuple(x.shape)}")
    if None in tuple(x.shape):
        raise ValueError(f"Expected a layer output of known shape. Received: shape={tuple(x.shape)}")
    n = x.shape[0]

    def shrink(images: Any, grid: tuple[int, int]) -> Any:
        size = tile_size(tuple(images.shape[1:3]), grid, max_size=max_size, padding=padding)
        return downsample(images, size, finite=finite)

    if rank == 2:  # (N, units): one block of unit intensities
        rows, cols = block_shape(x.shape[1])
        return shrink(ops.reshape(x, [n, rows, cols, 1]), (1, 1)), (1, 1)
    if rank == 3:  # (N, T, C): one heat strip, channels down, time across
        strip = x if channels_first else ops.transpose(x, [0, 2, 1])
        strip = ops.expand_dims(strip, -1)
        # Each axis shrinks on its own: a long sequence must not squeeze its channels away.
        limit = max_size or max(strip.shape[1:3])
        size = (min(strip.shape[1], limit), min(strip.shape[2], limit))
        return downsample(strip, size, finite=finite), (1, 1)
    if rank == 4:  # one map per channel
        channels = min(x.shape[1] if channels_first else x.shape[3], max_channels)
        grid = grid_shape(channels)
        if not channels_first:
            size = tile_size(tuple(x.shape[1:3]), grid, max_size=max_size, padding=padding)
            return downsample(x, size, channels=channels, finite=finite), grid
        x = x[:, :channels]
        small = shrink(ops.reshape(x, [n * channels, x.shape[2], x.shape[3], 1]), grid)
        small = ops.reshape(small, [n, channels, small.shape[1], small.shape[2]])
        return ops.transpose(small, [0, 2, 3, 1]), grid
    # rank 5: one row per channel, one column per depth slice
    depth = x.shape[2] if channels_first else x.shape[1]
    keep = max(1, max_channels // depth)
    x = x[:, :keep] if channels_first else x[..., :keep]
    channels = x.shape[1] if channels_first else x.shape[4]
    grid = (channels, depth)
    if channels_first:  # (N, C, D, H, W)
        small = shrink(ops.reshape(x, [n * channels * depth, x.shape[3], x.shape[4], 1]), grid)
        small = ops.reshape(small, [n, channels * depth, small.shape[1], small.shape[2]])
        return ops.transpose(small, [0, 2, 3, 1]), grid
    small = shrink(ops.reshape(x, [n * depth, x.shape[2], x.shape[3], channels]), grid)
    small = ops.reshape(small, [n, depth, small.shape[1], small.shape[2], channels])
    small = ops.transpose(small, [0, 2, 3, 4, 1])  # (N, h, w, C, D): map c * D + d
    return ops.reshape(small, [n, small.shape[1], small.shape[2], channels * depth]), grid


def _rank(q: float, count: int) -> int:
    """The nearest rank of quantile `q` among `count` sorted values, rounded half to even as every backend's ``round`` does."""
    return int(np.round(np.float32(q) * np.float32(max(count - 1, 0))))


def _quantiles(rows: Any, low: float, high: float) -> tuple[Any, Any]:
    """Nearest-rank quantiles of each row of ``(B, K)``, every value finite.

    Only the few values beyond each quantile are ranked (``top_k``), so no
    sorted copy of the rows is made.
    """
    count = rows.shape[-1]
    lo_rank, hi_rank = _rank(low, count), _rank(high, count)
    if hi_rank == count - 1:
        hi = ops.max(rows, axis=-1)
    else:  # the (count - hi_rank)-th largest
        hi = ops.top_k(rows, count - hi_rank, sorted=True)[0][:, -1]
    if lo_rank == 0:
        return ops.min(rows, axis=-1), hi
    # The (lo_rank + 1)-th smallest.
    return -ops.top_k(-rows, lo_rank + 1, sorted=True)[0][:, -1], hi


def _all_finite(x: Any) -> Any:
    """True when `x` has no NaN/Inf: one sum, no copy (an overflowing sum says False: harmless)."""
    return ops.all(ops.isfinite(ops.sum(ops.cast(x, "float32"))))


def _finite_min_max(x: Any, axis: Any, finite: Any = None) -> tuple[Any, Any]:
    """Min and max of the finite values of `x` along `axis`; (0, 0) where there are none."""

    def careful() -> tuple[Any, Any]:
        finite = ops.isfinite(x)
        empty = ops.logical_not(ops.any(finite, axis=axis))
        lo = ops.min(ops.where(finite, x, np.inf), axis=axis)
        hi = ops.max(ops.where(finite, x, -np.inf), axis=axis)
        return ops.where(empty, 0.0, lo), ops.where(empty, 0.0, hi)

    return when_finite(finite, x, lambda: (ops.min(x, axis=axis), ops.max(x, axis=axis)), careful)


def _finite_quantiles(rows: Any, low: float, high: float, finite: Any = None) -> tuple[Any, Any]:
    """Nearest-rank quantiles of the finite values of each row of ``(B, K)``.

    Rows with no finite value give (0, 0). When every value is finite (the
    usual case) `_quantiles` ranks only what it needs; otherwise the finite
    values of each row are sorted.
    """
    if low == 0.0 and high == 1.0:
        return _finite_min_max(rows, axis=-1, finite=finite)

    def sorted_quantiles() -> tuple[Any, Any]:
        finite = ops.isfinite(rows)
        count = ops.sum(ops.cast(finite, "int32"), axis=-1)
        ordered = ops.sort(ops.where(finite, rows, np.inf), axis=-1)
        last = ops.cast(ops.maximum(count - 1, 0), "float32")

        def at(q: float) -> Any:
            index = ops.cast(ops.round(q * last), "int32")
            return ops.take_along_axis(ordered, index[:, np.newaxis], axis=1)[:, 0]

        empty = count == 0
        return ops.where(empty, 0.0, at(low)), ops.where(empty, 0.0, at(high))

    return when_finite(finite, rows, lambda: _quantiles(rows, low, high), sorted_quantiles)


def value_range(
    maps: Any,
    *,
    per_map: bool,
    clip_percentile: float = 0.0,
    symmetric: bool = False,
    finite: Any = None,
) -> tuple[Any, Any]:
    """Returns float32 ``(lo, hi)`` broadcastable against maps ``(N, h, w, M)``.

    A per-map range ranks each map's values in a transposed copy of the maps,
    freed as soon as the range is known.

    Args:
        maps: the maps.
        per_map: one range per map (True) or one for all maps of all samples.
        clip_percentile: percent of the finite values ignored at each end
            (nearest rank); 0 takes the minimum and maximum. Defaults to `0.0`.
        symmetric: widen the range to ``[-m, m]``, ``m = max(|lo|, |hi|)``, so
            that 0 sits in the middle of a diverging colour map. Defaults to `False`.
        finite: whether `maps` may hold NaN/Inf, see `when_finite`. Defaults
            to `None` (checked).
    """
    maps = ops.cast(maps, "float32")
    low, high = clip_percentile / 100.0, 1.0 - clip_percentile / 100.0
    n, h, w, m = maps.shape
    if per_map and clip_percentile == 0.0:  # min and max of each map: no copy needed
        lo, hi = _finite_min_max(ops.reshape(maps, [n, h * w, m]), axis=1, finite=finite)
    elif per_map:  # each map's values in a row, to rank them
        rows = ops.reshape(ops.transpose(maps, [0, 3, 1, 2]), [n * m, h * w])
        lo, hi = _finite_quantiles(rows, low, high, finite)
    else:
        lo, hi = _finite_quantiles(ops.reshape(maps, [1, -1]), low, high, finite)
    if symmetric:
        hi = ops.maximum(ops.abs(lo), ops.abs(hi))
        lo = -hi
    shape = [n, 1, 1, m] if per_map else [1, 1, 1, 1]
    return ops.reshape(lo, shape), ops.reshape(hi, shape)


def normalize(maps: Any, lo: Any, hi: Any) -> Any:
    """Maps ``[lo, hi]`` to ``[0, 1]``; ``lo == hi`` gives 0, not NaN.

    Values beyond the range go beyond [0, 1] (`quantize` clips them) and
    NaN/Inf stay non-finite (`quantize` marks them), so that this is one
    copy of the maps and no more.
    """
    return (maps - lo) / ops.maximum(hi - lo, _EPSILON)


def palette(name: str) -> np.ndarray:
    """Returns the ``(256, 3)`` uint8 colours that picture indices stand for.

    Entries ``0 .. LEVELS - 1`` sample the matplotlib colour map `name` evenly
    from its low to its high end (any name ``matplotlib.colormaps`` knows:
    ``"viridis"``, ``"gray"``, ``"RdBu_r"``...); then `SEPARATOR_COLOR` and
    `NONFINITE_COLOR`.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=5)
        raise ValueError(
            f"Unknown colour map; expected a matplotlib colour-map name"
            f"{' such as ' + ', '.join(close) if close else ''}. Received: cmap={name!r}"
        ) from None
    levels = np.round(cmap.resampled(LEVELS)(np.arange(LEVELS))[:, :3] * 255.0)
    return np.concatenate([levels, [SEPARATOR_COLOR, NONFINITE_COLOR]]).astype(np.uint8)


def quantize(unit: Any, *, finite: bool = False) -> Any:
    """[0, 1] to uint8 levels ``floor(v * (LEVELS - 1) + 0.5)``; NaN/Inf to `NONFINITE_INDEX`.

    Values below 0 or above 1 get the first or last level. With `finite`
    (the caller knows there is no NaN/Inf) they are not looked for.
    """
    level = ops.clip(ops.floor(unit * (LEVELS - 1) + 0.5), 0.0, LEVELS - 1.0)
    if not finite:
        level = ops.where(ops.isfinite(unit), level, NONFINITE_INDEX)
    return ops.cast(level, "uint8")


def tile(indices: Any, grid: tuple[int, int], *, padding: int = 1) -> Any:
    """Lays out maps ``(N, h, w, M)`` in a ``rows x cols`` grid -> ``(N, H, W)``.

    ``H = rows * h + (rows - 1) * padding``; separators and cells past M get
    `SEPARATOR_INDEX`.
    """
    (rows, cols), (n, h, w, m) = grid, indices.shape

    def fill(*shape: int) -> Any:
        return ops.full(shape, SEPARATOR_INDEX, dtype=indices.dtype)

    cells = ops.transpose(indices, [0, 3, 1, 2])  # (N, M, h, w): 8-bit, so the copy is small
    if rows * cols > m:
        cells = ops.concatenate([cells, fill(n, rows * cols - m, h, w)], axis=1)
    cells = ops.reshape(cells, [n, rows, cols, h, w])
    if padding:
        # Each cell gets a separator band below and to its right; the last ones are cut off.
        cells = ops.concatenate([cells, fill(n, rows, cols, padding, w)], axis=3)
        cells = ops.concatenate([cells, fill(n, rows, cols, h + padding, padding)], axis=4)
    cells = ops.transpose(cells, [0, 1, 3, 2, 4])
    image = ops.reshape(cells, [n, rows * (h + padding), cols * (w + padding)])
    return image[:, : rows * (h + padding) - padding, : cols * (w + padding) - padding]


@dataclass(frozen=True)
class PictureOptions:
    """How `render` turns layer outputs into pictures; see `tbviz.ActivationLogger`."""

    normalize: str = "map"
    clip_percentile: float = 1.0
    cmap: str = "viridis"
    symmetric: bool = False
    max_channels: int = 64
    max_size: int = 512
    padding: int = 1
    palette: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"`normalize` must be one of {NORMALIZATIONS}. Received: normalize={self.normalize!r}"
            )
        if not 0.0 <= self.clip_percentile < 50.0:
            raise ValueError(
                "`clip_percentile` must be in [0, 50): the percent of values clipped at each "
                f"end. Received: clip_percentile={self.clip_percentile!r}"
            )
        for name in ("max_channels", "max_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={getattr(self, name)!r}"
                )
        if not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(
                f"`padding` must be a non-negative integer. Received: padding={self.padding!r}"
            )
        object.__setattr__(self, "palette", palette(self.cmap))


def render(
    x: Any,
    options: PictureOptions,
    *,
    channels_first: bool = False,
    fixed_range: tuple[Any, Any] | None = None,
    with_coarse: bool = False,
) -> tuple[Any, ...]:
    """Turns one layer output into pictures ``(N, H, W)`` of uint8 `options.palette` indices.

    Returns ``(pictures, lo, hi)``; ``lo``/``hi`` are the value range used.
    With `with_coarse`, also the maps shrunk further by `tbviz.change.coarse`
    (the input of the change metric): ``(pictures, lo, hi, coarse)``.
    With ``normalize="fixed"``, a finite `fixed_range` is used as the range
    instead of the one measured on `x` (so the caller can pin the first
    epoch's range); NaN in it means "measure".
    """
    maps, grid = to_maps(
        x,
        channels_first=channels_first,
        max_channels=options.max_channels,
        max_size=options.max_size,
        padding=options.padding,
    )
    pictures, lo, hi = render_maps(maps, grid, options, fixed_range=fixed_range)
    if with_coarse:
        from tbviz.change import coarse

        return pictures, lo, hi, coarse(maps)
    return pictures, lo, hi


def render_maps(
    maps: Any,
    grid: tuple[int, int],
    options: PictureOptions,
    *,
    fixed_range: tuple[Any, Any] | None = None,
    finite: bool | None = None,
) -> tuple[Any, Any, Any]:
    """`render` after `to_maps`: maps ``(N, h, w, M)`` in a grid -> ``(pictures, lo, hi)``.

    `finite`: True when the caller knows that the maps hold no NaN/Inf (then
    none are looked for), False when they may; None to check.
    """
    lo, hi = value_range(
        maps,
        per_map=options.normalize == "map",
        clip_percentile=options.clip_percentile,
        symmetric=options.symmetric,
        finite=finite,
    )
    if options.normalize == "fixed" and fixed_range is not None:
        fixed_lo, fixed_hi = (ops.cast(v, "float32") for v in fixed_range)
        known = ops.logical_and(ops.isfinite(fixed_lo), ops.isfinite(fixed_hi))
        lo, hi = ops.where(known, fixed_lo, lo), ops.where(known, fixed_hi, hi)
    indices = quantize(normalize(maps, lo, hi), finite=finite is True)
    return tile(indices, grid, padding=options.padding), lo, hi
