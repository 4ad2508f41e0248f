"""The model's input features: a stream's features do not depend on which other
streams share its chunk, nor on the cache that lets them share clock features."""

from __future__ import annotations

import math

import numpy as np

from models.features import CLOCK_SLOTS, DAY, WEEK, compute_features, initial_stats


def features_of(timestamp: np.ndarray, value: np.ndarray) -> np.ndarray:
    """x (B, T, F) of a chunk of B streams starting cold; timestamp, value (B, T)."""
    rows, steps = value.shape
    dt = np.diff(timestamp, axis=1, prepend=np.nan)
    next_t = np.concatenate([timestamp[:, 1:], timestamp[:, -1:] + 60.0], axis=1)
    x, _, _ = compute_features(
        initial_stats(rows), timestamp, value, dt, np.zeros((rows, steps)), next_t,
        np.full(rows, steps),
    )  # fmt: skip
    return x


def test_streams_sharing_times_get_the_features_they_get_alone():
    rng = np.random.default_rng(0)
    steps = 3 * CLOCK_SLOTS  # more distinct times than the cache holds: slots are reused
    shared = 1.6e9 + 60.0 * np.arange(steps)
    timestamp = np.stack([
        shared,
        shared,
        shared + rng.integers(0, 2, steps) * 0.5,  # some times shared, some not
        1e300 * np.arange(1, steps + 1),  # absurd times: still a clock, never a crash
        -shared,
    ])  # fmt: skip
    timestamp[3, :3] = [math.inf, -math.inf, 1e18]
    value = 20 + rng.normal(size=timestamp.shape)
    together = features_of(timestamp, value)
    for row in range(len(timestamp)):
        alone = features_of(timestamp[row : row + 1], value[row : row + 1])
        assert np.array_equal(together[row], alone[0], equal_nan=True), row


def test_clock_features_are_the_time_of_day_and_of_the_week():
    t = 1.6e9 + 3600.0 * np.arange(200)
    x = features_of(t[None, :], np.ones((1, len(t))))[0]
    next_t = np.append(t[1:], t[-1] + 60.0)
    expected = np.stack([
        np.sin(2 * np.pi * (next_t % DAY) / DAY),
        np.cos(2 * np.pi * (next_t % DAY) / DAY),
        np.sin(2 * np.pi * (next_t % WEEK) / WEEK),
        np.cos(2 * np.pi * (next_t % WEEK) / WEEK),
    ], axis=1)  # fmt: skip
    assert np.allclose(x[:, 4:8], expected, atol=1e-6)
