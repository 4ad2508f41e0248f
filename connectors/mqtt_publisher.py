"""Readings to MQTT: logs replayed into a broker, as a simulator and load generator.

Each reading becomes ``{"value": v, "ts": t}`` (what the daemon's default JSON
decoder reads) on ``{root}/{stream}``, in the source's order, so each
stream's order is kept. Timing follows the source (``CsvSource(speed=N)``).
A daemon with ``topic_template = "{root}/#"`` sees the same stream keys as
``sensorcast replay`` of the same logs.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from connectors.topics import escape_level
from pipeline.errors import SinkError
from pipeline.protocols import Source

WINDOW = 1_000  # readings in flight at most: paho's own default limit of in-flight QoS 1


STALL_SECONDS = 30.0  # no acknowledgement this long: the broker is gone, not slow


@dataclass
class PublishCounters:
    readings: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # rows the source refused, by reason
    missing: int = 0  # empty cells and missing-value codes: not readings


def reading_payload(timestamp: float, value: float) -> str:
    """The JSON message for one reading.

    >>> reading_payload(1700000000.0, 21.5)
    '{"value": 21.5, "ts": 1700000000.0}'
    """
    return json.dumps({"value": value, "ts": timestamp})


def reading_topic(root: str, stream: str) -> str:
    """``{root}/{stream}`` with every stream level escaped."""
    return "/".join([root, *(escape_level(level) for level in stream.split("/"))])


def publish_source(
    source: Source,
    client: mqtt.Client,
    root: str = "sensors",
    *,
    qos: int = 1,
    horizon: float | None = None,
    stop: threading.Event | None = None,
    counters: PublishCounters | None = None,
    window: int = WINDOW,
) -> PublishCounters:
    """Publish ``source``'s readings, up to ``horizon`` seconds (event time) after its first.

    At most ``window`` readings wait for the broker's acknowledgement (QoS 1): a broker
    slower than the source slows it down, instead of paho queueing without bound until
    its 65,535 message ids run out. Returns once the broker acknowledged the last one,
    the source is exhausted, or ``stop`` is set.
    """
    counters = counters or PublishCounters()
    stop = stop or threading.Event()
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    until = None
    while not stop.is_set() and (batch := source.poll(10_000, 0.1)) is not None:
        counters.missing += batch.missing
        for rejection in batch.rejections:
            counters.skipped[rejection.reason.label] += rejection.count
        streams = [batch.streams[i] for i in batch.stream_index.tolist()]
        times, values = batch.timestamp.tolist(), batch.value.tolist()
        if until is None and times and horizon is not None:
            until = times[0] + horizon
        for stream, t, v in zip(streams, times, values, strict=True):
            if until is not None and t > until or not _make_room(pending, window - 1, stop):
                return counters
            info = _send(client, reading_topic(root, stream), reading_payload(t, v), qos, stop)
            if info is None:
                return counters
            pending.append(info)
            counters.readings += 1
    _make_room(pending, 0, stop)
    return counters


def _make_room(pending: deque[mqtt.MQTTMessageInfo], room: int, stop: threading.Event) -> bool:
    """Wait until at most ``room`` readings are unacknowledged; False once ``stop`` is set."""
    while len(pending) > room:
        if not _acknowledged(pending[0], stop):
            return False
        pending.popleft()
    return not stop.is_set()


def _send(
    client: mqtt.Client, topic: str, payload: str, qos: int, stop: threading.Event
) -> mqtt.MQTTMessageInfo | None:
    """Publish one reading, waiting while paho's queue is full; None once ``stop`` is set."""
    while not stop.is_set():
        info = client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:
            return info
        stop.wait(0.05)
    return None


def _acknowledged(info: mqtt.MQTTMessageInfo, stop: threading.Event) -> bool:
    """Wait for the broker's acknowledgement of one reading; False if ``stop`` came first.

    One published while the connection was down is kept by paho and sent again when it
    is back, so it is waited for like any other; SinkError when nothing is acknowledged
    for ``STALL_SECONDS`` (the broker went away for good, or never acknowledges).
    """
    deadline = time.monotonic() + STALL_SECONDS
    while not stop.is_set():
        try:
            info.wait_for_publish(0.1)  # wakes as soon as the PUBACK is in
        except (ValueError, RuntimeError):  # sent while disconnected: no waiting on it
            stop.wait(0.05)
        if info.is_published():
            return True
        if time.monotonic() > deadline:
            msg = f"the broker acknowledged nothing for {STALL_SECONDS:g} s; is it still up?"
            raise SinkError(msg)
    return False
