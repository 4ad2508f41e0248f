"""The engine: one batched model call per tick, predict-then-learn, error policy, runner."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from helpers import make_engine
from hypothesis import given
from hypothesis import strategies as st

from models.persistence import PersistenceForecaster
from pipeline.config import PipelineConfig
from pipeline.detect import GaussianTailDetector
from pipeline.engine import Engine, raise_on_reject
from pipeline.errors import RejectedInput
from pipeline.runner import Runner, Schedule
from pipeline.testing import FakeClock, ListSink, ListSource, readings
from pipeline.types import (
    ForecastChunk,
    Reading,
    ReadingBatch,
    Reason,
    Rejection,
    StepChunk,
    StreamKey,
    VerdictBatch,
)


class SpyForecaster(PersistenceForecaster):
    """Persistence that records the shape of every chunk it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int]] = []

    def step(self, state: np.ndarray, chunk: StepChunk) -> ForecastChunk:
        self.shapes.append(chunk.shape)
        return super().step(state, chunk)


def interleaved(streams: int, per_stream: int) -> ReadingBatch:
    items = [
        Reading(StreamKey(f"site/dev-{s}/temp"), 60.0 * i, float(s + i))
        for i in range(per_stream)
        for s in range(streams)
    ]
    return ReadingBatch.from_readings(items)


def test_verdicts_carry_their_stream_column_factorised():
    # file sinks write keys from the engine's codes instead of hashing every row's key
    engine = Engine(PersistenceForecaster(), GaussianTailDetector(), clock=FakeClock())
    out = engine.process(interleaved(streams=7, per_stream=4))
    assert out.coded is not None
    codes, names = out.stream_codes()
    assert list(names[codes]) == list(out.stream) and len(set(names)) == len(names) == 7
    reversed_rows = out.take(np.arange(len(out))[::-1])
    codes, names = reversed_rows.stream_codes()
    assert list(names[codes]) == list(out.stream[::-1])
    merged = VerdictBatch.concat([out, reversed_rows])  # codes of two batches are not merged
    assert merged.coded is None
    codes, names = merged.stream_codes()  # found by hashing instead
    assert list(names[codes]) == list(merged.stream)


def test_one_model_call_per_tick_for_all_streams():
    spy = SpyForecaster()
    engine = Engine(spy, GaussianTailDetector(), clock=FakeClock())
    out = engine.process(interleaved(streams=100, per_stream=3))
    assert spy.shapes == [(100, 3)]
    assert len(out) == 300 and engine.stats.model_calls == 1


def test_verdicts_come_out_in_the_order_steps_were_made():
    engine = make_engine()
    batch = interleaved(streams=3, per_stream=4)
    out = engine.process(batch)
    assert out.stream.tolist() == [batch.streams[i] for i in batch.stream_index]
    assert out.timestamp.tolist() == batch.timestamp.tolist()


def test_each_step_is_judged_by_the_forecast_made_at_the_step_before():
    engine = make_engine()
    first = engine.process(interleaved(streams=2, per_stream=5))
    second = engine.process(
        ReadingBatch.from_readings(
            [Reading(StreamKey(f"site/dev-{s}/temp"), 600.0, 50.0) for s in range(2)]
        )
    )
    both = VerdictBatch.concat([first, second])
    for stream in set(both.stream.tolist()):
        rows = both.stream == stream
        np.testing.assert_array_equal(both.forecast[rows][1:], both.next_forecast[rows][:-1])
        np.testing.assert_array_equal(both.upper[rows][1:], both.next_upper[rows][:-1])
        assert np.isnan(both.forecast[rows][0])


def test_interval_is_the_configured_central_gaussian_interval():
    engine = make_engine(interval=0.8)
    out = engine.process(readings("a/b/c", [(i * 60, (-1) ** i * 1.0) for i in range(10)]))
    z = (out.upper - out.forecast) / out.scale
    assert np.nanmax(np.abs(z - 1.2815515655446004)) < 1e-6  # 1e-6 scales: a few ulps off


points = st.lists(
    st.tuples(
        st.sampled_from(["a/1/t", "b/2/t", "c/3/t"]),
        st.integers(0, 300),
        st.floats(-50, 50, allow_nan=False),
    ),
    min_size=1,
    max_size=80,
)


@given(
    items=points,
    cuts=st.lists(st.integers(1, 79), max_size=8),
    config=st.sampled_from([{}, {"window": 30}, {"window": 30, "lateness": 45}, {"lateness": 20}]),
)
def test_any_batching_gives_the_same_verdicts(items, cuts, config):
    batch = [Reading(StreamKey(s), float(t), v) for s, t, v in items]
    whole = make_engine(**config)
    expected = VerdictBatch.concat(
        [whole.process(ReadingBatch.from_readings(batch)), whole.flush()]
    )
    split = make_engine(**config)
    bounds = [0, *sorted(c for c in cuts if c < len(batch)), len(batch)]
    parts = [
        split.process(ReadingBatch.from_readings(batch[a:b])) for a, b in itertools.pairwise(bounds)
    ]
    got = VerdictBatch.concat([*parts, split.flush()])
    for name in ("stream", "timestamp", "value", "forecast", "upper", "anomaly_score"):
        a, b = getattr(got, name), getattr(expected, name)
        key = np.lexsort((got.timestamp, got.stream.astype(str)))
        ref = np.lexsort((expected.timestamp, expected.stream.astype(str)))
        np.testing.assert_array_equal(a[key], b[ref])
    assert split.stats.dropped == whole.stats.dropped


def test_raise_policy_raises_on_the_first_rejection():
    engine = make_engine(strict=True)
    engine.process(readings("a/b/c", [(0, 1.0)]))
    with pytest.raises(RejectedInput, match="duplicate at #0: a/b/c at t=0.0 value=2.0"):
        engine.process(readings("a/b/c", [(0, 2.0)]))


def test_source_rejections_are_counted_and_passed_to_the_policy():
    seen: list[Rejection] = []
    engine = Engine(PersistenceForecaster(), GaussianTailDetector(), on_reject=seen.append)
    bad = Rejection(Reason.BAD_VALUE, "line 7: 'abc'", "log.csv", 7, count=3)
    engine.process(ReadingBatch.empty("log.csv", [bad]))
    assert engine.stats.dropped["bad_value"] == 3 and seen == [bad]


def test_other_streams_carry_on_when_one_sends_garbage():
    engine = make_engine()
    good = [Reading(StreamKey("good/1/t"), 60.0 * i, 1.0 + i) for i in range(5)]
    bad = [Reading(StreamKey("bad/1/t"), 60.0 * i, float("nan")) for i in range(5)]
    out = engine.process(
        ReadingBatch.from_readings([x for pair in zip(good, bad, strict=True) for x in pair])
    )
    assert out.stream.tolist() == ["good/1/t"] * 5
    assert engine.stats.dropped == {"non_finite": 5}


def test_eviction_closes_open_windows_first_and_counts():
    clock = FakeClock()
    engine = make_engine(clock, window=60, stream_ttl=100)
    engine.process(readings("a/b/c", [(0, 1.0), (10, 2.0)]))
    clock.advance(101)
    closed = engine.evict_idle()  # the open window's step, to be published like any other
    assert closed.stream.tolist() == ["a/b/c"] and closed.count.tolist() == [2]
    assert engine.stats.evicted == 1 and engine.stats.steps == 1 and len(engine.table) == 0


def test_eviction_lets_out_held_back_readings_first():
    clock = FakeClock()
    engine = make_engine(clock, lateness=30, stream_ttl=100)
    engine.process(readings("a/b/c", [(0, 1.0), (10, 2.0), (20, 3.0)]))
    clock.advance(101)
    closed = engine.evict_idle()
    assert closed.timestamp.tolist() == [0, 10, 20] and len(engine.table) == 0


# -- the runner ----------------------------------------------------------------------------


def many_readings(n: int) -> list[Reading]:
    return [
        Reading(StreamKey(f"s/{i % 7}/t"), 60.0 * (i // 7), float(i % 11), "", i) for i in range(n)
    ]


def test_runner_drains_the_source_in_ticks_and_flushes():
    engine = Engine(
        PersistenceForecaster(),
        GaussianTailDetector(),
        PipelineConfig(window=120, max_batch=50),
        clock=FakeClock(),
        on_reject=raise_on_reject,
    )
    sink = ListSink()
    Runner(engine, ListSource(many_readings(700)), [sink]).run()
    assert engine.stats.readings == 700
    assert sink.flushed == engine.stats.steps == 7 * 50  # 100 minutes -> 50 two-minute windows
    assert engine.table.positions == {"list": 699}


def test_stop_keeps_windows_open_and_snapshots(tmp_path):
    engine = make_engine(window=120)
    source = ListSource(many_readings(70))
    stop = threading.Event()

    def stop_after_first(verdicts: VerdictBatch) -> None:
        stop.set()

    runner = Runner(
        engine,
        source,
        [ListSink()],
        max_items=35,
        stop=stop,
        snapshot_path=tmp_path / "s.snap",
        on_verdicts=stop_after_first,
    )
    runner.run()
    assert (tmp_path / "s.snap").exists()
    assert engine.table.positions == {"list": 34}
    assert int(engine.table.columns["win_count"].sum()) > 0  # still open


def test_no_snapshot_ends_the_journal_while_outputs_are_unconfirmed(tmp_path, caplog):
    """A snapshot would truncate the journal, which is what publishes the unconfirmed
    forecasts again after a restart: with a sink that cannot flush, none is written."""
    from pipeline.errors import SinkError

    class UnconfirmedSink(ListSink):
        def flush(self) -> None:
            msg = "3 messages to mqtt://broker not acknowledged (not connected)"
            raise SinkError(msg)

    engine = make_engine()
    path = tmp_path / "s.snap"
    Runner(engine, ListSource(many_readings(5)), [UnconfirmedSink()], snapshot_path=path).run()
    assert not path.exists()
    assert "snapshot put off until the outputs are confirmed" in caplog.text
    Runner(make_engine(), ListSource(many_readings(5)), [ListSink()], snapshot_path=path).run()
    assert path.exists()


def test_runner_schedules_idle_close_by_the_clock():
    clock = FakeClock()

    class SlowSource(ListSource):
        def poll(self, max_items: int, timeout: float) -> ReadingBatch | None:
            clock.advance(timeout)
            return super().poll(max_items, timeout)

    engine = make_engine(clock, window=0.3, idle_timeout=0.2, max_delay=0.5)
    sink = ListSink()
    source = SlowSource(many_readings(7) + [Reading(StreamKey("s/0/t"), 10_000.0, 1.0, "", 7)])
    Runner(
        engine, source, [sink], max_items=7, schedule=Schedule(idle_check=0.1), flush_at_end=False
    ).run()
    # the first seven windows closed for idleness before the last reading came
    assert len(sink.combined()) == 7


def test_a_million_distinct_streams_over_time_stay_bounded_by_eviction():
    """Streams come and go (a fleet renamed, devices replaced): the table must not grow."""
    clock = FakeClock()
    engine = make_engine(clock=clock, stream_ttl=60.0)
    per_round, rounds = 10_000, 100
    capacities = []
    for r in range(rounds):
        keys = [f"fleet/dev-{r}-{i}/t" for i in range(per_round)]
        batch = ReadingBatch(
            streams=tuple(keys),
            stream_index=np.arange(per_round, dtype=np.int32),
            timestamp=np.full(per_round, clock.now()),
            value=np.ones(per_round),
            seq=np.arange(per_round, dtype=np.int64),
        )
        engine.process(batch)
        clock.advance(40.0)  # each round's streams fall silent: evicted two rounds later
        engine.evict_idle()
        capacities.append(engine.table.capacity)
    assert engine.stats.steps == per_round * rounds  # 10^6 distinct streams seen
    assert engine.stats.evicted >= per_round * (rounds - 2)  # the metric counts them
    assert len(engine.table) <= 2 * per_round
    assert max(capacities) <= 4 * per_round and capacities[-1] == capacities[10]  # flat


class ShapeSpy:
    """A forecaster that records the (rows, steps) of every chunk it is given."""

    def __init__(self, inner):
        self.inner, self.shapes = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, state, chunk):
        self.shapes.append(chunk.shape)
        return self.inner.step(state, chunk)


@pytest.mark.parametrize(
    "config", [{}, {"window": 60.0, "lateness": 5.0}], ids=["steps", "windows"]
)
def test_warm_up_runs_single_and_batched_steps_and_leaves_nothing(config):
    from models import load_forecaster
    from pipeline.detect import default_detector
    from pipeline.engine import WARM_UP_STREAMS

    spy = ShapeSpy(load_forecaster("default"))
    engine = Engine(spy, default_detector(), PipelineConfig(**config))
    engine.warm_up()
    assert (1, 1) in spy.shapes  # one stream's single step
    assert any(rows == WARM_UP_STREAMS for rows, _ in spy.shapes)  # and a tick of many
    assert len(engine.table) == 0 and engine.stats.readings == 0 and engine.stats.steps == 0
    out = engine.process(readings("a/b/c", [(0, 1.0), (60, 2.0), (120, 4.0), (180, 3.0)]))
    assert len(engine.table) == 1 and len(out) >= 1


def test_a_chunk_of_many_streams_is_stepped_in_blocks_with_the_same_verdicts(monkeypatch):
    # the default model and detector over 150 streams, one engine in one block, one in
    # blocks of 60, 60 and 30 rows (each big enough for the GRU's batched loop)
    from models import load_forecaster
    from pipeline import engine as engine_module
    from pipeline.detect import default_detector

    def run() -> tuple[list[VerdictBatch], Engine]:
        engine = Engine(load_forecaster("default"), default_detector(), clock=FakeClock())
        rng = np.random.default_rng(3)
        outs = []
        for tick in range(4):  # ticks of 1 and of 30 steps a stream
            steps = 1 if tick % 2 else 30
            items = [
                Reading(StreamKey(f"s/{s}/t"), 60.0 * (tick * 40 + i), float(rng.normal(s, 1)))
                for i in range(steps)
                for s in range(150)
            ]
            outs.append(engine.process(ReadingBatch.from_readings(items)))
        return outs, engine

    whole, engine_whole = run()
    monkeypatch.setattr(engine_module, "MODEL_ROWS", 60)
    blocked, engine_blocked = run()
    for a, b in zip(whole, blocked, strict=True):
        assert list(a.stream) == list(b.stream)
        for column in ("forecast", "scale", "anomaly_score", "next_forecast", "next_scale"):
            np.testing.assert_allclose(getattr(b, column), getattr(a, column), rtol=1e-6)
        assert (a.is_anomaly == b.is_anomaly).all()
    # each block's new state was kept: the later ticks' verdicts above depend on it
    np.testing.assert_array_equal(engine_blocked.table.pred_t, engine_whole.table.pred_t)
    assert engine_blocked.stats.steps == engine_whole.stats.steps == 2 * 150 * 31
