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


class GaussianTailDetector:
    """Score ``erf(|z| / sqrt 2)`` with ``z = (value - mean) / scale``.

    threshold: flag when the score reaches this (0.999 is |z| >= 3.29)
    warmup:    scored steps per stream before any flag
    """

    name = "gaussian-tail"
    state_width = 1  # scored steps so far
    state_dtype: type[np.floating] = np.float64

    def __init__(self, threshold: float = 0.999, warmup: int = 30) -> None:
        self.threshold = threshold
        self.warmup = warmup

    def __repr__(self) -> str:
        return f"GaussianTailDetector(threshold={self.threshold!r}, warmup={self.warmup!r})"

    @property
    def fingerprint(self) -> str:
        return repr(self)

    def initial_state(self, n: int) -> np.ndarray:
        return np.zeros((n, self.state_width), self.state_dtype)

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


class LikelihoodDetector:
    """Anomaly likelihood of forecast surprises against the stream's own history.

    Per step, the residual's two-sided tail probability under the forecast
    (``p``) becomes a surprise ``-log10 p``. Two kinds of evidence, each
    measured in "decades" and mapped to ``[0, 1]`` the same way on every
    stream, so that one threshold serves a thermostat and a CPU metric:

    * a spike: the step's own surprise beyond ``spike_decades`` (a 1-in-1000
      step is ordinary somewhere in a long stream), over ``decades``;
    * a burst: a short exponentially weighted mean of surprises (``short``
      steps) against the stream's long-run distribution of that mean (its
      mean and mean absolute deviation over ``long`` steps, learned only from
      unflagged steps), as a robust z-score over ``burst_z``: a run of
      moderate surprises is as telling as one huge one, and a stream whose
      forecasts are always rough does not cry wolf.

    After a flag, scores are multiplied by ``damping`` for ``hold`` steps: one
    event raises one alarm.
    """

    name = "likelihood"
    # scored steps, short mean, long mean, long abs. deviation, long weight, hold countdown
    state_width = 6
    state_dtype: type[np.floating] = np.float64

    def __init__(
        self,
        threshold: float = 0.6,
        warmup: int = 50,
        short: float = 5.0,
        long: float = 1000.0,
        spike_decades: float = 3.0,
        decades: float = 10.0,
        burst_z: float = 20.0,
        hold: int = 50,
        damping: float = 0.5,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.short = short
        self.long = long
        self.spike_decades = spike_decades
        self.decades = decades
        self.burst_z = burst_z
        self.hold = hold
        self.damping = damping

    _PARAMS = (
        "threshold",
        "warmup",
        "short",
        "long",
        "spike_decades",
        "decades",
        "burst_z",
        "hold",
        "damping",
    )

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._PARAMS)
        return f"LikelihoodDetector({args})"

    @property
    def fingerprint(self) -> str:
        return repr(self)

    def initial_state(self, n: int) -> np.ndarray:
        return np.zeros((n, self.state_width), self.state_dtype)

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


@numba.njit(cache=True)
def _likelihood_kernel(value, length, mean, scale, params, state, score, flag):
    threshold, warmup, a_short, a_long, spike_decades, decades, burst_z, hold, damping = params
    for b in range(value.shape[0]):
        s = state[b]
        for j in range(length[b]):
            m, sd = mean[b, j], scale[b, j]
            if not (sd > 0.0) or m != m:
                continue  # no forecast yet
            z = abs(value[b, j] - m) / sd
            surprise = min(-math.log10(max(math.erfc(z / math.sqrt(2.0)), 1e-300)), 300.0)
            s[1] += a_short * (surprise - s[1])
            s[0] += 1.0
            spike = (surprise - spike_decades) / decades
            burst = 0.0
            if s[4] > 0.0:
                deviation = max(s[3] / s[4], 0.05)
                burst = (s[1] - s[2] / s[4]) / deviation / burst_z
            raw = min(max(spike, burst, 0.0), 1.0)
            if s[5] > 0:  # holding after a flag
                raw *= damping
                s[5] -= 1.0
            score[b, j] = raw
            flagged = s[0] > warmup and raw >= threshold
            flag[b, j] = flagged
            if flagged:
                s[5] = hold
            else:  # learn the long run from ordinary steps only
                s[4] += a_long * (1.0 - s[4])
                s[2] += a_long * (s[1] - s[2])
                s[3] += a_long * (abs(s[1] - s[2] / s[4]) - s[3])


def default_detector() -> LikelihoodDetector:
    """The detector the pipeline uses unless told otherwise."""
    return LikelihoodDetector()
