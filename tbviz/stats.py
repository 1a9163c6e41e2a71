"""Per-layer statistics logged beside the pictures: small tensors, computed in-graph."""

from __future__ import annotations

import tensorflow as tf

HISTOGRAM_BINS = 30


def layer_statistics(x: tf.Tensor, *, bins: int = HISTOGRAM_BINS) -> dict[str, tf.Tensor]:
    """Summarises one layer's output over all probe samples.

    Returns float32 scalars ``mean``, ``std``, ``zero_fraction`` (of all
    values, the share exactly 0: dead ReLUs), ``nonfinite`` (count of
    NaN/Inf values), and ``histogram``: ``(bins, 3)`` rows of
    ``[left edge, right edge, count]`` over the finite values, the layout
    TensorBoard's histogram plugin stores. Non-finite values are left out of
    every statistic but ``nonfinite``.
    """
    x = tf.reshape(tf.cast(x, tf.float32), [-1])
    finite_mask = tf.math.is_finite(x)
    finite = tf.boolean_mask(x, finite_mask)
    total = tf.cast(tf.size(x), tf.float32)
    n_finite = tf.cast(tf.size(finite), tf.float32)
    mean = tf.math.divide_no_nan(tf.reduce_sum(finite), n_finite)
    variance = tf.math.divide_no_nan(tf.reduce_sum(tf.square(finite - mean)), n_finite)

    lo = _min_or_zero(finite)
    hi = _max_or_zero(finite)
    # A constant layer still gets a visible bin of width 1 around its value.
    width = tf.where(hi > lo, hi - lo, 1.0)
    left = tf.where(hi > lo, lo, lo - 0.5)
    counts = tf.histogram_fixed_width(finite, [left, left + width], nbins=bins)
    edges = left + width * tf.range(bins + 1, dtype=tf.float32) / bins
    histogram = tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float32)], axis=1)
    return {
        "mean": mean,
        "std": tf.sqrt(variance),
        "zero_fraction": tf.math.divide_no_nan(
            tf.reduce_sum(tf.cast(tf.equal(x, 0.0), tf.float32)), total
        ),
        "nonfinite": total - n_finite,
        "histogram": histogram,
    }


def _min_or_zero(values: tf.Tensor) -> tf.Tensor:
    return tf.cond(tf.size(values) > 0, lambda: tf.reduce_min(values), lambda: 0.0)


def _max_or_zero(values: tf.Tensor) -> tf.Tensor:
    return tf.cond(tf.size(values) > 0, lambda: tf.reduce_max(values), lambda: 0.0)
