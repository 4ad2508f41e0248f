"""Prometheus metrics, read from the pipeline's own counters at scrape time.

Custom collectors turn the engine's, the source's and the sink's counters, and
the state table's per-stream columns, into metrics when Prometheus scrapes, so
the hot path only bumps plain integers and numpy arrays. Names follow
Prometheus conventions: ``sensorcast_`` prefix, base units, ``_total``
counters. The two histograms are filled a tick at a time with numpy
(``Histogram.observe``), never one Python call per message.

Per-stream series come from ``StreamCollector``: at most ``max_streams`` of the
streams whose keys match the glob ``patterns``; how many were left out is
itself a metric. ``connectors.metrics_http.serve_metrics`` serves them, with
``/healthz`` and ``/readyz``.

>>> h = Histogram((0.1, 1.0))
>>> h.observe(np.array([0.05, 0.1, 0.5, 7.0]))
>>> h.snapshot()
([('0.1', 2.0), ('1.0', 3.0), ('+Inf', 4.0)], 7.65)
"""

from __future__ import annotations

import fnmatch
import heapq
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.engine import Engine
from pipeline.types import ReadingBatch, Reason

# Seconds from a message's arrival to its tick's forecasts handed to the sinks; a live
# tick takes about a millisecond, so the buckets start there.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = tuple(float(4**i) for i in range(8))  # readings per tick: 1 .. 16384


def version() -> str:
    try:
        return metadata.version("sensorcast")
    except metadata.PackageNotFoundError:
        return "unknown"


class Histogram:
    """Cumulative bucket counts and a sum, observed an array at a time (thread-safe)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = np.asarray(bounds, np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, np.int64)  # last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, values: np.ndarray) -> None:
        if not len(values):
            return
        # A value v lands in the first bucket whose bound is >= v (Prometheus' "le").
        index = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(index, minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """(``le`` label, cumulative count) per bucket including ``+Inf``, and the sum."""
        with self._lock:
            counts, total = self._counts.copy(), self._sum
        labels = [floatToGoString(b) for b in self.bounds.tolist()] + ["+Inf"]
        return list(zip(labels, np.cumsum(counts).astype(float).tolist(), strict=True)), total

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        buckets, total = self.snapshot()
        return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=total)


@dataclass
class TickMetrics:
    """What the runner reports after each tick: batch sizes and arrival-to-forecast latency."""

    clock: Callable[[], float] = time.time  # the wall clock the source stamped arrivals with
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))

    def observe(self, batch: ReadingBatch) -> None:
        """Called once the tick's verdicts were handed to the sinks (``Runner.on_applied``)."""
        n = len(batch)
        if not n:
            return
        self.batch_size.observe(np.array([n], np.float64))
        if batch.received is not None:
            self.latency.observe(np.maximum(self.clock() - batch.received, 0.0))

    def collect(self) -> Iterator[Metric]:
        yield self.latency.family(
            "sensorcast_forecast_latency_seconds",
            "Seconds from a message's arrival to its tick's forecasts handed to the sinks.",
        )
        yield self.batch_size.family("sensorcast_batch_size", "Readings per engine tick.")


@dataclass(eq=False)  # the registry keys collectors by identity
class PipelineCollector(Collector):
    """Metrics of one running pipeline; ``source``, ``sink`` and ``ticks`` are optional."""

    engine: Engine
    source: Any = None  # has .counters (messages, rejected, queue_full), .depth, .session
    sink: Any = None  # has .counters (forecasts, anomalies, deadletters, ...), .session
    version: str = field(default_factory=version)
    ticks: TickMetrics | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._engine_metrics()
        if self.source is not None:
            yield from self._source_metrics()
        if self.sink is not None:
            yield from self._sink_metrics()
        if self.ticks is not None:
            yield from self.ticks.collect()
        yield from self._connection_metrics()
        info = GaugeMetricFamily(
            "sensorcast_build_info", "Version and model; always 1.", labels=["version", "model"]
        )
        info.add_metric([self.version, self.engine.forecaster.name], 1)
        yield info

    def _engine_metrics(self) -> Iterator[Metric]:
        stats = self.engine.stats
        yield _counter("readings", "Readings offered to the engine.", stats.readings)
        yield _counter("steps", "Model steps (readings or closed windows).", stats.steps)
        yield _counter("anomalies", "Steps flagged as anomalies.", stats.anomalies)
        dropped = CounterMetricFamily(
            "sensorcast_readings_dropped",
            "Readings and messages dropped, by reason.",
            labels=["reason"],
        )
        for reason in Reason:
            dropped.add_metric([reason.label], stats.dropped.get(reason.label, 0))
        yield dropped
        stages = CounterMetricFamily(
            "sensorcast_stage_seconds", "Engine thread time spent per stage.", labels=["stage"]
        )
        for stage, seconds in sorted(stats.stage_seconds.items()):
            stages.add_metric([stage], seconds)
        yield stages
        yield _gauge("streams_active", "Streams in the state table.", len(self.engine.table))
        yield _counter("streams_evicted", "Streams evicted after stream_ttl.", stats.evicted)
        yield _counter(
            "snapshot_failures", "Snapshots that could not be written.", stats.snapshot_failures
        )
        yield _counter(
            "journal_failures",
            "Journal appends or restarts that failed (readings not crash-safe until the "
            "next snapshot).",
            stats.journal_failures,
        )
        yield _counter(
            "journal_replayed_readings",
            "Readings re-applied from the journal at start.",
            stats.journal_replayed,
        )
        yield _gauge(
            "last_snapshot_timestamp_seconds",
            "Wall time of the last good snapshot; 0 before the first.",
            stats.last_snapshot,
        )

    def _source_metrics(self) -> Iterator[Metric]:
        counters = self.source.counters
        received = CounterMetricFamily(
            "sensorcast_messages_received",
            "Messages taken from the broker: ok (one reading or more) or rejected.",
            labels=["result"],
        )
        received.add_metric(["ok"], counters.accepted)
        received.add_metric(["rejected"], counters.rejected)
        yield received
        yield _counter(
            "queue_full",
            "Messages that waited for room in the queue (backpressure).",
            counters.queue_full,
        )
        yield _gauge("queue_depth", "Messages waiting for the engine.", self.source.depth)

    def _sink_metrics(self) -> Iterator[Metric]:
        counters = self.sink.counters
        published = CounterMetricFamily(
            "sensorcast_messages_published", "Messages published, by kind.", labels=["kind"]
        )
        for kind, count in (
            ("forecast", counters.forecasts),
            ("anomaly", counters.anomalies),
            ("dropped", counters.dropped_readings),
            ("deadletter", counters.deadletters),
        ):
            published.add_metric([kind], count)
        yield published
        yield _counter(
            "publish_failures",
            "Flushes that were not acknowledged in time.",
            counters.failed_flushes,
        )
        if hasattr(self.sink, "unconfirmed"):
            yield _gauge(
                "publish_pending",
                "QoS 1 messages published and not yet acknowledged by the broker.",
                self.sink.unconfirmed,
            )

    def _connection_metrics(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "sensorcast_broker_connected",
            "1 while the connection to the MQTT broker is up.",
            labels=["connection"],
        )
        for name, part in (("source", self.source), ("sink", self.sink)):
            session = getattr(part, "session", None)
            if session is not None:
                family.add_metric([name], float(session.connected.is_set()))
        yield family


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"sensorcast_{name}", help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"sensorcast_{name}", help_text, value=value)


# ---------------------------------------------------------------- per-stream series

_STREAM_GAUGES = (
    ("value", "last_value", "The stream's last step: the reading, or the window mean."),
    ("forecast", "last_forecast", "The forecast the last step was judged by."),
    ("forecast_lower", "lower", "Lower bound of that forecast's interval."),
    ("forecast_upper", "upper", "Upper bound of that forecast's interval."),
    ("anomaly_score", "last_score", "Anomaly score of the last step, in [0, 1]."),
    ("last_seen_timestamp_seconds", "last_seen", "Wall time the stream's last reading arrived."),
)


def glob_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """One compiled test for ``fnmatch`` patterns (``*`` crosses ``/``); none matches nothing.

    >>> allowed = glob_matcher(["office-3/*", "*/humidity"])
    >>> [allowed(k) for k in ("office-3/t1/temp", "lab/p/humidity", "lab/p/temp")]
    [True, True, False]
    """
    if not patterns:
        return lambda key: False
    if "*" in patterns:
        return lambda key: True
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    return lambda key: regex.match(key) is not None


@dataclass(eq=False)
class StreamCollector(Collector):
    """Per-stream gauges for at most ``max_streams`` streams matching ``patterns``.

    The chosen streams are the allowed ones first in key order, so the set is
    stable from scrape to scrape. Values are read from the state table without
    stopping the engine: a scrape may mix two ticks, never a torn number.
    """

    engine: Engine
    max_streams: int = 1000
    patterns: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        self._allowed = glob_matcher(self.patterns)
        self._z = statistics.NormalDist().inv_cdf(0.5 + self.engine.config.interval / 2)

    def select(self) -> tuple[list[str], np.ndarray, int, int]:
        """(keys, slots) of the exported streams, and how many were not allowed / over limit."""
        keys = list(self.engine.table.keys)  # slot -> key; copied before the columns are read
        if not self.max_streams and "*" in self.patterns:  # nothing to choose: just count
            return [], np.zeros(0, np.int64), 0, len(keys) - keys.count(None)
        live = [(key, slot) for slot, key in enumerate(keys) if key is not None]
        allowed = [item for item in live if self._allowed(item[0])]
        chosen = heapq.nsmallest(self.max_streams, allowed) if self.max_streams else []
        slots = np.fromiter((slot for _, slot in chosen), np.int64, len(chosen))
        names = [key for key, _ in chosen]
        return names, slots, len(live) - len(allowed), len(allowed) - len(chosen)

    def collect(self) -> Iterator[Metric]:
        names, slots, not_allowed, over_limit = self.select()
        columns = self._columns(slots)
        for suffix, column, help_text in _STREAM_GAUGES:
            family = GaugeMetricFamily(f"sensorcast_stream_{suffix}", help_text, labels=["stream"])
            _add(family, names, columns[column])
            yield family
        anomalies = CounterMetricFamily(
            "sensorcast_stream_anomalies", "Steps of the stream flagged as anomalies.",
            labels=["stream"],
        )  # fmt: skip
        _add(anomalies, names, columns["anomalies"])
        yield anomalies
        omitted = GaugeMetricFamily(
            "sensorcast_stream_series_omitted",
            "Streams left without per-stream series: not matching metrics.streams, or over "
            "metrics.max_streams.",
            labels=["reason"],
        )
        omitted.add_metric(["not_allowed"], not_allowed)
        omitted.add_metric(["over_limit"], over_limit)
        yield omitted

    def _columns(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        table = self.engine.table.columns  # one dict; growing the table replaces it whole
        out = {
            name: table[name][slots]
            for name in ("last_value", "last_forecast", "last_scale", "last_score", "last_seen")
        }
        out["anomalies"] = table["anomalies"][slots].astype(np.float64)
        half = self._z * out["last_scale"]
        out["lower"] = out["last_forecast"] - half
        out["upper"] = out["last_forecast"] + half
        return out


def _add(family: Metric, names: list[str], values: np.ndarray) -> None:
    """One sample per stream whose value is known (NaN: no step or no forecast yet)."""
    known = np.isfinite(values)
    for i, value in zip(np.flatnonzero(known).tolist(), values[known].tolist(), strict=True):
        family.add_metric([names[i]], value)  # type: ignore[attr-defined]
