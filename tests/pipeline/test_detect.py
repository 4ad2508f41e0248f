"""The record detector: new ranges and new surprises, judged per stream, after warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect import RecordDetector
from pipeline.testing import chunk_of

SEEDS = range(5)


def run(detector: RecordDetector, values: list[float], means: list[float], scale: float = 1.0):
    """Steps of ``values`` against forecasts ``means`` with a constant scale."""
    chunk = chunk_of([values])
    return detector.step(
        detector.initial_state(1), chunk, np.array([means]), np.full(chunk.shape, scale)
    )


def noise(n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(size=n))


@pytest.mark.parametrize("seed", SEEDS)
def test_pure_noise_is_flagged_no_more_often_than_a_three_sigma_rule(seed):
    values = noise(20_000, seed)
    out = run(RecordDetector(), values, [0.0] * len(values))
    assert out.is_anomaly.mean() < 0.0027  # P(|z| > 3)
    assert np.median(out.score) < 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_a_level_shift_is_flagged_at_once_and_then_is_the_new_range(seed):
    values = noise(1_000, seed)
    values[700:] = [v + 20.0 for v in values[700:]]
    persistence = [0.0, *values[:-1]]
    out = run(RecordDetector(), values, persistence, scale=1.5)
    assert out.is_anomaly[0, 700] and out.score[0, 700] > 0.9
    assert out.is_anomaly[0, 701:].mean() < 0.02  # new highs of the new level, rarely


@pytest.mark.parametrize("seed", SEEDS)
def test_a_spike_inside_the_range_is_flagged_by_its_surprise(seed):
    signal = 10.0 * np.sin(2 * np.pi * np.arange(800) / 100)  # a range of +-10
    values = list(signal + np.random.default_rng(seed).normal(size=800))
    values[650] = signal[650] + 9.0  # 9 scales off its forecast, inside the range
    out = run(RecordDetector(), values, list(signal))
    assert abs(values[650]) < 10.0
    assert out.is_anomaly[0, 650]


def test_a_surprise_is_judged_against_the_streams_own_record():
    signal = list(10.0 * np.sin(2 * np.pi * np.arange(700) / 100))  # forecast exactly, twice
    misses = noise(700, seed=2)
    misses[650] = 8.0
    rough = list(misses)
    rough[400:600:40] = [7.0, -7.5, 7.2, -6.9, 7.4]  # this stream's readings often miss by 7
    smooth_out = run(RecordDetector(), list(np.add(signal, misses)), signal)
    rough_out = run(RecordDetector(), list(np.add(signal, rough)), signal)
    assert smooth_out.is_anomaly[0, 650] and not rough_out.is_anomaly[0, 650]


def daily_square_wave(days: int, seed: int) -> np.ndarray:
    """Five-minute steps: 0 at night, 10 from 08:00 to 18:00, with noise."""
    hours = np.arange(days * 288) / 12 % 24
    wave = np.where((hours >= 8) & (hours < 18), 10.0, 0.0)
    return wave + 0.1 * np.random.default_rng(seed).normal(size=len(wave))


@pytest.mark.parametrize("seed", SEEDS)
def test_a_jump_made_every_day_at_that_hour_is_not_news_but_one_at_another_hour_is(seed):
    values = daily_square_wave(days=8, seed=seed)
    persistence = np.concatenate([[0.0], values[:-1]])  # misses every jump by 10
    late = 7 * 288 + 20 * 12  # 20:00 on the last day, when the level is 0 at night
    values[late:] = values[late:] + 10.0  # a jump at an unusual hour that lasts
    persistence[late + 1 :] = values[late:-1]
    chunk = chunk_of([list(values)], interval=300.0)
    detector = RecordDetector()
    out = detector.step(
        detector.initial_state(1), chunk, persistence[None], np.full(chunk.shape, 0.5)
    )
    eight_am = np.arange(4, 7) * 288 + 8 * 12  # the daily jumps after the profile has seen some
    assert not out.is_anomaly[0, eight_am].any()
    assert out.is_anomaly[0, late]


def test_one_absurd_residual_does_not_blind_the_record_for_long():
    values = noise(1_000, seed=3)
    values[400] = 1e9  # a fill value, forecast at 0
    values[600] = 9.0
    out = run(RecordDetector(), values, [0.0] * 1_000)
    assert out.is_anomaly[0, 400] and out.is_anomaly[0, 600]


def test_no_flag_before_warmup():
    values = noise(400, seed=4)
    values[50] = 40.0
    values[350] = 80.0
    out = run(RecordDetector(warmup=300), values, [0.0] * 400)
    assert not out.is_anomaly[0, :300].any() and out.is_anomaly[0, 350]


def test_scores_are_in_the_unit_interval_even_for_absurd_values():
    values = noise(500, seed=5)
    values[350], values[450] = 1e300, -1e300
    out = run(RecordDetector(), values, [0.0] * 500)
    assert np.all((out.score >= 0) & (out.score <= 1))
