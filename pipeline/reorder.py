"""Allowed lateness: hold readings back, re-sort them, let them out in order.

With ``lateness = L > 0`` a reading may arrive after newer readings of its
stream, as long as it is at most ``L`` seconds (event time) older than the
newest one. Readings wait in the table's pending buffer until the stream's
newest reading is ``L`` ahead of them (or the stream goes idle, or the input
ends), then leave sorted by time with exact duplicates removed, and go on to
the window stage as if they had arrived in order. A window therefore closes
once a reading beyond its end plus ``L`` has arrived.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.state import PendingReadings, StateTable
from pipeline.types import Reason

_DUPLICATE = int(Reason.DUPLICATE)
_LATE = int(Reason.LATE)


def hold(
    table: StateTable, slots: np.ndarray, t: np.ndarray, v: np.ndarray, lateness: float
) -> np.ndarray:
    """Put screened readings into the pending buffer; reason codes for those refused."""
    reasons = np.zeros(len(t), np.uint8)
    _hold_kernel(slots, t, lateness, reasons, table.columns["last_t"], table.columns["arrival_t"])
    ok = reasons == 0
    pending = table.pending
    table.pending = PendingReadings(
        np.concatenate([pending.slot, slots[ok]]),
        np.concatenate([pending.timestamp, t[ok]]),
        np.concatenate([pending.value, v[ok]]),
    )
    return reasons


def release(
    table: StateTable, lateness: float, capacity: int, force: np.ndarray | None = None
) -> tuple[PendingReadings, PendingReadings]:
    """Readings that are due, sorted by (slot, time) without duplicates; and the duplicates.

    ``force`` lists slots whose pending readings all leave now (idle streams,
    end of input). Beyond ``capacity`` pending readings the oldest leave early.
    """
    pending = table.pending
    if not len(pending):
        return pending, pending
    due = pending.timestamp <= table.columns["arrival_t"][pending.slot] - lateness
    if force is not None:
        due |= np.isin(pending.slot, force)
    excess = int((~due).sum()) - capacity
    if excess > 0:
        waiting = np.flatnonzero(~due)
        oldest = waiting[np.argsort(pending.timestamp[waiting], kind="stable")[:excess]]
        due[oldest] = True
    table.pending = pending.take(~due)
    out = pending.take(due)
    order = np.lexsort((out.timestamp, out.slot))  # stable: the first arrival wins a tie
    out = out.take(order)
    repeat = np.zeros(len(out), bool)
    repeat[1:] = (out.slot[1:] == out.slot[:-1]) & (out.timestamp[1:] == out.timestamp[:-1])
    return out.take(~repeat), out.take(repeat)


@numba.njit(cache=True, error_model="numpy")
def _hold_kernel(slots, t, lateness, reasons, last_t, arrival_t):
    for i in range(t.shape[0]):
        s = slots[i]
        ti = t[i]
        # "Too late" is judged first: it depends only on arrivals, so the reason
        # does not depend on how readings were split into batches.
        if ti < arrival_t[s] - lateness:  # more than `lateness` behind the newest
            reasons[i] = _LATE
        elif ti <= last_t[s]:  # already applied up to here
            reasons[i] = _DUPLICATE if ti == last_t[s] else _LATE
        elif not ti <= arrival_t[s]:  # newer, or the stream's first
            arrival_t[s] = ti
