"""Anomaly detectors: from a step and its forecast to a score in [0, 1] and a flag.

``GaussianTailDetector`` is the simple baseline: the two-sided tail mass of
the standardised residual under the forecast's Gaussian, flagged above a
threshold once the stream is warmed up. Vectorised across streams: one
compiled pass over a ``(B, T)`` chunk.
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


@numba.njit(cache=True)
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


class LikelihoodDetector(_ColumnDetector):
    """How unusual a step's surprise is for its own stream, now and over the last few steps.

    Per step, the residual's two-sided tail probability under the forecast
    (``p``) becomes a surprise ``-log10 p``. Each stream learns, from its
    unflagged steps only, the spread (mean absolute deviation) of its
    surprises, their ``quantile``, and the centre and spread of a short
    exponentially weighted mean of them (``short`` steps), all over ``long``
    steps. Evidence is the larger of two robust z-scores:

    * a spike: this step's surprise above the stream's usual ``quantile``, in
      spreads, over ``spike_z``;
    * a burst: the short mean against its usual values, over ``burst_z``;
      a run of moderate surprises is as telling as one huge one.

    Because both are measured against the stream's own history, a stream whose
    forecasts are always rough (tweet counts) does not cry wolf and a smooth
    one (a thermostat) is watched closely; the score ``x / (1 + x)`` means the
    same on every stream (0.5 is evidence ``x = 1``). After a flag, scores are
    multiplied by ``damping`` for ``hold`` steps: one event raises one alarm.
    The defaults were chosen on the NAB corpus with one parameter set for all
    files (docs/anomaly.md).
    """

    name = "likelihood"
    # scored steps, short mean, hold countdown, long weight,
    # surprise centre, surprise spread, short-mean centre, short-mean spread,
    # tail quantile of surprise
    state_width = 9

    def __init__(
        self,
        threshold: float = 0.5,
        warmup: int = 50,
        short: float = 3.0,
        long: float = 300.0,
        spike_z: float = 25.0,
        burst_z: float = 12.0,
        hold: int = 200,
        damping: float = 0.3,
        quantile: float = 0.9,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.short = short
        self.long = long
        self.spike_z = spike_z
        self.burst_z = burst_z
        self.hold = hold
        self.damping = damping
        self.quantile = quantile

    _PARAMS = (
        "threshold",
        "warmup",
        "short",
        "long",
        "spike_z",
        "burst_z",
        "hold",
        "damping",
        "quantile",
    )

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._PARAMS)
        return f"LikelihoodDetector({args})"

    def step(
        self, state: np.ndarray, chunk: StepChunk, mean: np.ndarray, scale: np.ndarray
    ) -> DetectionChunk:
        new_state = state.copy()
        score = np.zeros(chunk.shape)
        flag = np.zeros(chunk.shape, np.bool_)
        params = np.array([getattr(self, n) for n in self._PARAMS], np.float64)
        params[2], params[3] = 1.0 / self.short, 1.0 / self.long  # as rates
        _likelihood_kernel(chunk.value, chunk.length, mean, scale, params, new_state, score, flag)
        return DetectionChunk(score=score, is_anomaly=flag, state=new_state)


_STEPS, _SHORT, _HOLD, _WEIGHT, _CENTRE, _SPREAD, _SHORT_CENTRE, _SHORT_SPREAD, _TAIL = range(9)
_MIN_SPREAD = 0.05  # decades: a stream that never surprises still has this much spread


@numba.njit(cache=True)
def _likelihood_kernel(value, length, mean, scale, params, state, score, flag):
    threshold, warmup, a_short, a_long, spike_z, burst_z, hold, damping, quantile = params
    for b in range(value.shape[0]):
        s = state[b]
        for j in range(length[b]):
            m, sd = mean[b, j], scale[b, j]
            if not (sd > 0.0) or m != m:
                continue  # no forecast yet
            z = abs(value[b, j] - m) / sd
            surprise = min(-math.log10(max(math.erfc(z / math.sqrt(2.0)), 1e-300)), 300.0)
            s[_SHORT] += a_short * (surprise - s[_SHORT])
            s[_STEPS] += 1.0
            evidence = 0.0
            if s[_WEIGHT] > 0.0:
                spread = max(s[_SPREAD] / s[_WEIGHT], _MIN_SPREAD)
                spike = (surprise - s[_TAIL]) / spread / spike_z
                burst = _robust_z(s, s[_SHORT], _SHORT_CENTRE, _SHORT_SPREAD) / burst_z
                evidence = max(spike, burst, 0.0)
            raw = evidence / (1.0 + evidence)
            if s[_HOLD] > 0:  # holding after a flag
                raw *= damping
                s[_HOLD] -= 1.0
            score[b, j] = raw
            flagged = s[_STEPS] > warmup and raw >= threshold
            flag[b, j] = flagged
            if flagged:
                s[_HOLD] = hold
            else:  # learn the long run from ordinary steps only
                s[_WEIGHT] += a_long * (1.0 - s[_WEIGHT])
                _learn_long(s, surprise, _CENTRE, _SPREAD, a_long)
                _learn_long(s, s[_SHORT], _SHORT_CENTRE, _SHORT_SPREAD, a_long)
                _learn_tail(s, surprise, quantile)


@numba.njit(cache=True, inline="always")
def _learn_tail(s, surprise, quantile):
    """Stochastic quantile tracking: up by ``q``, down by ``1 - q`` (in small steps)."""
    step = 0.05 * max(s[_SPREAD] / s[_WEIGHT], _MIN_SPREAD)
    s[_TAIL] += step * (quantile if surprise > s[_TAIL] else quantile - 1.0)


@numba.njit(cache=True, inline="always")
def _robust_z(s, x, centre, spread):
    return (x - s[centre] / s[_WEIGHT]) / max(s[spread] / s[_WEIGHT], _MIN_SPREAD)


@numba.njit(cache=True, inline="always")
def _learn_long(s, x, centre, spread, a_long):
    s[centre] += a_long * (x - s[centre])
    s[spread] += a_long * (abs(x - s[centre] / s[_WEIGHT]) - s[spread])


def default_detector() -> LikelihoodDetector:
    """The detector the pipeline uses unless told otherwise."""
    return LikelihoodDetector()
