"""Prometheus metrics, read from the pipeline's own counters at scrape time.

A custom collector turns the engine's, the source's and the sink's counters
into metrics when Prometheus scrapes, so the hot path only bumps plain
integers. Names follow Prometheus conventions: ``sensorcast_`` prefix, base
units, ``_total`` counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.engine import Engine
from pipeline.errors import ConfigError
from pipeline.types import Reason


@dataclass(eq=False)  # the registry keys collectors by identity
class PipelineCollector(Collector):
    """Metrics of one running pipeline; ``source`` and ``sink`` are optional."""

    engine: Engine
    source: Any = None  # has .counters (messages, queue_full) and .depth
    sink: Any = None  # has .counters (forecasts, anomalies, deadletters, failed_flushes)
    version: str = "0.1.0"

    def collect(self) -> Iterator[Metric]:
        yield from self._engine_metrics()
        if self.source is not None:
            yield from self._source_metrics()
        if self.sink is not None:
            yield from self._sink_metrics()
        info = GaugeMetricFamily(
            "sensorcast_build_info", "Version and model.", labels=["version", "model"]
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
        yield _gauge("streams_active", "Streams in the state table.", len(self.engine.table))
        yield _counter("streams_evicted", "Streams evicted after stream_ttl.", stats.evicted)
        yield _counter(
            "snapshot_failures", "Snapshots that could not be written.", stats.snapshot_failures
        )
        yield _gauge(
            "last_snapshot_timestamp_seconds",
            "Wall time of the last good snapshot.",
            stats.last_snapshot,
        )

    def _source_metrics(self) -> Iterator[Metric]:
        counters = self.source.counters
        yield _counter("messages_received", "Messages taken from the broker.", counters.messages)
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
            ("deadletter", counters.deadletters),
        ):
            published.add_metric([kind], count)
        yield published
        yield _counter(
            "publish_failures",
            "Flushes that were not acknowledged in time.",
            counters.failed_flushes,
        )


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"sensorcast_{name}", help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"sensorcast_{name}", help_text, value=value)


@dataclass
class MetricsServer:
    """The ``/metrics`` HTTP endpoint; ``close`` stops it."""

    registry: CollectorRegistry
    server: Any
    thread: Any

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(collector: Collector, address: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` for ``collector`` from a fresh registry on ``address:port``."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        msg = f"metrics.port: cannot serve metrics on {address}:{port} ({exc.strerror}); "
        msg += "choose another port or 0 to turn the endpoint off"
        raise ConfigError(msg) from exc
    return MetricsServer(registry, server, thread)
