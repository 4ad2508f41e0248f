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
