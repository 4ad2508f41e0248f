"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

* ``/metrics``: the Prometheus exposition of a registry (prometheus_client's WSGI
  app: content negotiation, OpenMetrics, gzip, ``name[]`` filters).
* ``/healthz``: 200 while the process serves HTTP at all (liveness).
* ``/readyz``: 200 when ``readiness()`` reports no problem, else 503 with the
  problems, one a line (e.g. ``broker: not connected``).

GET and HEAD only (405 otherwise). At most ``MAX_CONNECTIONS`` connections are
served at once, and a client silent for ``REQUEST_SECONDS`` mid-request is
dropped: idle connections cannot take every thread and file descriptor.

A small threaded WSGI server, not ``prometheus_client.start_http_server``,
because that one only serves metrics.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

Readiness = Callable[[], list[str]]  # the problems; empty when ready
_TEXT = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]


MAX_CONNECTIONS = 64  # at once; more are closed at once rather than given a thread each
REQUEST_SECONDS = 10.0  # a client silent this long mid-request is dropped


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per connection, at most ``MAX_CONNECTIONS`` of them: clients that open
    connections and never finish a request cannot use up the process's threads and
    file descriptors (the snapshot needs one too)."""

    daemon_threads = True  # a slow scraper never holds up shutdown

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: the client sees a closed connection
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread was started: give the slot back here
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_SECONDS  # the socket's timeout: a half-sent request is dropped

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        """Scrapes every few seconds would drown the log."""


def metrics_app(registry: CollectorRegistry, readiness: Readiness | None = None) -> Any:
    """The WSGI application routing the three paths."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "use GET\n", _ALLOW)
        replied = _routes(path, readiness, start_response)
        return [] if method == "HEAD" else replied  # HEAD: the headers alone

    return app


_ALLOW = [("Allow", "GET, HEAD")]


def _routes(
    path: str, readiness: Readiness | None, start_response: Callable[..., Any]
) -> list[bytes]:
    """The replies of the paths other than /metrics."""
    if path == "/healthz":
        return _reply(start_response, "200 OK", "ok\n")
    if path == "/readyz":
        problems = readiness() if readiness is not None else []
        if problems:
            return _reply(start_response, "503 Service Unavailable", _lines(problems))
        return _reply(start_response, "200 OK", "ready\n")
    if path == "/":
        return _reply(start_response, "200 OK", "sensorcast: /metrics /healthz /readyz\n")
    return _reply(start_response, "404 Not Found", "not found: try /metrics\n")


def _lines(problems: Sequence[str]) -> str:
    return "".join(f"{problem}\n" for problem in problems)


def _reply(
    start_response: Callable[..., Any],
    status: str,
    body: str,
    headers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    data = body.encode()
    start_response(status, [*_TEXT, *headers, ("Content-Length", str(len(data)))])
    return [data]


@dataclass
class MetricsServer:
    """The running endpoint; ``close`` stops it."""

    registry: CollectorRegistry
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(
    collectors: Collector | Sequence[Collector],
    address: str,
    port: int,
    readiness: Readiness | None = None,
) -> MetricsServer:
    """Serve ``collectors`` from a fresh registry on ``address:port`` (0: a free port)."""
    registry = CollectorRegistry(auto_describe=True)  # the names, for ?name[]= filters
    for collector in collectors if isinstance(collectors, Sequence) else [collectors]:
        registry.register(collector)
    try:
        family, host = _family(address, port)
        server_class = type("Server", (_Server,), {"address_family": family})
        app = metrics_app(registry, readiness)
        server: WSGIServer = make_server(host, port, app, server_class, _QuietHandler)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            msg = f"metrics.address (--metrics-address): cannot serve metrics on {address} "
            msg += f"({why}); give an address of this host, e.g. 127.0.0.1, or 0.0.0.0 for all"
        else:  # in use, or a privileged port
            msg = f"metrics.port (--metrics-port): cannot serve metrics on {address}:{port} "
            msg += f"({why}); choose another port or 0 to turn the endpoint off"
        raise ConfigError(msg) from exc
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(registry, server, thread)


def _family(address: str, port: int) -> tuple[socket.AddressFamily, str]:
    """IPv4 or IPv6, as the address asks (``::`` binds IPv6)."""
    infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])
