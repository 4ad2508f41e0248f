"""A private mosquitto for ``sensorcast bench``: a free port, its own folder, no persistence.

The bench never touches a broker the machine runs on 1883: numbers taken against
a shared broker would measure its other clients too. Queues and in-flight
windows are unlimited so that the broker never drops or throttles what the
bench publishes; the clients under test set the pace.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UserError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    msg = f"mosquitto did not listen on 127.0.0.1:{port} within {timeout} s"
    raise TimeoutError(msg)


MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's, when it is not on PATH


def mosquitto_binary(scenario: str = "mqtt") -> str:
    """The mosquitto to start; UserError naming ``scenario`` when there is none."""
    found = shutil.which("mosquitto") or MOSQUITTO
    if not Path(found).exists():
        msg = (f"--scenario {scenario}: needs mosquitto, which is not installed; install it "
               "(apt-get install mosquitto) or pick --scenario replay or memory")  # fmt: skip
        raise UserError(msg)
    return found


@dataclass
class BenchBroker:
    """``with BenchBroker(folder) as broker:`` a mosquitto on ``broker.port``."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        path = self.folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.folder}/mosquitto.log",
        ]
        if os.geteuid() == 0:  # as root it would switch to a user who cannot write our folder
            lines.append("user root")
        path.write_text("\n".join(lines) + "\n")
        return path

    def __enter__(self) -> BenchBroker:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [mosquitto_binary(), "-c", str(self._config())]
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
