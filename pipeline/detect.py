"""Anomaly detectors: from a step and its forecast to a score in [0, 1] and a flag.

``RecordDetector`` is the default: how far a step breaks its stream's own
records (its range of values, its largest recent surprise).
``GaussianTailDetector`` is the simple baseline: the two-sided tail mass of
the standardised residual under the forecast's Gaussian, flagged above a
threshold once the stream is warmed up. Both are vectorised across streams:
one compiled pass over a ``(B, T)`` chunk.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pipeline.types import DetectionChunk, StepChunk


class _ColumnDetector:
    """What every detector here shares: its parameters are its fingerprint, and its
    per-stream state is ``state_width`` float64 columns starting at zero."""

    state_width: int
    state_dtype: type[np.floating] = np.float64

    @property
    def fingerprint(self) -> str:
        return repr(self)

    def initial_state(self, n: int) -> np.ndarray:
        return np.zeros((n, self.state_width), self.state_dtype)


class GaussianTailDetector(_ColumnDetector):
    """Score ``erf(|z| / sqrt 2)`` with ``z = (value - mean) / scale``.

    threshold: flag when the score reaches this (0.999 is |z| >= 3.29)
    warmup:    scored steps per stream before any flag
    """

    name = "gaussian-tail"
    state_width = 1  # scored steps so far

    def __init__(self, threshold: float = 0.999, warmup: int = 30) -> None:
        self.threshold = threshold
        self.warmup = warmup

    def __repr__(self) -> str:
        return f"GaussianTailDetector(threshold={self.threshold!r}, warmup={self.warmup!r})"

    def step(
        self, state: np.ndarray, chunk: StepChunk, mean: np.ndarray, scale: np.ndarray
    ) -> DetectionChunk:
        new_state = state.copy()
        score = np.zeros(chunk.shape)
        flag = np.zeros(chunk.shape, np.bool_)
        _tail_kernel(
            chunk.value,
            chunk.length,
            mean,
            scale,
            self.threshold,
            self.warmup,
            new_state,
            score,
            flag,
        )
        return DetectionChunk(score=score, is_anomaly=flag, state=new_state)


@numba.njit(cache=True, error_model="numpy")
def _tail_kernel(value, length, mean, scale, threshold, warmup, state, score, flag):
    for b in range(value.shape[0]):
        scored = state[b, 0]
        for j in range(length[b]):
            m = mean[b, j]
            s = scale[b, j]
            if not (s > 0.0) or m != m:  # no forecast yet, or no scale yet
                continue
            z = abs(value[b, j] - m) / s
            score[b, j] = math.erf(z / math.sqrt(2.0))
            scored += 1.0
            flag[b, j] = scored > warmup and score[b, j] >= threshold
        state[b, 0] = scored


_SEEN, _HIGH, _LOW, _RECORD, _FORECAST_SEEN, _PROFILE = range(6)  # RecordDetector's state
PROFILE_BINS = 24  # the daily profile's bins: hours of the day, on the stream's clock
_TYPICAL_SCALE = _PROFILE + PROFILE_BINS  # after the profile: the stream's usual forecast scale
RECORD_GROWTH = 2.0  # one absurd residual (a fill value) raises the record at most this much
DAY = 86_400.0


class RecordDetector(_ColumnDetector):
    """How far a step breaks its stream's own records: its range, and its surprises.

    Two kinds of evidence, each measured against the stream's own, slowly
    forgotten extremes, so a score means the same on every stream:

    * **level**: the value beyond the range ``[lo, hi]`` the stream has kept
      (over about ``range_memory`` steps), in widths of that range; the width
      is never less than ``interval_floor`` forecast scales, so a smooth
      sensor's next quantisation step is not news. Score ``e / (e + level_margin)``
      for an excess ``e``.
    * **surprise**: how far the step misses what was expected of it, in
      forecast scales, beyond the largest such miss the stream has shown lately
      (about ``surprise_memory`` steps, and never below ``surprise_floor``), in
      units of that record. Score ``surprise_weight * e / (e + surprise_margin)``.
      Two things are expected of a step, and it surprises only if it misses
      both: the forecast, and the stream's usual value at that hour of the day
      (a daily profile of ``PROFILE_BINS`` bins that replaces about
      ``profile_rate`` of itself per day), so a jump the stream makes every
      day at the same time is not news. The record starts after warm-up and
      at most doubles per step, so a forecast whose scale was not yet learned,
      or one absurd residual, does not blind it for long. A miss is measured
      in forecast scales of at least ``scale_floor`` times the stream's usual
      scale (an average over about ``scale_memory`` steps), so a burst after
      an unusually quiet, confident stretch is not a record by the quiet alone.

    The score is the larger of the two; a step is flagged at ``threshold``
    after ``warmup`` steps. Every step, flagged or not, moves the records:
    that is what makes one event one alarm (a level shift is news once, then
    it is the range). The defaults were chosen on the NAB corpus with one
    parameter set for all files (docs/anomaly.md).

    State per stream, float32 (the records need no more, and 1 KiB per stream
    is the budget): ``[steps seen, high, low, surprise record, steps with a
    forecast, profile (PROFILE_BINS, NaN until its bin is first visited), usual scale]``.
    """

    name = "record"
    state_width = _TYPICAL_SCALE + 1
    state_dtype = np.float32

    def __init__(
        self,
        threshold: float = 0.6,
        warmup: int = 300,
        range_memory: float = 10_000.0,
        level_margin: float = 0.02,
        interval_floor: float = 6.0,
        surprise_memory: float = 1_000.0,
        surprise_margin: float = 0.1,
        surprise_weight: float = 0.7,
        surprise_floor: float = 3.0,
        profile_rate: float = 0.5,
        scale_floor: float = 0.35,
        scale_memory: float = 5_000.0,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.range_memory = range_memory
        self.level_margin = level_margin
        self.interval_floor = interval_floor
        self.surprise_memory = surprise_memory
        self.surprise_margin = surprise_margin
        self.surprise_weight = surprise_weight
        self.surprise_floor = surprise_floor
        self.profile_rate = profile_rate
        self.scale_floor = scale_floor
        self.scale_memory = scale_memory

    _PARAMS = (
        "threshold",
        "warmup",
        "range_memory",
        "level_margin",
        "interval_floor",
        "surprise_memory",
        "surprise_margin",
        "surprise_weight",
        "surprise_floor",
        "profile_rate",
        "scale_floor",
        "scale_memory",
    )

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._PARAMS)
        return f"RecordDetector({args})"

    def initial_state(self, n: int) -> np.ndarray:
        state = super().initial_state(n)
        state[:, _PROFILE : _PROFILE + PROFILE_BINS] = math.nan
        return state

    def step(
        self, state: np.ndarray, chunk: StepChunk, mean: np.ndarray, scale: np.ndarray
    ) -> DetectionChunk:
        new_state = state.copy()
        score = np.zeros(chunk.shape)
        flag = np.zeros(chunk.shape, np.bool_)
        params = np.array([getattr(self, n) for n in self._PARAMS], np.float64)
        _record_kernel(
            chunk.value,
            chunk.timestamp,
            chunk.dt,
            chunk.length,
            mean,
            scale,
            params,
            new_state,
            score,
            flag,
        )
        return DetectionChunk(score=score, is_anomaly=flag, state=new_state)


@numba.njit(cache=True, error_model="numpy")
def _record_kernel(value, timestamp, dt, length, mean, scale, params, state, score, flag):
    threshold, warmup, range_memory, level_margin, interval_floor = params[:5]
    surprise_memory, surprise_margin, surprise_weight, surprise_floor, profile_rate = params[5:10]
    scale_floor, scale_memory = params[10:]
    scale_rate = 1.0 / scale_memory
    range_keep = 1.0 - 1.0 / range_memory  # per step, the range shrinks to its midpoint
    record_keep = 1.0 - 1.0 / surprise_memory
    bin_width = DAY / PROFILE_BINS
    for b in range(value.shape[0]):
        s = state[b]
        for j in range(length[b]):
            x, m, sd, t = value[b, j], mean[b, j], scale[b, j], timestamp[b, j]
            s[_SEEN] += 1.0
            level = 0.0
            if s[_SEEN] > warmup:
                floor = interval_floor * sd if sd > 0.0 else 0.0  # False for NaN
                excess = max(x - s[_HIGH], s[_LOW] - x, 0.0) / max(s[_HIGH] - s[_LOW], floor, 1e-12)
                level = excess / (excess + level_margin)
            hour = _PROFILE + int((t % DAY) // bin_width) if t == t else -1
            usual = s[hour] if hour >= 0 else math.nan
            surprise = 0.0
            if sd > 0.0:  # misses are measured in at least a share of the usual scale
                typical = s[_TYPICAL_SCALE]
                typical_next = sd if typical == 0.0 else typical + scale_rate * (sd - typical)
                s[_TYPICAL_SCALE] = _storable(typical_next)
                sd = max(sd, scale_floor * typical)
            z = abs(x - m) / sd if sd > 0.0 else math.nan  # NaN: no forecast yet
            if z == z:
                if usual == usual:  # explained by the time of day: no surprise
                    z = min(z, abs(x - usual) / sd)
                s[_FORECAST_SEEN] += 1.0
                record = max(s[_RECORD], surprise_floor)
                if s[_FORECAST_SEEN] > warmup:  # a young forecast's scale sets no record
                    excess = max(z - record, 0.0) / record
                    surprise = surprise_weight * excess / (excess + surprise_margin)
                    s[_RECORD] = max(s[_RECORD] * record_keep, min(z, RECORD_GROWTH * record))
            score[b, j] = max(level, surprise)
            flag[b, j] = s[_SEEN] > warmup and score[b, j] >= threshold
            # the profile learns per day, whatever the cadence: a bin's share of a day's
            # update is spread over the steps that fall into it (dt is NaN at the first)
            rate = min(1.0, profile_rate * dt[b, j] / bin_width) if dt[b, j] > 0.0 else 0.0
            if hour < 0:
                pass
            elif usual != usual:
                s[hour] = _storable(x)
            elif x == x:
                s[hour] = _storable(usual + rate * (x - usual))
            x = _storable(x)
            if s[_SEEN] == 1.0:
                s[_HIGH], s[_LOW] = x, x
            middle = 0.5 * (s[_HIGH] + s[_LOW])
            s[_HIGH] = max(middle + (s[_HIGH] - middle) * range_keep, x)
            s[_LOW] = min(middle - (middle - s[_LOW]) * range_keep, x)


FLOAT32_MAX = float(np.finfo(np.float32).max)


@numba.njit(cache=True, error_model="numpy")
def _storable(x):
    """``x`` clipped to what float32 state holds: an absurd 1e300 is stored as 3.4e38,
    still far beyond any range, instead of overflowing to inf (and NaN after)."""
    return min(max(x, -FLOAT32_MAX), FLOAT32_MAX)


def default_detector() -> RecordDetector:
    """The detector the pipeline uses unless told otherwise."""
    return RecordDetector()
