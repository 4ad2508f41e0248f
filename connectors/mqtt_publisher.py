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
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from connectors.topics import escape_level
from pipeline.protocols import Source


@dataclass
class PublishCounters:
    readings: int = 0


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
) -> PublishCounters:
    """Publish ``source``'s readings, up to ``horizon`` seconds (event time) after its first.

    Returns once the broker acknowledged the last one (QoS 1), the source is
    exhausted, or ``stop`` is set.
    """
    counters = counters or PublishCounters()
    last, until = None, None
    while stop is None or not stop.is_set():
        batch = source.poll(10_000, 0.1)
        if batch is None:
            break
        streams = [batch.streams[i] for i in batch.stream_index.tolist()]
        times, values = batch.timestamp.tolist(), batch.value.tolist()
        if until is None and times and horizon is not None:
            until = times[0] + horizon
        for stream, t, v in zip(streams, times, values, strict=True):
            if until is not None and t > until:
                break
            last = client.publish(reading_topic(root, stream), reading_payload(t, v), qos=qos)
            counters.readings += 1
        else:
            continue
        break  # reached the horizon
    if last is not None:
        last.wait_for_publish(30)
    return counters
