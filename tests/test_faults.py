"""Faults a long-running daemon meets, on real processes and a real mosquitto.

``kill -9`` or SIGTERM mid-stream and a restart must give the same forecasts as
an uninterrupted run on the same readings: the snapshot plus the journal plus
the broker's queued messages put every reading into the state exactly once. A
state directory that disappears must not stop the daemon serving. Publishing
faster than the daemon can go must not grow its queue past its bound.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemons import (
    SUBSCRIBED,
    Collector,
    client,
    running,
    sensorcast_run,
    settings_for,
    wait_until,
)

from connectors.records import verdict_records
from models import load_forecaster
from pipeline.daemon import JOURNAL_FILE, SNAPSHOT_FILE, Daemon, lock_state_dir, mqtt_source
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.errors import ConfigError
from pipeline.types import Reading, ReadingBatch, StreamKey

STREAMS = [f"site-{i % 3}/dev-{i}/temp" for i in range(12)]
STEPS = 40
T0 = 1_700_000_000.0


def all_readings() -> list[tuple[str, float, float]]:
    """(stream, time, value): a minute apart, interleaved, a different level per stream."""
    rng = np.random.default_rng(11)
    return [
        (stream, T0 + 60 * t, round(15 + k + 2 * np.sin(t / 5) + float(rng.normal(0, 0.3)), 3))
        for t in range(STEPS)
        for k, stream in enumerate(STREAMS)
    ]


def uninterrupted(items: list[tuple[str, float, float]]) -> dict[tuple[str, str], dict]:
    """The messages an uninterrupted run would publish, by (stream, timestamp)."""
    engine = Engine(load_forecaster("default"), default_detector())
    batch = ReadingBatch.from_readings([Reading(StreamKey(s), t, v) for s, t, v in items])
    return {(r["stream"], r["timestamp"]): r for r in verdict_records(engine.process(batch))}


def close(a: float | None, b: float | None) -> bool:
    """Equal to float tolerance: live ticks and one batch chunk the GRU differently."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-5 * max(1.0, abs(b))


class Publisher(threading.Thread):
    """Publishes the readings at a steady pace with QoS 1, whatever the daemon is doing."""

    def __init__(self, port: int, items: list[tuple[str, float, float]], pace: float) -> None:
        super().__init__(daemon=True)
        self.client = client(port, client_id="fault-load", persistent=True)
        self.items, self.pace = items, pace
        self.sent = 0

    def run(self) -> None:
        for stream, t, value in self.items:
            payload = json.dumps({"value": value, "ts": t})
            self.client.publish(f"sensors/{stream}", payload, qos=1).wait_for_publish(10)
            self.sent += 1
            time.sleep(self.pace)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def config(folder: Path, snapshot_interval: str) -> Path:
    path = folder / "sensorcast.toml"
    path.write_text(
        f'[state]\ndir = "{folder / "state"}"\nsnapshot_interval = "{snapshot_interval}"\n'
        '[pipeline]\nmax_delay = "20ms"\n'
    )
    return path


@pytest.mark.parametrize(
    ("sig", "snapshot_interval"),
    [
        (signal.SIGKILL, "1s"),  # snapshots and the journal after the last one
        (signal.SIGKILL, "1h"),  # no snapshot yet: everything comes from the journal
        (signal.SIGTERM, "1s"),  # a clean stop: drain, snapshot, exit 0
    ],
)
def test_a_restart_mid_stream_gives_the_forecasts_of_an_uninterrupted_run(
    mosquitto, tmp_path, sig, snapshot_interval
):
    items = all_readings()
    expected = uninterrupted(items)
    args = ("--config", str(config(tmp_path, snapshot_interval)), "--broker", mosquitto.url,
            "--topic-template", "sensors/#")  # fmt: skip
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    publisher = Publisher(mosquitto.port, items, pace=0.008)
    try:
        with sensorcast_run(tmp_path / "first", *args) as first:
            assert first.wait_connected(), first.output
            publisher.start()
            half = len(items) // 2
            assert wait_until(lambda: len(forecasts.messages) >= half, 30), first.output
            if snapshot_interval == "1s":
                assert wait_until((tmp_path / "state" / SNAPSHOT_FILE).exists, 5)
            first.process.send_signal(sig)
            code = first.process.wait(15)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), first.output
        assert publisher.sent < len(items), "the publisher finished before the restart"
        with sensorcast_run(tmp_path / "second", *args) as second:
            assert second.wait_connected(), second.output
            publisher.join(60)
            keys = set(expected)
            assert wait_until(lambda: keys <= {(m["stream"], m["timestamp"])
                                               for _, m in forecasts.messages}, 30)  # fmt: skip
            time.sleep(0.3)  # anything still on its way
            assert second.stop() == 0
    finally:
        forecasts.close()
        publisher.close()
    if sig == signal.SIGKILL and snapshot_interval == "1h":
        assert "re-applied" in second.output and "from the journal" in second.output
    # Every message, re-sent ones too, says what the uninterrupted run says.
    for _, message in forecasts.messages:
        want = expected[(message["stream"], message["timestamp"])]
        assert message["value"] == want["value"]
        for field in ("forecast", "lower", "upper", "next_forecast"):
            assert close(message[field], want[field]), (field, message, want)


def test_a_state_directory_that_disappears_is_an_error_and_a_metric_not_an_outage(
    mosquitto, tmp_path
):
    state = tmp_path / "state"
    settings = settings_for(mosquitto.url, state__dir=str(state), state__snapshot_interval="0.2s")
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    publisher = client(mosquitto.port)
    try:
        with running(settings) as daemon:
            assert wait_until((state / JOURNAL_FILE).exists, 10)
            shutil.rmtree(state)
            state.write_text("a file where the state directory was")  # ENOTDIR, even for root
            assert wait_until(lambda: daemon.engine.stats.snapshot_failures > 0, 10)
            for t in range(5):
                payload = json.dumps({"value": 20 + t, "ts": T0 + 60 * t})
                publisher.publish("sensors/a/b/temp", payload, qos=1).wait_for_publish(5)
            assert len(forecasts.wait_for(5, 10)) == 5  # still serving
            failures = daemon.engine.stats.snapshot_failures
    finally:
        forecasts.close()
        publisher.disconnect()
    assert failures >= 1


def test_a_full_ingest_queue_holds_the_broker_back_and_loses_nothing(mosquitto):
    settings = settings_for(mosquitto.url, mqtt__queue_size=3)
    source = mqtt_source(settings)
    source.start()
    publisher = client(mosquitto.port)
    try:
        time.sleep(SUBSCRIBED)
        for i in range(50):
            publisher.publish("sensors/a/b/c", json.dumps({"value": i, "ts": T0 + i}), qos=1)
        # Nobody polls: the queue fills, the network thread waits, the broker keeps the rest.
        assert wait_until(lambda: source.counters.queue_full > 0, 10)
        assert source.depth == 3
        got: list[float] = []
        while len(got) < 50 and wait_until(lambda: source.depth > 0, 10):
            got += source.poll(10, 0.1).value.tolist()
            source.commit()
    finally:
        publisher.disconnect()
        source.close()
    assert got == list(range(50))  # every reading, in order, once


def test_a_flood_keeps_the_daemons_queue_bounded_and_loses_nothing(mosquitto):
    queue_size, n = 100, 5_000
    settings = settings_for(mosquitto.url, mqtt__queue_size=queue_size,
                            pipeline__max_batch=8)  # fmt: skip
    lines = "".join(json.dumps({"value": i % 17, "ts": T0 + i}) + "\n" for i in range(n))
    depths: list[int] = []
    with running(settings) as daemon:
        time.sleep(SUBSCRIBED)
        flood = subprocess.Popen(
            ["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", "sensors/load/d/v",
             "-l"], stdin=subprocess.PIPE, text=True,
        )  # fmt: skip
        flood.communicate(lines, timeout=60)
        wait_until(
            lambda: depths.append(daemon.source.depth) or daemon.engine.stats.steps >= n,
            60, every=0.005,
        )  # fmt: skip
        stats: Any = daemon.source.counters
        steps = daemon.engine.stats.steps
    assert flood.returncode == 0
    assert steps == n and stats.messages == n  # every reading, once
    assert max(depths) <= queue_size


def test_a_snapshot_it_cannot_use_is_refused_whole_and_the_daemon_starts_cold(
    mosquitto, tmp_path, caplog
):
    state = tmp_path / "state"
    state.mkdir()
    (state / SNAPSHOT_FILE).write_bytes(b"PK\x03\x04 not really a snapshot")
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    publisher = client(mosquitto.port)
    try:
        with running(settings_for(mosquitto.url, state__dir=str(state))) as daemon:
            payload = json.dumps({"value": 20, "ts": T0})
            publisher.publish("sensors/a/b/temp", payload, qos=1).wait_for_publish(5)
            assert len(forecasts.wait_for(1, 10)) == 1  # serving, from a cold start
            failures = daemon.engine.stats.snapshot_failures
    finally:
        forecasts.close()
        publisher.disconnect()
    assert failures == 1
    assert "corrupt or truncated" in caplog.text and "starting cold" in caplog.text
    # kept beside the new snapshot, never overwritten by it: it may be the only copy
    (kept,) = state.glob(f"{SNAPSHOT_FILE}.refused-*")
    assert kept.read_bytes() == b"PK\x03\x04 not really a snapshot"
    assert (state / SNAPSHOT_FILE).read_bytes() != kept.read_bytes()


def test_a_full_table_takes_new_streams_soon_after_old_ones_outlive_a_short_ttl(mosquitto):
    """Eviction runs every quarter TTL (at most every minute): with a 2 s TTL, two silent
    streams free their slots within seconds, not after the daemon's first minute."""
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    publisher = client(mosquitto.port)
    # a client id of its own: the broker may still hold messages queued for another
    # test's session, whose streams would take the two slots
    settings = settings_for(mosquitto.url, pipeline__max_streams=2, pipeline__stream_ttl="2s",
                            mqtt__client_id="short-ttl")  # fmt: skip
    try:
        with running(settings) as daemon:
            for name in ("a", "b"):
                payload = json.dumps({"value": 20, "ts": T0})
                publisher.publish(f"sensors/{name}/x/temp", payload, qos=1).wait_for_publish(5)
            assert len(forecasts.wait_for(2, 10)) == 2
            # both silent past their TTL: evicted within seconds, not after a minute
            assert wait_until(lambda: daemon.engine.stats.evicted == 2, 15)
            payload = json.dumps({"value": 21, "ts": T0})
            publisher.publish("sensors/c/x/temp", payload, qos=1).wait_for_publish(5)
            wait_until(lambda: "sensorcast/forecast/c/x/temp" in topics_of(forecasts), 10)
            topics, stats = topics_of(forecasts), daemon.engine.stats
    finally:
        forecasts.close()
        publisher.disconnect()
    assert topics == ["sensorcast/forecast/a/x/temp", "sensorcast/forecast/b/x/temp",
                      "sensorcast/forecast/c/x/temp"]  # fmt: skip
    assert stats.evicted == 2 and "stream_limit" not in stats.dropped


def topics_of(collector: Collector) -> list[str]:
    return [topic for topic, _ in list(collector.messages)]


def test_two_daemons_never_share_a_state_directory(mosquitto, tmp_path):
    state = tmp_path / "state"
    with running(settings_for(mosquitto.url, state__dir=str(state))):
        second = Daemon(settings_for(mosquitto.url, state__dir=str(state), mqtt__client_id="b"))
        with pytest.raises(ConfigError, match=rf"state.dir \(--state-dir\): {state} is in use"):
            second.run()
    # the first one stopped: the directory is free again
    with running(settings_for(mosquitto.url, state__dir=str(state))):
        pass


@pytest.mark.parametrize("in_place", ["folder", "dangling link"])
def test_a_lock_file_that_cannot_be_opened_is_one_error_naming_state_dir(tmp_path, in_place):
    lock = tmp_path / "lock"
    if in_place == "folder":
        lock.mkdir()
    else:
        lock.symlink_to(tmp_path / "gone" / "x")
    with pytest.raises(ConfigError, match=rf"^state.dir \(--state-dir\): cannot open the lock "
                       rf"file {lock} \(.+\); remove whatever is in its place"):  # fmt: skip
        lock_state_dir(tmp_path)


@pytest.fixture
def full_disk(tmp_path: Path) -> Any:
    """A directory on a tiny tmpfs, filled to the last byte: a full disk for real."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_replay_whose_snapshot_finds_the_disk_full_leaves_its_out_file_as_it_was(
    full_disk, tmp_path, capsys
):
    from pipeline.cli import main

    log = tmp_path / "log.csv"
    log.write_text("timestamp,value\n" + "".join(f"{60 * i},{i % 7}\n" for i in range(400)))
    out = tmp_path / "out.csv"
    out.write_text("earlier results\n")
    assert main(["replay", str(log), "--state", str(full_disk / "s.snap"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "log.csv", "out.csv"]


def test_a_full_disk_under_the_state_directory_is_an_error_and_a_metric_not_an_outage(
    mosquitto, full_disk, caplog
):
    settings = settings_for(mosquitto.url, state__dir=str(full_disk),
                            state__snapshot_interval="0.2s")  # fmt: skip
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    publisher = client(mosquitto.port)
    try:
        with running(settings) as daemon:
            for t in range(5):
                payload = json.dumps({"value": 20 + t, "ts": T0 + 60 * t})
                publisher.publish("sensors/a/b/temp", payload, qos=1).wait_for_publish(5)
            assert len(forecasts.wait_for(5, 10)) == 5  # still serving
            assert wait_until(lambda: daemon.engine.stats.snapshot_failures > 0, 10)
            stats = daemon.engine.stats
    finally:
        forecasts.close()
        publisher.disconnect()
    assert stats.journal_failures > 0  # the journal could not even start
    assert "No space left on device" in caplog.text


def test_a_restart_counts_no_reading_twice_and_knows_its_snapshot(mosquitto, tmp_path):
    """The journal's readings were counted by the process that died: re-applied, they
    are journal_replayed, not readings and steps again (Prometheus adds a restarted
    counter to the old one). A restored snapshot's time is the last snapshot's."""
    state = tmp_path / "state"
    settings = settings_for(mosquitto.url, state__dir=str(state), state__snapshot_interval="1h")
    publisher = client(mosquitto.port)
    with running(settings) as daemon:
        for t in range(5):
            payload = json.dumps({"value": 20 + t, "ts": T0 + 60 * t})
            publisher.publish("sensors/a/b/temp", payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: daemon.engine.stats.steps == 5, 10)
        crashed = tmp_path / "crashed"
        shutil.copytree(state, crashed, ignore=shutil.ignore_patterns("lock"))  # as kill -9 left it
    publisher.disconnect()
    snapshot_time = (state / SNAPSHOT_FILE).stat().st_mtime  # written on the way out
    with running(settings) as restarted:
        assert restarted.engine.stats.last_snapshot == snapshot_time
    shutil.rmtree(state)
    crashed.rename(state)
    with running(settings) as restarted:
        stats = restarted.engine.stats
        assert (stats.journal_replayed, stats.readings, stats.steps) == (5, 0, 0)
        assert len(restarted.engine.table) == 1
