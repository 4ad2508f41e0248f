"""Per-stream normalisation and the recurrent model's input features.

Every stream keeps a few running statistics (exponentially weighted, robust):
its level (mean and spread) and the scale of its one-step changes. Each step
becomes a feature vector in those units, so one set of weights serves a
thermostat in degrees and a barometer in hectopascals. The same compiled loop
runs in training (whole series at once) and online (any chunk), so features
are identical in both.

Statistics learn from every step, but an update that is more than ``CLIP``
scales away is clipped first: one 900 hPa fill value moves them a little, never
ruins them (flagged anomalies are not known here, so this robust clipping is
how anomalies are kept out of the normalisation).

Each stream also learns a daily profile: the mean change (in change scales)
of its steps in each of the 24 hours of the day, on its own clock, so a
thermostat in local time and a buoy in UTC both get their daily rhythm
without knowing their time zone. The expected change for the hour of the
step being forecast is a feature.

Stats layout (``STATS`` floats per stream, float64):

    0 last value        1 level mean      2 level variance     3 level weight
    4 change mean sq    5 change weight   6 resolution         7 steps seen
    8..31 daily profile: mean change per hour of the day
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pipeline.pointers import data_pointer

HOURS = 24
STATS = 8 + HOURS
LAST, MEAN, VAR, LEVEL_W, CHANGE_SQ, CHANGE_W, RESOLUTION, STEPS, PROFILE = range(9)

FEATURES = (
    "change",  # this step's change, in change scales
    "level",  # distance from the running mean, in level scales
    "gap",  # 1 when steps were missing before this one
    "log_dt",  # log of the time since the last step over the typical interval
    "tod_sin",  # time of day of the step being forecast
    "tod_cos",
    "dow_sin",  # day of week of the step being forecast
    "dow_cos",
    "smoothness",  # log(change scale / level scale): how smooth the stream is
    "profile",  # the stream's mean change at the hour of day of the step being forecast
)
N_FEATURES = len(FEATURES)

LEVEL_ALPHA = 0.01  # ~100 steps of memory for the level
PROFILE_ALPHA = 0.05  # per hour-of-day bin and per step, scaled down by steps per hour
CHANGE_ALPHA = 0.02  # ~50 steps for the change scale
CLIP = 6.0  # updates beyond this many scales are clipped
FEATURE_LIMIT = 10.0  # features are clipped to +-this
DAY = 86_400.0
WEEK = 7 * DAY


def initial_stats(n: int) -> np.ndarray:
    stats = np.zeros((n, STATS))
    stats[:, LAST] = math.nan
    stats[:, RESOLUTION] = math.inf
    return stats


def compute_features(
    stats: np.ndarray,
    timestamp: np.ndarray,
    value: np.ndarray,
    dt: np.ndarray,
    missing: np.ndarray,
    next_t: np.ndarray,
    length: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every step, in order, updating ``stats`` (B, STATS) in place.

    Inputs are (B, T) like a ``StepChunk``'s. Returns ``x`` (B, T, N_FEATURES)
    float32, and per step the value the forecast is anchored to (the step's own
    value) and the change scale the model's output is in units of, (B, T) each.
    """
    rows, steps = value.shape
    x = np.zeros((rows, steps, N_FEATURES), np.float32)
    anchor = np.full((rows, steps), math.nan)
    unit = np.full((rows, steps), math.nan)
    clocks = _clock_cache(int(length.sum()))
    _features_kernel(stats, timestamp, value, dt, missing, next_t, length, x, anchor, unit, *clocks)
    return x, anchor, unit


CLOCK_SLOTS = 4096  # at most: times of a chunk remembered for their clock features


def _clock_cache(steps: int) -> tuple[np.ndarray, ...]:
    """An empty cache of clock features for a chunk of ``steps`` steps, slots a power
    of two: times (slots,) (NaN: empty) and the features (slots, 5) of each; times of
    day and of the week (slots,) each, and the parts (slots, 5) of each time of day
    (columns 0, 1 and 4) and of the week (2 and 3)."""
    slots = min(CLOCK_SLOTS, 1 << max(steps - 1, 0).bit_length())
    times, days, weeks = (np.full(slots, math.nan) for _ in range(3))
    return times, np.empty((slots, 5)), days, weeks, np.empty((slots, 5))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _slot(key, slots):
    """A direct-mapped cache's slot of ``key`` (any float) among ``slots`` (a power of 2)."""
    whole = np.int64(min(max(key, -1e18), 1e18))  # any finite number to an int64
    slot = (np.uint64(whole) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(52)
    return np.int64(slot & np.uint64(slots - 1))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _clock(t, slots, times, features, days, weeks, parts):
    """The slot of ``features`` that holds (sin, cos) of the time of day and of the
    week of ``t``, and its hour of the day (at ``5 * slot`` + 0, 1; 2, 3; 4).

    Streams that report together share their times (a long log's rows, a tick of
    sensors on one clock), and the sines cost ~50 ns a step: each time's features
    are kept in a direct-mapped cache, and a hit gives the very same numbers. A
    stream alone has a new time at every step, but the same times of day every day:
    the day's and the week's parts are cached by those as well. The caches are
    ``data_pointer``s (``_clock_cache``'s arrays, held by the caller): arrays handed
    to this inlined helper were counted up and down at every call."""
    slot = _slot(t, slots)
    if times[slot] != t:
        of_day, of_week = t % DAY, t % WEEK  # each once: a modulo costs ~10 ns
        day = _slot(of_day, slots)
        if days[day] != of_day:
            parts[5 * day] = math.sin(2 * math.pi * of_day / DAY)
            parts[5 * day + 1] = math.cos(2 * math.pi * of_day / DAY)
            parts[5 * day + 4] = of_day // 3600.0
            days[day] = of_day
        week = _slot(of_week, slots)
        if weeks[week] != of_week:
            parts[5 * week + 2] = math.sin(2 * math.pi * of_week / WEEK)
            parts[5 * week + 3] = math.cos(2 * math.pi * of_week / WEEK)
            weeks[week] = of_week
        features[5 * slot] = parts[5 * day]
        features[5 * slot + 1] = parts[5 * day + 1]
        features[5 * slot + 4] = parts[5 * day + 4]
        features[5 * slot + 2] = parts[5 * week + 2]
        features[5 * slot + 3] = parts[5 * week + 3]
        times[slot] = t
    return slot


@numba.njit(cache=True, error_model="numpy")
def _features_kernel(stats, timestamp, value, dt, missing, next_t, length, x, anchor, unit, *cache):
    times, features, days, weeks, parts = cache  # see _clock_cache
    slots = times.shape[0]
    # the caches as pointers (see _clock); features (slots * 5,): a time's from 5 * its slot
    times, features = data_pointer(times), data_pointer(features)
    days, weeks, parts = data_pointer(days), data_pointer(weeks), data_pointer(parts)
    for b in range(value.shape[0]):
        s = stats[b]  # a view: made once a row, not once a step (each is a reference count)
        for j in range(length[b]):
            v = value[b, j]
            change = _observe(s, v, missing[b, j] > 0)
            scale_c = _change_scale(s)
            scale_l = _level_scale(s, scale_c)
            x[b, j, 0] = _clip(change / scale_c) if change == change else 0.0
            x[b, j, 1] = _clip((v - s[MEAN] / s[LEVEL_W]) / scale_l)
            x[b, j, 2] = 1.0 if missing[b, j] > 0 else 0.0
            t, typical = next_t[b, j], next_t[b, j] - timestamp[b, j]
            # False for NaN (a stream's first step); a step on time is log(1) = 0 exactly,
            # and most are: the library's log was ~10% of this loop (47 -> 43 ms for
            # 1,000 streams of 500 steps)
            if dt[b, j] > 0 and typical > 0 and dt[b, j] != typical:
                x[b, j, 3] = _clip(math.log(dt[b, j] / typical))
            x[b, j, 8] = _clip(math.log(scale_c / scale_l))
            # a time's hour indexes the profile: an infinite time (no hour) must not
            if change == change and typical > 0 and math.isfinite(timestamp[b, j]):
                # the step's time was the step before's next: its hour is in the cache
                slot = _clock(timestamp[b, j], slots, times, features, days, weeks, parts)
                hour = features[5 * slot + 4]
                _learn_profile(s, hour, change / scale_c, typical)
            if math.isfinite(t):
                at = 5 * _clock(t, slots, times, features, days, weeks, parts)
                for k in range(4):  # time of day and of week, sin and cos
                    x[b, j, 4 + k] = features[at + k]
                x[b, j, 9] = _clip(s[PROFILE + int(features[at + 4])])
            anchor[b, j] = v
            unit[b, j] = scale_c


@numba.njit(cache=True, error_model="numpy")
def _observe(s, v, after_gap):
    """Update one stream's stats with value ``v``; return its change (NaN if none)."""
    change = math.nan
    if s[LAST] == s[LAST] and not after_gap:
        change = v - s[LAST]
        if change != 0.0:
            s[RESOLUTION] = min(s[RESOLUTION], abs(change))
        limit = CLIP * _change_scale(s) if s[CHANGE_W] > 0 else math.inf
        clipped = min(max(change, -limit), limit)
        s[CHANGE_SQ] += CHANGE_ALPHA * (clipped * clipped - s[CHANGE_SQ])
        s[CHANGE_W] += CHANGE_ALPHA * (1.0 - s[CHANGE_W])
    if s[LEVEL_W] > 0:
        spread = math.sqrt(s[VAR] / s[LEVEL_W])
        mean = s[MEAN] / s[LEVEL_W]
        limit = CLIP * max(spread, _change_scale(s))
        v_clipped = min(max(v, mean - limit), mean + limit) if limit > 0 else v
    else:
        v_clipped = v
    s[LEVEL_W] += LEVEL_ALPHA * (1.0 - s[LEVEL_W])
    s[MEAN] += LEVEL_ALPHA * (v_clipped - s[MEAN])
    deviation = v_clipped - s[MEAN] / s[LEVEL_W]
    s[VAR] += LEVEL_ALPHA * (deviation * deviation - s[VAR])
    s[LAST] = v
    s[STEPS] += 1.0
    return change


@numba.njit(cache=True, error_model="numpy")
def _learn_profile(s, hour, change, typical):
    """Move the mean change of the ``hour`` of day (0..23) towards this step's change."""
    steps_per_hour = max(3600.0 / typical, 1.0)
    alpha = PROFILE_ALPHA / steps_per_hour
    k = PROFILE + int(hour)
    s[k] += alpha * (min(max(change, -FEATURE_LIMIT), FEATURE_LIMIT) - s[k])


@numba.njit(cache=True, error_model="numpy")
def _change_scale(s):
    """RMS one-step change, bias-corrected, floored at half the resolution; never 0."""
    rms = math.sqrt(s[CHANGE_SQ] / s[CHANGE_W]) if s[CHANGE_W] > 0 else 0.0
    floor = 0.5 * s[RESOLUTION] if s[RESOLUTION] < math.inf else 0.0
    scale = max(rms, floor)
    if scale > 0.0:
        return scale
    return 1e-6 * max(abs(s[LAST]), 1.0) if s[LAST] == s[LAST] else 1.0


@numba.njit(cache=True, error_model="numpy")
def _level_scale(s, change_scale):
    """Spread of the level around its mean, never below the change scale."""
    spread = math.sqrt(s[VAR] / s[LEVEL_W]) if s[LEVEL_W] > 0 else 0.0
    return max(spread, change_scale)


@numba.njit(cache=True, error_model="numpy")
def _clip(z):
    return min(max(z, -FEATURE_LIMIT), FEATURE_LIMIT)
