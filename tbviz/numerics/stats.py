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


def finiteness(x: Any) -> Any:
    """A float32 scalar that is finite exactly when `x` holds no NaN/Inf.

    One reduction without a copy for float32: its sum (a NaN or Inf makes it
    non-finite; an overflowing sum too, which only costs the careful path).
    Other float types are checked value by value (a float16 sum overflows too
    easily); integers hold none.
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype:
        return ops.zeros((), "float32")
    if dtype == "float32":
        return ops.sum(x)
    return ops.where(ops.all(ops.isfinite(x)), 0.0, np.nan)


def nonfinite_count(x: Any) -> Any:
    """How many NaN/Inf values `x` (a float tensor) holds, as float32: one pass over it."""
    return ops.sum(ops.cast(ops.logical_not(ops.isfinite(x)), "float32"))


def sample(x: Any, max_values: int = MAX_VALUES, *, padded: bool = False) -> Any:
    """The values a layer's statistics are taken from: `x` flattened, every `sample_stride`-th,
    float32; `padded`: with NaN after them up to `max_values` (every statistic leaves NaN
    out: `sample_statistics` with `sample_length` as the counts), so that the samples of
    any layers stack."""
    x = ops.convert_to_tensor(x)
    values = ops.cast(ops.reshape(x, [-1])[:: sample_stride(tuple(x.shape), max_values)], "float32")
    if padded and values.shape[0] < max_values:
        values = ops.pad(values, [[0, max_values - values.shape[0]]], constant_values=np.nan)
    return values


def sample_length(shape: tuple[int, ...], max_values: int = MAX_VALUES) -> int:
    """How many values `sample` takes of an output of `shape`."""
    return -(-math.prod(shape) // sample_stride(shape, max_values))


def sample_statistics(values: Any, *, bins: int = HISTOGRAM_BINS, counts: Any = None) -> dict[str, Any]:
    """The statistics of float32 `values` ``(..., count)`` (see `sample`), NaN/Inf left out.

    Each row of `values` (its last axis) is one layer's sample: the samples of
    several layers are done at once, in the same few ops as one, each padded
    with NaN to one length (`sample`). Returns float32, one per row: ``mean``,
    ``std``, ``zero_fraction`` (the share of the sample exactly 0: dead ReLUs)
    and ``histogram``: ``(..., bins, 3)`` rows of ``[left edge, right edge,
    count]`` over the finite values, the layout TensorBoard's histogram plugin
    stores (a value at or past an end is counted in the end bin).

    `counts`: each row's sample length before padding (``(...,)``, `sample_length`);
    None: the rows' length.
    """
    values = ops.convert_to_tensor(values)
    batch = tuple(values.shape[:-1])
    rows = ops.reshape(values, [-1, values.shape[-1]])  # (layers, count)
    finite = ops.isfinite(rows)
    count = ops.sum(ops.cast(finite, "float32"), axis=-1)
    divisor = ops.maximum(count, 1.0)
    mean = ops.sum(ops.where(finite, rows, 0.0), axis=-1) / divisor
    lo = ops.where(count > 0, ops.min(ops.where(finite, rows, np.inf), axis=-1), 0.0)
    hi = ops.where(count > 0, ops.max(ops.where(finite, rows, -np.inf), axis=-1), 0.0)
    deviations = ops.where(finite, rows - mean[:, np.newaxis], 0.0)
    variance = ops.sum(ops.square(deviations), axis=-1) / divisor
    # A constant layer still gets a visible bin of width 1 around its value.
    lo, hi = lo[:, np.newaxis], hi[:, np.newaxis]
    width = ops.where(hi > lo, hi - lo, 1.0)
    left = ops.where(hi > lo, lo, lo - 0.5)
    # Each value's bin, a value at or past an end in the end bin; values left out go to an
    # extra bin past the last, dropped.
    bin_of = ops.where(finite, ops.clip(ops.floor((rows - left) / width * bins), 0, bins - 1), bins)
    histogram_counts = _bin_counts(ops.cast(bin_of, "int32"), bins + 1)[:, :bins]
    edges = left + width * ops.arange(bins + 1, dtype="float32") / bins
    histogram = ops.stack([edges[:, :-1], edges[:, 1:], histogram_counts], axis=-1)
    zeros = ops.sum(ops.cast(ops.equal(rows, 0.0), "float32"), axis=-1)
    length = float(rows.shape[-1]) if counts is None else ops.reshape(counts, [-1])
    return {
        "mean": ops.reshape(mean, batch),
        "std": ops.reshape(ops.sqrt(variance), batch),
        "zero_fraction": ops.reshape(zeros / ops.maximum(length, 1.0), batch),
        "histogram": ops.reshape(histogram, (*batch, bins, 3)),
    }


def _bin_counts(bin_of: Any, length: int) -> Any:
    """How many of each row of `bin_of` (int32 ``(rows, values)``, each in ``[0, length)``)
    are in each bin, float32 ``(rows, length)``.

    One segment sum over every row at once (row ``r``'s bins are segments ``r * length``
    on): one pass, no temporary beyond the counts, and a static length, which every
    backend's compiler needs (Keras' ``bincount`` has none under ``jax.jit``). A
    comparison with every bin number would be one op too, but holds a ``(length,
    values)`` temporary: 2 MB a layer.
    """
    rows = bin_of.shape[0]
    offsets = ops.arange(rows, dtype="int32")[:, np.newaxis] * length
    counts = ops.segment_sum(
        ops.ones((rows * bin_of.shape[1],), "float32"),
        ops.reshape(bin_of + offsets, [-1]),
        num_segments=rows * length,
    )
    return ops.reshape(counts, [rows, length])
