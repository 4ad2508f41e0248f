"""Word-wise byte copies and eight-digit spelling against numpy's and Python's own."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from connectors.byte_copy import copy_bytes, eight_digits
from pipeline.pointers import data_pointer


@numba.njit(cache=True)
def _copy(dst, at, src, start, end):
    return copy_bytes(dst, at, src, start, end)


@numba.njit(cache=True)
def _copy_through_pointers(dst, at, src, start, end):
    return copy_bytes(data_pointer(dst), at, data_pointer(src), start, end)


@numba.njit(cache=True)
def _spelled(numbers, out):
    for i in range(numbers.shape[0]):
        out[i] = eight_digits(numbers[i])


@pytest.mark.parametrize("length", [*range(0, 20), 31, 64, 65])
def test_a_run_is_copied_exactly_and_nothing_around_it_changes(length):
    rng = np.random.default_rng(length)
    for _ in range(50):
        src = rng.integers(0, 256, 100, dtype=np.uint8)
        dst = rng.integers(0, 256, 100, dtype=np.uint8)
        start, at = (int(k) for k in rng.integers(0, 100 - length + 1, 2))
        expected = dst.copy()
        expected[at : at + length] = src[start : start + length]
        assert _copy(dst, at, src, start, start + length) == at + length
        assert (dst == expected).all()


@pytest.mark.parametrize("length", [1, 7, 8, 9, 20, 33])
def test_a_run_is_copied_within_one_array_to_a_later_place(length):
    rng = np.random.default_rng(length)
    for gap in range(0, 12):  # the runs touch, or lie a little apart
        buf = rng.integers(0, 256, 120, dtype=np.uint8)
        start = int(rng.integers(0, 20))
        at = start + length + gap
        expected = buf.copy()
        expected[at : at + length] = buf[start : start + length]
        _copy(buf, at, buf, start, start + length)
        assert (buf == expected).all()


def test_eight_digits_spell_every_kind_of_number_below_10_to_the_8():
    rng = np.random.default_rng(0)
    edges = [0, 1, 9, 10, 99, 100, 9_999, 10_000, 10_001, 99_999_999, 12_345_678, 10**7]
    numbers = np.array([*edges, *rng.integers(0, 10**8, 100_000)], np.uint64)
    words = np.empty(len(numbers), np.uint64)
    _spelled(numbers, words)
    text = words.astype("<u8").view("S8")  # the first digit in the lowest byte
    assert [t.decode() for t in text] == [f"{n:08d}" for n in numbers.tolist()]


@pytest.mark.parametrize("length", [0, 5, 8, 9, 20])
def test_a_copy_through_data_pointers_is_the_copy_through_the_arrays(length):
    rng = np.random.default_rng(length)
    src = rng.integers(0, 256, 64, dtype=np.uint8)
    by_array, by_pointer = (rng.integers(0, 256, 64, dtype=np.uint8) for _ in range(2))
    by_pointer[:] = by_array
    assert _copy(by_array, 3, src, 7, 7 + length) == 3 + length
    assert _copy_through_pointers(by_pointer, 3, src, 7, 7 + length) == 3 + length
    assert (by_pointer == by_array).all()
