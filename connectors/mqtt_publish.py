"""Handing paho many messages at once: the forecasts of a tick.

paho's ``publish`` costs about 15 us a message: it checks its arguments, makes a
message and a ``MQTTMessageInfo`` with a ``threading.Condition`` of its own (a
third of the cost), takes its outgoing-message lock, and builds the packet with
debug logging on the way. A tick of 8,192 forecasts spent more time there than
in the model. ``publish_many`` does what paho's ``publish`` does for QoS 0 and 1
messages without properties or retain, holding the lock once for all of them:

* every message gets paho's next message id;
* at QoS 1 it is kept in paho's ``_out_messages``, from which paho re-sends it
  after a reconnect and which its PUBACK handling empties, and it is sent now if
  the in-flight window has room, else left queued for paho to send as acks free
  the window (paho's own states: ``wait_for_puback``, ``queued``, ``publish``);
* the packet goes into paho's write queue, as ``_send_publish`` would put it.

The messages are paho's own classes. Their infos share one Condition, since
nothing waits on a single forecast (``wait_for_publish``); paho still marks each
one published. Topics are checked as paho checks them: one it would refuse is
refused here too (ValueError), never sent.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt

_SHARED = threading.Condition()
_NO_PROPERTIES = b"\x00"  # MQTT 5: a properties length of 0
_U16 = struct.Struct("!H")
# a PUBLISH's first byte by ``qos << 1 | dup``
_HEADERS = [bytes((mqtt.PUBLISH | (0x08 if i & 1 else 0) | (i >> 1) << 1,)) for i in range(4)]
# topics paho would accept, as a PUBLISH's topic field (length, UTF-8) and their UTF-8
_TOPICS: dict[str, tuple[bytes, bytes]] = {}
TOPIC_CACHE = 100_000  # topics kept; a stream publishes under the same ones every step


class SharedInfo(mqtt.MQTTMessageInfo):
    """paho's message info, with a Condition shared by all instead of one each."""

    __slots__ = ()

    def __init__(self, mid: int) -> None:  # no super().__init__: it makes a Condition
        self.mid = mid
        self._published = False
        self._condition = _SHARED
        self.rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0


class OutgoingMessage(mqtt.MQTTMessage):
    """paho's message as its ``publish`` makes one (not retained, no properties)."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes, payload: bytes, qos: int, now: float) -> None:
        self.timestamp = now
        self.state = mqtt.mqtt_ms_invalid
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = False
        self.info = SharedInfo(mid)
        self.properties = None


def publish_packet(
    topic: bytes, payload: bytes | bytearray, mid: int, qos: int, v5: bool, dup: bool = False
) -> bytes:
    """A PUBLISH packet (not retained, no properties): fixed header, topic, message id
    (QoS 1), properties (MQTT 5), payload."""
    return _packet(_U16.pack(len(topic)) + topic, payload, mid, qos, v5, dup)


def _packet(
    topic_field: bytes, payload: bytes | bytearray, mid: int, qos: int, v5: bool, dup: bool
) -> bytes:
    """``publish_packet`` of a topic already laid out as its field (length, UTF-8)."""
    mid_field = _U16.pack(mid) if qos else b""
    properties = _NO_PROPERTIES if v5 else b""
    size = len(topic_field) + len(mid_field) + len(properties) + len(payload)
    header = _HEADERS[qos << 1 | dup]
    return b"".join((header, remaining_length(size), topic_field, mid_field, properties, payload))


def remaining_length(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_many(
    client: mqtt.Client, messages: Sequence[tuple[str, bytes]], qos: int
) -> list[tuple[int, mqtt.MQTTErrorCode]]:
    """Publish ``(topic, payload)`` pairs at ``qos`` (0 or 1) as paho's ``publish``
    would, one after another; each one's ``(mid, rc)``. rc is ``MQTT_ERR_NO_CONN``
    while disconnected (a QoS 1 message is then sent on reconnect) and
    ``MQTT_ERR_QUEUE_SIZE`` where paho's queue is full (not sent)."""
    c: Any = client  # paho's private state, as its publish uses it
    v5 = c._protocol == mqtt.MQTTv5
    now = mqtt.time_func()
    done: list[tuple[int, mqtt.MQTTErrorCode]] = []
    with c._out_message_mutex:
        for topic, payload in messages:
            topic_field, topic_bytes = _TOPICS.get(topic) or _checked(topic)
            mid = _next_mid(c)
            message = OutgoingMessage(mid, topic_bytes, payload, qos, now)
            if qos and _queue_full(c, mid):
                done.append((mid, mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE))
                continue
            if qos:
                c._out_messages[mid] = message
                if 0 < c._max_inflight_messages <= c._inflight_messages:
                    message.state = mqtt.mqtt_ms_queued  # sent as PUBACKs free the window
                    done.append((mid, mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS))
                    continue
                c._inflight_messages += 1
                message.state = mqtt.mqtt_ms_wait_for_puback
            rc = _queue(c, message, topic_field, v5)
            if qos and rc == mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN:
                c._inflight_messages -= 1  # re-sent from _out_messages on reconnect
                message.state = mqtt.mqtt_ms_publish
            message.info.rc = rc
            done.append((mid, rc))
    return done


def _queue_full(c: Any, mid: int) -> bool:
    """paho's refusal: its id still in use, or as many messages kept as it may keep."""
    return mid in c._out_messages or 0 < c._max_queued_messages <= len(c._out_messages)


def _checked(topic: str) -> tuple[bytes, bytes]:
    """The topic's field and UTF-8, once paho's check has passed (ValueError if not)."""
    encoded = topic.encode()
    mqtt.Client._raise_for_invalid_topic(encoded)
    if len(_TOPICS) >= TOPIC_CACHE:
        _TOPICS.clear()  # the busy topics come back within a tick or two
    laid_out = _TOPICS[topic] = (_U16.pack(len(encoded)) + encoded, encoded)
    return laid_out


def _next_mid(c: Any) -> int:
    """paho's ``_mid_generate``: 1 to 65,535, then 1 again."""
    with c._mid_generate_mutex:
        c._last_mid = c._last_mid % 65535 + 1
        mid: int = c._last_mid
    return mid


def _queue(c: Any, message: OutgoingMessage, topic_field: bytes, v5: bool) -> mqtt.MQTTErrorCode:
    """paho's ``_send_publish`` for this message, without its debug logging."""
    if c._sock is None:
        return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
    packet = _packet(topic_field, message.payload, message.mid, message.qos, v5, False)
    rc: mqtt.MQTTErrorCode = c._packet_queue(
        mqtt.PUBLISH, packet, message.mid, message.qos, message.info
    )
    return rc
