"""One layer's output -> what leaves the logging step for it: pictures, numbers, coarse maps.

The per-layer work of `tbviz.ActivationLogger`'s step, called on each
selected layer's output as the layer returns it (see `tbviz.step`), in two
parts (`LayerSummary`):

- `reduce_layer` reads the full output, once for each thing it needs: the
  maps of its first channels, shrunk to picture size (`tbviz.numerics.pictures.to_maps`);
  the strided sample its statistics are taken from (`tbviz.numerics.stats.sample`);
  its NaN/Inf count, over every value; with health, its constant channels
  (`tbviz.numerics.health`). What it returns is small, so the
  output can be freed as soon as the model is done with it too.
- `finish_layer` makes the pictures, statistics and coarse maps from those
  small tensors. The model need not wait for it: in TensorFlow's step it
  runs beside the rest of the forward pass.

Almost always a layer has no NaN/Inf: then both parts take a lean path with
no masks (`tbviz.numerics.pictures.when_finite`), decided once per layer by its count.

A layer's numbers leave the step as one float32 vector, packed and unpacked
here only (`LayerNumbers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from keras import ops

from tbviz.io import tags
from tbviz.numerics.change import coarse
from tbviz.numerics.health import Health, bound_shares, constant_channels
from tbviz.numerics.layout import Layout
from tbviz.numerics.pictures import PictureOptions, render_maps, to_maps
from tbviz.numerics.stats import HISTOGRAM_BINS, count_nonfinite, sample, sample_statistics


class Reduced(NamedTuple):
    """What `reduce_layer` keeps of a layer's output: all that `finish_layer` needs."""

    maps: Any  # float32 (N, h, w, M), NaN where a shrunk pixel covers a NaN/Inf
    sample: Any  # float32 (count,): the statistics' sample, or (0,) without statistics
    nonfinite: Any  # float32 (): how many NaN/Inf values the whole output holds
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
        lo: Any, hi: Any, reduced: Reduced, shares: tuple[Any, Any], statistics: dict[str, Any] | None
    ) -> Any:
        """The vector, in the step (``keras.ops``), from `sample_statistics`' result or None."""
        head = [ops.min(lo), ops.max(hi), reduced.nonfinite, reduced.constant, *shares]
        if statistics is None:
            return ops.stack(head)
        head += [statistics[kind] for kind in _STATISTICS]
        return ops.concatenate([ops.stack(head), ops.reshape(statistics["histogram"], [-1])])

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

    def reduce(self, output: Any) -> Reduced:
        """The part that reads the full output; the model waits for it."""
        return reduce_layer(output, self.layout, self.options, self.wants_stats, self.health)

    def finish(self, reduced: Reduced, fixed_range: Any) -> tuple[Any, Any, Any]:
        """The rest, from what `reduce` kept: pictures, numbers, coarse maps."""
        return finish_layer(
            reduced, fixed_range, self.layout, self.options, self.wants_stats, self.bounds
        )

    @property
    def finish_kind(self) -> tuple:
        """What `finish` depends on besides its tensors: layers alike in it (and in their maps'
        shape) can share one compiled `finish`."""
        layout = self.layout
        colour = layout.kind == "image" and layout.channels == 3
        grid = layout.grid(self.options.max_channels)
        return self.options, self.wants_stats, grid, colour, self.bounds


def reduce_layer(
    output: Any, layout: Layout, options: PictureOptions, wants_stats: bool, health: bool = False
) -> Reduced:
    """The part of a layer's summary that reads its full output (see the module doc)."""
    nonfinite = count_nonfinite(output)
    maps = to_maps(
        output,
        layout,
        max_channels=options.max_channels,
        max_size=options.max_size,
        padding=options.padding,
        finite=nonfinite == 0,
    )
    values = sample(output) if wants_stats else ops.zeros((0,), "float32")
    constant = constant_channels(output, layout) if health else ops.zeros((), "float32")
    return Reduced(maps, values, nonfinite, constant)


def finish_layer(
    reduced: Reduced,
    fixed_range: Any,
    layout: Layout,
    options: PictureOptions,
    wants_stats: bool,
    bounds: tuple[float, float, float] | None = None,
) -> tuple[Any, Any, Any]:
    """One layer's pictures, its numbers (`LayerNumbers.pack`) and its coarse maps
    (`tbviz.numerics.change`): three tensors a layer, whatever the backend, all that
    leaves the step for it."""

    def finish(finite: bool) -> tuple[Any, Any, Any]:
        pictures, lo, hi = render_maps(
            reduced.maps,
            layout,
            options,
            fixed_range=(fixed_range[0], fixed_range[1]),
            finite=finite,
        )
        statistics = sample_statistics(reduced.sample, finite=finite) if wants_stats else None
        shares = bound_shares(reduced.sample, bounds)
        numbers = LayerNumbers.pack(lo, hi, reduced, shares, statistics)
        return pictures, numbers, coarse(reduced.maps, finite=finite)

    return ops.cond(reduced.nonfinite == 0, lambda: finish(True), lambda: finish(False))
