"""The exporter: histograms against numpy, per-stream series against the verdicts,
the cap and allowlist, a 100k-stream scrape, and promtool's lint."""

from __future__ import annotations

import time

import numpy as np
from helpers import make_engine
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import http_get, promtool

from connectors.metrics_http import serve_metrics
from connectors.prometheus import (
    LATENCY_BUCKETS,
    Histogram,
    PipelineCollector,
    StreamCollector,
    TickMetrics,
)
from pipeline.types import ReadingBatch

T0 = 1_700_000_000.0


def scrape(*collectors) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def batch(n_streams: int, steps: int, received: float | None = None) -> ReadingBatch:
    """``steps`` readings a minute apart for each of ``n_streams`` streams, interleaved."""
    streams = tuple(f"site-{i // 1000}/dev-{i % 1000}/temp" for i in range(n_streams))
    index = np.tile(np.arange(n_streams, dtype=np.int32), steps)
    step = np.repeat(np.arange(steps), n_streams)
    value = 20.0 + np.sin(index + step) + (index % 7)
    return ReadingBatch(
        streams=streams, stream_index=index, timestamp=T0 + 60.0 * step, value=value,
        seq=np.arange(len(index), dtype=np.int64), partition="test",
        received=None if received is None else np.full(len(index), received),
    )  # fmt: skip


# ---------------------------------------------------------------- histograms


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=50), st.integers(1, 3))
def test_histogram_equals_counting_each_value_against_each_bound(values, repeats):
    histogram = Histogram(LATENCY_BUCKETS)
    for _ in range(repeats):
        histogram.observe(np.asarray(values, np.float64))
    buckets, total = histogram.snapshot()
    expected = [repeats * sum(v <= bound for v in values) for bound in LATENCY_BUCKETS]
    assert [count for _, count in buckets] == [*expected, repeats * len(values)]
    assert abs(total - repeats * sum(values)) <= 1e-9 * max(1.0, total)


def test_tick_metrics_observe_latency_per_reading_and_one_batch_size_per_tick():
    ticks = TickMetrics(clock=lambda: 100.0)
    arrived = np.array([99.999, 99.96, 99.0, 100.5])  # the last: a clock step back
    ticks.observe(ReadingBatch.empty())  # an idle tick is no batch
    one = ReadingBatch(("a/b/c",), np.zeros(4, np.int32), np.arange(4.0), np.ones(4),
                       np.arange(4), received=arrived)  # fmt: skip
    ticks.observe(one)
    got = samples(scrape(_Only(ticks)))
    latency = "sensorcast_forecast_latency_seconds"
    assert got[(f"{latency}_count", ())] == 4
    assert got[(f"{latency}_bucket", (("le", "0.005"),))] == 2  # 1 ms and the clamped one
    assert got[(f"{latency}_bucket", (("le", "0.05"),))] == 3
    assert got[(f"{latency}_bucket", (("le", "1.0"),))] == 4
    assert got[("sensorcast_batch_size_count", ())] == 1
    assert got[("sensorcast_batch_size_sum", ())] == 4


class _Only:
    """A collector of a TickMetrics alone."""

    def __init__(self, ticks: TickMetrics) -> None:
        self.ticks = ticks

    def collect(self):
        return self.ticks.collect()


# ---------------------------------------------------------------- per-stream series


def test_stream_series_are_the_last_verdict_of_each_stream():
    engine = make_engine()
    verdicts = engine.process(batch(5, 12))
    got = samples(scrape(StreamCollector(engine)))
    for stream in {str(s) for s in verdicts.stream}:
        last = np.flatnonzero(verdicts.stream == stream)[-1]
        label = (("stream", stream),)
        for metric, column in (("value", "value"), ("forecast", "forecast"),
                               ("forecast_lower", "lower"), ("forecast_upper", "upper"),
                               ("anomaly_score", "anomaly_score")):  # fmt: skip
            expected = float(getattr(verdicts, column)[last])
            assert abs(got[(f"sensorcast_stream_{metric}", label)] - expected) < 1e-9, metric
        flagged = int(verdicts.is_anomaly[verdicts.stream == stream].sum())
        assert got[("sensorcast_stream_anomalies_total", label)] == flagged
        assert got[("sensorcast_stream_last_seen_timestamp_seconds", label)] == engine.clock.now()


def test_a_stream_without_a_forecast_yet_has_a_value_but_no_forecast_series():
    engine = make_engine()
    engine.process(batch(1, 1))
    got = samples(scrape(StreamCollector(engine)))
    label = (("stream", "site-0/dev-0/temp"),)
    assert ("sensorcast_stream_value", label) in got
    assert ("sensorcast_stream_forecast", label) not in got


def test_anomaly_counts_per_stream_add_up_to_the_engine_total():
    engine = make_engine()
    data = batch(3, 60)
    spiked = data.value.copy()
    spiked[-3:] += 1000.0  # every stream's last reading jumps far outside its interval
    engine.process(ReadingBatch(data.streams, data.stream_index, data.timestamp, spiked, data.seq))
    got = samples(scrape(StreamCollector(engine)))
    per_stream = [v for (name, _), v in got.items() if name == "sensorcast_stream_anomalies_total"]
    assert sum(per_stream) == engine.stats.anomalies > 0


def test_allowlist_and_cap_choose_streams_in_key_order_and_count_the_rest():
    engine = make_engine()
    engine.process(batch(2500, 1))
    collector = StreamCollector(engine, max_streams=700, patterns=("site-1/*", "site-2/dev-1*"))
    got = samples(scrape(collector))
    exported = sorted(dict(labels)["stream"] for (name, labels) in got
                      if name == "sensorcast_stream_value")  # fmt: skip
    allowed = [f"site-1/dev-{i}/temp" for i in range(1000)]
    allowed += [f"site-2/dev-{i}/temp" for i in range(500) if str(i).startswith("1")]
    assert exported == sorted(allowed)[:700]
    omitted = "sensorcast_stream_series_omitted"
    assert got[(omitted, (("reason", "not_allowed"),))] == 2500 - len(allowed)
    assert got[(omitted, (("reason", "over_limit"),))] == len(allowed) - 700


def test_no_patterns_or_a_zero_cap_export_no_stream_series():
    engine = make_engine()
    engine.process(batch(10, 2))
    omitted = "sensorcast_stream_series_omitted"
    for collector, reason in (
        (StreamCollector(engine, patterns=()), "not_allowed"),
        (StreamCollector(engine, 0), "over_limit"),
    ):
        got = samples(scrape(collector))
        assert not [key for key in got if key[0] == "sensorcast_stream_value"]
        assert got[(omitted, (("reason", reason),))] == 10
        assert sum(v for (name, _), v in got.items() if name == omitted) == 10


def test_a_scrape_of_100k_streams_stays_under_the_cap_and_under_a_second():
    engine = make_engine()
    engine.process(batch(100_000, 2))
    assert len(engine.table) == 100_000
    server = serve_metrics([PipelineCollector(engine), StreamCollector(engine)], "127.0.0.1", 0)
    try:
        started = time.perf_counter()
        status, text = http_get(f"http://127.0.0.1:{server.port}/metrics")
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    assert status == 200 and elapsed < 1.0, elapsed
    got = samples(text)
    values = [key for key in got if key[0] == "sensorcast_stream_value"]
    assert len(values) == 1000
    assert got[("sensorcast_stream_series_omitted", (("reason", "over_limit"),))] == 99_000
    assert got[("sensorcast_streams_active", ())] == 100_000


# ---------------------------------------------------------------- lint


def test_promtool_finds_nothing_to_lint_in_the_exposition():
    engine = make_engine()
    engine.process(batch(3, 5))
    ticks = TickMetrics()
    ticks.observe(batch(3, 1, received=time.time() - 0.01))
    text = scrape(PipelineCollector(engine, ticks=ticks), StreamCollector(engine))
    done = promtool("check", "metrics", stdin=text)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout
