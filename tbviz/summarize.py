"""One layer's output -> what leaves the logging step for it: pictures, numbers, coarse maps.

The per-layer work of `tbviz.ActivationLogger`'s step, called on each
selected layer's output as the layer returns it (see `tbviz.steps`).
"""

from __future__ import annotations

import tensorflow as tf

from tbviz import metadata
from tbviz.pictures import PictureOptions, render
from tbviz.stats import count_nonfinite, layer_statistics


def summarize_layer(
    output: tf.Tensor,
    fixed_range: tf.Tensor,
    options: PictureOptions,
    channels_first: bool,
    wants_stats: bool,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One layer's pictures; in one float32 vector its numbers: the value range used (lo,
    hi), the NaN/Inf count, then with `wants_stats` mean, std, zero fraction and the
    histogram's ``(bins, 3)`` rows; and its coarse maps (`tbviz.change`). Three tensors a
    layer: each is a node of the step's graph."""
    pictures, lo, hi, coarse = render(
        output,
        options,
        channels_first=channels_first,
        fixed_range=tf.unstack(fixed_range),
        with_coarse=True,
    )
    # Without stats or histograms only the NaN/Inf count (for the warning) is needed.
    with tf.control_dependencies([pictures]):
        stats = layer_statistics(output) if wants_stats else {"nonfinite": count_nonfinite(output)}
    numbers = [tf.reduce_min(lo), tf.reduce_max(hi), stats["nonfinite"]]
    if wants_stats:
        numbers = [tf.stack(numbers + [stats[kind] for kind in metadata.SCALAR_KINDS])]
        numbers.append(tf.reshape(stats["histogram"], [-1]))
        return pictures, tf.concat(numbers, 0), coarse
    return pictures, tf.stack(numbers), coarse
