"""A QoS 1 message the broker delivers again (DUP) after its acknowledgement was lost
with a connection: a reading without a time of its own must not be applied twice.

The source is driven through its two network-thread entry points, as the client calls
them: the fast path for first deliveries and paho's path (a real ``MQTTMessage``) for
redeliveries, which the fast path leaves to it."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
import pytest

from connectors import mqtt_source
from connectors.mqtt_client import Connection
from connectors.mqtt_source import MqttSource
from connectors.payloads import make_decoder
from connectors.topics import TopicTemplate
from models import load_forecaster
from pipeline.config import PipelineConfig
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.testing import FakeClock

TOPIC = "s/plant/boiler"


def source(clock: FakeClock) -> MqttSource:
    return MqttSource(Connection("127.0.0.1", 1, "redelivery-test"), ("s/#",),
                      TopicTemplate("s/{site}/{device}"), make_decoder("auto"),
                      clock=clock)  # fmt: skip  # never started


def redelivery(mid: int, payload: bytes, topic: str = TOPIC) -> Any:
    message = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    message.payload, message.qos, message.dup = payload, 1, True
    return message


def polled_times(src: MqttSource) -> list[float]:
    batch = src.poll(100, 0.0)
    assert batch is not None
    return batch.timestamp.tolist()


def test_a_redelivered_reading_without_a_time_keeps_its_first_time_and_is_applied_once():
    clock = FakeClock()
    src = source(clock)
    src._on_publishes([(TOPIC, b"21.5", 5, 1), (TOPIC, b"21.6", 6, 1)])
    clock.advance(30.0)  # the connection dropped and came back
    src._on_message(None, None, redelivery(5, b"21.5"))
    src._on_message(None, None, redelivery(6, b"21.6"))
    batch = src.poll(100, 0.0)
    assert batch is not None
    first, second, again_first, again_second = batch.timestamp.tolist()
    assert (again_first, again_second) == (first, second)
    engine = Engine(load_forecaster("persistence"), default_detector(), PipelineConfig())
    engine.process(batch)
    assert engine.stats.steps == 2
    # the copy of the stream's last reading is a duplicate; of an earlier one, late
    assert (engine.stats.dropped["late"], engine.stats.dropped["duplicate"]) == (1, 1)


@pytest.mark.parametrize(
    ("mid", "payload", "topic"),
    [
        (9, b"21.5", TOPIC),  # an id this process never took: the first copy was lost
        (5, b"21.7", TOPIC),  # the id of another message
        (5, b"21.5", "s/plant/pump"),
    ],  # fmt: skip
)
def test_a_redelivery_that_matches_no_first_copy_is_a_new_reading(mid, payload, topic):
    clock = FakeClock()
    src = source(clock)
    src._on_publishes([(TOPIC, b"21.5", 5, 1)])
    clock.advance(30.0)
    src._on_message(None, None, redelivery(mid, payload, topic))
    first, later = polled_times(src)
    assert later == pytest.approx(first + 30.0)


def test_a_first_copy_older_than_the_window_is_not_matched(monkeypatch):
    """Packet ids come round again: past the window, an id may name another message."""
    monkeypatch.setattr(mqtt_source, "REDELIVERY_WINDOW", 3)
    clock = FakeClock()
    src = source(clock)
    src._on_publishes([(TOPIC, b"21.5", 5, 1)])
    src._on_publishes([(f"s/other/{i}", b"1", 10 + i, 1) for i in range(3)])
    clock.advance(30.0)
    src._on_message(None, None, redelivery(5, b"21.5"))
    times = polled_times(src)
    assert times[-1] == pytest.approx(times[0] + 30.0)


def test_readings_that_took_their_receive_time_come_with_receipts_to_journal():
    """Only QoS 1 messages whose readings took the receive time: a reading with its own
    time is recognised as a copy by that time, and QoS 0 is never redelivered."""
    clock = FakeClock()
    src = source(clock)
    timed = b'{"value": 1.5, "ts": 1700000000}'
    src._on_publishes([(TOPIC, b"21.5", 5, 1), (TOPIC, timed, 6, 1), (TOPIC, b"21.6", 0, 0),
                       ("s/plant/pump", b"9", 7, 1)])  # fmt: skip
    batch = src.poll(100, 0.0)
    assert batch is not None
    received = batch.received.tolist() if batch.received is not None else []
    assert batch.receipts == (
        (5, mqtt_source.receipt_digest(TOPIC, b"21.5"), received[0]),
        (7, mqtt_source.receipt_digest("s/plant/pump", b"9"), received[3]),
    )


def test_a_redelivery_of_a_message_journaled_before_a_restart_gets_its_first_time():
    clock = FakeClock()
    first_time = clock.now() - 30.0
    src = source(clock)  # a new process: it never took the first copy
    digest = mqtt_source.receipt_digest
    src.remember_journaled([(5, digest(TOPIC, b"21.5"), first_time),
                            (6, digest(TOPIC, b"21.6"), first_time + 1)])  # fmt: skip
    src._on_message(None, None, redelivery(5, b"21.5"))
    src._on_message(None, None, redelivery(6, b"21.7"))  # another message under that id
    again, other = polled_times(src)
    assert again == first_time and other >= clock.now()


def test_a_journaled_receipt_is_forgotten_once_its_packet_id_names_a_new_message():
    clock = FakeClock()
    src = source(clock)
    src.remember_journaled([(5, mqtt_source.receipt_digest(TOPIC, b"21.5"), clock.now() - 30)])
    src._on_publishes([("s/other/x", b"1", 5, 1)])  # the id was freed and handed out again
    src._on_message(None, None, redelivery(5, b"21.5"))
    first, later = polled_times(src)
    assert later >= first >= clock.now()
