"""systemd's notify protocol, spoken directly: readiness, watchdog, status, stopping.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` in
the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``). Each notification is one datagram of ``KEY=VALUE`` lines.
Without ``NOTIFY_SOCKET`` (a terminal, a container, the tests) every call is a
no-op, and a notification that cannot be sent is logged, never raised: systemd
being away must not stop the pipeline.

>>> notifier = Notifier.from_env({})
>>> notifier.enabled, notifier.watchdog_interval
(False, 0.0)
>>> notifier.ready("idle")  # nothing to tell
False
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0  # seconds between STATUS= updates from the engine loop


def socket_address(spec: str) -> str | None:
    """The ``AF_UNIX`` address for ``NOTIFY_SOCKET``, or None when it is not one.

    >>> socket_address("/run/systemd/notify"), socket_address("@sd-1"), socket_address("x")
    ('/run/systemd/notify', '\\x00sd-1', None)
    """
    if spec.startswith("/"):
        return spec
    if spec.startswith("@") and len(spec) > 1:
        return "\0" + spec[1:]  # Linux abstract namespace
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float:
    """Seconds of ``WatchdogSec`` meant for process ``pid``; 0 when there is none.

    >>> watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7)
    30.0
    >>> watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7)
    0.0
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        owner = int(env.get("WATCHDOG_PID", str(pid)))
    except ValueError:
        return 0.0
    return usec / 1e6 if usec > 0 and owner == pid else 0.0


class Notifier:
    """Sends sd_notify messages to ``address`` (None: does nothing).

    ``heartbeat`` is meant to be called on every engine tick: it sends
    ``WATCHDOG=1`` at most every ``watchdog_interval / 2`` seconds, so a wedged
    loop stops the pings and systemd restarts the service, and refreshes
    ``STATUS=`` every ``STATUS_EVERY`` seconds.
    """

    def __init__(
        self,
        address: str | None,
        watchdog_interval: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self.monotonic = monotonic
        self._last_ping = -float("inf")
        self._last_status = -float("inf")
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        spec = env.get("NOTIFY_SOCKET", "")
        address = socket_address(spec)
        if spec and address is None:
            log.warning("NOTIFY_SOCKET=%r is not a socket path or @name; not notifying", spec)
        interval = watchdog_interval(env, os.getpid()) if address else 0.0
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it went out."""
        if self.address is None or not lines:
            return False
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:  # once: a gone manager must not flood the log
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        sent = self.notify("READY=1", _status(status))
        self._last_status = self.monotonic()
        return sent

    def status(self, text: str) -> bool:
        self._last_status = self.monotonic()
        return self.notify(_status(text))

    def stopping(self, status: str = "stopping: draining, flushing, snapshotting") -> bool:
        return self.notify("STOPPING=1", _status(status))

    def heartbeat(self, status: Callable[[], str] | None = None) -> bool:
        """``WATCHDOG=1`` when half the watchdog interval has passed, ``STATUS=`` when due."""
        if self.address is None:
            return False
        now = self.monotonic()
        lines = []
        if self.watchdog_interval > 0 and now - self._last_ping >= self.watchdog_interval / 2:
            lines.append("WATCHDOG=1")
            self._last_ping = now
        if status is not None and now - self._last_status >= STATUS_EVERY:
            lines.append(_status(status()))
            self._last_status = now
        return self.notify(*lines) if lines else False


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())  # one line: a newline would end the field
