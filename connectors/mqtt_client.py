"""One place that turns connection settings into a connected paho client.

Both the source (subscriber) and the sink (publisher) use it, each with its own
connection: the subscriber's network thread may block on a full queue
(backpressure), which must never stall the publisher's acknowledgements.

paho errors are translated here: a broker that cannot be reached at start is
logged and retried with exponential backoff (paho's own reconnect loop); a
broker that refuses our credentials or certificate is a user mistake and ends
in ``ConfigError`` with the fix.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from connectors.mqtt_publish import publish_packet
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SESSION_EXPIRY = 7 * 24 * 3600  # seconds the broker keeps our session (and queue) while we are away
RECEIVE_MAXIMUM = 65535  # QoS 1 messages we accept un-acknowledged (MQTT 5)
INFLIGHT = 1000  # QoS 1 messages we send before waiting for PUBACKs (or the broker's maximum)
_REFUSED_CREDENTIALS = {"Bad user name or password", "Not authorized", "Not authorised"}


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to connect. ``password`` is kept out of repr."""

    host: str
    port: int
    client_id: str
    protocol: str = "5"  # "5" or "3.1.1"
    keepalive: float = 30.0
    username: str = ""
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    persistent: bool = True  # keep the session (subscriptions, queued QoS 1) across restarts
    password: str | None = None

    def __repr__(self) -> str:
        secret = "***" if self.password else None
        return (
            f"Connection(host={self.host!r}, port={self.port}, client_id={self.client_id!r}, "
            f"protocol={self.protocol!r}, username={self.username!r}, tls={self.tls}, "
            f"password={secret!r})"
        )

    @property
    def url(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


class Session:
    """A paho client with logging, backoff and a 'connected' event.

    ``on_connected`` runs on every (re)connection, e.g. to subscribe.
    """

    def __init__(self, connection: Connection, manual_ack: bool = False) -> None:
        self.connection = connection
        self.connected = threading.Event()
        self.refused: str | None = None  # why the broker refused us, if it did
        self.on_connected: list[Any] = []
        self._answered = threading.Event()  # the first CONNECT got a CONNACK, or a hang-up
        self._hung_up = False  # the broker closed the connection before answering
        self.client = _client(connection, manual_ack)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail

    def start(self, wait: float = 10.0, cancel: threading.Event | None = None) -> None:
        """Connect, or keep trying in the background if the broker is unreachable.

        Raises ConfigError when the broker refuses our credentials or certificate.
        Waits at most ``wait`` seconds for the broker's answer, less if ``cancel`` is set.
        """
        c = self.connection
        try:
            self.client.connect(c.host, c.port, int(c.keepalive), **_connect_options(c))
        except ssl.SSLError as exc:
            raise ConfigError(_tls_failure(c.url, exc)) from exc
        except OSError as exc:
            log.warning("cannot reach broker %s (%s); retrying with backoff", c.url, _why(exc))
            self.client.connect_async(c.host, c.port, int(c.keepalive), **_connect_options(c))
            self.client.loop_start()
            return
        self.client.loop_start()
        self._await_answer(wait, cancel)
        self._raise_if_refused()

    def _await_answer(self, wait: float, cancel: threading.Event | None) -> None:
        deadline = time.monotonic() + wait
        while not self._answered.wait(0.1):
            if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                return

    def _raise_if_refused(self) -> None:
        c = self.connection
        if self.refused is not None:
            self.stop()
            msg = f"mqtt: broker {c.url} refused the connection: {self.refused}; "
            msg += "check mqtt.username and the password (mqtt.password_file or "
            msg += "SENSORCAST_MQTT_PASSWORD)"
            raise ConfigError(msg)
        if self._hung_up and c.tls:
            self.stop()
            msg = f"mqtt: broker {c.url} closed the TLS connection before answering: it may "
            msg += "require a client certificate signed by its CA; check mqtt.tls_cert, "
            msg += "mqtt.tls_key and mqtt.tls_ca"
            raise ConfigError(msg)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its socket and wake-up socket pair only when garbage-collected
        self.client._reset_sockets()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            if str(reason) in _REFUSED_CREDENTIALS:
                self.refused = str(reason)
            if self._answered.is_set():  # at start, the ConfigError says it
                log.error("broker %s refused the connection: %s", self.connection.url, reason)
            self._answered.set()
            return
        self.refused = None
        _no_delay(client)
        theirs = getattr(properties, "ReceiveMaximum", None)  # MQTT 5: the broker's window
        if isinstance(client, BufferedClient):
            client.limit_inflight(min(INFLIGHT, int(theirs)) if theirs else INFLIGHT)
        log.info("connected to %s as %s", self.connection.url, self.connection.client_id)
        for callback in self.on_connected:
            callback(client)
        self.connected.set()
        self._answered.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.connected.clear()
        if not self._answered.is_set():
            self._hung_up = True
            self._answered.set()
            return
        if reason.is_failure and self.refused is None:
            log.warning("lost %s (%s); reconnecting with backoff", self.connection.url, reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("cannot reach broker %s; retrying with backoff", self.connection.url)


def _no_delay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off: paho leaves it on, and small packets (a PUBACK, a
    forecast) then wait for the peer's delayed ACK, up to 40 ms each on Linux."""
    sock: Any = client.socket()
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, message id
PUBACK = 0x40
PUBLISH = 0x30
RETAIN, DUP = 0x01, 0x08  # PUBLISH header flags
Publish = tuple[str | None, bytes, int, int]  # topic (None: not UTF-8), payload, mid, qos
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


@functools.cache
def _reason_code(value: int) -> ReasonCode:
    return ReasonCode(PacketTypes.PUBACK, identifier=value)


def _puback_reason(buf: bytearray, start: int, end: int) -> int | None:
    """The reason code of the whole PUBACK ``buf[start:end]`` if it carries no
    properties (2 bytes: success; 3: a reason, e.g. 0x10 "no matching subscribers";
    4: a reason and an empty property list), else None (paho reads it)."""
    size = end - start - 2  # the remaining length (one byte: it is short)
    if size == 2:
        return 0
    if size == 3 or (size == 4 and buf[start + 5] == 0):
        return buf[start + 4]
    return None


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket 64 KiB at a time.

    paho 2.x reads every packet with three or more ``recv`` calls (one byte of
    header, the length byte by byte, then the body) and handles one packet per
    ``select``: at a few thousand messages a second the subscriber spends its
    time in system calls. Here ``_sock_recv`` serves those small reads from a
    buffer filled by large reads, ``loop_read`` goes on through every packet
    already buffered, and ``_loop`` never sleeps while bytes wait in the buffer.
    Only these private hooks of paho 2.x are replaced: ``_sock_recv``,
    ``loop_read`` and ``_loop`` for reading, ``_packet_queue`` so that ``batch``
    can queue many publishes with one wake-up of the network loop; ``ack_many``
    queues many PUBACKs as one write, and ``_packet_write`` joins queued QoS 1
    publishes and PUBACKs into one ``send``. ``write_queued`` sends them from the
    calling thread where the connection allows (a lock keeps one writer at a time),
    so the loop is woken only for what the socket did not take. Everything else
    (protocol, reconnects) is paho's own.

    With ``on_publishes`` set, QoS 0 and 1 PUBLISH packets that lie whole in the
    buffer are parsed here and handed over as one list per read, as
    ``(topic, payload, mid, qos)``: paho's path builds a message object, parses
    MQTT 5 properties and takes a callback lock per message, most of what a
    subscriber spends. PUBACKs without properties are handled here a
    read at a time too (``_published``), with paho's own bookkeeping. Any other
    packet (and a PUBLISH cut by the end of a read, a QoS 2 one, or one using a
    topic alias) goes to paho, in order, and reaches ``on_message`` as usual.
    """

    MAX_PACKETS_PER_READ = 2000  # then let the loop write (acks, pings) again
    MAX_WRITE = 65536  # bytes of queued packets joined into one send

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rbuf_sock: Any = None  # the socket the buffered bytes came from
        self._batching = False  # queue packets without waking the network loop each time
        # one writer of the socket at a time, and none while it is replaced (reentrant:
        # the network loop writes from inside its own handlers)
        self._write_lock = threading.RLock()
        self._unwoken = False  # packets queued in a batch that the loop was not told of
        self.on_publishes: Callable[[list[Publish]], None] | None = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publish many messages, waking the network loop once at the end: paho writes a
        byte to its wake-up socket pair per queued packet, a system call per message."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            self.wake()

    def limit_inflight(self, window: int) -> None:
        """Send at most ``window`` unacknowledged QoS 1 messages on this connection.

        For the broker's Receive Maximum (MQTT 5; mosquitto's default is 20), set from
        on_connect, before paho resends anything. paho's own setter refuses any change
        once connected (raising in its network thread, which then dies), for fear of a
        switch between 0 (no limit) and a limit; both windows here are positive.
        """
        self._max_inflight_messages = max(1, window)

    def wake(self) -> None:
        """Tell the network loop about packets queued in a batch (e.g. before waiting)."""
        if self._unwoken and self._sockpairW is not None:
            self._unwoken = False
            with contextlib.suppress(BlockingIOError, OSError):
                self._sockpairW.send(b"0")

    def write_queued(self) -> None:
        """Send the queued packets from the calling thread, and wake the network loop
        only for what the socket did not take (or on any trouble, which the loop handles).

        Waking the loop to write costs a thread switch and two hand-overs of the
        interpreter lock, and under load the loop waits for the lock while the caller
        goes on. Only for packets whose writing calls back nothing (QoS 1 publishes,
        PUBACKs; a QoS 0 publish calls ``on_publish`` as it is written, so its sender
        wakes the loop instead), and only on plain TCP: an SSL connection must not be
        written by one thread while another reads it.
        """
        if (
            self._unwoken
            and self._transport == "tcp"
            and not self._ssl
            and self._sock is not None
            and self._write_lock.acquire(blocking=False)
        ):
            try:
                rc = self._write_queue()
            finally:
                self._write_lock.release()
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and not self._out_packet:
                self._unwoken = False
                return
        self.wake()

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> mqtt.MQTTErrorCode:
        if not (self._batching and self._thread is not None):
            return super()._packet_queue(command, packet, mid, qos, info)
        self._append_packet(command, packet, mid, qos, info)
        self._unwoken = True
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _append_packet(
        self, command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any = None
    ) -> None:
        """paho's own queue entry, without the wake-up; the loop thread writes it once woken
        (or on its next pass, if it queued it itself)."""
        entry: Any = {"command": command, "mid": mid, "qos": qos, "pos": 0}
        entry.update(to_process=len(packet), packet=packet, info=info)
        self._out_packet.append(entry)

    def _update_inflight(self) -> mqtt.MQTTErrorCode:
        """paho's: send the queued messages that the in-flight window now admits, in
        order. paho runs it after PUBACKs, in its loop thread, and sends each message
        through ``_send_publish`` (debug logging) and ``_packet_queue`` (a wake-up
        write per packet, to its own loop). Here a QoS 1 message's packet is built by
        ``publish_packet`` and queued as it is; anything else takes paho's path."""
        v5 = self._protocol == mqtt.MQTTv5
        for m in self._out_messages.values():
            if self._inflight_messages >= self._max_inflight_messages:
                break
            if m.qos == 0 or m.state != mqtt.mqtt_ms_queued:
                continue
            if m.qos != 1 or m.retain or m.properties is not None:
                return super()._update_inflight()  # goes on from here: the rest is queued
            self._inflight_messages += 1
            m.state = mqtt.mqtt_ms_wait_for_puback
            if self._sock is None:  # as paho's _send_publish: re-sent after a reconnect
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            packet = publish_packet(m._topic, m.payload, m.mid, 1, v5, m.dup)
            self._append_packet(PUBLISH, packet, m.mid, 1)  # the loop writes it next pass
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _forget_old_bytes(self) -> None:
        if self._rbuf_sock is not self._sock:  # a new connection: old bytes are void
            self._rbuf.clear()
            self._rbuf_sock = self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        self._forget_old_bytes()
        if not self._rbuf:
            self._rbuf += super()._sock_recv(65536)  # raises BlockingIOError when empty
            if not self._rbuf:
                return b""  # the peer closed the connection
        data = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return data

    def _packet_write(self) -> mqtt.MQTTErrorCode:
        with self._write_lock:
            return self._write_queue()

    def reconnect(self) -> mqtt.MQTTErrorCode:
        # paho empties the write queue for the new connection: a write that failed on
        # the old one must have put its packet back first, or it would go out before
        # the new CONNECT
        with self._write_lock:
            return super().reconnect()

    def _write_queue(self) -> mqtt.MQTTErrorCode:
        self._merge_queued_packets()
        return super()._packet_write()

    def _merge_queued_packets(self) -> None:
        """Join the QoS 1 PUBLISH and PUBACK packets at the head of paho's write queue
        into entries of about ``MAX_WRITE`` bytes, so that a tick's forecasts go out
        in a few ``send`` calls instead of one each. Safe for those two kinds: paho
        does nothing when one is written (QoS 1 delivery is tracked in
        ``_out_messages``, which a reconnect re-sends from); anything else stops
        the merge and goes alone."""
        queue = self._out_packet
        merged: list[Any] = []
        for _ in range(len(queue)):  # not past what is queued now (publishers go on adding)
            if not _mergeable(queue[0]):
                break
            merged.append(queue.popleft())
        if len(merged) < 2:
            queue.extendleft(merged)
            return
        chunks: list[bytes] = []
        parts: list[bytes] = []
        size = 0
        for entry in merged:
            parts.append(entry["packet"])
            size += len(entry["packet"])
            if size >= self.MAX_WRITE:
                chunks.append(b"".join(parts))
                parts, size = [], 0
        if parts:
            chunks.append(b"".join(parts))
        for chunk in reversed(chunks):
            batch: Any = {"command": PUBACK, "mid": 0, "qos": 1, "pos": 0, "info": None}
            batch.update(to_process=len(chunk), packet=chunk)
            queue.appendleft(batch)

    def ack_many(self, acks: Sequence[tuple[int, int]]) -> None:
        """Acknowledge ``(mid, qos)`` messages with one queued write: paho's ``ack``
        queues a packet and wakes the network loop (a system call) per message."""
        if not self._manual_ack:
            return
        pubacks = b"".join(_PUBACK.pack(PUBACK, 2, mid) for mid, qos in acks if qos == 1)
        for mid, qos in acks:
            if qos == 2:
                self.ack(mid, qos)
        if pubacks:
            with self.batch():  # without a network loop of paho's, its own path writes them
                self._packet_queue(PUBACK, pubacks, 0, 1)
                self.write_queued()

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        # select() cannot see bytes already in our buffer: handle them first, and then do
        # not sleep in select while any are left (a burst over MAX_PACKETS_PER_READ), or
        # they would wait for the next packet from the broker, perhaps a keepalive away.
        if self._sock is not None and self._buffered_work():
            rc = self.loop_read()
            if rc > 0:
                return rc
        return super()._loop(0.0 if self._buffered_work() else timeout)

    def _buffered_work(self) -> bool:
        """Bytes wait that can be handled without reading more: a whole packet, or
        the rest of the one paho is in the middle of."""
        if not self._rbuf:
            return False
        return self._in_packet["command"] != 0 or packet_end(self._rbuf, 0) > 0

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        self._forget_old_bytes()
        for _ in range(self.MAX_PACKETS_PER_READ):
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            if self._in_packet["command"] == 0:
                if not packet_end(self._rbuf, 0):
                    more = self._read_more()
                    if more is None:
                        return self._loop_rc_handle(mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)
                    if not more:
                        break  # nothing to read now; a cut packet waits in the buffer
                if self._take_whole_packets():
                    continue
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN or not self._rbuf:
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _read_more(self) -> bool | None:
        """One large read into the buffer. False when nothing is there to read; True
        when bytes came, or the peer closed (paho's next read then sees the end);
        None when the connection failed (reset, say)."""
        try:
            data = super()._sock_recv(65536)
        except BlockingIOError:
            return False
        except OSError as exc:
            log.debug("read from %s failed: %s", self._host, exc)
            return None
        self._rbuf += data
        return True

    def _take_whole_packets(self) -> int:
        """Handle the run of whole PUBLISH (with ``on_publishes``) and plain PUBACK
        packets at the head of the buffer in one go; stop at any other packet."""
        buf, v5 = self._rbuf, self._protocol == mqtt.MQTTv5
        publishes: list[Publish] = []
        acked: list[tuple[int, int]] = []  # (mid, reason code)
        start = 0
        while end := packet_end(buf, start):
            if buf[start] == PUBACK and (reason := _puback_reason(buf, start, end)) is not None:
                acked.append((buf[start + 2] << 8 | buf[start + 3], reason))
            elif self.on_publishes is not None and (publish := _parse_publish(buf, start, end, v5)):
                publishes.append(publish)
            else:
                break
            start = end
        if not start:
            return 0
        del buf[:start]
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        if publishes:
            assert self.on_publishes is not None
            self.on_publishes(publishes)
        if acked:
            self._published(acked)
        return len(publishes) + len(acked)

    def _published(self, acked: list[tuple[int, int]]) -> None:
        """paho's PUBACK handling for many messages at once: ``on_publish`` per message,
        then one pass over the queue to send what the freed window lets out (paho
        makes that pass, from the start of its queue, after every PUBACK)."""
        on_publish: Any = self.on_publish  # the VERSION2 signature (see _client)
        with self._out_message_mutex:
            for mid, reason in acked:
                message = self._out_messages.pop(mid, None)
                if message is None:
                    continue  # not ours (a late duplicate): paho ignores it too
                if on_publish is not None:
                    on_publish(self, self._userdata, mid, _reason_code(reason), _NO_PROPERTIES)
                message.info._set_as_published()
                if message.qos > 0:
                    self._inflight_messages -= 1
            if self._max_inflight_messages > 0:
                rc = self._update_inflight()
                if rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._loop_rc_handle(rc)


def _mergeable(entry: Any) -> bool:
    """A queued packet that is whole (not partly written) and a QoS 1 PUBLISH or a PUBACK."""
    command = entry["command"] & 0xF0
    if entry["pos"]:
        return False
    return command == PUBACK or (command == PUBLISH and entry["qos"] == 1)


def varint(buf: bytes | bytearray, i: int, end: int) -> tuple[int, int] | None:
    """MQTT's variable byte integer at ``buf[i:end]``: (value, index after it), or None
    when it is cut short by ``end`` or longer than the 4 bytes allowed."""
    value = 0
    for k in range(min(4, end - i)):
        byte = buf[i + k]
        value |= (byte & 0x7F) << (7 * k)
        if byte < 0x80:
            return value, i + k + 1
    return None


def packet_end(buf: bytes | bytearray, start: int) -> int:
    """The end of the packet at ``buf[start:]`` if all of it is buffered, else 0 (cut
    short, or a malformed length, which paho's own read then reports)."""
    header = varint(buf, start + 1, len(buf))  # the remaining length
    if header is None:
        return 0
    length, body = header
    return body + length if body + length <= len(buf) else 0


def _parse_publish(buf: bytearray, start: int, end: int, v5: bool) -> Publish | None:
    """``(topic, payload, mid, qos)`` of the whole packet ``buf[start:end]`` if it is a
    PUBLISH this fast path takes (QoS 0 or 1, a topic name, not retained, not a
    redelivery), else None. Retained and redelivered (DUP) messages take paho's path,
    which tells the source so."""
    header = buf[start]
    qos = (header >> 1) & 3
    if header >> 4 != PUBLISH >> 4 or qos > 1 or header & (RETAIN | DUP):
        return None
    _, i = varint(buf, start + 1, end) or (0, end)  # after the remaining length
    if i + 2 > end:
        return None
    topic_end = i + 2 + (buf[i] << 8 | buf[i + 1])
    if topic_end == i + 2 or topic_end > end:  # empty (a topic alias) or malformed
        return None
    mid = 0
    body = topic_end
    if qos:
        mid = buf[body] << 8 | buf[body + 1] if body + 2 <= end else 0
        body += 2
        if body > end or mid == 0:
            return None
    if v5:  # skip the properties: a length (1-4 bytes) and that many bytes
        properties = varint(buf, body, end)
        if properties is None:
            return None
        length, body = properties
        body += length
        if body > end:
            return None
    try:
        topic: str | None = bytes(buf[i + 2 : topic_end]).decode()
    except UnicodeDecodeError:
        topic = None
    return topic, bytes(buf[body:end]), mid, qos


def _client(c: Connection, manual_ack: bool) -> BufferedClient:
    v5 = c.protocol == "5"
    client = BufferedClient(
        CallbackAPIVersion.VERSION2,
        client_id=c.client_id,
        clean_session=None if v5 else not c.persistent,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(min_delay=1, max_delay=60)
    client.max_queued_messages_set(0)  # our own sink bounds what it hands paho
    # paho scans its in-flight messages on every PUBACK: a modest window is faster
    client.max_inflight_messages_set(INFLIGHT)
    if c.username:
        client.username_pw_set(c.username, c.password)
    if c.tls:
        _set_tls(client, c)
    return client


@dataclass(frozen=True, slots=True)
class TlsNames:
    """What the user calls the broker URL and the TLS files: settings or flags."""

    broker: str = "mqtt.broker"
    ca: str = "mqtt.tls_ca"
    cert: str = "mqtt.tls_cert"
    key: str = "mqtt.tls_key"

    @property
    def files(self) -> str:
        return f"{self.ca}, {self.cert} and {self.key}"


def _tls_failure(url: str, exc: ssl.SSLError, names: TlsNames = TlsNames()) -> str:
    """What went wrong in the handshake, and the setting that fixes it: a server
    certificate for another name (the broker URL's host), an expired or unknown one (the
    CA, or the broker's certificate), or ours refused."""
    verify = getattr(exc, "verify_message", "") or ""
    why = verify or exc.reason or str(exc)
    if "hostname mismatch" in verify.lower() or "ip address mismatch" in verify.lower():
        fix = f"connect by a name the broker's certificate holds ({names.broker})"
    elif "expired" in verify.lower():
        fix = "renew the broker's certificate"
    else:
        fix = f"check {names.files}"
    return f"{names.broker}: TLS with {url} failed ({why}); {fix}"


def _set_tls(client: mqtt.Client, c: Connection, names: TlsNames = TlsNames()) -> None:
    try:
        client.tls_set(
            ca_certs=c.tls_ca or None,
            certfile=c.tls_cert or None,
            keyfile=c.tls_key or None,
            keyfile_password="",  # never OpenSSL's prompt on the terminal (settings check it)
        )
    except (OSError, ssl.SSLError) as exc:
        msg = f"{_failing_tls_files(c, names)}: cannot load ({exc}); check the path and format"
        raise ConfigError(msg) from exc


def _failing_tls_files(c: Connection, names: TlsNames) -> str:
    """Which setting (and file) paho could not load: each is loaded alone to tell."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if c.tls_ca:
        try:
            context.load_verify_locations(cafile=c.tls_ca)
        except (OSError, ssl.SSLError):
            return f"{names.ca} ({c.tls_ca})"
    if c.tls_cert:
        try:
            context.load_cert_chain(c.tls_cert, c.tls_key or None, password="")
        except (OSError, ssl.SSLError):
            return f"{names.cert} and {names.key} ({c.tls_cert}, {c.tls_key})"
    return names.files


def _connect_options(c: Connection) -> dict[str, Any]:
    if c.protocol != "5":
        return {}
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_EXPIRY if c.persistent else 0
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    return {"clean_start": not c.persistent, "properties": properties}


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


CONNECT_SECONDS = 10.0  # a plain client's wait for the broker's CONNACK


def broker_address(url: str, flag: str, tls: bool = False) -> tuple[str, int, str]:
    """``(host, port, user)`` of an ``mqtt://[user@]host[:port]`` URL (``mqtts://`` too
    when ``tls``, port 8883 by default), by the daemon's own rules (no password in it,
    no port 0); ConfigError naming ``flag``.

    >>> broker_address("mqtt://127.0.0.1:1884", "--to"), broker_address("mqtt://ann@b", "--to")
    (('127.0.0.1', 1884, ''), ('b', 1883, 'ann'))
    >>> broker_address("mqtts://b", "--to", tls=True)
    ('b', 8883, '')
    """
    from pipeline.settings_schema import parse_broker, redact_url

    try:
        parts = parse_broker(url)
    except ValueError as exc:
        msg = f"{flag}: {redact_url(url)!r} {exc}"
        raise ConfigError(msg) from None
    if parts.scheme != "mqtt" and not tls:
        msg = f"{flag}: {url!r}: TLS (mqtts://) is the daemon's; {flag} connects to a plain "
        msg += "mqtt:// listener"
        raise ConfigError(msg)
    default_port = 8883 if parts.scheme == "mqtts" else 1883
    return parts.host, parts.port or default_port, parts.username


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A publisher's TLS files, any of them empty when not given."""

    ca: str = ""
    cert: str = ""
    key: str = ""


def publisher_client(
    url: str, client_id: str, flag: str = "--to", tls: TlsFiles | None = None
) -> mqtt.Client:
    """A connected, looping paho client for ``mqtt[s]://[user@]host:port`` (simulators,
    the demo), once the broker accepted it; the password, if the broker wants one, comes
    from ``SENSORCAST_MQTT_PASSWORD``. TLS for ``mqtts://`` or when ``tls`` names a file
    (the system's CAs unless it names one). Errors name ``flag``, the option that gave
    the URL, and the ``--tls-*`` flags."""
    from pipeline.settings_schema import PASSWORD_ENV

    host, port, user = broker_address(url, flag, tls=True)
    files = tls or TlsFiles()
    secure = url.startswith("mqtts://") or any((files.ca, files.cert, files.key))
    names = TlsNames(flag, "--tls-ca", "--tls-cert", "--tls-key")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    if user:
        client.username_pw_set(user, os.environ.get(PASSWORD_ENV) or None)
    if secure:
        c = Connection(host, port, client_id, tls=True, tls_ca=files.ca, tls_cert=files.cert,
                       tls_key=files.key)  # fmt: skip
        _set_tls(client, c, names)
    answers: list[ReasonCode | None] = []  # None: the broker hung up before answering
    answered = threading.Event()

    def on_connect(c: object, userdata: object, flags: object, code: Any, props: object) -> None:
        answers.append(code)
        answered.set()

    def on_disconnect(c: object, userdata: object, flags: object, code: Any, p: object) -> None:
        answers.append(None)
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port)
    except ssl.SSLError as exc:
        raise ConfigError(_tls_failure(url, exc, names)) from exc
    except OSError as exc:
        msg = f"{flag}: cannot reach broker {url} ({_why(exc)}); is it running?"
        raise ConfigError(msg) from exc
    client.loop_start()
    if not answered.wait(CONNECT_SECONDS):
        msg = f"{flag}: {url} did not answer as an MQTT broker within {CONNECT_SECONDS:g} s"
    elif answers[0] is None:
        msg = f"{flag}: broker {url} closed the connection before answering"
        if secure:
            msg += ": it may require a client certificate signed by its CA; give --tls-cert "
            msg += "and --tls-key (and --tls-ca for its CA)"
    elif answers[0].is_failure:
        msg = f"{flag}: broker {url} refused the connection ({answers[0]}); give the user as "
        msg += f"user@ in the URL and the password in {PASSWORD_ENV}"
    else:
        client.on_disconnect = None
        return client
    client.disconnect()
    client.loop_stop()
    raise ConfigError(msg)
