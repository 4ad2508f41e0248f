"""Many messages handed to paho at once: the packets paho would build, delivery through
a real mosquitto, the in-flight window, a broker restart, topics paho refuses."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from daemons import wait_until
from paho.mqtt.enums import CallbackAPIVersion

from connectors.mqtt_client import Connection, Session
from connectors.mqtt_publish import publish_many, publish_packet


class _Capturing(mqtt.Client):
    """paho's client that keeps the packets its own ``publish`` queues."""

    def __init__(self, protocol: int) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.packets: list[bytes] = []
        self._sock: Any = object()  # "connected": paho builds and queues the packet

    def _packet_queue(self, command: Any, packet: Any, mid: Any, qos: Any, info: Any = None) -> Any:
        self.packets.append(bytes(packet))
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 1, 100, 127, 200, 20_000, 3_000_000])
@pytest.mark.parametrize("dup", [False, True])
def test_a_packet_is_the_one_paho_builds(protocol, qos, size, dup):
    paho = _Capturing(protocol)
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    topic = b"sensorcast/forecast/site/dev/temp"
    paho._send_publish(7, topic, payload, qos, False, dup)  # what publish and re-sends use
    paho._sock = None  # nothing to close
    v5 = protocol == mqtt.MQTTv5
    assert paho.packets == [publish_packet(topic, payload, 7, qos, v5, dup)]


class _Subscriber:
    """A persistent-session subscriber (its subscription outlives a broker restart,
    as mosquitto here keeps sessions on disk) that keeps every payload in order."""

    def __init__(self, port: int, topic: str) -> None:
        self.payloads: list[bytes] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="publish-test-sub",
                                  clean_session=False)  # fmt: skip
        self.client.on_message = lambda c, u, m: self.payloads.append(m.payload)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _session(port: int, window: int) -> tuple[Session, list[int]]:
    """A started publishing session with an in-flight window of ``window``; the mids
    the broker acknowledged, in order."""
    session = Session(Connection("127.0.0.1", port, "publish-test"))
    acked: list[int] = []
    session.client.on_publish = lambda client, userdata, mid, *rest: acked.append(mid)
    session.start()
    assert session.connected.wait(10)
    session.client.limit_inflight(window)
    return session, acked


def test_many_messages_arrive_in_order_through_a_small_in_flight_window(mosquitto):
    subscriber = _Subscriber(mosquitto.port, "out/#")
    session, acked = _session(mosquitto.port, window=5)  # most wait for PUBACKs to go out
    messages = [(f"out/s{i % 7}", str(i).encode()) for i in range(2_000)]
    try:
        with session.client.batch():
            done = publish_many(session.client, messages, qos=1)
        assert [rc for _, rc in done] == [mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS] * 2_000
        wait_until(lambda: len(subscriber.payloads) >= 2_000, 20)
        wait_until(lambda: len(acked) >= 2_000, 10)
    finally:
        session.stop()
        subscriber.close()
    assert subscriber.payloads == [payload for _, payload in messages]
    assert sorted(acked) == sorted(mid for mid, _ in done)
    assert not session.client._out_messages  # every one acknowledged, none kept to resend


@pytest.mark.parametrize("window", [5, 1_000])  # 5: most wait to be sent as PUBACKs come
def test_messages_handed_over_while_the_broker_is_down_arrive_after_it_is_back(mosquitto, window):
    subscriber = _Subscriber(mosquitto.port, "out/#")
    session, acked = _session(mosquitto.port, window=window)
    try:
        mosquitto.stop()
        wait_until(lambda: not session.connected.is_set(), 10)
        with session.client.batch():
            done = publish_many(session.client, [("out/a", b"%d" % i) for i in range(200)], 1)
        assert {rc for _, rc in done} <= {mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN,
                                          mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS}  # fmt: skip
        mosquitto.start()
        wait_until(lambda: len(acked) >= 200, 20)
        wait_until(lambda: len(subscriber.payloads) >= 200, 20)
    finally:
        session.stop()
        subscriber.close()
    assert sorted(subscriber.payloads, key=int) == [b"%d" % i for i in range(200)]
    assert not session.client._out_messages


def test_a_topic_paho_refuses_is_refused_and_nothing_is_kept(mosquitto):
    session, _ = _session(mosquitto.port, window=100)
    try:
        with pytest.raises(ValueError, match="[Tt]opic"):
            publish_many(session.client, [("out/#", b"1")], qos=1)
        assert not session.client._out_messages
    finally:
        session.stop()


def test_qos_0_messages_are_sent_at_once_and_nothing_is_kept(mosquitto):
    subscriber = _Subscriber(mosquitto.port, "out/#")
    session, acked = _session(mosquitto.port, window=5)  # the window is QoS 1's only
    messages = [(f"out/s{i % 3}", str(i).encode()) for i in range(300)]
    try:
        with session.client.batch():
            done = publish_many(session.client, messages, qos=0)
        wait_until(lambda: len(subscriber.payloads) >= 300, 20)
    finally:
        session.stop()
        subscriber.close()
    assert [rc for _, rc in done] == [mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS] * 300
    assert subscriber.payloads == [payload for _, payload in messages]
    assert not session.client._out_messages and session.client._inflight_messages == 0


def test_message_ids_follow_pahos_and_wrap_as_its_do():
    from connectors.mqtt_publish import _next_mid

    ours, pahos = mqtt.Client(CallbackAPIVersion.VERSION2), mqtt.Client(CallbackAPIVersion.VERSION2)
    for start in (0, 1, 65_533):
        ours._last_mid = pahos._last_mid = start
        assert [_next_mid(ours) for _ in range(5)] == [pahos._mid_generate() for _ in range(5)]
    ours._last_mid = 65_534
    assert [_next_mid(ours) for _ in range(3)] == [65_535, 1, 2]


def test_topics_are_checked_before_they_are_kept_and_the_kept_ones_are_bounded(monkeypatch):
    from connectors import mqtt_publish

    monkeypatch.setattr(mqtt_publish, "_TOPICS", {})
    monkeypatch.setattr(mqtt_publish, "TOPIC_CACHE", 3)
    with pytest.raises(ValueError, match="wildcards"):
        mqtt_publish._checked("out/+/x")
    assert mqtt_publish._TOPICS == {}
    for k in range(10):
        field, encoded = mqtt_publish._checked(f"out/é/{k}")
        assert encoded == f"out/é/{k}".encode() and field == bytes((0, len(encoded))) + encoded
        assert len(mqtt_publish._TOPICS) <= 3
