"""Exact tests of the per-layer statistics."""

import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_np

from tbviz.numerics import stats as stats_module
from tbviz.numerics.stats import finiteness, nonfinite_count, sample, sample_statistics


def layer_statistics(x):
    """What the step computes of one layer's output: its sample's statistics and its NaN/Inf count."""
    return {**sample_statistics(sample(x)), "nonfinite": nonfinite_count(x)}


def test_statistics_match_numpy():
    """Mean, std, zero fraction and histogram agree with NumPy over all samples."""
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 4)).astype(np.float32)
    x[x < -0.5] = 0.0
    stats = {k: to_np(v) for k, v in layer_statistics(x).items()}
    assert stats["mean"] == pytest.approx(x.mean(), abs=1e-6)
    assert stats["std"] == pytest.approx(x.std(), rel=1e-4)
    assert stats["zero_fraction"] == pytest.approx((x == 0).mean())
    assert stats["nonfinite"] == 0
    counts, edges = np.histogram(x, bins=30)
    np.testing.assert_allclose(stats["histogram"][:, 0], edges[:-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["histogram"][:, 1], edges[1:], rtol=1e-5, atol=1e-6)
    assert np.abs(stats["histogram"][:, 2] - counts).sum() <= 2  # float32 vs float64 at bin edges
    assert stats["histogram"][:, 2].sum() == x.size


def test_nonfinite_values_are_counted_and_left_out():
    """NaN and Inf are counted as such and change no other statistic."""
    x = np.array([[1.0, 2.0, np.nan, 3.0], [np.inf, 0.0, -np.inf, 4.0]], np.float32)
    stats = {k: to_np(v) for k, v in layer_statistics(x).items()}
    finite = np.array([1, 2, 3, 0, 4], np.float32)
    assert stats["nonfinite"] == 3
    assert stats["mean"] == pytest.approx(finite.mean())
    assert stats["std"] == pytest.approx(finite.std(), rel=1e-5)
    assert stats["zero_fraction"] == pytest.approx(1 / 8)
    assert stats["histogram"][:, 2].sum() == 5 and stats["histogram"][0, 0] == 0
    assert to_np(nonfinite_count(x)) == 3  # the careful step's count
    assert not np.isfinite(to_np(finiteness(x)))  # the lean step's check sees them


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_constant_and_empty_layers_give_no_nan(dtype):
    """A constant layer (float16 too) gets std 0 and a one-unit-wide histogram, never NaN."""
    stats = {k: to_np(v) for k, v in layer_statistics(np.full((2, 3, 3), 5, dtype)).items()}
    assert stats["mean"] == 5 and stats["std"] == 0
    assert stats["histogram"][0, 0] == 4.5 and stats["histogram"][-1, 1] == pytest.approx(5.5)
    all_nan = {k: to_np(v) for k, v in layer_statistics(np.full((1, 4), np.nan, dtype)).items()}
    assert all_nan["nonfinite"] == 4 and all_nan["mean"] == 0 and all_nan["histogram"][:, 2].sum() == 0
    assert not any(np.isnan(v).any() for v in all_nan.values())


def test_sample_stride_reaches_every_channel_and_position():
    """Large layers are sampled with a stride coprime to every dimension; small ones are not sampled."""
    assert stats_module.sample_stride((4, 8, 8, 32)) == 1
    shape = (8, 56, 56, 256)
    stride = stats_module.sample_stride(shape)
    assert np.prod(shape) / stride <= stats_module.MAX_VALUES
    assert all(np.gcd(stride, size) == 1 for size in shape[1:])
    indices = np.arange(0, np.prod(shape), stride)
    assert len(np.unique(indices % 256)) == 256  # every channel
    assert len(np.unique((indices // 256) % 56)) == 56  # every column


def test_large_layer_statistics_are_close_and_nonfinite_exact():
    """A layer past MAX_VALUES: sampled statistics within a fraction of a percent; every NaN counted."""
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(4, 64, 64, 32)), 0).astype(np.float32)  # 524,288 ReLU values
    x[3, 63, 63, 31] = np.nan  # a single NaN that a sample would likely miss
    stats = {k: to_np(v) for k, v in layer_statistics(x).items()}
    finite = x[np.isfinite(x)]
    assert stats["nonfinite"] == 1
    assert stats["mean"] == pytest.approx(finite.mean(), rel=0.01)
    assert stats["std"] == pytest.approx(finite.std(), rel=0.01)
    assert stats["zero_fraction"] == pytest.approx((x == 0).mean(), abs=0.005)
    assert stats["histogram"][:, 2].sum() <= stats_module.MAX_VALUES
