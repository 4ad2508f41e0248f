"""Windowing against oracles: pandas resampling on every prefix, and hand-made cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from helpers import make_engine
from hypothesis import given
from hypothesis import strategies as st

from pipeline.engine import Engine
from pipeline.testing import FakeClock, readings
from pipeline.types import Reason, VerdictBatch

# Streams of (time, value) with repeats and disorder: integer seconds make duplicates likely.
points = st.lists(
    st.tuples(st.integers(0, 400), st.floats(-1e3, 1e3, allow_nan=False, width=32)),
    min_size=1,
    max_size=60,
)


def accepted(stream: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The readings the spec keeps without lateness: each must be newer than all kept before."""
    kept: list[tuple[int, float]] = []
    for t, v in stream:
        if not kept or t > kept[-1][0]:
            kept.append((t, v))
    return kept


def pandas_windows(kept: list[tuple[int, float]], window: int) -> pd.DataFrame:
    """The oracle: pandas resampling into epoch-aligned windows labelled by their start."""
    series = pd.Series(
        [v for _, v in kept], index=pd.to_datetime([t for t, _ in kept], unit="s"), dtype=float
    )
    frame = series.resample(f"{window}s", origin="epoch").agg(["mean", "min", "max", "count"])
    frame = frame[frame["count"] > 0]
    frame.index = (frame.index - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    return frame


def steps_frame(verdicts: VerdictBatch) -> pd.DataFrame:
    return pd.DataFrame(
        {"mean": verdicts.value, "min": verdicts.min, "max": verdicts.max, "count": verdicts.count},
        index=verdicts.timestamp.astype("int64"),
    )


def assert_same_windows(ours: pd.DataFrame, oracle: pd.DataFrame) -> None:
    assert ours.index.tolist() == oracle.index.tolist()
    assert ours["count"].tolist() == oracle["count"].tolist()
    for column in ("mean", "min", "max"):
        np.testing.assert_allclose(ours[column], oracle[column], rtol=1e-12, atol=1e-9)


def open_window(engine: Engine, window: int) -> pd.DataFrame:
    """The stream's open window, read from the state table, in the oracle's shape."""
    c, slot = engine.table.columns, engine.table.index["s/d/m"]
    if c["win_count"][slot] == 0:
        return pd.DataFrame(columns=["mean", "min", "max", "count"])
    count = int(c["win_count"][slot])
    row = [c["win_sum"][slot] / count, c["win_min"][slot], c["win_max"][slot], count]
    return pd.DataFrame(
        [row], columns=["mean", "min", "max", "count"], index=[int(c["win_start"][slot])]
    )


@given(stream=points, window=st.sampled_from([1, 5, 7, 60]))
def test_windows_equal_pandas_on_every_prefix(stream, window):
    engine = make_engine(window=window)
    emitted = []
    for n, (t, v) in enumerate(stream, start=1):
        emitted.append(engine.process(readings("s/d/m", [(t, v)], start_seq=n)))
        oracle = pandas_windows(accepted(stream[:n]), window)
        closed = steps_frame(VerdictBatch.concat(emitted))
        assert_same_windows(closed, oracle.iloc[:-1])  # all but the newest window are closed
        assert_same_windows(open_window(engine, window), oracle.iloc[-1:])
    flushed = steps_frame(VerdictBatch.concat([*emitted, engine.flush()]))
    assert_same_windows(flushed, pandas_windows(accepted(stream), window))


@given(stream=points)
def test_window_zero_makes_every_accepted_reading_a_step(stream):
    engine = make_engine(window=0)
    out = engine.process(readings("s/d/m", stream))
    kept = accepted(stream)
    assert out.timestamp.tolist() == [t for t, _ in kept]
    assert out.value.tolist() == [v for _, v in kept]
    dropped = engine.stats.dropped
    assert dropped["duplicate"] + dropped["late"] == len(stream) - len(kept)
    # A repeat of the newest kept time is a duplicate; anything older is late (the
    # stream keeps no history to tell an old re-delivery from a late original).
    newest = [accepted(stream[:i])[-1][0] if i else None for i in range(len(stream))]
    assert dropped["duplicate"] == sum(t == n for (t, _), n in zip(stream, newest, strict=True))


@given(stream=points, cuts=st.lists(st.integers(1, 59), max_size=6), window=st.sampled_from([0, 7]))
def test_batching_does_not_change_the_windows(stream, cuts, window):
    whole = make_engine(window=window)
    expected = VerdictBatch.concat([whole.process(readings("s/d/m", stream)), whole.flush()])
    pieces = make_engine(window=window)
    bounds = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
    parts = [pieces.process(readings("s/d/m", stream[a:b])) for a, b in itertools.pairwise(bounds)]
    got = VerdictBatch.concat([*parts, pieces.flush()])
    assert_same_windows(steps_frame(got), steps_frame(expected))


def test_gaps_are_counted_in_missing_windows():
    engine = make_engine(window=60)
    out = VerdictBatch.concat(
        [engine.process(readings("s/d/m", [(0, 1), (61, 2), (250, 3), (260, 4)])), engine.flush()]
    )
    assert out.timestamp.tolist() == [0, 60, 240]
    assert out.missing.tolist() == [0, 0, 2]  # windows 120 and 180 had no readings
    assert out.dt.tolist()[1:] == [60, 180]
    assert math.isnan(out.dt[0])


def test_gap_without_windows_is_judged_against_the_typical_interval():
    engine = make_engine(window=0)
    times = [0, 60, 120, 180, 240, 540, 600]  # 300 s silence = 4 readings lost
    out = engine.process(readings("s/d/m", [(t, 1.0) for t in times]))
    assert out.missing.tolist() == [0, 0, 0, 0, 0, 4, 0]
    assert out.next_timestamp.tolist()[-1] == pytest.approx(660)


def test_bad_values_and_times_are_dropped_by_reason():
    engine = make_engine(window=0, value_min=-100, value_max=100)
    good = [(0, 1.0), (60, 2.0)]
    bad = [(120, math.nan), (180, math.inf), (240, 1e6), (math.nan, 1.0), (1e12, 1.0)]
    out = engine.process(readings("s/d/m", good + bad + [(300, 3.0)]))
    assert out.value.tolist() == [1.0, 2.0, 3.0]
    assert dict(engine.stats.dropped) == {"non_finite": 2, "out_of_range": 1, "bad_timestamp": 2}
    assert engine.stats.first_rejection["non_finite"].seq == 2


def test_idle_window_closes_on_timeout_and_late_reading_is_dropped():
    clock = FakeClock()
    engine = make_engine(clock, window=60, idle_timeout=30)
    engine.process(readings("s/d/m", [(0, 1.0), (10, 3.0)]))
    clock.advance(31)
    assert len(engine.close_idle()) == 0  # not idle yet: silent for less than a window
    clock.advance(30)
    closed = engine.close_idle()
    assert closed.timestamp.tolist() == [0] and closed.value.tolist() == [2.0]
    again = engine.process(
        readings("s/d/m", [(20, 5.0), (70, 6.0)])
    )  # 20 belongs to the closed window
    assert len(again) == 0 and engine.stats.dropped["late"] == 1
    assert engine.flush().timestamp.tolist() == [60]


def test_the_engine_takes_the_years_the_payload_decoders_take():
    from connectors.payloads import MAX_TIME, MIN_TIME
    from pipeline.config import PipelineConfig
    from pipeline.window import screen

    t = np.array([MIN_TIME, MAX_TIME - 1, MIN_TIME - 1, MAX_TIME])  # 2100-12-31T23:59:59 ok
    reasons = screen(np.zeros(4, np.int64), t, np.ones(4), PipelineConfig())
    assert reasons.tolist() == [0, 0, Reason.BAD_TIMESTAMP, Reason.BAD_TIMESTAMP]


def test_sub_second_windows_take_readings_on_their_boundaries():
    # 10 Hz readings with times written to the millisecond: 20.1 s divided by 0.1 s
    # is just under 201 in floats, and the reading went to the window before
    times = [1_700_000_020.0 + k / 10 for k in range(20)]
    engine = make_engine(window=0.1)
    out = VerdictBatch.concat([engine.process(readings("s/d/m", [(t, k) for k, t in
                                                                enumerate(times)])),
                               engine.flush()])  # fmt: skip
    assert out.count.tolist() == [1] * 20
    assert out.timestamp.tolist() == pytest.approx(times, abs=1e-6)


def test_a_silent_stream_keeps_its_window_open_until_the_window_could_be_over():
    """An idle timeout shorter than the window closed each window after its first
    reading, and the window's later readings were dropped as late."""
    clock = FakeClock()
    engine = make_engine(clock, window=60, idle_timeout=1.0)
    parts = []
    for k in range(15):  # every 10 s of event time, 2.5 s of wall time apart
        parts.append(engine.process(readings("s/d/m", [(1_700_000_040.0 + 10 * k, k)])))
        clock.advance(2.5)
        if idle := engine.idle_to_close():
            parts.append(engine.close_streams(idle))
    clock.advance(60.0)  # silent for a whole window: now it is closed
    parts.append(engine.close_streams(engine.idle_to_close()))
    out = VerdictBatch.concat(parts)
    assert out.count.tolist() == [6, 6, 3] and engine.stats.dropped == {}
