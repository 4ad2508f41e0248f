"""Persistence specifics: its scale estimate on real-world awkward streams."""

from __future__ import annotations

import numpy as np

from models.persistence import PersistenceForecaster
from pipeline.testing import chunk_of


def test_a_sensor_that_sat_still_does_not_make_its_next_step_a_huge_event():
    values = [10.0, 11.0] + [11.0] * 500 + [12.0]  # quantised, long flat stretch, one step
    out = PersistenceForecaster().step(PersistenceForecaster().initial_state(1), chunk_of([values]))
    scale_before_step = out.scale[0, -2]
    assert scale_before_step >= 0.5  # half the resolution (1.0)
    assert abs(values[-1] - out.mean[0, -2]) / scale_before_step <= 2.0


def test_a_flat_start_does_not_freeze_the_scale_at_zero():
    values = [5.0, 5.0, 5.0, 7.0, 4.0, 8.0, 3.0]
    out = PersistenceForecaster().step(PersistenceForecaster().initial_state(1), chunk_of([values]))
    assert 0.0 < out.scale[0, 2] <= 5e-6  # nothing has moved yet: tiny, never 0
    assert np.all(out.scale[0, 3:] > 1.0)  # and it learns once things move


def test_one_spike_is_learned_only_up_to_the_clip():
    calm = list(np.sin(np.arange(200) / 5.0))
    f = PersistenceForecaster(clip=4.0)
    out = f.step(f.initial_state(1), chunk_of([[*calm, 1000.0]]))
    assert out.scale[0, -1] < 3 * out.scale[0, -2]


def test_a_constant_stream_forecasts_its_constant_with_a_small_interval():
    f = PersistenceForecaster()
    out = f.step(f.initial_state(2), chunk_of([[21.5] * 100, [0.0] * 100]))
    assert np.all(out.mean[:, 1:] == [[21.5], [0.0]])
    assert np.all(out.scale[:, 1:] > 0.0)
    assert np.all(out.scale[0, 1:] <= 21.5e-6) and np.all(out.scale[1, 1:] <= 1e-6)
