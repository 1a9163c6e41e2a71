"""Per-layer statistics logged beside the pictures: small tensors, computed in the step.

In ``keras.ops``, like `tbviz.pictures`: the same numbers on every backend.

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
from typing import Any

import keras
import numpy as np
from keras import ops

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


def count_nonfinite(x: Any) -> Any:
    """The number of NaN/Inf values in `x`, as float32.

    One reduction, without a copy, when there are none (a NaN or Inf makes
    a float32 sum non-finite; other float types are checked value by value,
    a float16 sum overflows too easily); only then are they counted.
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype:
        return ops.zeros((), "float32")
    if dtype == "float32":
        clean = ops.all(ops.isfinite(ops.sum(x)))
    else:
        clean = ops.all(ops.isfinite(x))
    return ops.cond(
        clean,
        lambda: ops.zeros((), "float32"),
        lambda: ops.sum(ops.cast(ops.logical_not(ops.isfinite(x)), "float32")),
    )


def layer_statistics(
    x: Any, *, bins: int = HISTOGRAM_BINS, max_values: int = MAX_VALUES
) -> dict[str, Any]:
    """Summarises one layer's output over all probe samples (see the module doc).

    Returns float32 scalars ``mean``, ``std``, ``zero_fraction`` (the share of
    values exactly 0: dead ReLUs), ``nonfinite`` (count of NaN/Inf values), and
    ``histogram``: ``(bins, 3)`` rows of ``[left edge, right edge, count]``
    over the finite values, the layout TensorBoard's histogram plugin stores
    (a value at or past an end is counted in the end bin).
    Non-finite values are left out of every statistic but ``nonfinite``.
    """
    x = ops.convert_to_tensor(x)
    values = ops.cast(ops.reshape(x, [-1])[:: sample_stride(tuple(x.shape), max_values)], "float32")
    finite = ops.isfinite(values)
    count = ops.sum(ops.cast(finite, "float32"))
    divisor = ops.maximum(count, 1.0)
    mean = ops.sum(ops.where(finite, values, 0.0)) / divisor
    lo = ops.where(count > 0, ops.min(ops.where(finite, values, np.inf)), 0.0)
    hi = ops.where(count > 0, ops.max(ops.where(finite, values, -np.inf)), 0.0)
    variance = ops.sum(ops.where(finite, ops.square(values - mean), 0.0)) / divisor
    # A constant layer still gets a visible bin of width 1 around its value.
    width = ops.where(hi > lo, hi - lo, 1.0)
    left = ops.where(hi > lo, lo, lo - 0.5)
    # Each finite value's bin; the non-finite ones go to an extra bin, dropped.
    bin_of = ops.clip(ops.floor((values - left) / width * bins), 0, bins - 1)
    bin_of = ops.cast(ops.where(finite, bin_of, bins), "int32")
    counts = _bin_counts(bin_of, bins + 1)[:bins]
    zero_fraction = ops.mean(ops.cast(ops.equal(values, 0.0), "float32"))
    edges = left + width * ops.arange(bins + 1, dtype="float32") / bins
    histogram = ops.stack([edges[:-1], edges[1:], counts], axis=1)
    return {
        "mean": mean,
        "std": ops.sqrt(variance),
        "zero_fraction": zero_fraction,
        "nonfinite": count_nonfinite(x),
        "histogram": histogram,
    }


def _bin_counts(bin_of: Any, length: int) -> Any:
    """How many of `bin_of` (int32, each in ``[0, length)``) are in each bin, float32 ``(length,)``.

    One pass, no temporary beyond the counts. ``bincount`` where Keras can
    compile it (TensorFlow, PyTorch); under JAX Keras' ``bincount`` has no
    static length for ``jit``, so a segment sum (which TensorFlow runs about
    five times slower on a CPU: 1.7 ms for 65,536 values). A comparison
    with every bin number would be one op on every backend, but holds a
    ``(length, values)`` temporary: 8 MB a layer.
    """
    if keras.backend.backend() == "jax":
        counts = ops.segment_sum(ops.ones_like(bin_of), bin_of, num_segments=length)
    else:
        counts = ops.reshape(ops.bincount(bin_of, minlength=length), [length])
    return ops.cast(counts, "float32")
