"""Per-layer statistics logged beside the pictures: small tensors, computed in-graph.

They are exact over every activation of every probe sample, yet never need a
full-size temporary of the layer's output: the work goes one probe sample at
a time (``tf.map_fn``), and the sum of squares is a dot product.
"""

from __future__ import annotations

import tensorflow as tf

HISTOGRAM_BINS = 30


def _per_sample(fn, samples: tf.Tensor, signature) -> tf.Tensor:
    return tf.map_fn(fn, samples, fn_output_signature=signature, parallel_iterations=1)


def layer_statistics(x: tf.Tensor, *, bins: int = HISTOGRAM_BINS) -> dict[str, tf.Tensor]:
    """Summarises one layer's output over all probe samples.

    Returns float32 scalars ``mean``, ``std``, ``zero_fraction`` (of all
    values, the share exactly 0: dead ReLUs), ``nonfinite`` (count of
    NaN/Inf values), and ``histogram``: ``(bins, 3)`` rows of
    ``[left edge, right edge, count]`` over the finite values, the layout
    TensorBoard's histogram plugin stores. Non-finite values are left out of
    every statistic but ``nonfinite``.
    """
    x = tf.convert_to_tensor(x)
    samples = tf.reshape(x, [tf.shape(x)[0], -1])

    def moments(row: tf.Tensor) -> tf.Tensor:
        """[finite count, sum, sum of squares, zeros, min, max] of one sample's finite values."""
        row = tf.cast(row, tf.float32)
        total = tf.reduce_sum(row)
        squares = tf.tensordot(row, row, 1)
        zeros = tf.reduce_sum(tf.cast(tf.equal(row, 0.0), tf.float32))

        def all_finite() -> tf.Tensor:
            size = tf.cast(tf.size(row), tf.float32)
            return tf.stack([size, total, squares, zeros, tf.reduce_min(row), tf.reduce_max(row)])

        def some_nonfinite() -> tf.Tensor:
            finite = tf.math.is_finite(row)
            clean = tf.where(finite, row, 0.0)
            return tf.stack([
                tf.reduce_sum(tf.cast(finite, tf.float32)),
                tf.reduce_sum(clean),
                tf.tensordot(clean, clean, 1),
                zeros,
                tf.reduce_min(tf.where(finite, row, float("inf"))),
                tf.reduce_max(tf.where(finite, row, float("-inf"))),
            ])  # fmt: skip

        # NaN or Inf anywhere makes the sums non-finite: only then is masking needed.
        clean_sums = tf.math.is_finite(total) & tf.math.is_finite(squares)
        return tf.cond(clean_sums, all_finite, some_nonfinite)

    parts = _per_sample(moments, samples, tf.TensorSpec([6], tf.float32))
    count = tf.reduce_sum(parts[:, 0])
    total = tf.cast(tf.size(samples), tf.float32)
    mean = tf.math.divide_no_nan(tf.reduce_sum(parts[:, 1]), count)
    variance = tf.maximum(tf.math.divide_no_nan(tf.reduce_sum(parts[:, 2]), count) - mean**2, 0.0)
    lo = tf.where(count > 0, tf.reduce_min(parts[:, 4]), 0.0)
    hi = tf.where(count > 0, tf.reduce_max(parts[:, 5]), 0.0)

    # A constant layer still gets a visible bin of width 1 around its value.
    width = tf.where(hi > lo, hi - lo, 1.0)
    left = tf.where(hi > lo, lo, lo - 0.5)
    value_range = tf.stack([left, left + width])

    def counts(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        row, finite_count = args
        row = tf.cast(row, tf.float32)

        def all_finite() -> tf.Tensor:
            return tf.histogram_fixed_width(row, value_range, nbins=bins)

        def some_nonfinite() -> tf.Tensor:
            finite = tf.math.is_finite(row)
            binned = tf.histogram_fixed_width(tf.where(finite, row, left), value_range, nbins=bins)
            # Non-finite values were counted in bin 0 as `left`; take them out again.
            nonfinite = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int32))
            return binned - tf.one_hot(0, bins, on_value=nonfinite, off_value=0, dtype=tf.int32)

        return tf.cond(finite_count == tf.cast(tf.size(row), tf.float32), all_finite, some_nonfinite)

    per_sample_counts = _per_sample(counts, (samples, parts[:, 0]), tf.TensorSpec([bins], tf.int32))
    histogram_counts = tf.reduce_sum(per_sample_counts, 0)
    edges = left + width * tf.range(bins + 1, dtype=tf.float32) / bins
    histogram = tf.stack([edges[:-1], edges[1:], tf.cast(histogram_counts, tf.float32)], axis=1)
    return {
        "mean": mean,
        "std": tf.sqrt(variance),
        "zero_fraction": tf.math.divide_no_nan(tf.reduce_sum(parts[:, 3]), total),
        "nonfinite": total - count,
        "histogram": histogram,
    }


def count_nonfinite(x: tf.Tensor) -> tf.Tensor:
    """The number of NaN/Inf values in `x`, as float32 (cheap: one pass, a bool temporary)."""
    return tf.cast(tf.size(x), tf.float32) - tf.reduce_sum(
        tf.cast(tf.math.is_finite(tf.convert_to_tensor(x)), tf.float32)
    )
