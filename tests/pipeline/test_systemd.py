"""sd_notify spoken to a datagram socket the test binds, as systemd would."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from pipeline.systemd import Notifier


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path):
    """(NOTIFY_SOCKET value, bound socket) for a path or an abstract-namespace name."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        spec = address = str(tmp_path / "notify")
    else:
        name = f"sensorcast-test-{uuid.uuid4().hex}"
        spec, address = f"@{name}", f"\0{name}"
    sock.bind(address)
    sock.settimeout(2)
    yield spec, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting, each as its lines."""
    out = []
    sock.settimeout(0.2)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_ready_status_and_stopping_reach_the_socket(manager):
    spec, sock = manager
    notifier = Notifier.from_env({"NOTIFY_SOCKET": spec})
    assert notifier.enabled and notifier.watchdog_interval == 0
    assert notifier.ready("3 streams\nrestored")
    assert notifier.status("waiting for broker")
    assert notifier.stopping()
    assert received(sock) == [
        "READY=1\nSTATUS=3 streams restored",
        "STATUS=waiting for broker",
        "STOPPING=1\nSTATUS=stopping: draining, flushing, snapshotting",
    ]


def test_heartbeat_pings_the_watchdog_at_half_its_interval_and_refreshes_status(manager):
    spec, sock = manager
    clock = FakeClock()
    env = {"NOTIFY_SOCKET": spec, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_env(env)
    notifier.monotonic = clock
    assert notifier.watchdog_interval == 4.0
    notifier.ready("up")
    sent = []
    for _ in range(25):  # ticks every 0.5 s for 12 s
        sent.append(notifier.heartbeat(lambda: f"t={clock.now}"))
        clock.now += 0.5
    got = received(sock)[1:]
    assert sum(sent) == len(got)
    assert [m for m in got if "WATCHDOG=1" in m] == [m for m in got]  # every 2 s
    assert len(got) == 7  # at 0, 2, 4, ..., 12 s
    assert [m for m in got if "STATUS=" in m] == ["WATCHDOG=1\nSTATUS=t=10.0"]


def test_a_watchdog_meant_for_another_process_is_not_pinged(manager):
    spec, sock = manager
    env = {"NOTIFY_SOCKET": spec, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval == 0
    assert not notifier.heartbeat()
    assert received(sock) == []


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert not notifier.ready("x") and not notifier.heartbeat(lambda: "x")
    assert not notifier.stopping()


def test_a_gone_manager_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not notifier.ready("x") and not notifier.status("y")
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


def test_a_notify_socket_that_is_no_socket_address_is_ignored(caplog):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "not a socket path" in caplog.text
