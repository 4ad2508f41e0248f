"""Allowed lateness: out-of-order readings within the lateness are used, in time order."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import make_engine
from hypothesis import given
from hypothesis import strategies as st

from pipeline.testing import FakeClock, readings
from pipeline.types import Reason, VerdictBatch


def oracle(points: list[tuple[int, float]], window: int) -> pd.DataFrame:
    """pandas on the sorted stream, first arrival kept among equal times."""
    frame = pd.DataFrame(points, columns=["t", "v"]).drop_duplicates("t").sort_values("t")
    if window == 0:
        return pd.DataFrame({"mean": frame["v"].to_numpy()}, index=frame["t"].to_numpy())
    index = pd.to_datetime(frame["t"], unit="s")
    series = pd.Series(frame["v"].to_numpy(), index=index)
    out = series.resample(f"{window}s", origin="epoch").mean().dropna()
    return pd.DataFrame(
        {"mean": out.to_numpy()}, index=(out.index - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    )


@st.composite
def disordered(draw: st.DrawFn) -> tuple[list[tuple[int, float]], int]:
    """A stream whose readings arrive at most `disorder` seconds out of order."""
    times = sorted(draw(st.lists(st.integers(0, 500), min_size=1, max_size=60)))
    disorder = draw(st.integers(0, 40))
    keys = [t + draw(st.integers(0, disorder)) for t in times]  # arrival jitter
    order = sorted(range(len(times)), key=lambda i: keys[i])
    values = draw(st.lists(st.floats(-100, 100), min_size=len(times), max_size=len(times)))
    return [(times[i], values[i]) for i in order], disorder


@given(case=disordered(), window=st.sampled_from([0, 10, 60]))
def test_within_lateness_the_result_equals_the_sorted_stream(case, window):
    points, disorder = case
    engine = make_engine(window=window, lateness=disorder + 1)
    out = VerdictBatch.concat([engine.process(readings("s/d/m", points)), engine.flush()])
    expected = oracle(points, window)
    assert out.timestamp.astype(int).tolist() == expected.index.tolist()
    np.testing.assert_allclose(out.value, expected["mean"], rtol=1e-12)
    assert engine.stats.dropped.get("late", 0) == 0


def test_a_reading_beyond_the_lateness_is_late():
    engine = make_engine(lateness=30)
    out = VerdictBatch.concat(
        [
            engine.process(readings("s/d/m", [(100, 1.0), (160, 2.0), (129, 9.0), (131, 3.0)])),
            engine.flush(),
        ]
    )
    assert out.timestamp.tolist() == [100, 131, 160]
    assert dict(engine.stats.dropped) == {"late": 1}


def test_readings_wait_until_the_stream_moves_lateness_ahead():
    engine = make_engine(lateness=60)
    assert len(engine.process(readings("s/d/m", [(0, 1.0), (30, 2.0)]))) == 0
    assert engine.process(readings("s/d/m", [(61, 3.0)])).timestamp.tolist() == [0]
    assert engine.process(readings("s/d/m", [(90, 4.0)])).timestamp.tolist() == [30]
    assert engine.flush().timestamp.tolist() == [61, 90]


def test_repeats_held_together_count_as_duplicates_once_applied():
    engine = make_engine(lateness=60)
    engine.process(readings("s/d/m", [(0, 1.0), (0, 5.0), (10, 2.0), (0, 7.0)]))
    out = engine.flush()
    assert out.timestamp.tolist() == [0, 10] and out.value.tolist() == [1.0, 2.0]
    assert dict(engine.stats.dropped) == {"duplicate": 2}
    engine.process(readings("s/d/m", [(10, 3.0)]))
    assert engine.stats.dropped["duplicate"] == 3


def test_idle_streams_release_what_they_hold():
    clock = FakeClock()
    engine = make_engine(clock, lateness=300, idle_timeout=10)
    engine.process(readings("s/d/m", [(0, 1.0), (60, 2.0)]))
    clock.advance(11)
    assert engine.close_idle().timestamp.tolist() == [0, 60]
    assert len(engine.table.pending) == 0


def test_a_full_buffer_lets_the_oldest_out_early():
    engine = make_engine(lateness=1000, reorder_capacity=3)
    out = engine.process(readings("s/d/m", [(t, float(t)) for t in (50, 10, 40, 20, 30)]))
    assert out.timestamp.tolist() == [10, 20]
    assert sorted(engine.table.pending.timestamp.tolist()) == [30, 40, 50]


def test_repeats_dropped_while_held_get_rows_and_name_their_stream():
    rejected = []
    engine = make_engine(lateness=60, report_dropped=True)
    engine.on_reject = rejected.append
    engine.process(readings("s/d/m", [(0, 1.0), (0, 5.0), (10, 2.0)]))
    out = engine.flush()
    assert out.timestamp.tolist() == [0, 10, 0]
    assert out.dropped.tolist() == [0, 0, int(Reason.DUPLICATE)]
    assert out.stream.tolist() == ["s/d/m"] * 3 and out.value[2] == 5.0
    assert str(rejected[-1]) == "duplicate in s/d/m: s/d/m at t=0.0 value=5.0 (after re-sorting)"
