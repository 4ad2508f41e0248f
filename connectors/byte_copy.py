"""Bytes eight at a time inside compiled kernels: copying short runs, spelling digits.

A byte loop that reads and writes the same array (``buf[pos] = buf[j]``) cannot be
vectorised, since the compiler must assume the two may overlap: about 1.3 ns a
byte, so that copying a 20-byte time cost as much as spelling it. Here a run is
copied as unaligned 64-bit words (x86-64 and ARM64 load and store them at any
address), and eight digits are spelled in one word and stored at once, the
first digit in the word's lowest byte: little-endian machines only, as numba's
platforms are.
"""

from __future__ import annotations

import sys
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

if sys.byteorder != "little":  # eight_digits' first digit must be the first byte stored
    _MSG = "connectors.byte_copy needs a little-endian machine"
    raise ImportError(_MSG)


def _data(context: Any, builder: Any, kind: Any, value: Any) -> Any:
    """The first byte's address of a uint8 array or of a ``data_pointer``."""
    if isinstance(kind, types.CPointer):
        return value
    return context.make_array(kind)(context, builder, value).data


@intrinsic
def load8(typingctx: Any, array: Any, index: Any) -> Any:
    """The eight bytes of a uint8 array (or ``data_pointer``) from ``index`` on, as a
    uint64 (no bounds check, any alignment)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = _data(context, builder, signature.args[0], args[0])
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(address, align=1)

    return types.uint64(array, index), codegen


@intrinsic
def store8(typingctx: Any, array: Any, index: Any, word: Any) -> Any:
    """Write a uint64's eight bytes into a uint8 array (or ``data_pointer``) from
    ``index`` on (no bounds check, any alignment)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = _data(context, builder, signature.args[0], args[0])
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        builder.store(args[2], address, align=1)
        return context.get_dummy_value()

    return types.void(array, index, types.uint64), codegen


@numba.njit(cache=True, error_model="numpy", inline="always")
def copy_bytes(dst, at, src, start, end):
    """``dst[at : at + n] = src[start:end]`` (n = end - start); the new position.

    Within one array the runs must not overlap. Every word read and written lies
    inside the two runs: a run of eight bytes or more ends with a word that overlaps
    the one before it, and a shorter run is copied byte by byte."""
    n = end - start
    if n < 8:
        for j in range(n):
            dst[at + j] = src[start + j]
        return at + n
    j = 0
    while j + 8 < n:
        store8(dst, at + j, load8(src, start + j))
        j += 8
    store8(dst, at + n - 8, load8(src, end - 8))
    return at + n


_DIGITS_HIGH = np.uint64(0x0000007F0000007F)
_DIGITS_LOW = np.uint64(0x000F000F000F000F)
_ASCII_ZEROS = np.uint64(0x3030303030303030)


@numba.njit(cache=True, error_model="numpy", inline="always")
def eight_digits(n):
    """0 <= n < 10**8 (uint64) as eight ASCII digits, leading zeros kept, the first
    digit in the lowest byte (where a little-endian store puts the first byte): the
    divisions of all eight digits in a few multiplications of 16- and 32-bit lanes."""
    high = n // np.uint64(10_000)
    merged = high | ((n - high * np.uint64(10_000)) << np.uint64(32))  # 4 digits a lane
    hundreds_ = ((merged * np.uint64(10486)) >> np.uint64(20)) & _DIGITS_HIGH  # lane // 100
    pairs = ((merged - np.uint64(100) * hundreds_) << np.uint64(16)) + hundreds_  # 2 a lane
    tens = ((pairs * np.uint64(103)) >> np.uint64(10)) & _DIGITS_LOW  # lane // 10
    return tens + ((pairs - np.uint64(10) * tens) << np.uint64(8)) + _ASCII_ZEROS
