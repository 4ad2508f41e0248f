"""The persistence forecaster: the next step equals this one.

Its scale is the exponentially weighted root-mean-square of one-step changes
(bias-corrected, so it is usable from the first change on), never below half
the stream's resolution (its smallest non-zero change seen), so a sensor that
sat still for hours does not call its next quantisation step a 10^30-sigma
event. A change larger than ``clip`` current scales is learned as if it were
``clip`` scales, so one spike does not blow the interval up for the next
hundred steps. A stream that has never moved gets a tiny interval, a millionth
of its value, rather than none. Steps after a gap are not learned from: their change spans
more than one step.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pipeline.types import ForecastChunk, StepChunk


class PersistenceForecaster:
    """Forecast ``mean = last value``, ``scale = EW RMS of one-step changes``.

    >>> import numpy as np
    >>> from pipeline.testing import chunk_of
    >>> f = PersistenceForecaster()
    >>> out = f.step(f.initial_state(1), chunk_of([[1.0, 2.0, 4.0]]))
    >>> out.mean.tolist(), np.round(out.scale, 3).tolist()
    ([[1.0, 2.0, 4.0]], [[0.0, 1.0, 1.593]])
    >>> float(out.scale[0, 0])  # no change seen yet: a still stream's interval
    1e-06
    """

    name = "persistence"
    # last value, EW mean of squared changes, its bias-correction weight, resolution
    state_width = 4
    state_dtype: type[np.floating] = np.float64

    def __init__(self, alpha: float = 0.05, clip: float = 4.0) -> None:
        self.alpha = alpha
        self.clip = clip

    def __repr__(self) -> str:
        return f"PersistenceForecaster(alpha={self.alpha!r}, clip={self.clip!r})"

    @property
    def fingerprint(self) -> str:
        return repr(self)

    def initial_state(self, n: int) -> np.ndarray:
        state = np.zeros((n, self.state_width), self.state_dtype)
        state[:, 0] = math.nan
        state[:, 3] = math.inf  # no non-zero change seen yet
        return state

    def step(self, state: np.ndarray, chunk: StepChunk) -> ForecastChunk:
        new_state = state.copy()
        mean = np.full(chunk.shape, math.nan)
        scale = np.full(chunk.shape, math.nan)
        _persistence_kernel(
            chunk.value, chunk.missing, chunk.length, self.alpha, self.clip, new_state, mean, scale
        )
        return ForecastChunk(mean=mean, scale=scale, state=new_state)


@numba.njit(cache=True, error_model="numpy")
def _persistence_kernel(value, missing, length, alpha, clip, state, mean, scale):
    for b in range(value.shape[0]):
        last, ew, weight, resolution = state[b, 0], state[b, 1], state[b, 2], state[b, 3]
        for j in range(length[b]):
            x = value[b, j]
            if last == last and missing[b, j] == 0:
                change = x - last
                limit = clip * _scale(ew, weight, resolution)
                if limit > 0.0:
                    change = min(max(change, -limit), limit)
                if change != 0.0:
                    resolution = min(resolution, abs(change))
                ew = (1.0 - alpha) * ew + alpha * change * change
                weight = (1.0 - alpha) * weight + alpha
            last = x
            mean[b, j] = x
            # before any change is seen (the first step) the interval is a still stream's
            scale[b, j] = _scale(ew, weight, resolution) or _still(last)
        state[b, 0], state[b, 1], state[b, 2], state[b, 3] = last, ew, weight, resolution


@numba.njit(cache=True, error_model="numpy", inline="always")
def _scale(ew, weight, resolution):
    """The RMS change, floored at half the resolution; 0 while nothing is known."""
    rms = math.sqrt(ew / weight) if weight > 0.0 else 0.0
    floor = 0.5 * resolution if resolution < math.inf else 0.0
    return max(rms, floor)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _still(last):
    """The interval of a stream that has never moved: a millionth of its size (at least
    1e-6), small but never 0, so no z-score divides by zero (the network's rule too)."""
    return 1e-6 * max(abs(last), 1.0) if last == last else 1.0
