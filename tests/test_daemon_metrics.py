"""The daemon's operational surface: live /metrics through promtool, /healthz and
/readyz around a broker that comes up late, and sd_notify from a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from brokers import Mosquitto, free_port
from daemons import client, running, settings_for, wait_until
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import http_get, promtool

from pipeline.daemon import Daemon

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_live_metrics_pass_promtool_and_count_what_happened(mosquitto):
    port = free_port()
    streams = ["plant/boiler/temp", "plant/pump/pressure"]
    with running(settings_for(mosquitto.url, metrics__port=port)) as daemon:
        publisher = client(mosquitto.port)
        for i in range(20):
            for stream in streams:
                publisher.publish(f"sensors/{stream}", json.dumps({"value": i % 3, "ts": T0 + i}),
                                  qos=1)  # fmt: skip
        publisher.publish("sensors/plant/valve/state", b"open", qos=1).wait_for_publish(5)
        assert wait_until(lambda: daemon.engine.stats.steps == 40, 20)
        assert wait_until(lambda: daemon.source.counters.messages == 41, 5)
        # The runner observes latency after the tick publishes, just after the steps count.
        latency_count = ("sensorcast_forecast_latency_seconds_count", ())
        assert wait_until(lambda: scrape(port).get(latency_count) == 40, 5)
        pending = ("sensorcast_publish_pending", ())
        assert wait_until(lambda: scrape(port).get(pending) == 0, 10)  # the broker acked all
        status, text = http_get(f"http://127.0.0.1:{port}/metrics")
        got = scrape(port)
        publisher.disconnect()
    lint = promtool("check", "metrics", stdin=text)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout
    received = "sensorcast_messages_received_total"
    assert got[(received, (("result", "ok"),))] == 40
    assert got[(received, (("result", "rejected"),))] == 1
    assert got[("sensorcast_readings_dropped_total", (("reason", "decode_error"),))] == 1
    assert got[latency_count] == 40  # one per reading
    assert got[("sensorcast_batch_size_sum", ())] == 40
    assert got[("sensorcast_steps_total", ())] == 40
    assert got[("sensorcast_messages_published_total", (("kind", "forecast"),))] == 40
    for connection in ("source", "sink"):
        assert got[("sensorcast_broker_connected", (("connection", connection),))] == 1
    assert got[("sensorcast_stream_value", (("stream", streams[0]),))] == 19 % 3


def test_readyz_is_503_until_the_broker_comes_up_and_healthz_is_200_throughout(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto")  # a free port where nothing listens yet
    port = free_port()
    daemon = Daemon(settings_for(broker.url, metrics__port=port))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: http_get(f"{url}/readyz")[0] == 503, 10)
        status, body = http_get(f"{url}/readyz")
        assert f"broker: source not connected to {broker.url}" in body.splitlines()
        assert http_get(f"{url}/healthz") == (200, "ok\n")
        assert scrape(port)[("sensorcast_broker_connected", (("connection", "source"),))] == 0
        broker.start()
        assert wait_until(lambda: http_get(f"{url}/readyz") == (200, "ready\n"), 20)
    finally:
        daemon.request_stop()
        thread.join(30)
        broker.stop()
    assert not thread.is_alive()


def test_before_it_runs_the_daemon_is_not_ready_for_every_reason(tmp_path):
    daemon = Daemon(settings_for("mqtt://127.0.0.1:1"))
    assert daemon.problems() == [
        "snapshot: not restored yet",
        "broker: source not connected to mqtt://127.0.0.1:1",
        "broker: sink not connected to mqtt://127.0.0.1:1",
    ]


def test_a_real_process_tells_systemd_ready_pings_the_watchdog_and_says_stopping(
    mosquitto, tmp_path
):
    name = f"sensorcast-test-{uuid.uuid4().hex}"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(f"\0{name}")
    manager.settimeout(0.1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENSORCAST_", "WATCHDOG_"))}
    env.update(NOTIFY_SOCKET=f"@{name}", WATCHDOG_USEC="400000")  # ping every 0.2 s
    command = [sys.executable, "-m", "pipeline.cli", "run", "--broker", mosquitto.url,
               "--metrics-port", "0"]  # fmt: skip
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    messages: list[str] = []

    def listen(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                messages.append(manager.recv(4096).decode())
            except TimeoutError:
                pass

    try:
        assert wait_until(lambda: listen(0.1) or any("READY=1" in m for m in messages), 60)
        listen(1.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
        listen(0.3)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        manager.close()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    assert "STATUS=0 streams, 0 readings, 0 steps" in messages[ready]
    pings = [i for i, m in enumerate(messages) if "WATCHDOG=1" in m]
    assert len(pings) >= 4 and min(pings) > ready, messages
    stopping = [m for m in messages if "STOPPING=1" in m]
    assert len(stopping) == 1 and messages.index(stopping[0]) > ready


def test_the_source_is_subscribed_only_once_every_filter_is_granted():
    source = Daemon(settings_for("mqtt://127.0.0.1:1")).source
    source._unanswered = {5, 6}  # two SUBSCRIBEs sent
    granted = [ReasonCode(PacketTypes.SUBACK, identifier=1)]  # QoS 1
    refused = [ReasonCode(PacketTypes.SUBACK, identifier=0x87)]  # not authorised
    source._on_subscribe(None, None, 5, granted, None)
    assert not source.subscribed.is_set()
    source._on_subscribe(None, None, 6, refused, None)
    assert not source.subscribed.is_set()
    source._on_subscribe(None, None, 6, granted, None)
    assert source.subscribed.is_set()


def test_ready_once_subscribed(mosquitto):
    with running(settings_for(mosquitto.url)) as daemon:
        assert daemon.source.subscribed.is_set()
        assert wait_until(lambda: daemon.problems() == [], 10), daemon.problems()
