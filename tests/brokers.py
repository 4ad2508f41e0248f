"""Real brokers for integration tests, each on a free port in its own folder.

Tests start, kill and restart them on purpose; none of them touches the
machine's own services on the standard ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    msg = f"nothing listening on {host}:{port} after {timeout} s"
    raise TimeoutError(msg)


@dataclass
class Mosquitto:
    """A mosquitto process with persistence in ``folder``; ``extra`` adds config lines."""

    folder: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config(self) -> Path:
        path = self.folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.folder}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.folder}/mosquitto.log",
            *self._run_as(),
            *self.extra,
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    @staticmethod
    def _run_as() -> list[str]:
        """As root, mosquitto would switch to its own user, who cannot write our folder."""
        return ["user root"] if os.geteuid() == 0 else []

    def start(self) -> Mosquitto:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config())])
        wait_for_port(self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(10)
        self.process = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text() if path.exists() else ""
