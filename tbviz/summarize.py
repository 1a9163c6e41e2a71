"""One layer's output -> what leaves the logging step for it: pictures, numbers, coarse maps.

The per-layer work of `tbviz.ActivationLogger`'s step, called on each
selected layer's output as the layer returns it (see `tbviz.steps`), in two
parts:

- `reduce_layer` reads the full output, once for each thing it needs: the
  maps of its first channels, shrunk to picture size (`tbviz.pictures.to_maps`);
  the strided sample its statistics are taken from (`tbviz.stats.sample`);
  its NaN/Inf count, over every value. What it returns is small, so the
  output can be freed as soon as the model is done with it too.
- `finish_layer` makes the pictures, statistics and coarse maps from those
  small tensors. The model need not wait for it: in TensorFlow's step it
  runs beside the rest of the forward pass.

Almost always a layer has no NaN/Inf: then both parts take a lean path with
no masks (`tbviz.pictures.when_finite`), decided once per layer by its count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from keras import ops

from tbviz import metadata
from tbviz.change import coarse
from tbviz.pictures import PictureOptions, render_maps, to_maps
from tbviz.stats import count_nonfinite, sample, sample_statistics


class Reduced(NamedTuple):
    """What `reduce_layer` keeps of a layer's output: all that `finish_layer` needs."""

    maps: Any  # float32 (N, h, w, M), NaN where a shrunk pixel covers a NaN/Inf
    sample: Any  # float32 (count,): the statistics' sample, or (0,) without statistics
    nonfinite: Any  # float32 (): how many NaN/Inf values the whole output holds


def reduce_layer(
    output: Any, options: PictureOptions, channels_first: bool, wants_stats: bool
) -> Reduced:
    """The part of a layer's summary that reads its full output (see the module doc)."""
    nonfinite = count_nonfinite(output)
    maps, _ = to_maps(
        output,
        channels_first=channels_first,
        max_channels=options.max_channels,
        max_size=options.max_size,
        padding=options.padding,
        finite=nonfinite == 0,
    )
    values = sample(output) if wants_stats else ops.zeros((0,), "float32")
    return Reduced(maps, values, nonfinite)


def finish_layer(
    reduced: Reduced,
    fixed_range: Any,
    options: PictureOptions,
    grid: tuple[int, int],
    wants_stats: bool,
) -> tuple[Any, Any, Any]:
    """One layer's pictures; in one float32 vector its numbers: the value range used (lo,
    hi), the NaN/Inf count, then with `wants_stats` mean, std, zero fraction and the
    histogram's ``(bins, 3)`` rows; and its coarse maps (`tbviz.change`). Three tensors a
    layer, whatever the backend: all that leaves the step for it."""

    def finish(finite: bool) -> tuple[Any, Any, Any]:
        pictures, lo, hi = render_maps(
            reduced.maps, grid, options, fixed_range=(fixed_range[0], fixed_range[1]), finite=finite
        )
        numbers = [ops.min(lo), ops.max(hi), reduced.nonfinite]
        coarse_maps = coarse(reduced.maps, finite=finite)
        if not wants_stats:
            return pictures, ops.stack(numbers), coarse_maps
        stats = sample_statistics(reduced.sample, finite=finite)
        numbers += [stats[kind] for kind in metadata.SCALAR_KINDS]
        histogram = ops.reshape(stats["histogram"], [-1])
        return pictures, ops.concatenate([ops.stack(numbers), histogram]), coarse_maps

    return ops.cond(reduced.nonfinite == 0, lambda: finish(True), lambda: finish(False))

