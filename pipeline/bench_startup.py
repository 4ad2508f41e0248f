"""``bench --scenario startup``: ``sensorcast run`` from process start to ready.

A first daemon takes readings from ``streams`` streams and writes its snapshot
on SIGTERM. Then, each run, a fresh ``sensorcast run`` on the same state
directory is timed from ``Popen`` to the first 200 of ``/readyz``, which the
daemon gives only once the model is loaded, the snapshot restored and both
its MQTT connections are up; its log must say it restored the streams. The
baseline is the least any Python MQTT service pays: an interpreter that
imports paho and connects to the same broker (``Popen`` to CONNACK).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pipeline.bench_broker import BenchBroker, free_port
from pipeline.bench_mqtt import (
    T0,
    load,
    metrics,
    result,
    start_daemon,
    stop_daemon,
    wait_ready,
    wait_steps,
)
from pipeline.bench_report import Row, Target

STARTUP_TARGET = Target(value=3.0, at_least=False)


def seed_snapshot(broker_port: int, state: Path, streams: int, log: Path) -> None:
    """Run a daemon until it took one reading per stream; SIGTERM writes the snapshot."""
    port = free_port()
    daemon = start_daemon(broker_port, port, log, "--state-dir", str(state))
    try:
        wait_ready(daemon, port, log)
        before = metrics(port).get("sensorcast_steps_total", 0.0)
        args = ["--streams", str(streams), "--readings", str(streams), "--t0", str(T0)]
        result(load("publish", broker_port, *args))
        wait_steps(port, before + streams, 120.0 + streams / 100)
    finally:
        stop_daemon(daemon)
    if not (state / "state.snap").exists():
        msg = f"bench: the daemon wrote no snapshot in {state}; see {log}"
        raise RuntimeError(msg)


def daemon_seconds(broker_port: int, state: Path, log: Path) -> float:
    """Popen to ready, for a daemon that must restore ``state``."""
    port = free_port()
    log.write_text("")
    started = time.monotonic()
    daemon = start_daemon(broker_port, port, log, "--state-dir", str(state),
                          "--log-level", "info")  # fmt: skip
    try:
        ready = wait_ready(daemon, port, log)
    finally:
        stop_daemon(daemon)
    if "restored" not in log.read_text(errors="replace"):
        msg = f"bench: the daemon was ready without restoring its snapshot; see {log}"
        raise RuntimeError(msg)
    return ready - started


def bare_seconds(broker_port: int) -> float:
    started = time.monotonic()
    connected = result(load("connect", broker_port), timeout=60)["connected"]
    return float(connected - started)


def run(runs: int, streams: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="sensorcast-bench-") as tmp:
        folder = Path(tmp)
        with BenchBroker(folder / "broker") as broker:
            state, log = folder / "state", folder / "daemon.log"
            seed_snapshot(broker.port, state, streams, log)
            snapshot_bytes = (state / "state.snap").stat().st_size
            ours, bare = [], []
            for _ in range(runs):
                bare.append(bare_seconds(broker.port))
                ours.append(daemon_seconds(broker.port, state, log))
    note = (f"python -m pipeline.cli run, Popen to /readyz 200 (model loaded, snapshot of "
            f"{streams:,} streams ({snapshot_bytes:,} bytes) restored, source and sink "
            "connected); /readyz polled every 5 ms.")  # fmt: skip
    baseline = "python that imports paho and connects (Popen to CONNACK), same broker"
    return [Row("startup", "to ready", "s", ours, bare, baseline, STARTUP_TARGET, note,
                {"snapshot_bytes": snapshot_bytes})]  # fmt: skip
