"""The River baselines: the forecaster contract, faults, gaps, snapshots and tuning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from river import base, time_series

from models import load_forecaster
from models.river_baselines import GRIDS, RiverForecaster, tune
from pipeline.detect import GaussianTailDetector
from pipeline.engine import Engine
from pipeline.errors import SnapshotError
from pipeline.testing import chunk_of, readings

FACTORIES = {
    "holtwinters": lambda: RiverForecaster("holtwinters"),
    "holtwinters-season4": lambda: RiverForecaster("holtwinters", seasonality=4),
    "holt": lambda: RiverForecaster("holtwinters", beta=0.1, gamma=None, seasonality=0),
    "snarimax": lambda: RiverForecaster("snarimax"),
    "snarimax-m4": lambda: RiverForecaster("snarimax", m=4, q=0),
}

rng = np.random.default_rng(0)
ROWS = [list(np.cumsum(rng.normal(size=n)) + 20) for n in (40, 25, 3)]


@pytest.fixture(params=list(FACTORIES), ids=list(FACTORIES))
def make(request):
    return FACTORIES[request.param]


class TestForecasterContract:
    def test_initial_state_has_the_declared_shape(self, make):
        forecaster = make()
        state = forecaster.initial_state(5)
        assert state.shape == (5, forecaster.state_width) == (5, 1)
        assert state.dtype == forecaster.state_dtype
        assert np.isnan(state).all()  # no model yet

    def test_step_does_not_touch_its_input_state(self, make):
        forecaster = make()
        state = forecaster.initial_state(3)
        before = state.copy()
        out = forecaster.step(state, chunk_of(ROWS))
        np.testing.assert_array_equal(state, before)
        assert out.state.tolist() == [[0.0], [1.0], [2.0]]  # a model id per stream

    def test_same_input_same_output_for_a_fresh_forecaster(self, make):
        a, b = make(), make()
        out_a = a.step(a.initial_state(3), chunk_of(ROWS))
        out_b = b.step(b.initial_state(3), chunk_of(ROWS))
        np.testing.assert_array_equal(out_a.mean, out_b.mean)
        np.testing.assert_array_equal(out_a.scale, out_b.scale)
        np.testing.assert_array_equal(out_a.state, out_b.state)

    def test_one_long_chunk_equals_steps_carried_through_state(self, make):
        rows = [r[:20] for r in ROWS[:2]]
        whole_forecaster, stepping = make(), make()
        whole = whole_forecaster.step(whole_forecaster.initial_state(2), chunk_of(rows))
        state = stepping.initial_state(2)
        for t in range(20):
            out = stepping.step(state, chunk_of([[r[t]] for r in rows]))
            np.testing.assert_allclose(out.mean[:, 0], whole.mean[:, t], rtol=1e-12)
            np.testing.assert_allclose(out.scale[:, 0], whole.scale[:, t], rtol=1e-12)
            state = out.state
        np.testing.assert_array_equal(state, whole.state)

    def test_padding_does_not_leak_into_shorter_rows(self, make):
        together, alone = make(), make()
        both = together.step(together.initial_state(3), chunk_of(ROWS))
        single = alone.step(alone.initial_state(1), chunk_of([ROWS[2]]))
        np.testing.assert_array_equal(both.mean[2, :3], single.mean[0])
        np.testing.assert_array_equal(both.scale[2, :3], single.scale[0])
        assert np.isnan(both.mean[2, 3:]).all() and np.isnan(both.scale[2, 3:]).all()

    def test_forecasts_are_in_the_streams_units(self, make):
        forecaster = make()
        out = forecaster.step(forecaster.initial_state(3), chunk_of(ROWS))
        assert abs(out.mean[0, 39] - ROWS[0][-1]) < 5 * np.nanmean(out.scale[0])
        assert forecaster.fallbacks == 0


def test_load_forecaster_knows_the_river_baselines():
    for name in ("river-holtwinters", "river-snarimax"):
        forecaster = load_forecaster(name)
        assert isinstance(forecaster, RiverForecaster) and forecaster.name == name


def test_the_fingerprint_is_unique_to_the_object():
    assert RiverForecaster("snarimax").fingerprint != RiverForecaster("snarimax").fingerprint


def test_a_snapshot_with_a_river_baseline_is_refused_not_half_loaded(tmp_path):
    path = tmp_path / "state.snap"
    first = Engine(RiverForecaster("holtwinters"), GaussianTailDetector())
    first.process(readings("a/b/c", [(60 * i, float(i % 7)) for i in range(50)]))
    first.snapshot(path)
    second = Engine(RiverForecaster("holtwinters"), GaussianTailDetector())
    with pytest.raises(SnapshotError):
        second.restore(path)


def test_the_engine_judges_each_step_by_the_previous_forecast():
    forecaster = RiverForecaster("holtwinters", alpha=0.5, beta=None, gamma=None, seasonality=0)
    engine = Engine(forecaster, GaussianTailDetector())
    out = engine.process(readings("a/b/c", [(0, 1.0), (60, 2.0), (120, 4.0), (180, 4.0)]))
    assert out.forecast[1:].tolist() == [1.0, 1.5, 2.75]
    assert out.next_forecast.tolist() == [1.0, 1.5, 2.75, 3.375]


def test_steps_after_a_gap_are_learned_but_do_not_move_the_scale():
    values = [float(v) for v in np.sin(np.arange(60) / 3.0)] + [50.0, 0.0]
    chunk = chunk_of([values])
    missing = chunk.missing.copy()
    missing[0, 60] = 5  # the jump to 50 comes after a gap
    gapped = dataclasses.replace(chunk, missing=missing)
    f = RiverForecaster("holtwinters", alpha=0.9, beta=None, gamma=None, seasonality=0)
    out = f.step(f.initial_state(1), gapped)
    assert out.scale[0, 60] == out.scale[0, 59]
    assert out.mean[0, 60] == pytest.approx(0.9 * 50.0 + 0.1 * out.mean[0, 59])  # learned
    g = RiverForecaster("holtwinters", alpha=0.9, beta=None, gamma=None, seasonality=0)
    ungapped = g.step(g.initial_state(1), chunk)
    assert ungapped.scale[0, 60] > 1.2 * ungapped.scale[0, 59]  # (the error is clipped)


class Flaky(base.Regressor):
    """A River regressor that breaks after ``after`` updates: raises, or predicts NaN."""

    def __init__(self, after: int = 10, mode: str = "raise") -> None:
        self.after = after
        self.mode = mode
        self._updates = 0

    def learn_one(self, x, y):
        self._updates += 1
        if self.mode == "raise" and self._updates > self.after:
            msg = "flaky"
            raise ZeroDivisionError(msg)

    def predict_one(self, x):
        return math.nan if self.mode == "nan" and self._updates > self.after else 0.0


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_a_failing_model_falls_back_to_the_last_value_and_is_counted(mode):
    values = list(np.cumsum(rng.normal(size=100)))
    f = RiverForecaster("snarimax", p=1, d=1, q=0, m=2, sp=0, regressor=Flaky(10, mode))
    out = f.step(f.initial_state(1), chunk_of([values]))
    assert np.isfinite(out.mean).all()
    assert f.fallbacks >= 3  # each fresh model breaks again after 10 updates
    fell_back = out.mean[0] == np.array(values)
    assert fell_back.sum() >= f.fallbacks  # (plus the warm-up steps of each fresh model)
    assert np.isfinite(out.scale[0, 1:]).all()  # the stream's error scale survives


def test_a_diverging_river_model_does_not_poison_the_stream():
    # gamma > 1 - alpha: River's additive Holt-Winters blows up on this series
    params = {"alpha": 0.5, "beta": 0.3, "gamma": 0.5, "seasonality": 24}
    t = np.arange(2000)
    values = (10 * np.sin(2 * np.pi * t / 24) + rng.normal(size=len(t))).tolist()
    raw = time_series.HoltWinters(**params)
    worst = 0.0
    for x in values:
        raw.learn_one(x)
        if raw._initialized:
            worst = max(worst, abs(raw.forecast(horizon=1)[0] - x))
    assert not worst < 1e5  # River alone blows up (to huge values or NaN)
    f = RiverForecaster("holtwinters", **params)
    out = f.step(f.initial_state(1), chunk_of([values]))
    assert f.fallbacks > 0
    errors = np.abs(np.array(values[1:]) - out.mean[0, :-1])
    naive = np.abs(np.diff(values))
    assert np.isfinite(errors).all() and errors.mean() < 5 * naive.mean()


def test_additive_seasons_start_from_deviations_not_ratios():
    # A daily cycle around zero: River 0.26 would start the season at y / level (huge)
    t = np.arange(24 * 20)
    values = (3 * np.sin(2 * np.pi * t / 24) + 0.01).tolist()
    params = {"alpha": 0.3, "beta": 0.01, "gamma": 0.1, "seasonality": 24}
    f = RiverForecaster("holtwinters", **params)
    ours = f.forecast_series(values)
    raw = time_series.HoltWinters(**params)
    theirs = []
    for x in values:
        raw.learn_one(x)
        theirs.append(raw.forecast(horizon=1)[0] if raw._initialized else x)
    ours_mae = np.mean(np.abs(np.array(values[25:]) - ours[24:-1]))
    theirs_mae = np.mean(np.abs(np.array(values[25:]) - np.array(theirs[24:-1])))
    assert ours_mae < 0.1 < 10 < theirs_mae


def test_tune_looks_at_the_first_fifth_only():
    walk = np.cumsum(rng.normal(size=200)) + 50  # favours a high alpha
    noise = 50 + rng.normal(size=800)  # favours a low one
    grid = [{"alpha": 0.1}, {"alpha": 0.9}]
    flat = {"beta": None, "gamma": None, "seasonality": 0}
    series = np.concatenate([walk, noise])
    assert tune("holtwinters", [series], grid, **flat)["alpha"] == 0.9
    assert tune("holtwinters", [series], grid, fraction=1.0, **flat)["alpha"] == 0.1
    garbage = np.concatenate([walk, np.full(800, 1e12)])
    assert tune("holtwinters", [garbage], grid, **flat) == {**flat, "alpha": 0.9}


def test_tune_compares_streams_in_different_units():
    small = np.cumsum(rng.normal(size=500)) * 0.001  # a high alpha wins on both
    large = np.cumsum(rng.normal(size=500)) * 1000
    grid = [{"alpha": 0.2}, {"alpha": 0.95}]
    flat = {"beta": None, "gamma": None, "seasonality": 0}
    assert tune("holtwinters", [small, large], grid, fraction=1.0, **flat)["alpha"] == 0.95


@pytest.mark.parametrize("kind", ["holtwinters", "snarimax"])
def test_every_default_grid_candidate_is_a_valid_model(kind):
    for params in GRIDS[kind]:
        RiverForecaster(kind, **params)


def test_bad_parameters_fail_at_construction():
    with pytest.raises(ValueError, match="unknown parameters"):
        RiverForecaster("holtwinters", p=2)
    with pytest.raises(ValueError, match="needs beta"):
        RiverForecaster("holtwinters", beta=None)
    with pytest.raises(ValueError, match="not one of"):
        RiverForecaster("arima")
