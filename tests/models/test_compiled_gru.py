"""The compiled GRU's own exponential: close to exp everywhere a gate can be."""

import numpy as np

from models.compiled_gru import _exp


def exp_of(values) -> np.ndarray:
    v = np.asarray(values, np.float32).copy()
    _exp(v, np.empty(len(v), np.int32))
    return v


def test_exp_is_within_an_ulp_or_two_over_its_whole_range():
    a = np.linspace(-87, 88, 200_001, dtype=np.float32)
    exact = np.exp(a.astype(np.float64))
    assert np.max(np.abs(exp_of(a) / exact - 1)) < 2 * np.finfo(np.float32).eps


def test_exp_clips_far_arguments_and_keeps_nan():
    low, high, missing, zero = exp_of([-1e9, 1e9, np.nan, 0.0])
    assert 0 < low < 1e-37 and np.isfinite(high) and high > 1e38
    assert np.isnan(missing) and zero == 1.0
