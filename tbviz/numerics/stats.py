"""Per-layer statistics logged beside the pictures: small tensors, computed in the step.

In ``keras.ops``, like `tbviz.numerics.pictures`: the same numbers on every backend.

Exact for a layer of up to `MAX_VALUES` (16,384) activations over the probe
batch. A larger layer is summarised from an evenly strided sample of at most
that many values, whose stride shares no factor with any dimension of the
output, so every channel and every position is represented; a mean from that
many values is off by about 1/128 of the standard deviation (0.6 % of the
mean of a ReLU layer's 524,288 values in the tests), a fraction by at most
0.4 percentage points. The cap keeps the statistics from costing more than
the pictures, in time (reading a ResNet's full activations several times
over took as long as its forward pass; with 153 layers, a sample of 65,536
values instead made MobileNetV2's logging step about 10 % slower) and in
memory (the sample and each statistic's temporary copy of it are 64 KB). The
NaN/Inf count always covers every activation."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from tbviz.numerics.pictures import when_finite

HISTOGRAM_BINS = 30
MAX_VALUES = 2**14


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


def sample(x: Any, max_values: int = MAX_VALUES) -> Any:
    """The values a layer's statistics are taken from: `x` flattened, every `sample_stride`-th, float32."""
    x = ops.convert_to_tensor(x)
    return ops.cast(ops.reshape(x, [-1])[:: sample_stride(tuple(x.shape), max_values)], "float32")


def sample_statistics(
    values: Any, *, bins: int = HISTOGRAM_BINS, finite: Any = None
) -> dict[str, Any]:
    """The statistics of float32 `values` ``(count,)`` (see `sample`), NaN/Inf left out.

    Returns float32 scalars ``mean``, ``std``, ``zero_fraction`` (the share of
    values exactly 0: dead ReLUs) and ``histogram``: ``(bins, 3)`` rows of
    ``[left edge, right edge, count]`` over the finite values, the layout
    TensorBoard's histogram plugin stores (a value at or past an end is
    counted in the end bin). `finite`: whether `values` may hold NaN/Inf (see
    `tbviz.numerics.pictures.when_finite`); without any, no masks are needed.
    """
    def histogram(lo: Any, hi: Any, keep: Any = None) -> Any:
        # A constant layer still gets a visible bin of width 1 around its value.
        width = ops.where(hi > lo, hi - lo, 1.0)
        left = ops.where(hi > lo, lo, lo - 0.5)
        # Each value's bin, a value at or past an end in the end bin; values not kept go
        # to an extra bin past the last, dropped.
        bin_of = ops.clip(ops.floor((values - left) / width * bins), 0, bins - 1)
        if keep is not None:
            bin_of = ops.where(keep, bin_of, bins)
        counts = _bin_counts(ops.cast(bin_of, "int32"), bins + 1)[:bins]
        edges = left + width * ops.arange(bins + 1, dtype="float32") / bins
        return ops.stack([edges[:-1], edges[1:], counts], axis=1)

    def lean() -> tuple[Any, Any, Any]:
        mean = ops.mean(values)
        variance = ops.mean(ops.square(values - mean))
        return mean, variance, histogram(ops.min(values), ops.max(values))

    def careful() -> tuple[Any, Any, Any]:
        finite = ops.isfinite(values)
        count = ops.sum(ops.cast(finite, "float32"))
        divisor = ops.maximum(count, 1.0)
        mean = ops.sum(ops.where(finite, values, 0.0)) / divisor
        lo = ops.where(count > 0, ops.min(ops.where(finite, values, np.inf)), 0.0)
        hi = ops.where(count > 0, ops.max(ops.where(finite, values, -np.inf)), 0.0)
        variance = ops.sum(ops.where(finite, ops.square(values - mean), 0.0)) / divisor
        return mean, variance, histogram(lo, hi, finite)

    mean, variance, counted = when_finite(finite, values, lean, careful)
    return {
        "mean": mean,
        "std": ops.sqrt(variance),
        "zero_fraction": ops.mean(ops.cast(ops.equal(values, 0.0), "float32")),
        "histogram": counted,
    }


def _bin_counts(bin_of: Any, length: int) -> Any:
    """How many of `bin_of` (int32, each in ``[0, length)``) are in each bin, float32 ``(length,)``.

    A segment sum: one pass, no temporary beyond the counts, and a static
    length, which every backend's compiler needs (Keras' ``bincount`` has
    none under ``jax.jit``). A comparison with every bin number would be one
    op too, but holds a ``(length, values)`` temporary: 2 MB a layer.
    """
    return ops.segment_sum(ops.ones_like(bin_of, dtype="float32"), bin_of, num_segments=length)
