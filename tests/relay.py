"""A TCP relay between clients and a real broker, for tests of network failures.

It forwards bytes both ways; while ``hold`` is set it drops what the clients send
(their acknowledgements among it), and ``cut`` closes every connection, as a dropped
link would. The broker on the other side is a real mosquitto: nothing is faked.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.hold = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:
                return  # closed
            far = socket.create_connection(("127.0.0.1", self.broker_port))
            with self._lock:
                self._sockets += [near, far]
            threading.Thread(target=self._pump, args=(near, far, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65_536):
                if not (upstream and self.hold.is_set()):
                    target.sendall(data)
        self._close(source, target)

    def _close(self, *sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Close every connection made so far (new ones are still relayed)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        self._close(*sockets)

    def close(self) -> None:
        self._server.close()
        self.cut()
