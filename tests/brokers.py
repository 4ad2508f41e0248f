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


# ---------------------------------------------------------------- TLS and passwords
# Config lines for ``Mosquitto(extra=...)``: they follow the default listener line,
# so the TLS options apply to that listener, and the security options, given last,
# replace the defaults (``allow_anonymous true``).


@dataclass(frozen=True)
class Certificates:
    """PEM files made by ``make_certificates`` in ``folder``: a CA, a server certificate
    for 127.0.0.1 and a client certificate, both signed by the CA, and an unrelated CA."""

    folder: Path

    def file(self, name: str) -> str:
        return str(self.folder / name)

    @property
    def ca(self) -> str:
        return self.file("ca.crt")

    @property
    def other_ca(self) -> str:
        return self.file("other_ca.crt")

    @property
    def server_cert(self) -> str:
        return self.file("server.crt")

    @property
    def server_key(self) -> str:
        return self.file("server.key")

    @property
    def client_cert(self) -> str:
        return self.file("client.crt")

    @property
    def client_key(self) -> str:
        return self.file("client.key")


_NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_CA_EXTENSIONS = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
_LEAF_EXTENSIONS = (
    "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid,issuer\nextendedKeyUsage={usage}\n{more}"
)


def make_certificates(folder: Path) -> Certificates:
    """Generate the files of ``Certificates`` with the ``openssl`` CLI (P-256 keys: fast)."""
    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other_ca"):
        extensions = [arg for ext in _CA_EXTENSIONS for arg in ("-addext", ext)]
        files = ["-keyout", f"{ca}.key", "-out", f"{ca}.crt"]
        subject = ["-subj", f"/CN=sensorcast test {ca}"]
        _openssl(folder, "req", "-x509", *_NEW_KEY, "-days", "2", *files, *subject, *extensions)
    _sign(folder, "server", "serverAuth", "subjectAltName=IP:127.0.0.1\n")
    _sign(folder, "client", "clientAuth")
    return Certificates(folder)


def _sign(folder: Path, name: str, usage: str, more: str = "") -> None:
    """``name.key`` and ``name.crt``, signed by ``ca.crt``."""
    (folder / f"{name}.ext").write_text(_LEAF_EXTENSIONS.format(usage=usage, more=more))
    _openssl(folder, "req", *_NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN=sensorcast test {name}")  # fmt: skip
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt")  # fmt: skip


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=30)


def tls_config(certs: Certificates, require_certificate: bool = True) -> list[str]:
    """The listener speaks TLS with the server certificate; clients need one of the CA's."""
    return [
        f"cafile {certs.ca}",
        f"certfile {certs.server_cert}",
        f"keyfile {certs.server_key}",
        f"require_certificate {str(require_certificate).lower()}",
    ]


def password_config(folder: Path, users: dict[str, str]) -> list[str]:
    """A password file for ``users`` (name -> password) in ``folder``; no anonymous clients."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "passwords"
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password],
                       check=True, capture_output=True, timeout=10)  # fmt: skip
    return ["allow_anonymous false", f"password_file {path}"]
