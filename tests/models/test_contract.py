"""One suite over every forecaster and detector: the protocol's promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.features import N_FEATURES
from models.gru import GaussianGRU
from models.persistence import PersistenceForecaster
from models.rnn import RnnForecaster
from pipeline.detect import GaussianTailDetector, RecordDetector
from pipeline.testing import chunk_of
from pipeline.types import StepChunk


def _small_rnn() -> RnnForecaster:
    torch.manual_seed(0)
    network = GaussianGRU(N_FEATURES, hidden=8, layers=2)
    with torch.no_grad():
        network.head.weight.normal_(0, 0.3)
    return RnnForecaster(network, "contract")


FORECASTERS = [
    PersistenceForecaster(),
    PersistenceForecaster(alpha=0.3, clip=2.0),
    _small_rnn(),
]
DETECTORS = [
    GaussianTailDetector(),
    GaussianTailDetector(threshold=0.9, warmup=3),
    RecordDetector(),
    RecordDetector(warmup=5, range_memory=50.0, surprise_memory=20.0),
]

rng = np.random.default_rng(0)
ROWS = [list(np.cumsum(rng.normal(size=n)) + 20) for n in (40, 25, 3)]


def halves(rows: list[list[float]], cut: int) -> tuple[StepChunk, StepChunk]:
    return chunk_of([r[:cut] or [r[0]] for r in rows]), chunk_of([r[cut:] for r in rows])


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=repr)
class TestForecasterContract:
    def test_initial_state_has_the_declared_shape(self, forecaster):
        state = forecaster.initial_state(5)
        assert state.shape == (5, forecaster.state_width)
        assert state.dtype == forecaster.state_dtype

    def test_step_does_not_touch_its_input_state(self, forecaster):
        state = forecaster.initial_state(3)
        before = state.copy()
        forecaster.step(state, chunk_of(ROWS))
        np.testing.assert_array_equal(state, before)

    def test_same_input_same_output(self, forecaster):
        a = forecaster.step(forecaster.initial_state(3), chunk_of(ROWS))
        b = forecaster.step(forecaster.initial_state(3), chunk_of(ROWS))
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.state, b.state)

    def test_one_long_chunk_equals_steps_carried_through_state(self, forecaster):
        rows = [r[:20] for r in ROWS[:2]]
        whole = forecaster.step(forecaster.initial_state(2), chunk_of(rows))
        state = forecaster.initial_state(2)
        for t in range(20):
            out = forecaster.step(state, chunk_of([[r[t]] for r in rows], first_step=t))
            np.testing.assert_allclose(out.mean[:, 0], whole.mean[:, t], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out.scale[:, 0], whole.scale[:, t], rtol=1e-5, atol=1e-6)
            state = out.state
        np.testing.assert_allclose(state, whole.state, rtol=1e-5, atol=1e-6)

    def test_padding_does_not_leak_into_shorter_rows(self, forecaster):
        together = forecaster.step(forecaster.initial_state(3), chunk_of(ROWS))
        alone = forecaster.step(forecaster.initial_state(1), chunk_of([ROWS[2]]))
        np.testing.assert_allclose(together.state[2], alone.state[0], rtol=1e-5, atol=1e-6)
        assert np.isnan(together.mean[2, 3:]).all()

    def test_forecasts_are_in_the_streams_units(self, forecaster):
        out = forecaster.step(forecaster.initial_state(3), chunk_of(ROWS))
        last = out.mean[0, 39]
        assert abs(last - ROWS[0][-1]) < 5 * np.nanmean(out.scale[0])


@pytest.mark.parametrize("detector", DETECTORS, ids=repr)
class TestDetectorContract:
    def forecasts(self) -> tuple[StepChunk, np.ndarray, np.ndarray]:
        chunk = chunk_of(ROWS)
        mean = np.where(chunk.mask, chunk.value + rng.normal(size=chunk.shape), np.nan)
        mean[:, 0] = np.nan  # no forecast at a stream's first step
        return chunk, mean, np.full(chunk.shape, 1.0)

    def test_scores_are_in_the_unit_interval_and_zero_without_forecast(self, detector):
        chunk, mean, scale = self.forecasts()
        out = detector.step(detector.initial_state(3), chunk, mean, scale)
        assert ((out.score >= 0) & (out.score <= 1)).all()
        assert (out.score[:, 0] == 0).all() and not out.is_anomaly[:, 0].any()

    def test_step_is_pure_and_deterministic(self, detector):
        chunk, mean, scale = self.forecasts()
        state = detector.initial_state(3)
        before = state.copy()
        a = detector.step(state, chunk, mean, scale)
        b = detector.step(state, chunk, mean, scale)
        np.testing.assert_array_equal(state, before)
        np.testing.assert_array_equal(a.score, b.score)

    def test_no_flag_during_warmup(self, detector):
        chunk = chunk_of([[0.0, 50.0] * (detector.warmup // 2 + 5)])
        mean = np.full(chunk.shape, 100.0)  # every step is wildly off, and so unlike the last
        out = detector.step(detector.initial_state(1), chunk, mean, np.ones(chunk.shape))
        flagged = np.flatnonzero(out.is_anomaly[0])
        assert len(flagged) and flagged[0] >= detector.warmup

    def test_a_wild_step_scores_higher_than_a_tame_one(self, detector):
        calm = list(0.5 * np.random.default_rng(0).normal(size=detector.warmup + 50))
        chunk = chunk_of([[*calm, 0.1, 9.0]])
        mean = np.zeros(chunk.shape)
        out = detector.step(detector.initial_state(1), chunk, mean, np.ones(chunk.shape))
        assert out.score[0, -1] > out.score[0, -2] >= 0.0
        assert out.is_anomaly[0, -1] and not out.is_anomaly[0, -2]
