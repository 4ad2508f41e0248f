"""Event-time windowing: readings in, steps out, per stream, in one pass.

``screen`` drops readings that can never be used (no slot, bad time, non-finite
or out-of-range value). ``apply_readings`` then walks the rest in arrival
order in a compiled loop, updating each stream's columns in the state table:

* a reading at or before the stream's newest applied reading is dropped, so
  nothing is fed twice: ``duplicate`` when its time equals the newest one's,
  ``late`` when it is older (the stream keeps no history, so a re-delivered old
  reading is counted as late);
* ``window == 0``: every reading is a step;
* ``window > 0``: readings are summed into the stream's open tumbling window
  ``[k*window, (k+1)*window)`` (epoch-aligned, labelled by its start); the
  first reading of a later window closes it and emits its mean/min/max/count.

Each step carries ``dt`` (seconds since the stream's previous step) and
``missing``: windows skipped before it, or, when ``window == 0``, how many
readings a gap swallowed judged against the stream's typical interval (an
exponentially weighted mean of non-gap intervals). Allowed lateness is handled
before this stage by ``pipeline.reorder``, which re-sorts readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipeline.config import PipelineConfig
from pipeline.state import StateTable
from pipeline.types import MAX_TIME, MIN_TIME, Reason

GAP_FACTOR = 1.5  # an interval this many times the typical one is a gap
INTERVAL_ALPHA = 0.1  # weight of a new interval in the typical-interval estimate

_DUPLICATE = int(Reason.DUPLICATE)
_LATE = int(Reason.LATE)


@dataclass(frozen=True, slots=True)
class Steps:
    """Steps as flat columns in the order they were made (per stream: time order)."""

    slot: np.ndarray  # (n,) int64
    timestamp: np.ndarray  # (n,) float64
    value: np.ndarray
    count: np.ndarray  # (n,) int64
    min: np.ndarray
    max: np.ndarray
    dt: np.ndarray
    missing: np.ndarray  # (n,) int32
    next_timestamp: np.ndarray
    source: np.ndarray  # (n,) int64: index of the reading that made the step, -1 if none

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    @classmethod
    def allocate(cls, n: int) -> Steps:
        i64, i32, f64 = np.int64, np.int32, np.float64
        dtypes = (i64, f64, f64, i64, f64, f64, f64, i32, f64, i64)
        return cls(*(np.empty(n, dtype) for dtype in dtypes))  # filled by the kernels

    def columns(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def head(self, n: int) -> Steps:
        return Steps(*(column[:n] for column in self.columns()))


def screen(slots: np.ndarray, t: np.ndarray, v: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """Reason code per reading for what can be judged without state (0 = fine)."""
    reasons = np.zeros(len(t), np.uint8)
    reasons[(v < config.value_min) | (v > config.value_max)] = Reason.OUT_OF_RANGE
    reasons[~np.isfinite(v)] = Reason.NON_FINITE
    bad_time = ~((t >= MIN_TIME) & (t < MAX_TIME))  # also catches NaN
    reasons[bad_time] = Reason.BAD_TIMESTAMP
    reasons[slots < 0] = Reason.STREAM_LIMIT
    return reasons


def apply_readings(
    table: StateTable, slots: np.ndarray, t: np.ndarray, v: np.ndarray, window: float
) -> tuple[np.ndarray, Steps]:
    """Feed screened readings in order; return a reason code per reading and the steps made."""
    reasons = np.zeros(len(t), np.uint8)
    steps = Steps.allocate(len(t))
    n = _apply_kernel(slots, t, v, window, reasons, _state(table), steps.columns())
    return reasons, steps.head(n)


def close_windows(table: StateTable, slots: np.ndarray, window: float) -> Steps:
    """Close the open windows of ``slots`` (idle or end of input); emit their steps."""
    steps = Steps.allocate(len(slots))
    n = _close_kernel(slots, window, _state(table), steps.columns())
    return steps.head(n)


_STATE = (
    "last_t",
    "last_step_t",
    "interval",
    "win_start",
    "win_sum",
    "win_count",
    "win_min",
    "win_max",
)


def _state(table: StateTable) -> tuple[np.ndarray, ...]:
    """The table columns the kernels read and write, in the order they unpack them."""
    return tuple(table.columns[name] for name in _STATE)


# -- compiled loops --------------------------------------------------------------------
# ``state`` is the tuple from _state(); ``out`` is Steps.columns() of the output.


@numba.njit(cache=True, error_model="numpy")
def _window_start(t, window):
    """Start of the window holding ``t``, counted in whole microseconds: in float
    seconds a time on a boundary of a sub-second window (20.1 s, windows of 0.1 s)
    divides to just under the whole number and would land in the window before."""
    micros = np.int64(np.round(t * 1e6))  # |t| < 2**52 µs: the years 1900..2100
    width = max(np.int64(np.round(window * 1e6)), np.int64(1))
    return np.float64((micros // width) * width) / 1e6  # floor division, also before 1970


@numba.njit(cache=True, error_model="numpy")
def _apply_kernel(slots, t, v, window, reasons, state, out):
    last_t, last_step_t, _, win_start, win_sum, win_count, win_min, win_max = state
    n_out = 0
    for i in range(t.shape[0]):
        s = slots[i]
        ti = t[i]
        if ti <= last_t[s]:  # False while last_t is NaN (a new stream)
            reasons[i] = _DUPLICATE if ti == last_t[s] else _LATE
            continue
        x = v[i]
        if window > 0.0:
            start = _window_start(ti, window)
            if start <= last_step_t[s]:  # that window was already closed (idle timeout)
                reasons[i] = _LATE
                continue
        last_t[s] = ti
        if window == 0.0:
            n_out = _emit(s, ti, x, 1, x, x, i, window, state, out, n_out)
            continue
        if win_count[s] > 0 and start != win_start[s]:
            mean = win_sum[s] / win_count[s]
            n_out = _emit(
                s,
                win_start[s],
                mean,
                win_count[s],
                win_min[s],
                win_max[s],
                i,
                window,
                state,
                out,
                n_out,
            )
            win_count[s] = 0
        if win_count[s] == 0:
            win_start[s] = start
            win_sum[s] = 0.0
            win_min[s] = x
            win_max[s] = x
        win_sum[s] += x
        win_count[s] += 1
        win_min[s] = min(win_min[s], x)
        win_max[s] = max(win_max[s], x)
    return n_out


@numba.njit(cache=True, error_model="numpy")
def _close_kernel(slots, window, state, out):
    _, _, _, win_start, win_sum, win_count, win_min, win_max = state
    n_out = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        if win_count[s] == 0:
            continue
        mean = win_sum[s] / win_count[s]
        n_out = _emit(
            s,
            win_start[s],
            mean,
            win_count[s],
            win_min[s],
            win_max[s],
            -1,
            window,
            state,
            out,
            n_out,
        )
        win_count[s] = 0
        win_start[s] = np.nan
    return n_out


@numba.njit(cache=True, error_model="numpy", inline="always")
def _emit(s, ts, value, count, vmin, vmax, source, window, state, out, n_out):
    """Write one step; update the stream's typical interval and last step time."""
    _, last_step_t, interval = state[0], state[1], state[2]
    o_slot, o_t, o_value, o_count, o_min, o_max, o_dt, o_missing, o_next, o_source = out
    dt = ts - last_step_t[s]  # NaN at the stream's first step
    missing = 0
    if window > 0.0:
        interval[s] = window
        if dt == dt:
            missing = int(np.round(dt / window)) - 1
    elif dt == dt:
        typical = interval[s]
        if typical != typical:
            interval[s] = dt
        elif dt > GAP_FACTOR * typical:
            missing = max(int(np.round(dt / typical)) - 1, 1)
        else:
            interval[s] = typical + INTERVAL_ALPHA * (dt - typical)
    last_step_t[s] = ts
    o_slot[n_out] = s
    o_t[n_out] = ts
    o_value[n_out] = value
    o_count[n_out] = count
    o_min[n_out] = vmin
    o_max[n_out] = vmax
    o_dt[n_out] = dt
    o_missing[n_out] = missing
    o_next[n_out] = ts + interval[s]
    o_source[n_out] = source
    return n_out + 1
