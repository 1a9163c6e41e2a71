"""One layer's output -> what leaves the logging step for it: pictures, numbers, coarse maps.

The per-layer work of `tbviz.ActivationLogger`'s step, called on each
selected layer's output as the layer returns it (see `tbviz.steps`).
"""

from __future__ import annotations

from typing import Any

from keras import ops

from tbviz import metadata
from tbviz.pictures import PictureOptions, render
from tbviz.stats import count_nonfinite, layer_statistics


def summarize_layer(
    output: Any,
    fixed_range: Any,
    options: PictureOptions,
    channels_first: bool,
    wants_stats: bool,
) -> tuple[Any, Any, Any]:
    """One layer's pictures; in one float32 vector its numbers: the value range used (lo,
    hi), the NaN/Inf count, then with `wants_stats` mean, std, zero fraction and the
    histogram's ``(bins, 3)`` rows; and its coarse maps (`tbviz.change`). Three tensors a
    layer, whatever the backend: all that leaves the step for it."""
    pictures, lo, hi, coarse = render(
        output,
        options,
        channels_first=channels_first,
        fixed_range=(fixed_range[0], fixed_range[1]),
        with_coarse=True,
    )
    # Without stats or histograms only the NaN/Inf count (for the warning) is needed.
    stats = layer_statistics(output) if wants_stats else {"nonfinite": count_nonfinite(output)}
    numbers = [ops.min(lo), ops.max(hi), stats["nonfinite"]]
    if wants_stats:
        numbers += [stats[kind] for kind in metadata.SCALAR_KINDS]
        return pictures, ops.concatenate([ops.stack(numbers), ops.reshape(stats["histogram"], [-1])]), coarse
    return pictures, ops.stack(numbers), coarse
