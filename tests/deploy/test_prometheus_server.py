"""End to end: mosquitto, the daemon and a real Prometheus scraping it every second.

Every PromQL expression of every dashboard must return data through
Prometheus' HTTP API, every alert rule must evaluate without error, and every
metric an alert names must be in the scrape.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml
from brokers import free_port
from daemons import client, running, settings_for, wait_until
from prometheus_server import (
    ALERTS,
    DASHBOARDS,
    Prometheus,
    dashboard_queries,
    http_get,
    substitute,
)

STREAMS = ["plant/boiler/temperature", "plant/pump/pressure", "office/t1/temperature"]
T0 = 1_700_000_000.0


@contextmanager
def feeding(port: int) -> Iterator[None]:
    """Readings of every stream every 50 ms, and a bad message every second, until exit."""
    stop = threading.Event()
    publisher = client(port)

    def feed() -> None:
        i = 0
        while not stop.is_set():
            for k, stream in enumerate(STREAMS):
                value = 20 + 5 * k + (i % 7) * 0.5
                publisher.publish(f"sensors/{stream}", json.dumps({"value": value, "ts": T0 + i}))
            if i % 20 == 0:
                publisher.publish("sensors/bad/sensor/temperature", b"not a number")
            i += 1
            stop.wait(0.05)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        publisher.disconnect()
        publisher.loop_stop()


@pytest.fixture
def scraped(mosquitto, tmp_path):
    """(Prometheus, daemon) once Prometheus holds a few scrapes of a busy daemon."""
    port = free_port()
    settings = settings_for(mosquitto.url, metrics__port=port, state__dir=str(tmp_path / "state"),
                            state__snapshot_interval="1s")  # fmt: skip
    with running(settings) as daemon, feeding(mosquitto.port):
        prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"], [ALERTS]).start()
        try:
            snapshots = 'sensorcast_last_snapshot_timestamp_seconds{job="sensorcast"} > 0'
            enough = f"count_over_time(({snapshots})[1m:1s])"  # scrapes since the first one
            ready = wait_until(lambda: _value(prometheus, enough) >= 4, 25, every=0.25)
            assert ready, prometheus.log()
            yield prometheus, daemon
        finally:
            prometheus.stop()


def _value(prometheus: Prometheus, expr: str) -> float:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def test_every_dashboard_query_returns_data_and_every_alert_rule_evaluates(scraped):
    prometheus, daemon = scraped
    (target,) = prometheus.api("targets")["activeTargets"]
    assert target["health"] == "up" and target["lastError"] == ""
    queries = [q for path in DASHBOARDS for q in dashboard_queries(path)]
    assert len(queries) >= 30
    empty = []
    for query in queries:
        expr = substitute(query.expr, stream=STREAMS[0])
        if query.kind == "variable":
            assert _label_values(prometheus, expr), query
        elif query.kind == "panel" and not prometheus.query(expr):
            empty.append(str(query))
        else:
            prometheus.query(expr)  # annotations: valid PromQL; data only while anomalies occur
    assert not empty, "\n".join(empty)
    streams = _label_values(prometheus, "label_values(sensorcast_stream_value, stream)")
    assert set(STREAMS) <= set(streams)
    _assert_rules_healthy(prometheus)
    _assert_alert_metrics_scraped(prometheus)
    assert http_get(f"http://127.0.0.1:{daemon.metrics.port}/readyz") == (200, "ready\n")


def _label_values(prometheus: Prometheus, definition: str) -> list[str]:
    """Grafana's ``label_values(selector, label)`` as the series API answers it."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match, definition
    selector, label = match.groups()
    return list(prometheus.api(f"label/{label}/values", **{"match[]": selector}))


def _assert_rules_healthy(prometheus: Prometheus) -> None:
    expected = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
                for rule in group["rules"]}  # fmt: skip

    def evaluated() -> list[dict]:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(rule.get("lastEvaluation", "").startswith("2") for rule in rules)
        return rules if done else []

    assert wait_until(lambda: bool(evaluated()), 10, every=0.25)
    rules = evaluated()
    assert {rule["name"] for rule in rules} == expected
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not unhealthy


def _assert_alert_metrics_scraped(prometheus: Prometheus) -> None:
    """Alert expressions rightly return nothing while all is well: check their names."""
    names = prometheus.metric_names()
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"\b(sensorcast_\w+|up)\b", rule["expr"]))
            assert used and used <= names, (rule["alert"], used - names)
