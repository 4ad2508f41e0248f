"""Bare data pointers for compiled kernels: arrays handed to helpers without their
reference counts.

Numba counts references to every array a compiled function holds, with atomic
instructions. An array handed to a helper that is not inlined is counted up and
down at each call, and one handed to a helper inlined by numba makes a new
reference that the compiler's pruning leaves in wherever the helper branches.
Inside a loop that runs once a reading, those atomics cost more than the
arithmetic: 40% of the CSV writer's time, and a quarter of a single stream's
model step, on Intel hosts (perf, 2026-12). A kernel hands its helpers
``data_pointer(array)`` instead. A pointer is indexed like a 1-D array, with no
bounds check, and keeps nothing alive: take it only into an array the kernel's
caller holds (an argument, or a view of one). Numba frees an array the kernel
made itself after that array's last use, and a pointer taken from it is not a
use: the loop would write into freed memory.
"""

from __future__ import annotations

from typing import Any

from numba.core import types
from numba.extending import intrinsic


@intrinsic
def data_pointer(typingctx: Any, array: Any) -> Any:
    """An array's data as a bare pointer, indexed like a 1-D array (no bounds check)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return context.make_array(signature.args[0])(context, builder, args[0]).data

    return types.CPointer(array.dtype)(array), codegen
