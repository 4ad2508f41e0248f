"""Verdicts to MQTT: a forecast message per step, an event per anomaly, a row per
dropped reading, dead letters.

Topics are ``{prefix}/forecast/{stream}``, ``{prefix}/anomaly/{stream}``,
``{prefix}/dropped/{stream}`` and ``{prefix}/deadletter``; stream levels are escaped
so a key can never become a wildcard or an illegal topic (see
``connectors.topics.escape_level``). A dropped reading's row is the one replay
writes (what arrived, ``dropped`` = the reason, no forecast); it has a topic of its
own because a QoS 1 re-delivery is dropped as a ``duplicate`` of a step already
forecast, and on the forecast topic its empty forecast would replace that one for a
consumer that keeps the latest message.
``add`` hands a batch's messages to paho at once (``connectors.mqtt_publish``), at
most ``max_pending`` unconfirmed; ``flush`` waits until the broker has
acknowledged every one of them (QoS 1) and raises ``SinkError`` on timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from connectors.json_text import JsonObjects
from connectors.mqtt_client import Connection, Session
from connectors.mqtt_publish import publish_many
from connectors.topics import stream_topic
from pipeline.errors import SinkError
from pipeline.types import Rejection, VerdictBatch

log = logging.getLogger(__name__)

DEADLETTER_PAYLOAD_BYTES = 1024  # of the original payload, kept in a dead letter
TOPIC_CACHE = 100_000  # streams whose topics are kept; escaping a key costs ~4 us
# messages handed to paho under one hold of its lock, which its loop thread needs to
# take PUBACKs: a tick's first forecasts are sent while its last are handed over
HANDOVER = 500


@dataclass
class SinkCounters:
    forecasts: int = 0
    anomalies: int = 0
    deadletters: int = 0
    failed_flushes: int = 0
    waits: int = 0  # publishes that waited for room (max_pending unconfirmed)
    dropped: int = 0  # publishes paho refused (only when stopping with a full window)
    dropped_readings: int = 0  # rows of readings the pipeline dropped


class MqttSink:
    """Publishes verdicts under ``prefix`` with ``qos``."""

    def __init__(
        self,
        connection: Connection,
        prefix: str,
        *,
        qos: int = 1,
        flush_timeout: float = 10.0,
        max_pending: int = 20_000,
    ) -> None:
        self.connection = connection
        self.prefix = prefix
        self.qos = qos
        self.flush_timeout = flush_timeout
        self.max_pending = max_pending  # below MQTT's 65,535 message ids
        self._cancel = threading.Event()
        self.counters = SinkCounters()
        self.session = Session(connection)
        self.session.client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._unacked: set[int] = set()  # mids published, broker's PUBACK not seen yet
        self._behind = False  # the last flush ended with messages unconfirmed
        self._early: set[int] = set()  # PUBACKs that beat publish() returning
        self._topics: dict[str, dict[str, str]] = {"forecast": {}, "anomaly": {}, "dropped": {}}
        self._json = JsonObjects(with_dropped=False, newline=False)  # a step's has no "dropped"

    def start(self, cancel: threading.Event | None = None) -> None:
        if cancel is not None:
            self._cancel = cancel
        self.session.start(cancel=cancel)

    def add(self, verdicts: VerdictBatch) -> None:
        messages, kinds = self._messages(verdicts)
        client = self.session.client
        with client.batch():
            start = 0
            while start < len(messages):
                part = messages[start : start + min(self._room(), HANDOVER)]
                self._track(publish_many(client, part, self.qos))
                # the first forecasts go out while the rest are handed over; written here
                # at QoS 1 (QoS 0 calls back as it is written: the network loop does it)
                if self.qos == 1:
                    client.write_queued()
                else:
                    client.wake()
                start += len(part)
        # counted once handed over and tracked: a scrape that sees them counted and then,
        # later, nothing unconfirmed knows the broker has every one of them
        counters = self.counters
        counters.forecasts += kinds.forecasts
        counters.anomalies += kinds.anomalies
        counters.dropped_readings += kinds.dropped_readings

    def _messages(self, verdicts: VerdictBatch) -> tuple[list[tuple[str, bytes]], SinkCounters]:
        """Each verdict's ``(topic, payload)``: a forecast, and an anomaly event with the
        same payload; or a dropped reading's row. And how many of each kind."""
        objects, ends = self._json.of(verdicts)
        payloads = bytes(objects)  # one copy; each message's payload is a slice of it
        messages = []
        kinds = SinkCounters()
        start = 0
        rows = zip(verdicts.stream.tolist(), ends.tolist(), verdicts.dropped.tolist(),
                   verdicts.is_anomaly.tolist(), strict=True)  # fmt: skip
        for stream, end, dropped, is_anomaly in rows:
            payload = payloads[start:end]
            start = end
            if dropped:
                messages.append((self.topic("dropped", stream), payload))
                kinds.dropped_readings += 1
                continue
            messages.append((self.topic("forecast", stream), payload))
            kinds.forecasts += 1
            if is_anomaly:
                messages.append((self.topic("anomaly", stream), payload))
                kinds.anomalies += 1
        return messages, kinds

    def topic(self, kind: str, stream: str) -> str:
        """``stream_topic`` of the sink's prefix, remembered for the last ~TOPIC_CACHE
        streams: a stream publishes under the same topics at every step."""
        known = self._topics[kind]
        topic = known.get(stream)
        if topic is None:
            if len(known) >= TOPIC_CACHE:
                known.clear()  # the busy streams come back within a tick or two
            topic = known[stream] = stream_topic(self.prefix, kind, stream)
        return topic

    def dead_letter(self, rejection: Rejection) -> None:
        """Publish a rejected input with its reason and original topic."""
        self._publish(f"{self.prefix}/deadletter", json.dumps(dead_letter_record(rejection)))
        self.counters.deadletters += 1

    def _publish(self, topic: str, payload: str | bytes) -> None:
        # While the broker is away paho keeps QoS 1 messages and sends them on reconnect.
        self._room()
        info = self.session.client.publish(topic, payload, qos=self.qos)
        self._track([(info.mid, info.rc)])

    def _track(self, published: list[tuple[int, mqtt.MQTTErrorCode]]) -> None:
        """Count what paho refused; remember the rest until the broker acknowledges it."""
        with self._lock:
            for mid, rc in published:
                if rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                    self.counters.dropped += 1
                elif self.qos == 0:
                    continue
                elif mid in self._early:
                    self._early.remove(mid)
                else:
                    self._unacked.add(mid)

    def _room(self) -> int:
        """How many more messages may be handed to paho now (at least 1). Backpressure:
        with max_pending messages unconfirmed, wait (the engine waits too, the ingest
        queue fills, and the broker holds the input). Once cancelled, no more waiting."""
        if self.unconfirmed >= self.max_pending:
            self.session.client.wake()  # what this batch queued must go out for acks to come
            self.counters.waits += 1
            while self.unconfirmed >= self.max_pending and not self._cancel.is_set():
                time.sleep(0.002)
        return max(self.max_pending - self.unconfirmed, 1)

    def _on_publish(self, client: object, userdata: object, mid: int, *rest: object) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.remove(mid)
            else:
                self._early.add(mid)

    @property
    def unconfirmed(self) -> int:
        with self._lock:
            return len(self._unacked)

    def flush(self) -> None:
        """Wait until the broker acknowledged everything published so far.

        Raises SinkError when ``flush_timeout`` passes first; the messages stay
        queued (paho re-sends them once the broker is back) for the next flush.
        """
        deadline = time.monotonic() + self.flush_timeout
        connected = self.session.connected.is_set
        while self.unconfirmed and connected() and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = self.unconfirmed
        self._behind = bool(waiting)
        if waiting:
            self.counters.failed_flushes += 1
            msg = f"{waiting} messages to {self.connection.url} not acknowledged "
            why = f"within {self.flush_timeout} s" if connected() else "(not connected)"
            msg += f"{why}; they stay queued while the daemon runs"
            raise SinkError(msg)

    def close(self) -> None:
        if self._behind and self.unconfirmed:  # the last flush waited in vain: not again
            log.error("closing with %d messages unconfirmed by %s",
                      self.unconfirmed, self.connection.url)  # fmt: skip
        else:
            try:
                self.flush()
            except SinkError as exc:
                log.error("closing with unconfirmed messages: %s", exc)
        self.session.stop()


def dead_letter_record(rejection: Rejection) -> dict[str, Any]:
    """The dead-letter message: why, where from, and (the start of) what arrived."""
    record: dict[str, Any] = {
        "reason": rejection.reason.label,
        "detail": rejection.detail,
        "topic": rejection.topic,
        "stream": rejection.stream,
        "partition": rejection.partition,
        "seq": rejection.seq,
        "count": rejection.count,
    }
    if rejection.raw is not None:
        record.update(_payload_fields(rejection.raw))
    return record


def _utf8_head(head: bytes, cut: bool) -> str:
    """``head`` as UTF-8 text; where ``cut`` ends it inside a character, without that
    character (valid UTF-8 is not base64 because the cut split an 'é')."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data":
            return head[: exc.start].decode("utf-8")
        raise


def _payload_fields(raw: bytes) -> dict[str, Any]:
    head = raw[:DEADLETTER_PAYLOAD_BYTES]
    try:
        text, encoding = _utf8_head(head, len(raw) > len(head)), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(head).decode("ascii"), "base64"
    return {
        "payload": text,
        "payload_encoding": encoding,
        "payload_bytes": len(raw),
        "payload_truncated": len(raw) > len(head),
    }
