"""Readings from MQTT: subscribe, enqueue on the network thread, decode on the engine's.

The network thread only puts ``(topic, payload, received, mid, qos, retained)`` on a
bounded inbox, a whole socket read's messages at a time. When the inbox is full
it waits (counting the messages that waited), which stops the client reading
the socket: the broker then holds the messages, which is backpressure rather
than loss. Decoding, topic matching and validation happen in ``poll`` on the
engine thread.

Messages are acknowledged manually, only once ``commit`` is called, after the
pipeline has applied them: a daemon that dies before that gets them again from
its persistent session.

A reading without a time of its own takes its message's receive time, so a copy
the broker sends again (DUP, same packet id: its acknowledgement was lost) must get
the first copy's receive time back, or the engine would take it for a new reading.
While the process lives the source remembers every QoS 1 message's receipt; across
a crash the journal keeps the receipts of such messages (``ReadingBatch.receipts``)
and the restarted daemon hands them back through ``remember_journaled``.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from connectors.mqtt_client import Connection, Publish, Session
from connectors.payloads import Decoder, PayloadError
from connectors.topics import TopicTemplate, input_level
from pipeline.clock import Clock, SystemClock
from pipeline.types import ReadingBatch, Reason, Rejection, stream_key_problem

log = logging.getLogger(__name__)

PARTITION = "mqtt"
MAX_AHEAD = 86_400.0  # seconds a reading's time may be ahead of its arrival
RECEIVE_TICK = 1e-6  # seconds between the receive times of messages read together
# A broker redelivers (DUP) with the packet id of the first delivery, and the ids it
# hands out count up, so within this many messages an id names one message: at most
# the 65,535 ids less the messages that can be in flight at once.
REDELIVERY_WINDOW = 32_768
MAX_PACKET_ID = 65_535
# A retained copy is sent again on every subscription: without its own time it would be
# stamped with each arrival and applied again after every restart or reconnect.
RETAINED_WITHOUT_TIME = (
    "a retained message without a timestamp: a copy of an earlier reading of unknown time, "
    "sent again on every subscription; publish it with a time field, or without retain"
)
_Item = tuple[str | None, bytes, float, int, int, bool]  # topic, payload, received, mid, qos,
# and whether the broker sent it as a retained message (a copy, on subscribing)


class Inbox:
    """A bounded FIFO of messages, put and taken a batch at a time under one lock
    (``queue.Queue`` takes its lock and notifies per message)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[_Item] = deque()
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(
        self, items: Sequence[_Item], stop: Callable[[], bool], waiting: Callable[[int], None]
    ) -> None:
        """Append ``items`` in order as room allows, waiting for the rest (first telling
        ``waiting`` how many must wait); gives up when ``stop()``."""
        waited = False
        with self._changed:
            i = 0
            while i < len(items):
                room = self.capacity - len(self._items)
                if room <= 0:
                    if stop():
                        break
                    if not waited:
                        waiting(len(items) - i)
                        waited = True
                    self._changed.wait(0.25)
                    continue
                self._items.extend(items[i : i + room])
                i += room
                self._changed.notify_all()

    def take(self, max_items: int, timeout: float) -> list[_Item]:
        """Up to ``max_items`` from the front, waiting at most ``timeout`` for the first."""
        with self._changed:
            if not self._items and timeout > 0:
                self._changed.wait_for(lambda: bool(self._items), timeout)
            n = min(max_items, len(self._items))
            taken = [self._items.popleft() for _ in range(n)]
            if taken:
                self._changed.notify_all()  # room for a waiting network thread
        return taken

    def untake(self, items: Sequence[_Item]) -> None:
        """Put ``items`` (the end of what ``take`` gave) back at the front, in order; the
        queue may hold that many more than its capacity until they are taken again."""
        with self._changed:
            self._items.extendleft(reversed(items))


@dataclass
class SourceCounters:
    messages: int = 0  # taken off the queue
    accepted: int = 0  # messages that yielded a reading (or nothing to reject)
    rejected: int = 0  # messages that yielded no reading, only rejections
    queue_full: int = 0  # messages that had to wait for room in the queue


@dataclass
class _Decoded:
    """Readings and rejections of one poll, built up message by message."""

    keys: dict[str, int] = field(default_factory=dict)
    codes: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    receipts: list[tuple[int, int, float]] = field(default_factory=list)

    def add(self, key: str, timestamp: float, value: float, seq: int, received: float) -> None:
        self.codes.append(self.keys.setdefault(key, len(self.keys)))
        self.times.append(timestamp)
        self.values.append(value)
        self.seqs.append(seq)
        self.received.append(received)

    def batch(self) -> ReadingBatch:
        return ReadingBatch(
            streams=tuple(self.keys),
            stream_index=np.asarray(self.codes, np.int32),
            timestamp=np.asarray(self.times, np.float64),
            value=np.asarray(self.values, np.float64),
            seq=np.asarray(self.seqs, np.int64),
            partition=PARTITION,
            rejections=tuple(self.rejections),
            received=np.asarray(self.received, np.float64),
            receipts=tuple(self.receipts),
        )


def receipt_digest(topic: str | None, payload: bytes) -> int:
    """A checksum of a message that stays the same across processes (``hash`` does
    not): with its packet id, what tells a journaled message's redelivery apart."""
    return zlib.crc32(payload, zlib.crc32(b"" if topic is None else topic.encode()))


class MqttSource:
    """Subscribes to ``subscribe`` filters; topics become stream keys through ``template``."""

    def __init__(
        self,
        connection: Connection,
        subscribe: tuple[str, ...],
        template: TopicTemplate,
        decoder: Decoder,
        *,
        qos: int = 1,
        max_payload: int = 65_536,
        queue_size: int = 100_000,
        clock: Clock | None = None,
    ) -> None:
        self.connection = connection
        self.subscribe = subscribe
        self.template = template
        self.decoder = decoder
        self.qos = qos
        self.max_payload = max_payload
        self.queue_size = queue_size
        self.clock = clock or SystemClock()
        self.counters = SourceCounters()
        self._inbox = Inbox(queue_size)
        self._paused = False
        self._seq = 0
        self._last_received = -math.inf  # network thread only
        # network thread only, for ``_redelivered_time``: by packet id, the last QoS 1
        # message's (hash of topic and payload, receive time, number among the messages)
        self._first_receipts: list[tuple[int, float, int] | None] = [None] * (MAX_PACKET_ID + 1)
        self._receipts = 0
        # by packet id, (receipt_digest, receive time) of messages a process before this
        # one applied and journaled: see ``remember_journaled``
        self._journaled: dict[int, tuple[int, float]] = {}
        self._unacked: list[tuple[int, int]] = []
        self.subscribed = threading.Event()  # the broker granted this connection's filters
        self._unanswered: set[int] = set()  # SUBSCRIBE packet ids without a SUBACK yet
        self.session = Session(connection, manual_ack=True)
        self.session.on_connected.append(self._subscribe)
        self.session.client.on_subscribe = self._on_subscribe
        self.session.client.on_message = self._on_message
        self.session.client.on_publishes = self._on_publishes

    # -- network thread ----------------------------------------------------------------

    def _subscribe(self, client: object) -> None:
        self.subscribed.clear()
        self._unanswered = set()
        for topic_filter in self.subscribe:
            _, mid = self.session.client.subscribe(topic_filter, qos=self.qos)
            if mid is not None:  # None: the connection went meanwhile; the next one retries
                self._unanswered.add(mid)
        if not self.subscribe:
            self.subscribed.set()  # nothing to wait for

    def _on_subscribe(
        self, client: object, userdata: object, mid: int, reasons: Any, properties: object
    ) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            log.error("broker %s refused a subscription of %s: %s",
                      self.connection.url, self.subscribe, ", ".join(refused))  # fmt: skip
            return
        self._unanswered.discard(mid)
        if not self._unanswered:
            self.subscribed.set()

    def _on_publishes(self, publishes: list[Publish]) -> None:
        """The client's fast path: every whole PUBLISH of one socket read (never a
        redelivery: the client leaves those to paho's path)."""
        stamps = self._receive_times(len(publishes))
        self._remember_all(publishes, stamps)
        self._enqueue([(topic, payload, received, mid, qos, False)
                       for (topic, payload, mid, qos), received
                       in zip(publishes, stamps, strict=True)])  # fmt: skip

    def _receive_times(self, count: int) -> list[float]:
        """A receive time for each of ``count`` messages just read, each later than the
        one before: a reading without a timestamp is stamped with it, and two such
        readings of a stream in one socket read (a backlog after an outage) would
        otherwise share a time and the second be dropped as a duplicate. One
        microsecond apart: a clock could only run ahead at a million messages a second."""
        first = max(self.clock.now(), self._last_received + RECEIVE_TICK)
        self._last_received = first + (count - 1) * RECEIVE_TICK
        return [first + k * RECEIVE_TICK for k in range(count)]

    def _on_message(self, client: object, userdata: object, message: object) -> None:
        """paho's path: a PUBLISH the fast path left to it (cut by a read, QoS 2, ...)."""
        try:
            topic: str | None = message.topic  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            topic = None
        m: Any = message
        received = self._redelivered_time(m.mid, topic, m.payload) if m.dup and m.qos else None
        if received is None:
            received = self._receive_times(1)[0]
        self._remember_all([(topic, m.payload, m.mid, m.qos)], [received])
        self._enqueue([(topic, m.payload, received, m.mid, m.qos, bool(m.retain))])

    def _remember_all(self, publishes: list[Publish], stamps: list[float]) -> None:
        """Each QoS 1 message's receipt under its packet id, for ``_redelivered_time``."""
        n = self._receipts
        table = self._first_receipts
        for (topic, payload, mid, qos), received in zip(publishes, stamps, strict=True):
            if qos:
                table[mid] = (hash((topic, payload)), received, n)
                n += 1
        self._receipts = n

    def _redelivered_time(self, mid: int, topic: str | None, payload: bytes) -> float | None:
        """The receive time of the first delivery of a message the broker sends again
        (its acknowledgement was lost with a connection): a reading without a time of its
        own then gets the time it was applied with, and the engine drops the copy
        (``duplicate``, or ``late`` behind a newer reading) instead of applying it twice.
        None if no copy was taken, by this process or, journaled, by the one before."""
        first = self._first_receipts[mid]
        if first is None:  # not since this process started: perhaps before a restart
            journaled = self._journaled.get(mid)
            if journaled is None or journaled[0] != receipt_digest(topic, payload):
                return None
            return journaled[1]
        if first[0] != hash((topic, payload)):
            return None
        if self._receipts - first[2] >= REDELIVERY_WINDOW:
            return None  # the id may have been handed out again since
        return first[1]

    def _enqueue(self, items: list[_Item]) -> None:
        if self._paused:
            return  # not acknowledged: the broker delivers them again next session
        self._inbox.put(items, lambda: self._paused, self._count_waiting)

    def _count_waiting(self, messages: int) -> None:
        self.counters.queue_full += messages

    # -- engine thread -----------------------------------------------------------------

    def remember_journaled(self, receipts: Sequence[tuple[int, int, float]]) -> None:
        """Before ``start``: the receipts (packet id, ``receipt_digest``, receive time) a
        process before this one journaled, so that the broker's redelivery of one of
        those messages gets its first receive time again (later receipts of an id win)."""
        self._journaled = {mid: (digest, received) for mid, digest, received in receipts}

    def start(self, cancel: threading.Event | None = None) -> None:
        self.session.start(cancel=cancel)

    @property
    def depth(self) -> int:
        return len(self._inbox)

    def poll(self, max_items: int, timeout: float) -> ReadingBatch | None:
        items = self._drain(max_items, timeout)
        if not items:
            return None if self._paused else ReadingBatch.empty(PARTITION)
        decoded = _Decoded()
        for used, (topic, payload, received, mid, qos, retained) in enumerate(items, 1):
            readings, rejections = len(decoded.times), len(decoded.rejections)
            if self._decode(decoded, topic, payload, received, retained) and qos > 0:
                decoded.receipts.append((mid, receipt_digest(topic, payload), received))
            # counted apart, each only ever growing: a scrape reads them from another
            # thread, and messages - rejected could go backwards between the two reads
            if len(decoded.times) == readings and len(decoded.rejections) > rejections:
                self.counters.rejected += 1
            else:
                self.counters.accepted += 1
            if qos > 0:
                self._unacked.append((mid, qos))
            if len(decoded.times) >= max_items:  # batch payloads: count readings, not
                self._inbox.untake(items[used:])  # messages, or one tick could take millions
                items = items[:used]
                break
        self.counters.messages += len(items)
        return decoded.batch()

    def _drain(self, max_items: int, timeout: float) -> list[_Item]:
        return self._inbox.take(max_items, 0 if self._paused else timeout)

    def _decode(
        self, out: _Decoded, topic: str | None, payload: bytes, received: float, retained: bool
    ) -> bool:
        """Add the message's readings and rejections to ``out``; whether a reading took
        the receive time as its time."""
        seq, self._seq = self._seq, self._seq + 1

        def reject(reason: Reason, detail: str) -> bool:
            out.rejections.append(
                Rejection(reason, detail, PARTITION, seq, raw=payload, topic=topic)
            )
            return False

        if topic is None:
            return reject(Reason.BAD_TOPIC, "topic is not valid UTF-8")
        parts = self.template.stream_parts(topic)
        if parts is None:
            return reject(Reason.BAD_TOPIC, f"topic {topic!r} does not match the template")
        if "%" in topic:  # levels escaped by replay --to (or any escape_level writer)
            parts = tuple(map(input_level, parts))
        if len(payload) > self.max_payload:
            return reject(Reason.TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}")
        try:
            readings = self.decoder(payload, received)
        except PayloadError as exc:
            return reject(exc.reason, exc.detail)
        stamped = False
        several = len(readings) > 1  # only then can two readings share the receive time
        untimed: dict[str, int] = {}  # readings of a key that took the receive time
        for reading in readings:
            # a field named "" makes an empty level (refused below), not the topic's stream
            key = "/".join(parts if reading.name is None else (*parts, reading.name))
            problem = stream_key_problem(key)
            if problem:
                reject(Reason.BAD_STREAM, problem)
                continue
            if retained and reading.timestamp is None:
                reject(Reason.BAD_TIMESTAMP, RETAINED_WITHOUT_TIME)
                continue
            when = received if reading.timestamp is None else reading.timestamp
            if when > received + MAX_AHEAD:  # one reading ahead would make all after it late
                ahead = (when - received) / 86_400
                reject(Reason.BAD_TIMESTAMP, f"timestamp {ahead:.1f} days ahead of its arrival; "
                       "check the device's clock")  # fmt: skip
                continue
            if several and reading.timestamp is None:
                untimed[key] = untimed.get(key, 0) + 1
                if untimed[key] > 1:  # the same time again: a duplicate, whatever its value
                    continue
            out.add(key, when, reading.value, seq, received)
            stamped = stamped or reading.timestamp is None
        for key, n in untimed.items():
            if n > 1:  # one dead letter for the lot, not a dropped row per reading
                detail = f"{n} readings of one stream without times in one message; the "
                detail += "first is used: give each its own time (ts) to send a batch"
                out.rejections.append(Rejection(Reason.BAD_TIMESTAMP, detail, PARTITION, seq,
                                                stream=key, count=n - 1, raw=payload,
                                                topic=topic))  # fmt: skip
        return stamped

    def commit(self) -> None:
        """Acknowledge every message polled so far: their effect is in the pipeline."""
        self.session.client.ack_many(self._unacked)
        self._unacked.clear()

    def seek(self, positions: Mapping[str, int]) -> None:
        """Nothing to skip: the broker re-delivers only what was never acknowledged."""

    def pause(self) -> None:
        """Take no more messages; ``poll`` returns what was queued, then None."""
        self._paused = True

    def close(self) -> None:
        self._paused = True
        self.session.stop()
