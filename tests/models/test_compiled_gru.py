"""The compiled GRU: its own exponential, close to exp everywhere a gate can be, and
its batched loop, which must agree with the row-by-row one."""

import numpy as np
import pytest
import torch

from models.compiled_gru import BATCH_ROWS, ROW_BY_ROW, CompiledGRU, GruWeights, _exp
from models.features import N_FEATURES
from models.gru import GaussianGRU


def exp_of(values) -> np.ndarray:
    v = np.asarray(values, np.float32).copy()
    bits = np.empty(len(v), np.int32)
    _exp(v, len(v), bits, bits.view(np.float32))
    return v


def test_exp_is_within_an_ulp_or_two_over_its_whole_range():
    a = np.linspace(-87, 88, 200_001, dtype=np.float32)
    exact = np.exp(a.astype(np.float64))
    assert np.max(np.abs(exp_of(a) / exact - 1)) < 2 * np.finfo(np.float32).eps


def test_exp_clips_far_arguments_and_keeps_nan():
    low, high, missing, zero = exp_of([-1e9, 1e9, np.nan, 0.0])
    assert 0 < low < 1e-37 and np.isfinite(high) and high > 1e38
    assert np.isnan(missing) and zero == 1.0


def test_the_batched_loop_is_the_row_by_row_loop_with_rows_of_any_length():
    # rows stop at their own ends (one has no step at all: it keeps its state), in a
    # two-layer network; the batched loop gives what each row alone gives
    torch.manual_seed(0)
    weights = GruWeights.of(GaussianGRU(N_FEATURES, 8, 2))
    compiled = CompiledGRU.of(weights)
    rng = np.random.default_rng(0)
    rows = 2 * ROW_BY_ROW + 3
    x = rng.standard_normal((rows, 30, N_FEATURES)).astype(np.float32)  # (B, T, F)
    h = rng.uniform(-0.9, 0.9, (2, rows, 8)).astype(np.float32)  # (L, B, H)
    length = rng.integers(0, 31, rows)
    length[:2] = [0, 30]
    y, h_out = compiled.forward(x, h, length)
    np.testing.assert_array_equal(h_out[:, 0], h[:, 0])
    for b in range(rows):
        y_b, h_b = compiled.forward(x[b : b + 1], h[:, b : b + 1], length[b : b + 1])
        np.testing.assert_allclose(h_out[:, b], h_b[:, 0], rtol=0, atol=2e-6)
        np.testing.assert_allclose(y[b], y_b[0], rtol=0, atol=2e-6)  # zeros past the end


@pytest.mark.parametrize("rows", [3, 4 * ROW_BY_ROW], ids=["row-by-row", "batched"])
def test_a_stream_cut_into_chunks_gets_the_same_outputs_bit_for_bit(rows):
    # a replay resumed from its state must equal one run: each step is computed alone,
    # whatever the chunk's length (the batched loop's BLAS products included)
    torch.manual_seed(1)
    compiled = CompiledGRU.of(GruWeights.of(GaussianGRU(N_FEATURES, 8, 1)))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 40, N_FEATURES)).astype(np.float32)  # (B, T, F)
    h = rng.uniform(-0.9, 0.9, (1, rows, 8)).astype(np.float32)  # (L, B, H)
    whole, h_whole = compiled.forward(x, h, np.full(rows, 40))
    first, h_first = compiled.forward(x[:, :7], h, np.full(rows, 7))
    rest, h_rest = compiled.forward(x[:, 7:], h_first, np.full(rows, 33))
    np.testing.assert_array_equal(np.concatenate([first, rest], axis=1), whole)
    np.testing.assert_array_equal(h_rest, h_whole)


def test_many_rows_run_in_pieces_that_each_take_the_batched_loop():
    # over BATCH_ROWS rows the batched loop runs piece by piece (its gate arrays then
    # stay in cache): the same numbers as one batched pass, every piece batched
    torch.manual_seed(2)
    compiled = CompiledGRU.of(GruWeights.of(GaussianGRU(N_FEATURES, 8, 2)))
    rng = np.random.default_rng(2)
    rows = 2 * BATCH_ROWS + 1  # three pieces of 683: none small enough for row by row
    x = rng.standard_normal((rows, 3, N_FEATURES)).astype(np.float32)  # (B, T, F)
    h = rng.uniform(-0.9, 0.9, (2, rows, 8)).astype(np.float32)  # (L, B, H)
    length = rng.integers(0, 4, rows)
    y, h_out = compiled.forward(x, h, length)
    y_one, h_one = compiled._forward_batched(x, h, length)
    np.testing.assert_allclose(y, y_one, rtol=0, atol=2e-6)
    np.testing.assert_allclose(h_out, h_one, rtol=0, atol=2e-6)
    assert y.shape == (rows, 3, 2) and h_out.shape == (2, rows, 8)
