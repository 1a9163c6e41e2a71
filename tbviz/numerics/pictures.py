"""How one layer's output becomes one picture per probe sample.

Pure numerics in ``keras.ops``, one implementation for every backend: every
function takes and returns tensors of the backend Keras runs on (NumPy arrays
work too), runs eagerly or inside the backend's compiled step (a
``tf.function``, a ``jax.jit``), and never modifies its input. Shapes must be
known. The pipeline, in `render`:

1. `to_maps`: the output becomes a stack of 2-D maps, channels last,
   ``(N, h, w, M)``, laid out by its `tbviz.numerics.layout.Layout` (one map
   per channel of an image-like output, a strip of a sequence, a block of a
   Dense layer's units...), shrunk on the way (`downsample`: area averaging,
   aspect kept) so that the tiled grid fits in ``max_size`` x ``max_size``
   pixels; they never grow.
2. `value_range` + `normalize`: values map to [0, 1] by a range taken at
   percentiles so one outlier cannot wash a map out; constant maps give 0,
   never NaN.
3. `quantize`: [0, 1] becomes one of `LEVELS` (254) colour levels,
   ``floor(v * 253 + 0.5)``, clipped; NaN/Inf pixels get `NONFINITE_INDEX`.
4. `tile`: maps are laid out in the grid with `padding`-pixel separators
   (`SEPARATOR_INDEX`); empty cells are separator-coloured too.

Pictures are thus 8-bit *palette indices* into `tbviz.io.png.palette` (254
levels of the colour map, the separator colour, the NaN marker). A layer
whose output is a colour image (`Layout` kind ``"image"``, 3 channels) is
pictured as RGB pixels instead (`quantize_rgb`).

Memory: maps stay channels last, the layout of the layer's output, until
they are 8-bit. Beyond the maps themselves, `render` needs one float copy of
them at a time (for a per-map percentile range, then for normalising) plus
the 8-bit result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

# The palette layout is part of the on-disk contract (`tbviz.io.tags`).
from tbviz.io.png import palette
from tbviz.io.tags import LEVELS, NONFINITE_COLOR, NONFINITE_INDEX, SEPARATOR_INDEX
from tbviz.numerics.layout import Layout, token_grid_side
from tbviz.numerics.stats import finiteness

NORMALIZATIONS = ("map", "layer", "fixed")
#: Pictures fit in this many pixels a side unless `PictureOptions.max_size` says otherwise.
DEFAULT_MAX_SIZE = 256
#: The most channels a picture shows unless `PictureOptions.max_channels` says otherwise.
DEFAULT_MAX_CHANNELS = 64
_EPSILON = 1e-12


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
    cores, 3.4 vs 7.8 ms to 63 x 63 (``(8, 112, 112, 64)``). (XLA makes the
    taps of each axis one pass, 9 times faster than its CPU product, but
    compiling those passes for every layer of a ResNet-50 took 1.7 times as
    long.)
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
    (the check made once for a whole layer, see `tbviz.numerics.summary`), which
    picks a branch at run time; None to check `x` here (one sum).
    """
    if finite is None:
        finite = ops.isfinite(finiteness(x))
    if isinstance(finite, bool):
        return lean() if finite else careful()
    return ops.cond(finite, lean, careful)


def to_maps(
    x: Any,
    layout: Layout,
    *,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    max_size: int | None = None,
    padding: int = 1,
    finite: Any = None,
) -> Any:
    """Turns a layer output into float32 maps ``(N, h, w, M)`` laid out by `layout`.

    Map ``m`` is ``maps[:, :, :, m]``, for grid cell ``divmod(m, cols)`` of
    ``layout.grid(max_channels)``; each is ``layout.cell(...)`` pixels. For an
    ``"image"`` layout the M = 1 or 3 maps are the image's channels, one
    picture. Channels past `max_channels` are dropped first and maps are shrunk
    before any transpose, so no full-size copy of a large activation is made
    beyond the float32 one a float16 output needs.

    Args:
        x: the layer's output for N probe samples, of ``(N, *layout.shape)``
            (float16 is fine).
        layout: how the output is drawn (`tbviz.numerics.layout`).
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
    if tuple(x.shape[1:]) != layout.shape:
        raise ValueError(
            f"Expected a layer output of shape (N, {', '.join(map(str, layout.shape))}) for its "
            f"{layout.kind!r} layout. Received: shape={tuple(x.shape)}"
        )
    n, kind, first = x.shape[0], layout.kind, layout.channels_first
    shown = layout.channels_shown(max_channels)
    cell = layout.cell(max_channels, max_size, padding)

    def shrink(images: Any, channels: int | None = None) -> Any:
        return downsample(images, cell, channels, finite=finite)

    if kind == "block":  # (N, units): one block of unit intensities
        rows, cols = layout.map_size
        return shrink(ops.reshape(x, [n, rows, cols, 1]))
    if kind == "strip":  # (N, T, C): one heat strip of the first channels, down; time across
        strip = x[:, :shown] if first else ops.transpose(x[..., :shown], [0, 2, 1])
        return shrink(ops.expand_dims(strip, -1))
    if kind == "tokens":  # (N, T, C): each channel a map over the square grid of patches
        side, extra = token_grid_side(x.shape[1]) or (0, 0)
        return shrink(ops.reshape(x[:, extra:], [n, side, side, x.shape[2]]), shown)
    if kind == "image":  # the image itself: its 1 or 3 channels, last
        return shrink(ops.transpose(x, [0, 2, 3, 1]) if first else x)
    if kind == "maps":  # one map per channel
        if not first:
            return shrink(x, shown)
        x = x[:, :shown]
        small = downsample(ops.reshape(x, [n * shown, x.shape[2], x.shape[3], 1]), cell, finite=finite)
        small = ops.reshape(small, [n, shown, small.shape[1], small.shape[2]])
        return ops.transpose(small, [0, 2, 3, 1])
    # volume: one row per channel, one column per depth slice
    depth = layout.depth
    x = x[:, :shown] if first else x[..., :shown]
    if first:  # (N, C, D, H, W)
        small = downsample(
            ops.reshape(x, [n * shown * depth, x.shape[3], x.shape[4], 1]), cell, finite=finite
        )
        small = ops.reshape(small, [n, shown * depth, small.shape[1], small.shape[2]])
        return ops.transpose(small, [0, 2, 3, 1])
    small = downsample(ops.reshape(x, [n * depth, x.shape[2], x.shape[3], shown]), cell, finite=finite)
    small = ops.reshape(small, [n, depth, small.shape[1], small.shape[2], shown])
    small = ops.transpose(small, [0, 2, 3, 4, 1])  # (N, h, w, C, D): map c * D + d
    return ops.reshape(small, [n, small.shape[1], small.shape[2], shown * depth])

def _rank(q: float, count: int) -> int:
    """The nearest rank of quantile `q` among `count` sorted values, rounded half to even as every backend's ``round`` does."""
    return int(np.round(np.float32(q) * np.float32(max(count - 1, 0))))


def _quantiles(rows: Any, low: float, high: float) -> tuple[Any, Any]:
    """Nearest-rank quantiles of each row of ``(B, K)``, every value finite.

    Only the few values beyond each quantile are ranked, so no sorted copy of
    the rows is made: by ``top_k``, or on JAX, whose CPU backend runs ``top_k``
    about as slowly as a full sort (66 ms for ``(512, 729)``), by taking the
    largest and smallest values out one at a time (`_extremes`: 2.5 ms).
    """
    count = rows.shape[-1]
    lo_rank, hi_rank = _rank(low, count), _rank(high, count)
    from_top, from_bottom = count - hi_rank, lo_rank + 1  # the k-th largest, the k-th smallest
    if keras.backend.backend() == "jax" and max(from_top, from_bottom) <= _EXTREMES:
        return _extremes(rows, from_bottom, from_top)
    if from_top == 1:
        hi = ops.max(rows, axis=-1)
    else:
        hi = ops.top_k(rows, from_top, sorted=True)[0][:, -1]
    if from_bottom == 1:
        return ops.min(rows, axis=-1), hi
    return -ops.top_k(-rows, from_bottom, sorted=True)[0][:, -1], hi


#: The most values `_extremes` takes out of each end of a row (a 1 % clip of a 64 x 64 map: 42).
_EXTREMES = 64


def _extremes(rows: Any, from_bottom: int, from_top: int) -> tuple[Any, Any]:
    """The `from_bottom`-th smallest and the `from_top`-th largest value of each row of
    ``(B, K)`` (every value finite, ties counted), by taking out the distinct smallest and
    largest values one at a time: two passes over the rows a step, both ends at once."""

    def end(previous: Any, left: Any, found: Any, largest: bool) -> tuple[Any, Any, Any]:
        if largest:
            value = ops.max(ops.where(rows < previous[:, None], rows, -np.inf), axis=-1)
        else:
            value = ops.min(ops.where(rows > previous[:, None], rows, np.inf), axis=-1)
        ties = ops.sum(ops.cast(ops.equal(rows, value[:, None]), "float32"), axis=-1)
        found = ops.where(ops.logical_and(left > 0, ties >= left), value, found)
        return value, left - ties, found

    def step(_: Any, state: tuple) -> tuple:
        top = end(state[0], state[1], state[2], True)
        bottom = end(state[3], state[4], state[5], False)
        return (*top, *bottom)

    def begin(k: int, edge: float) -> tuple[Any, Any, Any]:
        b = rows.shape[0]
        return ops.full((b,), edge, "float32"), ops.full((b,), float(k), "float32"), ops.zeros((b,))

    start = (*begin(from_top, np.inf), *begin(from_bottom, -np.inf))
    state = ops.fori_loop(0, max(from_top, from_bottom), step, start)
    return state[5], state[2]


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
    layers: int = 1,
) -> tuple[Any, Any]:
    """Returns float32 ``(lo, hi)``: ``(N, 1, 1, M)`` per map, ``(layers, 1, 1, 1)`` per layer.

    A per-map range ranks each map's values in a transposed copy of the maps,
    freed as soon as the range is known.

    Args:
        maps: the maps ``(N, h, w, M)``: `layers` layers' maps one after the
            other on the first axis (N = layers x samples).
        per_map: one range per map (True) or one for all maps of all samples of a layer.
        clip_percentile: percent of the finite values ignored at each end
            (nearest rank); 0 takes the minimum and maximum. Defaults to `0.0`.
        symmetric: widen the range to ``[-m, m]``, ``m = max(|lo|, |hi|)``, so
            that 0 sits in the middle of a diverging colour map. Defaults to `False`.
        finite: whether `maps` may hold NaN/Inf, see `when_finite`. Defaults
            to `None` (checked).
        layers: how many layers' maps `maps` holds. Defaults to `1`.
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
        lo, hi = _finite_quantiles(ops.reshape(maps, [layers, -1]), low, high, finite)
    if symmetric:
        hi = ops.maximum(ops.abs(lo), ops.abs(hi))
        lo = -hi
    shape = [n, 1, 1, m] if per_map else [layers, 1, 1, 1]
    return ops.reshape(lo, shape), ops.reshape(hi, shape)


def normalize(maps: Any, lo: Any, hi: Any) -> Any:
    """Maps ``[lo, hi]`` to ``[0, 1]``; ``lo == hi`` gives 0, not NaN.

    Values beyond the range go beyond [0, 1] (`quantize` clips them) and
    NaN/Inf stay non-finite (`quantize` marks them), so that this is one
    copy of the maps and no more.
    """
    return (maps - lo) / ops.maximum(hi - lo, _EPSILON)


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


def quantize_rgb(unit: Any, *, finite: bool = False) -> Any:
    """[0, 1] RGB ``(N, h, w, 3)`` to uint8 pixels ``round(v * 255)``, clipped; a pixel with a
    NaN/Inf channel is `NONFINITE_COLOR`."""
    level = ops.clip(ops.floor(unit * 255.0 + 0.5), 0.0, 255.0)
    if not finite:
        bad = ops.logical_not(ops.all(ops.isfinite(unit), axis=-1, keepdims=True))
        marker = ops.reshape(ops.convert_to_tensor(np.array(NONFINITE_COLOR, np.float32)), [1, 1, 1, 3])
        level = ops.where(bad, marker, level)
    return ops.cast(level, "uint8")


@dataclass(frozen=True)
class PictureOptions:
    """How `render` turns layer outputs into pictures; see `tbviz.ActivationLogger`."""

    normalize: str = "map"
    clip_percentile: float = 1.0
    cmap: str = "viridis"
    symmetric: bool = False
    max_channels: int = DEFAULT_MAX_CHANNELS
    max_size: int = DEFAULT_MAX_SIZE
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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(
                f"`padding` must be a non-negative integer. Received: padding={self.padding!r}"
            )
        object.__setattr__(self, "palette", palette(self.cmap))


def render(
    x: Any,
    layout: Layout,
    options: PictureOptions,
    *,
    fixed_range: tuple[Any, Any] | None = None,
    finite: bool | None = None,
) -> tuple[Any, Any, Any]:
    """Turns one layer output into pictures: `to_maps`, then `render_maps`.

    Returns ``(pictures, lo, hi)``: ``(N, H, W)`` uint8 `options.palette`
    indices (``(N, H, W, 3)`` RGB pixels for a colour image) and the value
    range used. With ``normalize="fixed"``, a finite `fixed_range` is used as
    the range instead of the one measured on `x` (so the caller can pin the
    first epoch's range); NaN in it means "measure".
    """
    maps = to_maps(
        x,
        layout,
        max_channels=options.max_channels,
        max_size=options.max_size,
        padding=options.padding,
        finite=finite,
    )
    return render_maps(maps, layout, options, fixed_range=fixed_range, finite=finite)


def render_maps(
    maps: Any,
    layout: Layout,
    options: PictureOptions,
    *,
    fixed_range: tuple[Any, Any] | None = None,
    finite: bool | None = None,
    layers: int = 1,
) -> tuple[Any, Any, Any]:
    """`render` after `to_maps`: maps ``(N, h, w, M)`` -> ``(pictures, lo, hi)``.

    `layers`: the maps are that many layers' maps, alike in layout, one after
    the other on the first axis (N = layers x samples), each pictured as it
    would be alone; then a `fixed_range` holds one value per layer (shape
    ``(layers,)``), and ``lo`` and ``hi`` are as `value_range` returns them.
    `finite`: True when the caller knows that the maps hold no NaN/Inf (then
    none are looked for), False when they may; None to check.
    """
    colour = layout.kind == "image" and layout.channels == 3
    per_map = options.normalize == "map" and not colour
    lo, hi = value_range(
        maps,
        per_map=per_map,
        clip_percentile=options.clip_percentile,
        symmetric=options.symmetric,
        finite=finite,
        layers=layers,
    )
    if options.normalize == "fixed" and fixed_range is not None:
        fixed_lo, fixed_hi = (ops.reshape(ops.cast(v, "float32"), [-1, 1, 1, 1]) for v in fixed_range)
        known = ops.logical_and(ops.isfinite(fixed_lo), ops.isfinite(fixed_hi))
        lo, hi = ops.where(known, fixed_lo, lo), ops.where(known, fixed_hi, hi)
    if per_map:
        unit = normalize(maps, lo, hi)
    else:  # one range a layer: each layer's maps side by side, against its range
        n, h, w, m = maps.shape
        by_layer = ops.reshape(maps, [layers, (n // layers) * h, w, m])
        unit = ops.reshape(normalize(by_layer, lo, hi), [n, h, w, m])
    if colour:
        return quantize_rgb(unit, finite=finite is True), lo, hi
    indices = quantize(unit, finite=finite is True)
    return tile(indices, layout.grid(options.max_channels), padding=options.padding), lo, hi
