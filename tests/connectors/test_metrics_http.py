"""The HTTP endpoint: /metrics, /healthz, /readyz and anything else."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from brokers import free_port
from helpers import make_engine
from prometheus_server import http_get

from connectors.metrics_http import serve_metrics
from connectors.prometheus import PipelineCollector
from pipeline.errors import ConfigError


@pytest.fixture
def endpoint():
    problems: list[str] = ["broker: source not connected to mqtt://127.0.0.1:1"]
    server = serve_metrics(PipelineCollector(make_engine()), "127.0.0.1", 0, lambda: problems)
    yield f"http://127.0.0.1:{server.port}", problems
    server.close()


def test_healthz_answers_while_readyz_reports_each_problem_until_there_is_none(endpoint):
    url, problems = endpoint
    assert http_get(f"{url}/healthz") == (200, "ok\n")
    assert http_get(f"{url}/readyz") == (503, f"{problems[0]}\n")
    problems.append("snapshot: not restored yet")
    assert http_get(f"{url}/readyz")[1].splitlines() == problems
    problems.clear()
    assert http_get(f"{url}/readyz") == (200, "ready\n")


def test_metrics_are_served_plain_and_gzipped_and_other_paths_are_404(endpoint):
    url, _ = endpoint
    status, text = http_get(f"{url}/metrics")
    assert status == 200 and "sensorcast_steps_total 0.0" in text
    request = urllib.request.Request(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.read()).decode() == text
    assert http_get(f"{url}/nope")[0] == 404


def test_a_port_in_use_is_a_config_error_naming_the_key():
    port = free_port()
    first = serve_metrics(PipelineCollector(make_engine()), "127.0.0.1", port)
    try:
        expected = rf"^metrics.port \(--metrics-port\): cannot serve metrics on 127.0.0.1:{port} "
        with pytest.raises(ConfigError, match=expected):
            serve_metrics(PipelineCollector(make_engine()), "127.0.0.1", port)
    finally:
        first.close()


@pytest.mark.parametrize("address", ["nosuchhost.invalid", "192.0.2.1"])
def test_an_address_not_of_this_host_is_a_config_error_naming_the_address(address):
    # .invalid never resolves (RFC 6761); 192.0.2.1 is a documentation address (RFC 5737)
    expected = rf"^metrics.address \(--metrics-address\): cannot serve metrics on {address} "
    with pytest.raises(ConfigError, match=expected):
        serve_metrics(PipelineCollector(make_engine()), address, 0)


def test_an_ipv6_address_is_served():
    try:
        server = serve_metrics(PipelineCollector(make_engine()), "::1", 0)
    except ConfigError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert http_get(f"http://[::1]:{server.port}/healthz") == (200, "ok\n")
    finally:
        server.close()


def test_name_filters_pick_metric_families(endpoint):
    url, _ = endpoint
    status, text = http_get(f"{url}/metrics?name[]=sensorcast_steps_total")
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert status == 200 and families == {"sensorcast_steps_total"}


def test_only_get_and_head_and_head_has_no_body(endpoint):
    url, _ = endpoint
    head = urllib.request.Request(f"{url}/healthz", method="HEAD")
    with urllib.request.urlopen(head, timeout=5) as reply:
        assert reply.status == 200 and reply.read() == b""
        assert reply.headers["Content-Length"] == "3"
    post = urllib.request.Request(f"{url}/healthz", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=5)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD"
    refused.value.close()


def test_idle_connections_are_capped_and_timed_out(monkeypatch):
    # a client that opens connections and never finishes a request holds no thread for long,
    # and never more than the cap: others are still answered
    import connectors.metrics_http as metrics_http

    monkeypatch.setattr(metrics_http, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(metrics_http._QuietHandler, "timeout", 0.5)
    server = serve_metrics(PipelineCollector(make_engine()), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}"
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
        for conn in idle:
            conn.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        time.sleep(1.0)  # past the timeout: their slots are free again
        assert http_get(f"{url}/healthz") == (200, "ok\n")
        assert threading.active_count() < 20
        for conn in idle:
            conn.close()
    finally:
        server.close()
