"""Steps grouped by stream into the padded chunk the model steps, and back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.gather import Gathered
from pipeline.window import Steps


def numpy_gathered(steps: Steps) -> dict[str, np.ndarray]:
    """The grouping spelled out in numpy, as the engine did it before the kernel."""
    order = np.argsort(steps.slot, kind="stable")
    ordered = steps.slot[order]
    first = np.flatnonzero(np.diff(ordered, prepend=ordered[:1] - 1))
    length = np.diff(first, append=len(ordered))
    shape = (len(first), int(length.max()))
    sorted_rows = np.repeat(np.arange(len(first)), length)
    row = np.empty(len(order), np.int64)
    row[order] = sorted_rows
    cell = np.empty(len(order), np.int64)
    cell[order] = sorted_rows * shape[1] + np.arange(len(order)) - first[sorted_rows]

    def grid(column: np.ndarray, fill: float = np.nan) -> np.ndarray:
        out = np.full(shape, fill, column.dtype)
        out.reshape(-1)[cell] = column
        return out

    mask = np.zeros(shape, bool)
    mask.reshape(-1)[cell] = True
    return {"slots": ordered[first], "length": length, "row": row, "cell": cell,
            "timestamp": grid(steps.timestamp), "value": grid(steps.value),
            "dt": grid(steps.dt), "missing": grid(steps.missing, 0),
            "next_timestamp": grid(steps.next_timestamp), "mask": mask}  # fmt: skip


def random_steps(rng: np.random.Generator, n: int, streams: int) -> Steps:
    steps = Steps.allocate(n)
    steps.slot[:] = rng.integers(0, streams, n)
    for column in (steps.timestamp, steps.value, steps.min, steps.max, steps.dt,
                   steps.next_timestamp):  # fmt: skip
        column[:] = rng.normal(size=n)
    steps.dt[rng.random(n) < 0.1] = np.nan  # a stream's first step
    steps.count[:] = 1
    steps.missing[:] = rng.integers(0, 4, n)
    steps.source[:] = np.arange(n)
    return steps


@pytest.mark.parametrize(("n", "streams"), [(1, 1), (7, 1), (34, 10_000), (500, 40), (5_000, 3)])
def test_the_kernel_groups_steps_as_numpy_does(n: int, streams: int) -> None:
    steps = random_steps(np.random.default_rng(n), n, streams)
    gathered = Gathered.of(steps)
    expected = numpy_gathered(steps)
    chunk = gathered.chunk
    for name in ("slots", "length", "timestamp", "value", "dt", "missing", "next_timestamp",
                 "mask"):  # fmt: skip
        got = getattr(chunk, name)
        assert got.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got, expected[name], err_msg=name)  # NaN == NaN here
    np.testing.assert_array_equal(gathered.row, expected["row"])
    np.testing.assert_array_equal(gathered.cell, expected["cell"])
    # and back: every column comes out in the order the steps were made
    np.testing.assert_array_equal(gathered.flatten(chunk.value), steps.value)
    np.testing.assert_array_equal(gathered.flatten(chunk.missing), steps.missing)


def test_a_streams_steps_keep_their_order_in_its_row() -> None:
    steps = Steps.allocate(5)
    steps.slot[:] = [3, 1, 3, 3, 1]
    steps.timestamp[:] = [10.0, 20.0, 11.0, 12.0, 21.0]
    for column in (steps.value, steps.dt, steps.next_timestamp):
        column[:] = steps.timestamp
    steps.missing[:] = 0
    chunk = Gathered.of(steps).chunk
    assert chunk.slots.tolist() == [1, 3] and chunk.length.tolist() == [2, 3]
    assert chunk.timestamp[0, :2].tolist() == [20.0, 21.0] and np.isnan(chunk.timestamp[0, 2])
    assert chunk.timestamp[1].tolist() == [10.0, 11.0, 12.0]
    assert chunk.mask.tolist() == [[True, True, False], [True, True, True]]


@given(st.lists(st.integers(0, 40), max_size=60))
def test_the_rows_are_the_streams_unique_finds_with_their_counts(slots: list[int]) -> None:
    steps = random_steps(np.random.default_rng(len(slots)), len(slots), 1)
    steps.slot[:] = slots
    chunk = Gathered.of(steps).chunk
    streams, counts = np.unique(np.array(slots, np.int64), return_counts=True)
    np.testing.assert_array_equal(chunk.slots, streams)
    np.testing.assert_array_equal(chunk.length, counts)
    assert chunk.value.shape == (len(streams), counts.max() if len(slots) else 0)


def test_keep_last_leaves_in_each_slot_what_its_rows_last_step_left() -> None:
    from models.persistence import PersistenceForecaster
    from pipeline.detect import RecordDetector
    from pipeline.gather import keep_last
    from pipeline.state import StateTable
    from pipeline.types import DetectionChunk, ForecastChunk

    forecaster, detector = PersistenceForecaster(), RecordDetector()
    table = StateTable(forecaster, detector, capacity=8)
    table.slots_for(tuple(f"s/{i}" for i in range(6)), 0.0)
    rng = np.random.default_rng(0)
    steps = random_steps(rng, 9, 1)
    steps.slot[:] = [4, 1, 4, 4, 5, 1, 4, 5, 1]
    gathered = Gathered.of(steps)
    chunk = gathered.chunk
    rows, width = chunk.shape
    forecast = ForecastChunk(mean=rng.normal(size=(rows, width)), scale=rng.random((rows, width)),
                             state=rng.normal(size=(rows, forecaster.state_width)))  # fmt: skip
    flagged = rng.random((rows, width)) < 0.5
    detector_state = rng.random((rows, detector.state_width)).astype(np.float32)
    detection = DetectionChunk(rng.random((rows, width)), flagged, detector_state)
    mean, scale = rng.normal(size=(rows, width)), rng.random((rows, width))
    table.anomalies[1] = 7  # counts add up
    keep_last(table, chunk, forecast, detection, mean, scale)
    for b, slot in enumerate(chunk.slots.tolist()):
        j = chunk.length[b] - 1
        np.testing.assert_array_equal(table.model_state[slot], forecast.state[b])
        np.testing.assert_array_equal(table.detector_state[slot], detection.state[b])
        assert table.pred_mean[slot] == forecast.mean[b, j]
        assert table.pred_scale[slot] == forecast.scale[b, j]
        assert table.pred_t[slot] == chunk.next_timestamp[b, j]
        assert table.last_value[slot] == chunk.value[b, j]
        assert table.last_forecast[slot] == mean[b, j] and table.last_scale[slot] == scale[b, j]
        assert table.last_score[slot] == detection.score[b, j]
        counted = int((flagged[b] & chunk.mask[b]).sum())  # padding never counts
        assert table.anomalies[slot] == counted + (7 if slot == 1 else 0)
    untouched = [s for s in range(6) if s not in chunk.slots.tolist()]
    assert all(np.isnan(table.pred_mean[s]) and table.anomalies[s] == 0 for s in untouched)
