"""One layer's output -> what leaves the logging step for it: pictures, numbers, coarse maps.

The per-layer work of `tbviz.ActivationLogger`'s step, in two parts
(`LayerSummary`):

- `reduce_layer`, called on each selected layer's output as the layer
  returns it (see `tbviz.step`), reads the full output, once for each thing
  it needs: its NaN/Inf check (one sum), the maps of its first channels
  shrunk to picture size (`tbviz.numerics.pictures.to_maps`), the strided
  sample its statistics are taken from (`tbviz.numerics.stats.sample`); with
  health, its constant channels (`tbviz.numerics.health`). What it returns is
  small, so the output can be freed as soon as the model is done with it too.
- `finish_group` makes the pictures, statistics and coarse maps from those
  small tensors, for a *group* of layers at once: layers alike in their maps,
  sample length and options (`LayerSummary.group_key`) are stacked and done in
  one set of ops, as many as one layer's. Per-layer fixed costs (a dozen small
  ops each, on 2 cores about 0.35 ms a layer) were most of a many-layer step;
  a ResNet-50's 175 layers make 12 groups, a MobileNetV2's 153 make 22. A
  group is finished as soon as its last layer is reduced.

Almost always a layer has no NaN/Inf: the lean step (``finite=True``) takes
every output to hold none, uses no masks and only checks it; where one does,
the careful step (``finite=False``, masks, counts) is run instead
(`tbviz.step.base.Step`), with no condition inside either.

A layer's numbers leave the step as one float32 vector, packed and unpacked
here only (`LayerNumbers`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from keras import ops

from tbviz.io import tags
from tbviz.numerics.change import coarse
from tbviz.numerics.health import Health, bound_shares, channel_axis, constant_channels
from tbviz.numerics.layout import Layout
from tbviz.numerics.pictures import PictureOptions, render_maps, to_maps
from tbviz.numerics.stats import (
    HISTOGRAM_BINS,
    finiteness,
    nonfinite_count,
    sample,
    sample_length,
    sample_statistics,
    sample_stride,
)


class Reduced(NamedTuple):
    """What `reduce_layer` keeps of a layer's output: all that `finish_group` needs of it."""

    maps: Any  # float32 (N, h, w, M), NaN where a shrunk pixel covers a NaN/Inf
    sample: Any  # float32 (count,): the statistics' sample, or (0,) without statistics
    nonfinite: Any  # float32 (): how many NaN/Inf values the output holds (see `reduce_layer`)
    constant: Any  # float32 (): how many channels are constant (0 without health)


_STATISTICS = tags.SCALAR_KINDS  # the statistics in the vector: their tags' kinds are their names
_HEAD = 6  # lo, hi, nonfinite, constant, at_low, at_high: the vector's fixed part


class LayerNumbers(NamedTuple):
    """A layer's numbers at one logged epoch, as they leave the step in one vector.

    The vector is ``[lo, hi, nonfinite, constant, at_low, at_high]``, then
    with statistics ``[mean, std, zero_fraction]`` and the histogram's
    ``(bins, 3)`` rows flattened.
    """

    lo: float  # the value range the pictures were normalised with
    hi: float
    nonfinite: int  # how many NaN/Inf values the output held
    constant: int  # how many channels were constant (0 without health)
    at_low: float  # shares of the sample at its activation's bounds (NaN: unbounded)
    at_high: float
    statistics: dict[str, float] | None  # mean, std, zero_fraction; None when not computed
    histogram: np.ndarray | None  # (bins, 3) [left edge, right edge, count]

    @staticmethod
    def pack(
        lo: Any,
        hi: Any,
        nonfinite: Any,
        constant: Any,
        shares: tuple[Any, Any],
        statistics: dict[str, Any] | None,
    ) -> Any:
        """The vectors of a group of layers, ``(layers, length)``, in the step (``keras.ops``):
        each argument holds one value per layer (``(layers,)``; the histogram ``(layers,
        bins, 3)``), the statistics as `sample_statistics` returns them, or None."""
        columns = [lo, hi, nonfinite, constant, *shares]
        if statistics is not None:
            columns += [statistics[kind] for kind in _STATISTICS]
        head = ops.stack(columns, axis=1)
        if statistics is None:
            return head
        histogram = statistics["histogram"]
        return ops.concatenate([head, ops.reshape(histogram, [histogram.shape[0], -1])], axis=1)

    @classmethod
    def unpack(cls, vector: np.ndarray) -> LayerNumbers:
        """The numbers of a vector `pack` made, on the host."""
        vector = np.asarray(vector, np.float32)
        head = _HEAD
        lo, hi, nonfinite, constant, at_low, at_high = (float(v) for v in vector[:head])
        known = (lo, hi, int(nonfinite), int(constant), at_low, at_high)
        if len(vector) == head:
            return cls(*known, None, None)
        statistics = dict(zip(_STATISTICS, (float(v) for v in vector[head : head + 3]), strict=True))
        return cls(*known, statistics, vector[head + 3 :].reshape(HISTOGRAM_BINS, 3))

    @property
    def health(self) -> Health:
        """Its health numbers (`tbviz.numerics.health`); the RMS is NaN without statistics."""
        rms = math.nan
        if self.statistics is not None:
            rms = math.hypot(self.statistics["mean"], self.statistics["std"])
        return Health(self.constant, self.at_low, self.at_high, rms, self.nonfinite)


@dataclass(frozen=True)
class LayerSummary:
    """How one selected layer's output is summarised in the step.

    Attributes:
        options: how its pictures are made.
        layout: how its output is laid out as maps.
        wants_stats: whether its statistics and histogram are computed (health needs them).
        health: whether its health numbers are measured (`tbviz.numerics.health`).
        bounds: its activation's bounds (`tbviz.numerics.health.BOUNDS`), or None.
    """

    options: PictureOptions
    layout: Layout
    wants_stats: bool
    health: bool = False
    bounds: tuple[float, float, float] | None = None

    def reduce(self, output: Any, *, finite: bool = True, sample_first: bool = False) -> Reduced:
        """The part that reads the full output; the model waits for it (see `reduce_layer`)."""
        return reduce_layer(
            output,
            self.layout,
            self.options,
            self.wants_stats,
            self.health,
            finite=finite,
            sample_first=sample_first,
        )

    @property
    def reduce_key(self) -> tuple:
        """What `reduce` depends on besides its tensor: layers alike in it (and in their
        output's shape and type) can share one compiled `reduce`."""
        options = self.options
        maps = (options.max_channels, options.max_size, options.padding)
        return self.layout, maps, self.wants_stats, self.health

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """``(h, w, M)`` of one sample's maps (`tbviz.numerics.pictures.to_maps`)."""
        layout, options = self.layout, self.options
        cell = layout.cell(options.max_channels, options.max_size, options.padding)
        return (*cell, layout.map_count(options.max_channels))

    @property
    def group_key(self) -> tuple:
        """What `finish_group` depends on besides its tensors: layers with equal keys can be
        finished together (their maps have one shape)."""
        layout, options = self.layout, self.options
        colour = layout.kind == "image" and layout.channels == 3
        grid = layout.grid(options.max_channels)
        return options, self.wants_stats, self.bounds, grid, colour, self.map_shape


def reduce_layer(
    output: Any,
    layout: Layout,
    options: PictureOptions,
    wants_stats: bool,
    health: bool = False,
    *,
    finite: bool = True,
    sample_first: bool = False,
) -> Reduced:
    """The part of a layer's summary that reads its full output (see the module doc).

    `finite`: True in the lean step, which takes the output to hold no NaN/Inf
    and only checks that (``nonfinite`` is then a value finite exactly where it
    holds none, `tbviz.numerics.stats.finiteness`); False in the careful step,
    which counts them (``nonfinite``) and keeps them out of everything else.
    `sample_first`: with health, read the whole output for constant channels only
    where the sample leaves one that may be constant (`_constant_channels`): on
    TensorFlow and PyTorch, whose CPU kernels reduce all axes but the channels'
    several times slower than a sum. (In XLA's one computation a condition per
    layer costs more compiling than the reductions it saves.)
    """
    output = ops.convert_to_tensor(output)
    maps = to_maps(
        output,
        layout,
        max_channels=options.max_channels,
        max_size=options.max_size,
        padding=options.padding,
        finite=finite,
    )
    values = sample(output, padded=True) if wants_stats or health else ops.zeros((0,), "float32")
    # The lean step keeps the check's value; `finish_group` makes it a flag, for many
    # layers at once.
    nonfinite = finiteness(output) if finite else nonfinite_count(output)
    constant = ops.zeros((), "float32")
    if health and finite and sample_first:
        constant = _constant_channels(output, layout, values[: sample_length(tuple(output.shape))])
    elif health:
        constant = constant_channels(output, layout)
    if not wants_stats:
        values = ops.zeros((0,), "float32")
    return Reduced(maps, values, nonfinite, constant)


@functools.lru_cache(maxsize=256)
def _sampled_channels(shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """Where each channel's values are in `tbviz.numerics.stats.sample` of an output of
    `shape`: ``(channels, most)`` indices into the sample, a channel with fewer values
    repeating its first (which changes neither its maximum nor its minimum); None if a
    channel has no value in it."""
    stride = sample_stride(shape)
    of = np.unravel_index(np.arange(0, math.prod(shape), stride), shape)[axis]
    order = np.argsort(of, kind="stable")
    counts = np.bincount(of, minlength=shape[axis])
    if counts.min() == 0:
        return None
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.minimum(np.arange(counts.max()), counts[:, np.newaxis] - 1)
    return order[starts[:, np.newaxis] + slot].astype(np.int32)


def _constant_channels(output: Any, layout: Layout, values: Any) -> Any:
    """`tbviz.numerics.health.constant_channels` of `output`, reading the whole output only
    when its sample (`values`) leaves a channel that may be constant.

    A channel constant over the whole output is constant in the sample, which
    has values of every channel (`tbviz.numerics.stats.sample_stride`), so a
    sample with no constant channel proves that the output has none; where the
    sample is the whole output, it is the answer. Otherwise each of the two
    reductions over the whole output first reduces the axis next to the
    channels' (TensorFlow's CPU kernels reduce a middle or inner axis several
    times faster than all axes but the last: 6 against 17 ms for both on ``(8,
    112, 112, 96)``), then the rest.
    """
    shape = tuple(output.shape)
    axis = channel_axis(layout) % len(shape)
    where = _sampled_channels(shape, axis)
    if where is None:  # a channel with no sampled value
        return constant_channels(output, layout)
    by_channel = ops.take(values, where, axis=0)  # (channels, most)
    alike = ops.equal(ops.max(by_channel, axis=1), ops.min(by_channel, axis=1))
    if sample_stride(shape) == 1:  # the sample is the output
        return ops.sum(ops.cast(alike, "float32"))

    def whole() -> Any:
        if axis == len(shape) - 1:  # (rest, next, channels)
            x, near = ops.reshape(output, [-1, shape[-2] if len(shape) > 2 else 1, shape[-1]]), 1
        else:  # channels first: (samples, channels, rest)
            x, near = ops.reshape(output, [shape[0], shape[1], -1]), 2
        high = ops.max(ops.max(x, axis=near), axis=0)
        low = ops.min(ops.min(x, axis=near), axis=0)
        return ops.sum(ops.cast(ops.equal(high, low), "float32"))

    return ops.cond(ops.any(alike), whole, lambda: ops.zeros((), "float32"))


def finish_group(
    reduced: Sequence[Reduced],
    fixed_ranges: Any,
    summaries: Sequence[LayerSummary],
    *,
    finite: bool = True,
) -> tuple[Any, Any, Any]:
    """The pictures, numbers and coarse maps of a group of layers alike in their
    `LayerSummary.group_key`, from what `reduce_layer` kept of each.

    `fixed_ranges`: ``(layers, 2)``, each layer's fixed range (NaN: measure).
    `finite`: as `reduce_layer`'s. Returns three tensors for the whole group, all
    that leaves the step for it: the pictures ``(layers x N, H, W)`` uint8 (``(...,
    3)`` RGB), the numbers ``(layers, length)`` (`LayerNumbers.pack`) and the coarse
    maps ``(layers x N, h, w, M)`` (`tbviz.numerics.change`), each layer's N rows one
    after the other.
    """
    summary, layers = summaries[0], len(reduced)
    layout, options = summary.layout, summary.options
    maps = ops.concatenate([r.maps for r in reduced], axis=0) if layers > 1 else reduced[0].maps
    samples = maps.shape[0] // layers
    values, nonfinite, constant = (ops.stack([r[field] for r in reduced]) for field in (1, 2, 3))
    counts = np.array(
        [sample_length((samples, *s.layout.shape)) for s in summaries], np.float32
    )
    if finite:  # each layer's finiteness: 1 where the careful step must be run
        nonfinite = ops.cast(ops.logical_not(ops.isfinite(nonfinite)), "float32")
    pictures, lo, hi = render_maps(
        maps,
        layout,
        options,
        fixed_range=(fixed_ranges[:, 0], fixed_ranges[:, 1]),
        finite=finite,
        layers=layers,
    )
    statistics = sample_statistics(values, counts=counts) if summary.wants_stats else None
    shares = bound_shares(values, summary.bounds, counts)
    lo = ops.min(ops.reshape(lo, [layers, -1]), axis=1)
    hi = ops.max(ops.reshape(hi, [layers, -1]), axis=1)
    numbers = LayerNumbers.pack(lo, hi, nonfinite, constant, shares, statistics)
    return pictures, numbers, coarse(maps, finite=finite)
