"""How a layer's output becomes a picture, from its shape alone: plain Python, no tensors.

A `Layout` is decided once per layer (by `tbviz.model.walk`, which knows the
layer) and answers every question about its pictures before any is made:
the grid of maps, each map's size, the picture's size, how many channels it
shows. `tbviz.numerics.pictures.to_maps` lays the tensors out by it, and the
epoch's pixel budget (`fit_pixel_budget`) is planned with it. Kinds, for an
output of shape ``(N, ...)``:

- ``"maps"``: ``(N, H, W, C)`` (or ``(N, C, H, W)`` for ``channels_first``):
  one map per channel, the first ``max_channels`` channels, in a near-square
  grid (32 -> the article's 4 x 8);
- ``"tokens"``: ``(N, T, C)`` whose tokens are the patches of an image
  (a vision transformer's): ``T = s * s``, or ``s * s + 1`` with a class
  token first (dropped); one map per channel over the ``s x s`` patch grid;
- ``"volume"``: ``(N, D, H, W, C)`` (or channels first): one row per channel,
  one column per depth slice;
- ``"strip"``: ``(N, T, C)`` (or ``(N, C, T)``): one heat strip of the first
  ``max_channels`` channels, channels down, time across; each axis shrinks to
  ``max_size`` on its own, so that long sequences keep their channels;
- ``"block"``: ``(N, units)``: one block of unit intensities, as square as the
  unit count allows (500 units -> 20 x 25);
- ``"image"``: ``(N, H, W, 1 or 3)`` that is an image (the model's input, a
  generator's output): drawn as that image, grey or in colour.

Maps shrink by area averaging, aspect kept, so that the whole picture fits in
``max_size x max_size`` pixels with 1-pixel separators; they never grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tbviz.io.png import largest_png

KINDS = ("maps", "tokens", "volume", "strip", "block", "image")

#: No map shrinks below this many pixels on its longer side to fit the epoch's pixel budget.
MIN_MAP_SIZE = 8
#: Whatever the pictures hold, an epoch's event bytes stay within this many per pixel of
#: the budget (5 MB for the default 3.5 million), or `SMALL_EPOCH_BYTES` if that is more:
#: see `fit_pixel_budget`.
BYTES_PER_BUDGET_PIXEL = 5 / 3.5
SMALL_EPOCH_BYTES = 1_000_000


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


def token_grid_side(tokens: int) -> tuple[int, int] | None:
    """``(side, leading tokens to drop)`` when `tokens` patches form a square grid
    (``side * side``, or ``side * side + 1`` with a class token first); None otherwise."""
    for extra in (0, 1):
        side = math.isqrt(tokens - extra) if tokens > extra else 0
        if side >= 2 and side * side == tokens - extra:
            return side, extra
    return None


@dataclass(frozen=True)
class Layout:
    """How outputs of one shape are drawn (see the module doc).

    Attributes:
        kind: one of `KINDS`.
        shape: the output's shape without the batch axis; every size known.
        channels_first: channels come before the spatial (or time) axes.
    """

    kind: str
    shape: tuple[int, ...]
    channels_first: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown layout; expected one of {KINDS}. Received: kind={self.kind!r}")
        ranks = {"maps": 3, "image": 3, "tokens": 2, "strip": 2, "volume": 4, "block": 1}
        if len(self.shape) != ranks[self.kind] or not all(
            isinstance(s, int) and s > 0 for s in self.shape
        ):
            raise ValueError(
                f"A {self.kind!r} layout needs an output of rank {ranks[self.kind] + 1} "
                f"of known sizes. Received: shape={self.shape}"
            )
        if self.kind == "tokens" and token_grid_side(self.shape[0]) is None:
            raise ValueError(f"{self.shape[0]} tokens are no square grid. Received: shape={self.shape}")
        if self.kind == "image" and self.channels not in (1, 3):
            raise ValueError(
                f"An image has 1 or 3 channels. Received: shape={self.shape}, "
                f"channels_first={self.channels_first}"
            )

    @classmethod
    def default(cls, shape: tuple[int, ...], channels_first: bool = False) -> Layout:
        """The layout of an output of `shape` (no batch axis) with nothing more known about
        it: a block, a strip, maps or a volume by its rank."""
        kinds = {1: "block", 2: "strip", 3: "maps", 4: "volume"}
        if len(shape) not in kinds:
            raise ValueError(
                f"Expected a layer output of rank 2 to 5. Received: shape={(None, *shape)}"
            )
        return cls(kinds[len(shape)], tuple(shape), channels_first)

    @property
    def channels(self) -> int:
        """The output's channels (units for a block)."""
        if self.kind == "block":
            return self.shape[0]
        if self.kind == "tokens":
            return self.shape[1]
        return self.shape[0] if self.channels_first else self.shape[-1]

    @property
    def map_size(self) -> tuple[int, int]:
        """``(h, w)`` of one map before shrinking (of the whole strip or block)."""
        if self.kind == "block":
            return block_shape(self.shape[0])
        if self.kind == "tokens":
            side, _ = token_grid_side(self.shape[0]) or (0, 0)
            return side, side
        if self.kind == "strip":
            time = self.shape[1] if self.channels_first else self.shape[0]
            return self.channels, time  # channels down (cut by max_channels: see `cell`)
        spatial = self.shape[1:] if self.channels_first else self.shape[:-1]
        return spatial[-2], spatial[-1]

    @property
    def depth(self) -> int:
        """Depth slices of a volume; 1 otherwise."""
        if self.kind != "volume":
            return 1
        return self.shape[1] if self.channels_first else self.shape[0]

    def channels_shown(self, max_channels: int) -> int:
        """How many channels (the first ones) the picture shows."""
        if self.kind in ("block", "image"):
            return self.channels
        if self.kind == "volume":
            return min(self.channels, max(1, max_channels // self.depth))
        return min(self.channels, max_channels)

    def map_count(self, max_channels: int) -> int:
        """How many maps the picture tiles (the last axis of `tbviz.numerics.pictures.to_maps`)."""
        if self.kind in ("block", "strip"):
            return 1
        return self.channels_shown(max_channels) * self.depth

    def grid(self, max_channels: int) -> tuple[int, int]:
        """``(rows, cols)`` of maps in the picture."""
        if self.kind in ("maps", "tokens"):
            return grid_shape(self.channels_shown(max_channels))
        if self.kind == "volume":
            return self.channels_shown(max_channels), self.depth
        return 1, 1

    def cell(self, max_channels: int, max_size: int | None, padding: int) -> tuple[int, int]:
        """``(h, w)`` of one map in the picture, after shrinking."""
        if self.kind == "strip":
            limit = max_size or max(self.map_size)
            time = self.map_size[1]
            return min(self.channels_shown(max_channels), limit), min(time, limit)
        return tile_size(self.map_size, self.grid(max_channels), max_size=max_size, padding=padding)

    def picture(self, max_channels: int, max_size: int | None, padding: int) -> tuple[int, int]:
        """``(H, W)`` of the pictures."""
        (rows, cols), (h, w) = self.grid(max_channels), self.cell(max_channels, max_size, padding)
        return rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding


def fit_pixel_budget(
    layouts: list[Layout],
    *,
    probes: int,
    max_pixels: int | None,
    max_channels: int,
    max_size: int,
    padding: int = 1,
    layer_bytes: int = 0,
) -> list[tuple[int, int]]:
    """Per layer, the ``(max_size, max_channels)`` that keep one epoch's pictures within a budget.

    One epoch is ``probes`` pictures of each layer; together they may have at
    most `max_pixels` pixels, and the epoch's event bytes at most
    `BYTES_PER_BUDGET_PIXEL` per pixel of it (or `SMALL_EPOCH_BYTES`) whatever
    the pictures hold (each PNG counted as stored uncompressed,
    `tbviz.io.png.largest_png`, each layer with `layer_bytes` for its statistics
    and metadata, `tbviz.io.summaries.LAYER_EXTRA_BYTES` for the logger): noisy pictures compress hardly at
    all, and a many-layer epoch's PNG chunks and statistics are 1.6 MB of the
    5 MB that the default 3.5 million pixels may take. Under the budget every layer keeps
    `max_size` and `max_channels`. Over it, one common limit on the picture
    side replaces `max_size`, the largest that fits: large pictures shrink
    first and small ones (deep layers' small maps) keep their size until the
    limit reaches them. No map (a channel's cell; the whole picture of a Dense
    or sequence layer) shrinks below `MIN_MAP_SIZE` pixels on its longer side
    (nor grows to it). Only if that floor does not fit are channels dropped:
    `max_channels` is halved until it does (one channel at the floor is the
    least a layer gets, budget or not).

    Args:
        layouts: each layer's layout.
        probes: pictures per layer and epoch.
        max_pixels: the budget; None: no budget.
        max_channels, max_size, padding: as in `tbviz.numerics.pictures.PictureOptions`.
        layer_bytes: the bytes each layer writes beside its PNGs.
    """
    unchanged = [(max_size, max_channels)] * len(layouts)
    if max_pixels is None:
        return unchanged
    max_bytes = max(max_pixels * BYTES_PER_BUDGET_PIXEL, SMALL_EPOCH_BYTES)

    def fits(settings: list[tuple[int, int]]) -> bool:
        pixels = largest = 0
        for layout, (size, channels) in zip(layouts, settings, strict=True):
            height, width = layout.picture(channels, size, padding)
            rgb = layout.kind == "image" and layout.channels == 3
            pixels += probes * height * width
            largest += probes * largest_png(height, width, rgb=rgb) + layer_bytes
        return pixels <= max_pixels and largest <= max_bytes

    if fits(unchanged):
        return unchanged

    def floor(layout: Layout, channels: int) -> int:
        """The smallest picture side that keeps this layer's maps at the floor."""
        wanted = min(MIN_MAP_SIZE, max(layout.map_size))
        low, high = 1, max_size
        while low < high:
            middle = (low + high) // 2
            if max(layout.cell(channels, middle, padding)) >= wanted:
                high = middle
            else:
                low = middle + 1
        return low

    def at(limit: int, channels: int) -> list[tuple[int, int]]:
        """Every layer's settings under a common `limit`, none below its floor."""
        return [(min(max_size, max(limit, floor(layout, channels))), channels) for layout in layouts]

    channels = max_channels
    while channels > 1 and not fits(at(1, channels)):
        channels = max(1, channels // 2)
    low, high = 1, max_size  # the largest common limit that fits (1 if none does)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(at(middle, channels)):
            low = middle
        else:
            high = middle - 1
    return at(low, channels)
