"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

* ``/metrics``: the Prometheus exposition of a registry (prometheus_client's WSGI
  app: content negotiation, OpenMetrics, gzip, ``name[]`` filters).
* ``/healthz``: 200 while the process serves HTTP at all (liveness).
* ``/readyz``: 200 when ``readiness()`` reports no problem, else 503 with the
  problems, one a line (e.g. ``broker: not connected``).

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


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up shutdown


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        """Scrapes every few seconds would drown the log."""


def metrics_app(registry: CollectorRegistry, readiness: Readiness | None = None) -> Any:
    """The WSGI application routing the three paths."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)
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

    return app


def _lines(problems: Sequence[str]) -> str:
    return "".join(f"{problem}\n" for problem in problems)


def _reply(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [*_TEXT, ("Content-Length", str(len(data)))])
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
    registry = CollectorRegistry()
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
