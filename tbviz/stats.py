"""Per-layer statistics logged beside the pictures: small tensors, computed in-graph.

Exact for a layer of up to `MAX_VALUES` (65,536) activations over the probe
batch. A larger layer is summarised from an evenly strided sample of at most
that many values, whose stride shares no factor with any dimension of the
output, so every channel and every position is represented; the error of a
mean or a fraction from that many values is well under one percent. The cap
keeps the statistics from costing more than the pictures, in time (reading a
ResNet's full activations several times over took as long as its forward
pass) and in memory (each statistic's temporary copy is of the sample, at
most 256 KB, and they are made one after another). The NaN/Inf count always
covers every activation."""

from __future__ import annotations

import math

import tensorflow as tf

HISTOGRAM_BINS = 30
MAX_VALUES = 2**16


def sample_stride(shape: tuple[int, ...], max_values: int = MAX_VALUES) -> int:
    """The stride through the flattened output: 1 if it has at most `max_values`
    values, else the smallest stride giving at most that many that is coprime to
    every dimension but the batch's."""
    count = math.prod(shape)
    if count <= max_values:
        return 1
    stride = -(-count // max_values)
    while any(math.gcd(stride, size) != 1 for size in shape[1:]):
        stride += 1
    return stride


def count_nonfinite(x: tf.Tensor) -> tf.Tensor:
    """The number of NaN/Inf values in `x`, as float32.

    One reduction, without a copy, when there are none (a NaN or Inf makes
    a float32 sum non-finite; other float types are checked value by value,
    a float16 sum overflows too easily); only then are they counted.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        return tf.constant(0.0)
    if x.dtype == tf.float32:
        clean = tf.math.is_finite(tf.reduce_sum(x))
    else:
        clean = tf.reduce_all(tf.math.is_finite(x))
    return tf.cond(
        clean,
        lambda: tf.constant(0.0),
        lambda: tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(x)), tf.float32)),
    )


def layer_statistics(
    x: tf.Tensor, *, bins: int = HISTOGRAM_BINS, max_values: int = MAX_VALUES
) -> dict[str, tf.Tensor]:
    """Summarises one layer's output over all probe samples (see the module doc).

    Returns float32 scalars ``mean``, ``std``, ``zero_fraction`` (the share of
    values exactly 0: dead ReLUs), ``nonfinite`` (count of NaN/Inf values), and
    ``histogram``: ``(bins, 3)`` rows of ``[left edge, right edge, count]``
    over the finite values, the layout TensorBoard's histogram plugin stores.
    Non-finite values are left out of every statistic but ``nonfinite``.
    """
    x = tf.convert_to_tensor(x)
    shape = tuple(1 if size is None else size for size in x.shape)
    values = tf.cast(tf.reshape(x, [-1])[:: sample_stride(shape, max_values)], tf.float32)
    nonfinite = count_nonfinite(x)
    # Only when there are NaN/Inf values is a copy without them made.
    finite = tf.cond(
        nonfinite > 0,
        lambda: tf.boolean_mask(values, tf.math.is_finite(values)),
        lambda: values,
    )
    count = tf.cast(tf.size(finite), tf.float32)
    mean = tf.math.divide_no_nan(tf.reduce_sum(finite), count)
    lo = tf.where(count > 0, tf.reduce_min(finite), 0.0)
    hi = tf.where(count > 0, tf.reduce_max(finite), 0.0)
    # One full-size temporary at a time: the variance's, the histogram's, the zero count's.
    variance = tf.math.divide_no_nan(tf.reduce_sum(tf.square(finite - mean)), count)
    with tf.control_dependencies([variance]):
        # A constant layer still gets a visible bin of width 1 around its value.
        width = tf.where(hi > lo, hi - lo, 1.0)
        left = tf.where(hi > lo, lo, lo - 0.5)
        counts = tf.histogram_fixed_width(finite, tf.stack([left, left + width]), nbins=bins)
    with tf.control_dependencies([counts]):
        zero_fraction = tf.reduce_mean(tf.cast(tf.equal(values, 0.0), tf.float32))
    edges = left + width * tf.range(bins + 1, dtype=tf.float32) / bins
    histogram = tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float32)], axis=1)
    return {
        "mean": mean,
        "std": tf.sqrt(variance),
        "zero_fraction": zero_fraction,
        "nonfinite": nonfinite,
        "histogram": histogram,
    }
