"""``sensorcast run`` as a real process: signals, restarts with state, a late broker.

Each test starts the command with its output in files, talks to it through a
real mosquitto, and kills whatever is left in ``finally``.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from brokers import Mosquitto
from daemons import Collector, DaemonProcess, client, sensorcast_run, wait_until

from pipeline.daemon import SNAPSHOT_FILE

ROOT = Path(__file__).resolve().parents[1]
# Start-up to the first connection attempt: imports (torch), the model load and the
# kernels' warm-up; a cold CI machine has taken over 3 s, so this waits generously.
STARTUP = 60
STREAMS = ("plant/boiler/temp", "plant/pump/pressure")
T0 = 1_700_000_000


@contextmanager
def peers(port: int) -> Iterator[tuple[Any, Collector]]:
    """A publisher and a collector of every forecast, on the broker at ``port``."""
    publisher = client(port)
    forecasts = Collector(port, "sensorcast/forecast/#")
    try:
        yield publisher, forecasts
    finally:
        forecasts.close()
        publisher.disconnect()
        publisher.loop_stop()


def publish(publisher: Any, stream: str, i: int) -> None:
    """Reading ``i`` of ``stream``: one a minute, values that differ per stream and step."""
    value = 20.0 + 10 * STREAMS.index(stream) + [0.0, 1.5, -0.75, 2.25, 0.5, -1.0, 1.0][i % 7]
    payload = json.dumps({"value": value, "ts": T0 + 60 * i})
    publisher.publish(f"sensors/{stream}", payload, qos=1).wait_for_publish(5)


def forecast_at(forecasts: Collector, stream: str, timestamp: str, timeout: float = 10) -> Any:
    def find() -> Any:
        for _, message in list(forecasts.messages):
            if (message["stream"], message["timestamp"]) == (stream, timestamp):
                return message
        return None

    assert wait_until(lambda: find() is not None, timeout), f"no forecast {stream} {timestamp}"
    return find()


def latest(forecasts: Collector, stream: str) -> Any:
    return max((m for _, m in forecasts.messages if m["stream"] == stream),
               key=lambda m: m["timestamp"])  # fmt: skip


def assert_stopped_cleanly(daemon: DaemonProcess) -> None:
    log = daemon.output
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert log.index("stopping") < log.index("stopped"), log


def test_sigterm_snapshots_and_a_restart_continues_each_stream_and_gets_queued_readings(
    mosquitto, tmp_path
):
    n = 5
    state = tmp_path / "state"
    args = ("--broker", mosquitto.url, "--state-dir", str(state), "--topic-template", "sensors/#")
    with peers(mosquitto.port) as (publisher, forecasts):
        with sensorcast_run(tmp_path / "first", *args) as first:
            assert first.wait_connected(), first.output
            for i in range(n):
                for stream in STREAMS:
                    publish(publisher, stream, i)
            assert len(forecasts.wait_for(n * len(STREAMS), 10)) == n * len(STREAMS)
            assert first.stop(signal.SIGTERM) == 0
        assert_stopped_cleanly(first)
        assert (state / SNAPSHOT_FILE).exists()
        last = {stream: latest(forecasts, stream) for stream in STREAMS}
        queued, live = STREAMS
        publish(publisher, queued, n)  # the daemon is down: the broker keeps it for its session
        with sensorcast_run(tmp_path / "second", *args) as second:
            assert second.wait_connected(), second.output
            after = {queued: forecast_at(forecasts, queued, last[queued]["next_timestamp"])}
            publish(publisher, live, n)
            after[live] = forecast_at(forecasts, live, last[live]["next_timestamp"])
            assert second.stop(signal.SIGTERM) == 0
        assert "restored 2 streams" in second.output
    for stream in STREAMS:  # exactly what the first run promised for this step
        promised = [last[stream][f"next_{name}"] for name in ("forecast", "lower", "upper")]
        assert None not in promised
        assert [after[stream][name] for name in ("forecast", "lower", "upper")] == promised


def test_sigint_stops_like_sigterm(mosquitto, tmp_path):
    state = tmp_path / "state"
    args = ("--broker", mosquitto.url, "--state-dir", str(state))
    with peers(mosquitto.port) as (publisher, forecasts):
        with sensorcast_run(tmp_path / "daemon", *args) as daemon:
            assert daemon.wait_connected(), daemon.output
            publish(publisher, STREAMS[0], 0)
            assert forecasts.wait_for(1, 10)
            assert daemon.stop(signal.SIGINT) == 0
    assert_stopped_cleanly(daemon)
    assert (state / SNAPSHOT_FILE).exists()


def test_a_broker_that_is_down_at_start_is_retried_until_it_comes_up(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto")  # a free port where nothing listens yet
    with sensorcast_run(tmp_path / "daemon", "--broker", broker.url) as daemon:
        assert daemon.wait_for_log("cannot reach broker", STARTUP), daemon.output
        assert daemon.running and "Traceback" not in daemon.output
        broker.start()
        try:
            assert daemon.wait_connected(20), daemon.output  # paho's backoff: 1 s, 2 s, 4 s...
            with peers(broker.port) as (publisher, forecasts):
                publish(publisher, STREAMS[0], 0)
                assert forecast_at(forecasts, STREAMS[0], "2023-11-14T22:13:20Z")["value"] == 20
            assert daemon.stop(signal.SIGTERM) == 0
        finally:
            broker.stop()
    assert_stopped_cleanly(daemon)


def test_sigterm_while_the_broker_is_down_exits_promptly(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto")  # never started
    with sensorcast_run(tmp_path / "daemon", "--broker", broker.url) as daemon:
        assert daemon.wait_for_log("cannot reach broker", STARTUP), daemon.output
        try:
            assert daemon.stop(signal.SIGTERM) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 5 s after SIGTERM:\n{daemon.output}")


def test_a_state_dir_that_cannot_be_made_exits_2_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    daemon = DaemonProcess(tmp_path / "logs", "--state-dir", str(blocker / "state"))
    assert daemon.process.wait(timeout=60) == 2
    errors = [line for line in daemon.output.splitlines() if " INFO " not in line]
    expected = f"state.dir (--state-dir): cannot write in {blocker}/state (Not a directory)"
    assert errors == [f"sensorcast: error: {expected}; give a folder you can write to"]
