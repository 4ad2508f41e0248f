"""The buffered client's own packet parsing, on hand-made packets (MQTT 3.1.1 and 5)."""

from __future__ import annotations

import struct
import threading
from typing import Any

from paho.mqtt.enums import CallbackAPIVersion

from connectors.mqtt_client import BufferedClient, _parse_publish, _puback_reason, packet_end
from connectors.mqtt_source import Inbox


def publish(
    topic: bytes, payload: bytes, qos: int = 1, mid: int = 7, props: bytes | None = None
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if props is not None:  # MQTT 5: property length (one byte here) and properties
        body += bytes([len(props)]) + props
    body += payload
    assert len(body) < 128 * 128
    length = (
        bytes([len(body)]) if len(body) < 128 else bytes([len(body) % 128 | 128, len(body) // 128])
    )
    return bytes([0x30 | qos << 1]) + length + body


def test_a_whole_packet_is_found_and_a_cut_one_is_not() -> None:
    packet = publish(b"sensors/a", b"x" * 200)  # a two-byte remaining length
    buf = bytearray(packet + packet[:10])
    assert packet_end(buf, 0) == len(packet)
    assert packet_end(buf, len(packet)) == 0  # cut by the end of the read
    assert packet_end(bytearray(packet[:1]), 0) == 0  # not even the length yet


def test_publish_fields_in_both_protocol_versions() -> None:
    v311 = bytearray(publish(b"sensors/a/b", b'{"value": 1}', mid=513))
    assert _parse_publish(v311, 0, len(v311), v5=False) == ("sensors/a/b", b'{"value": 1}', 513, 1)
    expiry = b"\x02\x00\x00\x00\x3c"  # message expiry interval 60 s: skipped
    v5 = bytearray(publish(b"sensors/a/b", b"1.5", mid=2, props=expiry))
    assert _parse_publish(v5, 0, len(v5), v5=True) == ("sensors/a/b", b"1.5", 2, 1)
    qos0 = bytearray(publish(b"t", b"p", qos=0, props=b""))
    assert _parse_publish(qos0, 0, len(qos0), v5=True) == ("t", b"p", 0, 0)


def test_packets_left_to_paho() -> None:
    def parse(packet: bytes, v5: bool = True) -> object:
        return _parse_publish(bytearray(packet), 0, len(packet), v5)

    assert parse(publish(b"t", b"p", qos=2, props=b"")) is None  # QoS 2: paho's handshake
    assert parse(publish(b"", b"p", props=b"\x23\x00\x01")) is None  # a topic alias
    assert parse(publish(b"t", b"p", mid=0, props=b"")) is None  # packet id 0 is illegal
    assert parse(b"\x40\x02\x00\x01") is None  # a PUBACK is not a PUBLISH
    retained = bytearray(publish(b"t", b"p", props=b""))
    retained[0] |= 1  # the RETAIN flag: paho's message says so, and the source needs it
    assert parse(bytes(retained)) is None
    redelivered = bytearray(publish(b"t", b"p", props=b""))
    redelivered[0] |= 8  # the DUP flag: the source matches a redelivery to its first copy
    assert parse(bytes(redelivered)) is None
    assert parse(publish(b"t", b"p", props=b"")) == ("t", b"p", 7, 1)
    bad_length = bytearray(publish(b"topic", b"", props=b""))
    bad_length[3] = 200  # the topic runs past the packet
    assert parse(bytes(bad_length)) is None


def test_a_topic_that_is_not_utf8_is_kept_as_none() -> None:
    packet = bytearray(publish(b"sensors/\xff", b"1", props=b""))
    assert _parse_publish(packet, 0, len(packet), v5=True) == (None, b"1", 7, 1)


def test_puback_reasons() -> None:
    assert _puback_reason(bytearray(b"\x40\x02\x00\x05"), 0, 4) == 0
    assert _puback_reason(bytearray(b"\x40\x03\x00\x05\x10"), 0, 5) == 0x10
    assert _puback_reason(bytearray(b"\x40\x04\x00\x05\x87\x00"), 0, 6) == 0x87
    with_property = bytearray(b"\x40\x07\x00\x05\x00\x03\x1f\x00\x00")  # a reason string
    assert _puback_reason(with_property, 0, len(with_property)) is None


def test_the_inbox_stays_within_its_capacity_and_keeps_the_order() -> None:
    inbox = Inbox(3)
    items = [("t", b"%d" % i, 0.0, i + 1, 1) for i in range(10)]
    waiting: list[int] = []
    putter = threading.Thread(target=inbox.put, args=(items, lambda: False, waiting.append))
    putter.start()
    got: list[tuple[str | None, bytes, float, int, int]] = []
    while len(got) < 10:
        assert len(inbox) <= 3
        got += inbox.take(2, 1.0)
    putter.join(5)
    assert [mid for _, _, _, mid, _ in got] == list(range(1, 11))
    assert waiting == [7]  # told once, of the messages that did not fit at first


def test_a_stopped_put_gives_up_on_what_did_not_fit() -> None:
    inbox = Inbox(2)
    items = [("t", b"", 0.0, i, 1) for i in range(5)]
    inbox.put(items, lambda: True, lambda n: None)
    assert [mid for _, _, _, mid, _ in inbox.take(10, 0)] == [0, 1]


def test_queued_publishes_and_pubacks_are_joined_up_to_the_first_other_packet() -> None:
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="merge")
    client.MAX_WRITE = 100

    def queued(command: int, packet: bytes, qos: int = 1, pos: int = 0) -> Any:
        return {"command": command, "mid": 1, "qos": qos, "pos": pos,
                "to_process": len(packet) - pos, "packet": packet, "info": None}  # fmt: skip

    publishes = [publish(b"t", b"x" * 40, mid=m) for m in range(1, 6)]  # 46 bytes each
    puback = b"\x40\x02\x00\x09"
    client._out_packet.extend([queued(0x32, p) for p in publishes[:3]])
    client._out_packet.append(queued(0x40, puback))
    client._out_packet.append(queued(0xE0, b"\xe0\x00"))  # DISCONNECT: goes alone
    client._out_packet.extend([queued(0x32, p) for p in publishes[3:]])
    client._merge_queued_packets()
    entries = list(client._out_packet)
    assert [e["packet"] for e in entries[:2]] == [b"".join(publishes[:3]), puback]
    assert all(e["to_process"] == len(e["packet"]) and e["pos"] == 0 for e in entries[:2])
    assert entries[2]["command"] == 0xE0  # the merge stopped there
    assert [e["packet"] for e in entries[3:]] == publishes[3:]  # left for the next write
    client._reset_sockets()
