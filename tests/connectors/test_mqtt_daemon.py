"""The daemon against a real mosquitto: round trips, bad input, a broker that dies."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

import numpy as np
from brokers import Mosquitto
from daemons import Collector, client, running, sensorcast_run, settings_for, wait_until
from relay import Relay

from models import load_forecaster
from pipeline.daemon import JOURNAL_FILE
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.journal import summarize
from pipeline.types import Reading, ReadingBatch, StreamKey, VerdictBatch

STREAMS = ["office/t1/temperature", "office/t2/temperature", "lab/probe/humidity"]


def readings(n: int) -> list[tuple[str, float, float]]:
    """(stream, time, value) for every stream, interleaved in time."""
    rng = np.random.default_rng(3)
    return [
        (stream, 1_700_000_000.0 + 60 * i, round(20 + k + float(rng.normal()), 3))
        for i in range(n)
        for k, stream in enumerate(STREAMS)
    ]


def replayed(items: list[tuple[str, float, float]]) -> VerdictBatch:
    """What replay makes of the same readings, with the daemon's (default) model."""
    engine = Engine(load_forecaster("default"), default_detector())
    batch = ReadingBatch.from_readings([Reading(StreamKey(s), t, v) for s, t, v in items])
    return engine.process(batch)


def test_round_trip_with_the_c_clients_equals_replay(mosquitto):
    items = readings(20)
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-p",
            str(mosquitto.port),
            "-t",
            "sensorcast/forecast/#",
            "-q",
            "1",
            "-C",
            str(len(items)),
            "-W",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    with running(settings_for(mosquitto.url)):
        time.sleep(0.3)  # mosquitto_sub has subscribed
        for stream in STREAMS:
            lines = [json.dumps({"value": v, "ts": t}) for s, t, v in items if s == stream]
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-p",
                    str(mosquitto.port),
                    "-q",
                    "1",
                    "-t",
                    f"sensors/{stream}",
                    "-l",
                ],
                input="\n".join(lines) + "\n",
                text=True,
                check=True,
                timeout=10,
            )
        out, _ = sub.communicate(timeout=40)
    got = {(m["stream"], m["timestamp"]): m for m in map(json.loads, out.splitlines())}
    assert len(got) == len(items)
    expected = replayed(items)
    for stream in STREAMS:
        rows = np.flatnonzero(expected.stream == stream)
        for i in rows:
            message = got[(stream, _iso(expected.timestamp[i]))]
            assert message["value"] == expected.value[i]
            assert _same(message["forecast"], expected.forecast[i])
            assert _same(message["upper"], expected.upper[i])
            assert _same(message["next_forecast"], expected.next_forecast[i])
            assert abs(message["anomaly_score"] - expected.anomaly_score[i]) < 1e-4


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _same(received: float | None, expected: float) -> bool:
    """Equal to float tolerance: live ticks and replay chunk the GRU differently."""
    if received is None or np.isnan(expected):
        return received is None and np.isnan(expected)
    return abs(received - expected) <= 1e-6 * max(1.0, abs(expected))


def test_a_stock_brokers_receive_maximum_is_kept_to(tmp_path):
    # mosquitto's default lets an MQTT 5 client have 20 QoS 1 messages in flight and
    # says so in its CONNACK; the daemon keeps to that window (and stays connected)
    broker = Mosquitto(tmp_path / "stock", extra=["max_inflight_messages 20"]).start()
    forecasts = Collector(broker.port, "sensorcast/forecast/#")
    items = readings(100)  # 300 forecasts out: many windows of 20
    try:
        with running(settings_for(broker.url)) as daemon:
            assert daemon.sink.session.client.max_inflight_messages == 20
            pub = client(broker.port)
            for stream, t, v in items:
                pub.publish(f"sensors/{stream}", json.dumps({"value": v, "ts": t}), qos=1)
            got = forecasts.wait_for(len(items), 30)
            pub.disconnect()
    finally:
        forecasts.close()
        broker.stop()
    assert len({(m["stream"], m["timestamp"]) for _, m in got}) == len(items)


def test_bad_input_is_counted_dead_lettered_and_other_streams_carry_on(mosquitto):
    dead = Collector(mosquitto.port, "sensorcast/deadletter")
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    bad = {
        "garbage": b"\xff\xfe\x00\x81garbage",
        "huge": b"1" * 10_000_000,
        "nan": b'{"value": NaN}',
        "inf": b"inf",
        "string": b'{"value": "abc"}',
        "bool": b'{"value": true}',
        "missing": b'{"ts": 1700000000}',
        "nested": b'{"value": {"deep": [1, 2]}}',
        "empty": b"",
    }
    with running(settings_for(mosquitto.url, mqtt__max_payload="1MiB")) as daemon:
        pub = client(mosquitto.port)
        for i in range(30):
            pub.publish(
                "sensors/good/dev/temp", json.dumps({"value": 20 + i % 3, "ts": 1e9 + i}), qos=1
            )
            if i < len(bad):
                name, payload = list(bad.items())[i]
                pub.publish(f"sensors/bad/{name}/temp", payload, qos=1)
        pub.publish("sensors/too-short", b"1", qos=1).wait_for_publish(5)
        _publish_invalid_utf8_topic(mosquitto.port)
        assert wait_until(lambda: daemon.engine.stats.steps >= 30, 20)
        letters = dead.wait_for(len(bad) + 1)
        stats = daemon.engine.stats
    assert stats.steps == 30  # the good stream, every reading
    assert {m["stream"] for _, m in forecasts.wait_for(30)} == {"good/dev/temp"}
    reasons = {m["topic"]: m["reason"] for _, m in letters}
    assert reasons == {
        "sensors/bad/garbage/temp": "decode_error",
        "sensors/bad/huge/temp": "too_large",
        "sensors/bad/nan/temp": "non_finite",
        "sensors/bad/inf/temp": "non_finite",
        "sensors/bad/string/temp": "bad_value",
        "sensors/bad/bool/temp": "bad_value",
        "sensors/bad/missing/temp": "decode_error",
        "sensors/bad/nested/temp": "decode_error",  # a structure where a number belongs
        "sensors/bad/empty/temp": "decode_error",
        "sensors/too-short": "bad_topic",
    }
    assert sum(stats.dropped.values()) == len(reasons)
    garbage = next(m for _, m in letters if m["topic"].endswith("garbage/temp"))
    assert garbage["payload_encoding"] == "base64" and garbage["payload_bytes"] == 11
    dead.close()
    forecasts.close()


def test_retained_readings_are_applied_once_across_restarts(mosquitto, tmp_path):
    # retained before the daemon subscribes: the broker sends a copy on every subscription
    pub = client(mosquitto.port)
    pub.publish("sensors/ret/dev/timed", json.dumps({"value": 7, "ts": 1.7e9}), 1, retain=True)
    pub.publish("sensors/ret/dev/untimed", b"42", qos=1, retain=True).wait_for_publish(5)
    dead = Collector(mosquitto.port, "sensorcast/deadletter")
    given = settings_for(mosquitto.url, state__dir=str(tmp_path / "state"))
    reasons = []
    for run in range(2):  # the second run restores the first one's snapshot
        with running(given) as daemon:
            assert wait_until(lambda n=run: len(dead.messages) >= n + 1 + (n > 0), 20)
            if run == 0:  # a live publish comes without the retain flag: applied
                pub.publish("sensors/ret/dev/untimed", b"43", qos=1).wait_for_publish(5)
                assert wait_until(lambda d=daemon: d.engine.stats.steps == 2, 20)
            stats = daemon.engine.stats
            reasons.append(dict(stats.dropped))
            assert stats.steps == (2 if run == 0 else 0)
    pub.disconnect()
    dead.close()
    untimed = [m for _, m in dead.messages if m["topic"] == "sensors/ret/dev/untimed"]
    assert [m["reason"] for m in untimed] == ["bad_timestamp", "bad_timestamp"]
    assert "retained message without a timestamp" in untimed[0]["detail"]
    assert reasons == [{"bad_timestamp": 1}, {"bad_timestamp": 1, "duplicate": 1}]


def test_telegraf_json_and_line_protocol_become_the_same_streams(mosquitto):
    # what Telegraf's MQTT output publishes to telegraf/{host}/{plugin}: JSON (one metric
    # per message, or a batch) and line protocol name the same fields the same way
    forecasts = Collector(mosquitto.port, "sensorcast/forecast/#")
    template = {"mqtt__subscribe": "telegraf/#", "mqtt__topic_template": "telegraf/{host}/{plugin}"}
    t0 = 1_700_000_000
    with running(settings_for(mosquitto.url, **template)) as daemon:
        pub = client(mosquitto.port)
        for i in range(3):
            fields = {"usage_idle": 98.0 - i, "usage_user": 1.0 + i, "state": "ok"}
            metric = {"fields": fields, "name": "cpu", "tags": {"host": "edge-1"}}
            pub.publish("telegraf/edge-1/cpu", json.dumps({**metric, "timestamp": t0 + 10 * i}))
            batch = {"metrics": [{**metric, "timestamp": (t0 + 10 * i) * 10**9}]}
            pub.publish("telegraf/edge-2/cpu", json.dumps(batch))  # json_timestamp_units=1ns
            line = (
                f"cpu,host=edge-3 usage_idle={98.0 - i},usage_user={1 + i}i {(t0 + 10 * i) * 10**9}"
            )
            pub.publish("telegraf/edge-3/cpu", line, qos=1).wait_for_publish(5)
        assert wait_until(lambda: daemon.engine.stats.steps >= 18, 20)
        stats = daemon.engine.stats
    assert sum(stats.dropped.values()) == 0
    got = {(m["stream"], m["timestamp"], m["value"]) for _, m in forecasts.wait_for(18)}
    times = [_iso(t0 + 10 * i) for i in range(3)]
    expected = {
        (f"{host}/cpu/cpu/{field}", times[i], value)
        for host in ("edge-1", "edge-2", "edge-3")
        for i in range(3)
        for field, value in (("usage_idle", 98.0 - i), ("usage_user", 1.0 + i))
    }
    assert got == expected
    forecasts.close()


def _publish_invalid_utf8_topic(port: int) -> None:
    """A raw MQTT 3.1.1 CONNECT + PUBLISH whose topic is not UTF-8 (paho refuses to send one)."""
    connect = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02xx"
    topic = b"sensors/\xff\xfe/t"
    body = len(topic).to_bytes(2, "big") + topic + b"1"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(connect)
        s.recv(4)  # CONNACK
        s.sendall(b"\x30" + bytes([len(body)]) + body)
        time.sleep(0.2)  # mosquitto drops the connection; nothing reaches the daemon


def test_broker_killed_and_restarted_mid_stream_loses_nothing(mosquitto):
    # After the outage the load generator's queued messages and its new ones arrive
    # interleaved: the lateness buffer puts each stream back in order. The idle timeout
    # outlasts a slow reconnect: closing the streams mid-outage would apply what they
    # hold, and a re-delivery older than that can only be told apart as "late".
    n = 3000
    settings = settings_for(mosquitto.url, pipeline__lateness="1h", pipeline__idle_timeout="5s")
    with running(settings) as daemon:
        pub = client(mosquitto.port, client_id="load-generator", persistent=True)
        done = threading.Event()

        def publish() -> None:
            for i in range(n):
                pub.publish(f"sensors/s/{i % 10}/t", json.dumps({"value": i, "ts": 1e9 + i}), qos=1)
                time.sleep(0.001)
            done.set()

        threading.Thread(target=publish, daemon=True).start()
        time.sleep(0.8)
        mosquitto.stop(signal.SIGKILL)
        time.sleep(1.0)
        mosquitto.start()
        assert done.wait(60)
        assert wait_until(lambda: daemon.engine.stats.steps >= n, 60), daemon.engine.stats
        time.sleep(0.5)  # anything re-delivered arrives now
        stats = daemon.engine.stats
    assert stats.steps == n  # every reading exactly once: QoS 1 re-deliveries are
    assert set(stats.dropped) <= {"duplicate"}  # recognised, not applied twice
    pub.disconnect()
    pub.loop_stop()


def test_a_reading_without_a_time_redelivered_after_a_dropped_link_is_applied_once(mosquitto):
    """The daemon applies plain numbers (stamped with their receive time), its
    acknowledgements are lost with the link, and the broker delivers them again (DUP)
    on the new connection: each copy keeps its first receive time and is dropped."""
    relay = Relay(mosquitto.port)
    pub = client(mosquitto.port)
    try:
        with running(settings_for(relay.url)) as daemon:
            stats = daemon.engine.stats
            pub.publish("sensors/plain/dev/t", b"20.0", qos=1).wait_for_publish(5)
            assert wait_until(lambda: stats.steps == 1, 10), stats
            time.sleep(0.3)  # its acknowledgement goes out after the step (if not, it is
            relay.hold.set()  # redelivered and dropped too); from here they go nowhere
            for value in (b"21.5", b"21.6", b"21.7"):
                pub.publish("sensors/plain/dev/t", value, qos=1).wait_for_publish(5)
            assert wait_until(lambda: stats.steps == 4, 10), stats
            time.sleep(0.3)  # the acknowledgements are sent, and dropped
            relay.cut()
            relay.hold.clear()

            def dropped() -> int:
                return stats.dropped.get("duplicate", 0) + stats.dropped.get("late", 0)

            assert wait_until(lambda: dropped() >= 3, 30), stats
            time.sleep(0.5)  # anything else redelivered arrives now
            assert stats.steps == 4 and dropped() in (3, 4), stats  # each applied once
    finally:
        relay.close()
        pub.disconnect()
        pub.loop_stop()


def test_a_reading_without_a_time_redelivered_after_a_crash_is_applied_once(mosquitto, tmp_path):
    """As above, but the daemon is killed (-9) instead of losing its link: the restarted
    daemon re-applies the readings from the journal, and the broker's redeliveries get
    their first receive times back from the receipts journaled with them."""
    relay = Relay(mosquitto.port)
    pub = client(mosquitto.port)
    state = tmp_path / "state"
    (tmp_path / "sensorcast.toml").write_text(f'[state]\ndir = "{state}"\n'
                                               '[pipeline]\nmax_delay = "20ms"\n')  # fmt: skip
    args = ("--config", str(tmp_path / "sensorcast.toml"), "--broker", relay.url)

    def journaled() -> int:
        path = state / JOURNAL_FILE
        return int(summarize(path)["readings"]) if path.exists() else 0

    try:
        with sensorcast_run(tmp_path / "first", *args) as first:
            assert first.wait_connected(), first.output
            pub.publish("sensors/plain/dev/t", b"20.0", qos=1).wait_for_publish(5)
            assert wait_until(lambda: journaled() == 1, 20), first.output
            time.sleep(0.3)  # its acknowledgement goes out (if not, it is redelivered too)
            relay.hold.set()  # from here the daemon's acknowledgements go nowhere
            for value in (b"21.5", b"21.6", b"21.7"):
                pub.publish("sensors/plain/dev/t", value, qos=1).wait_for_publish(5)
            assert wait_until(lambda: journaled() == 4, 20), first.output
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        relay.hold.clear()
        with running(settings_for(mosquitto.url, state__dir=str(state))) as daemon:
            stats = daemon.engine.stats
            assert stats.journal_replayed == 4  # no snapshot yet: all four come back

            def dropped() -> int:
                return stats.dropped.get("duplicate", 0) + stats.dropped.get("late", 0)

            assert wait_until(lambda: dropped() >= 3, 30), stats
            time.sleep(0.5)  # anything else redelivered arrives now
            assert stats.steps == 0 and dropped() in (3, 4), stats  # none applied again
            slot = daemon.engine.table.slots_for(["plain/dev/t"], time.time())
            assert daemon.engine.table.last_value[slot].tolist() == [21.7]
    finally:
        relay.close()
        pub.disconnect()
        pub.loop_stop()


def test_untimed_bursts_and_times_far_ahead(mosquitto):
    """Plain numbers read in one burst each get their own receive time (they were
    dropped as duplicates of the first); a time a decade ahead (a device clock gone
    wrong) is refused with its topic instead of making the stream's later readings
    late, and so is the year 2100 (which the engine used to drop without a topic)."""
    dead = Collector(mosquitto.port, "sensorcast/deadletter")
    now = time.time()
    with running(settings_for(mosquitto.url)) as daemon:
        pub = client(mosquitto.port)
        for i in range(200):
            pub.publish("sensors/burst/dev/plain", str(20 + i % 7).encode(), qos=1)
        timed = [now - 10, now - 9, now + 10 * 365 * 86_400, now - 8, now - 7]
        for i, ts in enumerate(timed):
            pub.publish("sensors/clock/dev/t", json.dumps({"value": i, "ts": ts}), qos=1)
        far = json.dumps({"value": 1, "ts": "2100-06-01T00:00:00Z"})
        pub.publish("sensors/far/dev/t", far, qos=1).wait_for_publish(5)
        assert wait_until(lambda: daemon.engine.stats.steps >= 204, 20)
        letters = dead.wait_for(2)
        stats = daemon.engine.stats
    pub.disconnect()
    dead.close()
    assert stats.steps == 204 and dict(stats.dropped) == {"bad_timestamp": 2}
    assert sorted((m["topic"], m["reason"]) for _, m in letters) == [
        ("sensors/clock/dev/t", "bad_timestamp"),
        ("sensors/far/dev/t", "bad_timestamp"),
    ]
    assert all("days ahead of its arrival; check the device's clock" in m["detail"]
               for _, m in letters)  # fmt: skip


def test_a_batch_of_one_streams_readings_without_times_is_one_dead_letter(mosquitto):
    """Its readings would share the receive time: the first is used and the rest are
    refused in one dead letter (bad_timestamp, their count), not published one dropped
    row each, so a small payload of many untimed readings costs one message out."""
    dead = Collector(mosquitto.port, "sensorcast/deadletter")
    dropped = Collector(mosquitto.port, "sensorcast/dropped/#")
    sent = {
        "sensors/batch/a/t": b"[20.1, 20.2, 20.3]",
        "sensors/batch/a/u": b'[{"value": 1}, {"value": 2}]',
        "sensors/lp/a/t": b"m v=1\nm v=2\nm v=3\nm w=4",  # m/v three times, m/w once
        "sensors/big/a/t": b"[" + b",".join([b"1"] * 5_000) + b"]",
    }
    with running(settings_for(mosquitto.url)) as daemon:
        pub = client(mosquitto.port)
        for topic, payload in sent.items():
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        letters = dead.wait_for(4)
        assert wait_until(lambda: daemon.engine.stats.steps >= 5, 10)
        stats = daemon.engine.stats
    pub.disconnect()
    dead.close()
    dropped.close()
    assert stats.steps == 5 and dict(stats.dropped) == {"bad_timestamp": 2 + 1 + 2 + 4_999}
    assert sorted((m["topic"], m["stream"], m["count"]) for _, m in letters) == [
        ("sensors/batch/a/t", "batch/a/t", 2),
        ("sensors/batch/a/u", "batch/a/u", 1),
        ("sensors/big/a/t", "big/a/t", 4_999),
        ("sensors/lp/a/t", "lp/a/t/m/v", 2),
    ]
    assert all("without times in one message; the first is used" in m["detail"]
               for _, m in letters)  # fmt: skip
    assert dropped.messages == []
