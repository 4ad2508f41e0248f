"""The bench's MQTT load processes: a publisher and a bare paho subscriber.

Run as ``python -m pipeline.bench_load publish|count ...`` by ``bench_mqtt``, each
in its own process so that neither shares an interpreter lock with what it
measures. Both print one JSON line on stdout when done; times are
``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process of the
machine) so the bench can line them up with its own.

The publisher writes QoS 1 PUBLISH packets straight to a socket: at full speed
they are encoded before the clock starts, so the generator is never the
bottleneck (paho's per-message Python cost would be); paced, each reading
carries its wall-clock send time as ``ts`` (whole milliseconds, rounded down),
so a receiver can tell the latency from the message alone.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from connectors.mqtt_publish import publish_packet, remaining_length

MAX_UNACKED = 30_000  # QoS 1 packets in flight before the publisher waits for PUBACKs
SEND_BLOCK = 2_000  # packets per sendall()


def topic(root: str, k: int, streams: int) -> bytes:
    s = k % streams
    return f"{root}/site-{s % 97}/dev-{s}/temp".encode()


def frame(topic_name: bytes, payload: bytes, mid: int) -> bytes:
    """A QoS 1 PUBLISH packet (MQTT 3.1.1)."""
    return publish_packet(topic_name, payload, mid, 1, v5=False)


def frames(root: str, streams: int, readings: int, t0: float) -> list[bytes]:
    """Readings over ``streams`` interleaved; each stream's time goes up a second per round."""
    return [
        frame(topic(root, k, streams), b'{"value": %d.5, "ts": %d}' % (k % 97, t0 + k // streams),
              k % 65_535 + 1)
        for k in range(readings)
    ]  # fmt: skip


def raw_connect(port: int, client_id: str) -> socket.socket:
    """A raw MQTT 3.1.1 connection (clean session, 60 s keepalive), CONNACK read."""
    sock = socket.create_connection(("127.0.0.1", port))
    ident = client_id.encode()
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(ident)) + ident
    sock.sendall(b"\x10" + remaining_length(len(connect)) + connect)
    sock.recv(4)  # CONNACK
    return sock


class Publisher:
    """A raw MQTT connection that counts PUBACKs on a reader thread."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = raw_connect(port, client_id)
        self.sent = 0
        self.acked = 0
        self._stop = False
        self._reader = threading.Thread(target=self._count_pubacks, daemon=True)
        self._reader.start()

    def _count_pubacks(self) -> None:
        pending = 0
        while not self._stop:
            data = self.sock.recv(65_536)
            if not data:
                return
            pending += len(data)
            self.acked += pending // 4  # PUBACK: 4 bytes
            pending %= 4

    def send(self, packets: Sequence[bytes]) -> None:
        while self.sent - self.acked > MAX_UNACKED:
            time.sleep(0.0005)
        self.sock.sendall(b"".join(packets))
        self.sent += len(packets)

    def wait_acked(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.001)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def publish_fast(args: argparse.Namespace) -> dict[str, Any]:
    packets = frames(args.root, args.streams, args.readings, args.t0)
    publisher = Publisher(args.port, f"bench-pub-{args.t0}")
    started = time.monotonic()
    for i in range(0, len(packets), SEND_BLOCK):
        publisher.send(packets[i : i + SEND_BLOCK])
    publisher.wait_acked()
    done = time.monotonic()
    publisher.close()
    return {"started": started, "acked": done, "readings": len(packets)}


def publish_paced(args: argparse.Namespace) -> dict[str, Any]:
    """``rate`` readings/s for ``seconds``, in 5 ms slices, each stamped with its send time."""
    publisher = Publisher(args.port, f"bench-pace-{time.time_ns()}")
    total = int(args.rate * args.seconds)
    started = time.monotonic()
    k = 0
    while k < total:
        due = min(total, int((time.monotonic() - started) * args.rate) + 1)
        batch = paced_slice(args.root, args.streams, range(k, due), time.time())
        if batch:
            publisher.send(batch)
        k = due
        time.sleep(0.005)
    publisher.wait_acked()
    publisher.close()
    return {"started": started, "readings": total}


def paced_slice(root: str, streams: int, ks: range, now: float) -> list[bytes]:
    """Readings ``ks`` stamped ``now`` (to the ms), each a microsecond after the one before:
    a slice that ran late can hold more readings than there are streams, and a stream's
    second reading at the same time would be a duplicate."""
    stamp = math.floor(now * 1000) / 1000
    return [frame(topic(root, j, streams),
                  b'{"value": %d.5, "ts": %.6f}' % (j % 97, stamp + (j - ks.start) * 1e-6),
                  j % 65_535 + 1)
            for j in ks]  # fmt: skip


# -- the bare subscriber ------------------------------------------------------------------


def subscribe(args: argparse.Namespace) -> dict[str, Any]:
    """Count (or time) messages on ``filter`` with nothing but paho; ``ready`` once subscribed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    state = Counting(args.readings, args.latency)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.on_message = state.on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(args.filter, qos=1)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    state.wait(args.idle)
    client.disconnect()
    client.loop_stop()
    return state.result()


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Time messages on ``filter`` with a raw QoS 0 connection; ``ready`` once subscribed.

    The latency probe on the daemon's forecasts: like the publisher, a measuring
    instrument that must not be the bottleneck. It only frames packets and stamps
    each socket read as it comes; payloads are decoded once the run is over.
    """
    sock = raw_connect(args.port, f"bench-probe-{time.time_ns()}")
    topic_filter = args.filter.encode()
    body = struct.pack(">HH", 1, len(topic_filter)) + topic_filter + b"\x00"  # QoS 0
    sock.sendall(b"\x82" + remaining_length(len(body)) + body)
    buf = bytearray()
    received: list[tuple[bytes, float]] = []  # (payload, epoch seconds of its read)
    subscribed = False
    sock.settimeout(0.1)
    last_at = time.monotonic()
    while len(received) < args.readings and time.monotonic() - last_at < args.idle:
        try:
            data = sock.recv(65_536)
        except TimeoutError:
            continue
        if not data:
            break
        now, last_at = time.time(), time.monotonic()
        buf += data
        for header, packet in whole_packets(buf):
            if header >> 4 == 3:  # PUBLISH, QoS 0: topic length, topic, payload
                start = 2 + (packet[0] << 8 | packet[1])
                received.append((bytes(packet[start:]), now))
            elif header == 0x90 and not subscribed:  # SUBACK
                subscribed = True
                print("ready", flush=True)
    sock.close()
    latencies = [at - sent_at(payload, args.latency) for payload, at in received]
    return {"count": len(received), "done": last_at, **latency_summary(latencies)}


def whole_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """(first byte, body) of each whole packet at the front of ``buf``, removed from it."""
    from connectors.mqtt_client import packet_end, varint

    packets = []
    start = 0
    while end := packet_end(buf, start):
        _, body = varint(buf, start + 1, end) or (0, end)  # after the remaining length
        packets.append((buf[start], bytes(buf[body:end])))
        start = end
    del buf[:start]
    return packets


class Counting:
    """What the bare subscriber keeps: a count, the time it reached ``expect``, latencies."""

    def __init__(self, expect: int, latency: str) -> None:
        self.expect = expect
        self.latency = latency  # "" (count only), "ts" (reading payload) or "timestamp"
        self.count = 0
        self.done_at = math.nan
        self.last_at = time.monotonic()
        self.latencies: list[float] = []
        self.done = threading.Event()

    def on_message(self, client: object, userdata: object, message: Any) -> None:
        self.count += 1
        self.last_at = time.monotonic()
        if self.latency:
            self.latencies.append(time.time() - sent_at(message.payload, self.latency))
        if self.count >= self.expect:
            self.done_at = self.last_at
            self.done.set()

    def wait(self, idle: float) -> None:
        """Until ``expect`` messages came, or none came for ``idle`` seconds."""
        while not self.done.wait(0.1):
            if time.monotonic() - self.last_at > idle:
                return

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "done": self.done_at}
        if self.latency:
            out.update(latency_summary(self.latencies))
        return out


def sent_at(payload: bytes, field: str) -> float:
    """Epoch seconds a message was published at: a reading's ``ts``, a forecast's ISO time."""
    value = json.loads(payload)[field]
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value)


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds, by nearest rank (NaN when nothing came).

    >>> latency_summary([i / 1000 for i in range(100, 0, -1)])
    {'p50_ms': 50.0, 'p99_ms': 99.0, 'n': 100}
    """
    if not latencies:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "n": 0}
    ordered = sorted(latencies)
    return {"p50_ms": 1000 * percentile(ordered, 0.50), "p99_ms": 1000 * percentile(ordered, 0.99),
            "n": len(ordered)}  # fmt: skip


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted ``ordered``: the smallest value with at
    least ``q`` of them at or below it (of 100, p99 is the 99th, not the largest).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([5.0], 0.99)
    (2.0, 5.0)
    """
    rank = math.ceil(round(q * len(ordered), 9))  # round: 0.29 * 100 is 28.999999999999996
    return ordered[max(rank, 1) - 1]


def connect(args: argparse.Namespace) -> dict[str, Any]:
    """The start-up baseline: an interpreter that imports paho and connects, nothing else."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-conn-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    ok = connected.wait(10)
    at = time.monotonic()
    client.disconnect()
    client.loop_stop()
    return {"connected": at if ok else math.nan}


# -- entry point --------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench_load")
    p.add_argument("mode", choices=("publish", "pace", "count", "probe", "connect"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", default="sensors")
    p.add_argument("--streams", type=int, default=10_000)
    p.add_argument("--readings", type=int, default=0)
    p.add_argument("--t0", type=int, default=1_600_000_000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--filter", default="sensors/#")
    p.add_argument("--latency", default="", choices=("", "ts", "timestamp"))
    p.add_argument("--idle", type=float, default=5.0, help="count: give up after idle seconds")
    return p


def main(argv: Iterator[str] | Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else None)
    modes = {"publish": publish_fast, "pace": publish_paced, "count": subscribe,
             "probe": probe, "connect": connect}  # fmt: skip
    run = modes[args.mode]
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
