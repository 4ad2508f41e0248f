"""``sensorcast run``: the long-running daemon, MQTT in, forecasts out.

Wires the settings into an MQTT source, the engine, an MQTT sink and the
metrics endpoint (``/metrics``, ``/healthz``, ``/readyz``), restores the last
snapshot and re-applies the journal written after it (``pipeline.journal``),
tells systemd it is ready, and runs the micro-batch loop until SIGTERM or
SIGINT: then it stops consuming, drains what it already received, flushes its
publishes, writes a snapshot and exits 0. Under systemd (``Type=notify``) it
pings the watchdog from the loop and reports its status.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import gc
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from connectors import json_text
from pipeline.detect import default_detector
from pipeline.engine import Engine, EngineStats
from pipeline.errors import ConfigError, SnapshotError
from pipeline.journal import Journal, Receipt, Receipts, reapply, replay
from pipeline.runner import Runner, Schedule
from pipeline.settings import Settings, add_flags, load_settings, overrides
from pipeline.settings_schema import SINK_SUFFIX
from pipeline.systemd import Notifier
from pipeline.types import ReadingBatch, VerdictBatch
from pipeline.writable import writable_folder

log = logging.getLogger("sensorcast")

SNAPSHOT_FILE = "state.snap"
JOURNAL_FILE = "journal.bin"
LOCK_FILE = "lock"  # holds the pid of the daemon using the directory


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="run the daemon: MQTT readings in, forecasts and anomaly flags out",
        description="Subscribe to sensor readings over MQTT and publish a forecast with an "
        "interval and an anomaly flag for every step. Flags override the config file, which "
        "overrides defaults; every setting also reads SENSORCAST_<SECTION>_<KEY>.",
    )
    add_daemon_arguments(parser)
    parser.set_defaults(run=run_daemon)


def add_daemon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings [env: SENSORCAST_CONFIG]")
    add_flags(parser)


def run_daemon(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ, overrides(args))
    logging.getLogger().setLevel(settings.log_level.upper())
    log.info("settings: %s", json.dumps(settings.redacted()))
    daemon = Daemon(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: daemon.request_stop())
    daemon.run()
    return 0


def lock_state_dir(directory: Path | None) -> int | None:
    """An exclusive lock on ``directory`` (held while the returned descriptor is open),
    so that two daemons never share one snapshot and journal; ConfigError when another
    daemon holds it."""
    if directory is None:
        return None
    try:
        lock = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a folder or a dangling link in its place, a read-only folder
        msg = f"state.dir (--state-dir): cannot open the lock file {directory / LOCK_FILE} "
        msg += f"({exc.strerror}); remove whatever is in its place, or give another folder"
        raise ConfigError(msg) from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.read(lock, 32).decode(errors="replace").strip() or "unknown"
        os.close(lock)
        msg = f"state.dir (--state-dir): {directory} is in use by another sensorcast "
        msg += f"(pid {holder}); give each daemon its own state directory"
        raise ConfigError(msg) from exc
    with contextlib.suppress(OSError):  # the pid is for that message; a full disk is fine
        os.ftruncate(lock, 0)
        os.write(lock, f"{os.getpid()}\n".encode())
    return lock


def eviction_interval(stream_ttl: float) -> float:
    """How often (wall seconds) to look for streams silent for ``stream_ttl``: a minute,
    or a quarter of a short TTL, so a silent stream's slot is free by 1.25 TTL (a full
    table refuses new streams until then)."""
    return min(Schedule().eviction, max(stream_ttl / 4, 1.0))


class Daemon:
    """The wired pipeline. ``run`` blocks until ``request_stop``.

    ``notifier`` speaks to systemd; by default it is set up from ``NOTIFY_SOCKET``
    and ``WATCHDOG_USEC`` and does nothing without them.
    """

    def __init__(
        self,
        settings: Settings,
        on_verdicts: Callable[[VerdictBatch], None] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        from connectors.mqtt_sink import MqttSink
        from models import load_forecaster

        if settings.state.dir is not None:  # now: a bad path is a one-line error at start
            writable_folder(settings.state.dir, "state.dir (--state-dir)")
        self.settings = settings
        self.on_verdicts = on_verdicts
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.stop = threading.Event()
        self.restored = False  # the snapshot is loaded (or there is none to load)
        mqtt = settings.mqtt
        self.sink = MqttSink(connection(settings, SINK_SUFFIX, persistent=False), mqtt.prefix,
                             qos=mqtt.qos)  # fmt: skip
        policy = self.sink.dead_letter if mqtt.deadletter else (lambda rejection: None)
        forecaster = settings.forecaster  # the checkpoint validation loaded, if any
        if forecaster is None:
            forecaster = load_forecaster(settings.model, settings.pipeline.interval)
        self.engine = Engine(
            forecaster,
            default_detector(),
            replace(settings.pipeline, report_dropped=True),  # published per stream
            on_reject=policy,
        )  # fmt: skip
        self.source = mqtt_source(settings)
        self.metrics: Any = None
        self.ticks: Any = None  # connectors.prometheus.TickMetrics, while metrics are served
        self.journal: Journal | None = None  # open once restored, when state.dir is set

    @property
    def snapshot_path(self) -> Path | None:
        directory = self.settings.state.dir
        return directory / SNAPSHOT_FILE if directory is not None else None

    @property
    def journal_path(self) -> Path | None:
        directory = self.settings.state.dir
        return directory / JOURNAL_FILE if directory is not None else None

    def request_stop(self) -> None:
        log.info("stopping: draining, flushing, snapshotting")
        if not self.stop.is_set():
            self.notifier.stopping()
        self.stop.set()

    def run(self) -> None:
        lock = lock_state_dir(self.settings.state.dir)  # before anything reads or writes it
        try:
            self._run()
        finally:
            if lock is not None:
                os.close(lock)  # releases the lock

    def _run(self) -> None:
        self._serve_metrics()  # first: /healthz and /readyz answer while restoring
        try:
            self.sink.start(cancel=self.stop)  # first: the journal's forecasts go out again
            self.engine.warm_up()  # the first tick must not load the compiled kernels
            json_text.warm_up()  # nor the one writing its messages
            self._restore()
            self.source.start(cancel=self.stop)
            _freeze_heap()
            self.notifier.ready(self.status())
            self._runner().run()
        finally:
            self.source.close()
            self.sink.close()
            if self.journal is not None:
                self.journal.close()
            if self.metrics is not None:
                self.metrics.close()
        log.info("stopped: %d readings, %d steps", self.engine.stats.readings,
                 self.engine.stats.steps)  # fmt: skip

    def _runner(self) -> Runner:
        # No periodic sink flush: waiting for the broker's acks would stall the loop under
        # load, and paho re-sends unacknowledged publishes itself (max_pending bounds them).
        # The sink is flushed on the way out.
        schedule = Schedule(
            eviction=eviction_interval(self.engine.config.stream_ttl),
            snapshot=self.settings.state.snapshot_interval,
            sink_flush=0,
        )
        return Runner(
            self.engine, self.source, [self.sink], schedule=schedule,
            snapshot_path=self.snapshot_path, journal=self.journal, stop=self.stop,
            flush_at_end=False,
            on_verdicts=self.on_verdicts, on_tick=self._on_tick,
            on_applied=self.ticks.observe if self.ticks is not None else None,
        )  # fmt: skip

    def _on_tick(self) -> None:
        self.notifier.heartbeat(self.status)

    def problems(self) -> list[str]:
        """Why the daemon is not ready (``/readyz``); empty when it is. The model is
        loaded before the endpoint exists, so only the snapshot and the broker remain:
        both connections up and the input subscription granted (SUBACK), so that a
        reading published once ready is never missed."""
        found = [] if self.restored else ["snapshot: not restored yet"]
        for role, part in (("source", self.source), ("sink", self.sink)):
            if not part.session.connected.is_set():
                found.append(f"broker: {role} not connected to {part.connection.url}")
        if self.source.session.connected.is_set() and not self.source.subscribed.is_set():
            found.append(f"broker: source not subscribed to {', '.join(self.source.subscribe)}")
        if self.stop.is_set():
            found.append("stopping")
        return found

    def status(self) -> str:
        """One line for systemd's STATUS=."""
        stats = self.engine.stats
        text = f"{len(self.engine.table)} streams, {stats.readings} readings, {stats.steps} steps"
        connected = self.source.session.connected.is_set()
        return text if connected else f"{text}; waiting for broker {self.source.connection.url}"

    def _restore(self) -> None:
        self._load_snapshot()
        self._replay_journal()
        self.restored = True

    def _load_snapshot(self) -> None:
        path = self.snapshot_path
        if path is None:
            return
        if not path.exists():
            log.info("no snapshot at %s: starting cold", path)
            return
        try:
            self.engine.restore(path)
        except SnapshotError as exc:
            # kept, not overwritten by the next snapshot: it may be the only copy of a
            # state the user wants back (the model they meant to run, say)
            kept = path.with_name(f"{path.name}.refused-{time.strftime('%Y%m%dT%H%M%S')}")
            path.replace(kept)
            log.error("%s; kept it as %s and starting cold", exc, kept)
            self.engine.stats.snapshot_failures += 1
            return
        self.engine.stats.last_snapshot = path.stat().st_mtime  # not 0 ("no snapshots")
        log.info("restored %d streams from %s", len(self.engine.table), path)

    def _replay_journal(self) -> None:
        """Re-apply the readings journaled after the snapshot, publishing their forecasts
        again (at least once: the process may have died before they went out)."""
        path = self.journal_path
        if path is None:
            return
        from connectors.mqtt_source import PARTITION

        generation = self.engine.table.generation
        replayed = 0
        before = copy.deepcopy(self.engine.stats)  # the process that died counted these
        receipts: list[Receipt] = []
        for item in replay(path, generation, PARTITION):
            if isinstance(item, Receipts):  # the source's, for the broker's redeliveries
                receipts += item.items
                continue
            self.sink.add(reapply(self.engine, item))  # readings, or what the clock did
            replayed += len(item) if isinstance(item, ReadingBatch) else 0
        self.source.remember_journaled(receipts)
        if replayed:
            log.info("re-applied %d readings from the journal %s", replayed, path)
        self._uncount(before)
        self.engine.stats.journal_replayed += replayed
        self.journal = Journal(path, fsync=self.settings.state.journal_fsync)
        try:
            self.journal.resume(generation)
        except SnapshotError as exc:
            log.error("%s; going on without a journal until the next snapshot", exc)
            self.engine.stats.journal_failures += 1

    def _uncount(self, before: EngineStats) -> None:
        """Put back the counters of readings, steps, anomalies and drops as they were
        before the journal was re-applied: the process that died had counted that work,
        and Prometheus adds a restarted counter to the old one (journal_replayed counts
        the re-applied readings instead)."""
        stats = self.engine.stats
        stats.readings, stats.missing = before.readings, before.missing
        stats.steps, stats.anomalies = before.steps, before.anomalies
        stats.ticks, stats.model_calls = before.ticks, before.model_calls
        stats.dropped = before.dropped

    def _serve_metrics(self) -> None:
        metrics = self.settings.metrics
        if not metrics.port:
            return
        from connectors.metrics_http import serve_metrics
        from connectors.prometheus import PipelineCollector, StreamCollector, TickMetrics

        self.ticks = TickMetrics()
        collectors = [
            PipelineCollector(self.engine, self.source, self.sink, ticks=self.ticks),
            StreamCollector(self.engine, metrics.max_streams, metrics.streams),
        ]
        self.metrics = serve_metrics(collectors, metrics.address, metrics.port, self.problems)
        log.info("metrics on http://%s:%d/metrics", metrics.address, self.metrics.port)


def _freeze_heap() -> None:
    """Move what start-up allocated (numba, the model, restored state) out of the
    garbage collector's sight: otherwise every full collection walks it all again, a
    pause of tens of milliseconds in the middle of serving."""
    gc.collect()
    gc.freeze()


def connection(settings: Settings, suffix: str = "", persistent: bool = True) -> Any:
    from connectors.mqtt_client import Connection

    mqtt = settings.mqtt
    return Connection(
        host=mqtt.host, port=mqtt.port, client_id=mqtt.client_id + suffix,
        protocol=mqtt.protocol, keepalive=mqtt.keepalive, username=mqtt.username,
        tls=mqtt.tls, tls_ca=mqtt.tls_ca, tls_cert=mqtt.tls_cert, tls_key=mqtt.tls_key,
        persistent=persistent, password=settings.password(),
    )  # fmt: skip


def mqtt_source(settings: Settings) -> Any:
    from connectors.mqtt_source import MqttSource
    from connectors.payloads import make_decoder
    from connectors.topics import TopicTemplate

    mqtt = settings.mqtt
    decoder = make_decoder(mqtt.payload, mqtt.json_value_field, mqtt.json_time_field)
    return MqttSource(
        connection(settings), mqtt.subscribe, TopicTemplate(mqtt.topic_template), decoder,
        qos=mqtt.qos, max_payload=mqtt.max_payload, queue_size=mqtt.queue_size,
    )  # fmt: skip
