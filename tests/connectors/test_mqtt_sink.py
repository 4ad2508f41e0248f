"""The MQTT sink against a real mosquitto: batches, backpressure, delivery."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from daemons import Collector
from helpers import make_engine

from connectors.mqtt_client import Connection
from connectors.mqtt_sink import MqttSink, dead_letter_record
from connectors.records import verdict_records
from pipeline.types import Reading, ReadingBatch, Reason, Rejection, StreamKey


def test_a_batch_over_the_backlog_limit_is_delivered_whole_and_in_order(mosquitto):
    # One add() of 3,000 forecasts with room for 40 unacknowledged: the sink waits
    # for PUBACKs in the middle of its batch, so what it queued must go out first.
    items = [Reading(StreamKey(f"site/dev-{k}/temp"), 60.0 * t, float(t)) for t in range(300)
             for k in range(10)]  # fmt: skip
    verdicts = make_engine().process(ReadingBatch.from_readings(items))
    collector = Collector(mosquitto.port, "out/forecast/#")
    sink = MqttSink(Connection("127.0.0.1", mosquitto.port, "sink-batch-test"), "out",
                    max_pending=40)  # fmt: skip
    cancel = threading.Event()
    sink.start(cancel)
    adding = threading.Thread(target=sink.add, args=(verdicts,))
    try:
        adding.start()
        adding.join(30)
        stuck = adding.is_alive()
        cancel.set()  # a stuck sink waits for room until cancelled
        adding.join(5)
        assert not stuck, "the sink waited for PUBACKs of messages it never sent"
        sink.flush()
        got = collector.wait_for(3_000)
    finally:
        sink.close()
        collector.close()
    assert sink.counters.waits > 0 and sink.unconfirmed == 0
    assert len(got) == 3_000
    for k in range(10):  # each stream's forecasts arrive in time order
        times = [m["timestamp"] for topic, m in got if topic.endswith(f"/dev-{k}/temp")]
        assert len(times) == 300 and times == sorted(times)


def test_forecasts_are_counted_once_handed_over_and_tracked(mosquitto, monkeypatch):
    # the bench knows a run delivered when a scrape counts every forecast and a later
    # one finds nothing unconfirmed: a forecast counted before it is tracked would let
    # that pass while the last ones are still on their way
    from connectors import mqtt_sink

    items = [Reading(StreamKey(f"site/dev-{k}/temp"), 60.0 * t, float(t)) for t in range(20)
             for k in range(5)]  # fmt: skip
    verdicts = make_engine().process(ReadingBatch.from_readings(items))
    sink = MqttSink(Connection("127.0.0.1", mosquitto.port, "sink-count-test"), "out")
    seen = []
    publish_many = mqtt_sink.publish_many

    def counting(client, part, qos):
        seen.append(sink.counters.forecasts)
        return publish_many(client, part, qos)

    monkeypatch.setattr(mqtt_sink, "publish_many", counting)
    sink.start()
    try:
        sink.add(verdicts)
        sink.flush()
    finally:
        sink.close()
    assert seen and set(seen) == {0}  # nothing counted while being handed over
    assert sink.counters.forecasts == len(verdicts) == 100 and sink.unconfirmed == 0


def woken(client, monkeypatch) -> list[int]:
    """Counts of the network loop's wake-ups (writes to its socket pair) by ``client``."""
    wakes = [0]
    wake = client.wake

    def counting():
        wakes[0] += client._unwoken  # a wake-up only when something was left unsent
        wake()

    monkeypatch.setattr(client, "wake", counting)
    return wakes


def test_at_qos_1_a_tick_is_sent_by_the_caller_without_waking_the_network_loop(
    mosquitto, monkeypatch
):
    # waking the loop to write costs a thread switch and the interpreter lock changing
    # hands twice; the socket takes a small tick's forecasts at once
    items = [Reading(StreamKey(f"site/dev-{k}/temp"), 60.0 * t, float(t)) for t in range(4)
             for k in range(5)]  # fmt: skip
    verdicts = make_engine().process(ReadingBatch.from_readings(items))
    collector = Collector(mosquitto.port, "out/forecast/#")
    sink = MqttSink(Connection("127.0.0.1", mosquitto.port, "sink-direct-test"), "out")
    sink.start()
    wakes = woken(sink.session.client, monkeypatch)
    try:
        sink.add(verdicts)
        got = collector.wait_for(len(verdicts))
        sink.flush()
    finally:
        sink.close()
        collector.close()
    assert len(got) == len(verdicts) == 20 and sink.unconfirmed == 0
    assert wakes == [0]


def test_over_tls_the_network_loop_writes_what_was_queued(mosquitto, monkeypatch):
    """One thread must not write an SSL connection while another reads it: there the
    caller only wakes the loop (the flag is faked on a plain connection)."""
    from connectors.mqtt_client import Session

    session = Session(Connection("127.0.0.1", mosquitto.port, "tls-guard-test"))
    session.start()
    client = session.client
    wakes = woken(client, monkeypatch)
    collector = Collector(mosquitto.port, "out/#")
    try:
        monkeypatch.setattr(client, "_ssl", True)
        with client.batch():
            client.publish("out/a", b"1", qos=1)
            client.write_queued()
        assert collector.wait_for(1)
    finally:
        session.stop()
        collector.close()
    assert wakes == [1]


def test_topics_are_escaped_once_per_stream_and_the_memory_is_bounded(monkeypatch):
    from connectors import mqtt_sink
    from connectors.topics import stream_topic

    monkeypatch.setattr(mqtt_sink, "TOPIC_CACHE", 3)
    sink = MqttSink(Connection("127.0.0.1", 1, "sink-topic-test"), "out")  # never started
    streams = ["plant/boiler/temp", "odd/50%+/level", "a/b/c", "d/e/f"]
    for stream in streams * 2:
        for kind in ("forecast", "anomaly"):
            assert sink.topic(kind, stream) == stream_topic("out", kind, stream)
    assert all(len(known) <= 3 for known in sink._topics.values())


def test_a_poll_takes_up_to_max_items_readings_however_many_a_message_holds():
    """A JSON array is many readings: a tick of max_batch messages of 1,500 readings
    each held millions (minutes without a watchdog ping, gigabytes)."""
    from connectors.mqtt_source import MqttSource
    from connectors.payloads import make_decoder
    from connectors.topics import TopicTemplate
    from pipeline.testing import FakeClock

    source = MqttSource(Connection("127.0.0.1", 1, "source-batch-test"), ("s/#",),
                        TopicTemplate("s/{site}/{device}"), make_decoder("json"),
                        clock=FakeClock())  # fmt: skip  # never started
    array = json.dumps([{"value": v, "ts": 1.7e9 + v} for v in range(4)]).encode()
    source._on_publishes([(f"s/a/{i}", array, i + 1, 1) for i in range(5)])
    sizes = []
    while (batch := source.poll(6, 0.0)) is not None and len(batch):
        sizes.append(len(batch))
    assert sizes == [8, 8, 4]  # whole messages, until at least max_items readings
    assert (source.counters.messages, source.counters.accepted, source.depth) == (5, 5, 0)


@pytest.mark.parametrize(
    ("payload", "encoding", "kept"),
    [
        ('{"value": "' + "é" * 600 + '"}', "utf-8", 1023),  # the cut splits an é: left out
        ("x" * 1023 + "ü", "utf-8", 1023),
        ("ü" * 700, "utf-8", 1024),  # the cut falls between characters
        ("x" * 1023, "utf-8", 1023),  # whole
    ],
)
def test_a_dead_letter_cut_inside_a_character_is_still_utf8(payload, encoding, kept):
    raw = payload.encode()
    record = dead_letter_record(Rejection(Reason.DECODE_ERROR, "x", raw=raw, topic="s/a/b"))
    assert record["payload_encoding"] == encoding
    assert record["payload"].encode() == raw[:kept]
    assert record["payload_truncated"] == (len(raw) > 1024)


def test_a_dead_letter_of_bytes_that_are_not_utf8_is_base64():
    raw = b"\xff\xfe" + b"x" * 2000
    record = dead_letter_record(Rejection(Reason.DECODE_ERROR, "x", raw=raw, topic="s/a/b"))
    assert record["payload_encoding"] == "base64"
    assert base64.b64decode(record["payload"]) == raw[:1024]


def test_at_qos_0_every_forecast_is_sent_and_none_waits_for_an_acknowledgement(mosquitto):
    items = [Reading(StreamKey(f"site/dev-{k}/temp"), 60.0 * t, float(t)) for t in range(50)
             for k in range(4)]  # fmt: skip
    verdicts = make_engine().process(ReadingBatch.from_readings(items))
    collector = Collector(mosquitto.port, "out/forecast/#")
    sink = MqttSink(Connection("127.0.0.1", mosquitto.port, "sink-qos0-test"), "out", qos=0)
    sink.start()
    try:
        sink.add(verdicts)
        got = collector.wait_for(len(verdicts))
        sink.flush()  # nothing to wait for
    finally:
        sink.close()
        collector.close()
    assert sink.unconfirmed == 0 and sink.counters.forecasts == len(verdicts) == 200
    assert sorted(m["timestamp"] for _, m in got) == sorted(m["timestamp"] for m in
                                                            verdict_records(verdicts))  # fmt: skip
