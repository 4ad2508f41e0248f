"""The likelihood detector: bursts, spikes, the long run, one alarm per event."""

from __future__ import annotations

import numpy as np

from pipeline.detect import LikelihoodDetector
from pipeline.testing import chunk_of


def run(detector: LikelihoodDetector, z: list[float]):
    """Steps whose residual is ``z`` scales, against forecasts of 0 with scale 1."""
    chunk = chunk_of([z])
    mean = np.zeros(chunk.shape)
    return detector.step(detector.initial_state(1), chunk, mean, np.ones(chunk.shape))


def calm(n: int, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(size=n))


def test_ordinary_noise_is_not_flagged():
    out = run(LikelihoodDetector(), calm(3000))
    assert out.is_anomaly.sum() <= 1  # a 1e-6 event in 3000 draws is rare
    assert np.median(out.score) < 0.1


def test_a_spike_is_flagged_at_once():
    z = calm(500)
    z[400] = 12.0
    out = run(LikelihoodDetector(), z)
    assert out.is_anomaly[0, 400] and out.score[0, 400] > 0.8


def test_a_burst_of_moderate_surprises_is_flagged_though_no_step_is_extreme():
    z = calm(800)
    z[600:615] = [3.5 * (-1) ** i for i in range(15)]  # |z| = 3.5: p = 5e-4, alone unremarkable
    out = run(LikelihoodDetector(), z)
    assert not out.is_anomaly[0, 600] and out.is_anomaly[0, 600:615].any()


def test_one_event_raises_one_alarm():
    z = calm(800)
    z[500:520] = [15.0] * 20
    held = run(LikelihoodDetector(hold=50), z)
    loose = run(LikelihoodDetector(hold=0), z)
    assert held.is_anomaly[0, 500:520].sum() == 1
    assert loose.is_anomaly[0, 500:520].sum() > 5


def test_flagged_steps_stay_out_of_the_long_run():
    z = calm(1500)
    z[700:760] = [20.0] * 60  # a long anomalous stretch
    out = run(LikelihoodDetector(hold=0), z)
    state = out.state[0]
    long_mean = state[2] / state[4]
    assert long_mean < 1.0  # ordinary surprises are about 0.43 on average


def test_no_flag_before_warmup():
    z = [30.0] * 60
    out = run(LikelihoodDetector(warmup=50), z)
    assert not out.is_anomaly[0, :50].any() and out.is_anomaly[0, 50:].any()
