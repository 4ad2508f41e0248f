"""A real Prometheus server for integration tests, on a free port in its own folder,
and small clients of its HTTP API, of promtool and of a daemon's HTTP endpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brokers import free_port, wait_for_port
from daemons import wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ROOT = Path(__file__).resolve().parents[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too, no answer at all is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        return 0, str(exc.reason)


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60, check=False)  # fmt: skip


@dataclass
class Prometheus:
    """A Prometheus scraping ``targets`` (host:port) as job sensorcast every second,
    evaluating ``rule_files`` every second; its storage lives in ``folder``."""

    folder: Path
    targets: list[str]
    rule_files: list[Path] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> Path:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": "sensorcast", "static_configs": [{"targets": self.targets}]}
            ],
        }
        path = self.folder / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def start(self) -> Prometheus:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [PROMETHEUS, f"--config.file={self.config()}",
                   f"--storage.tsdb.path={self.folder / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}"]  # fmt: skip
        with (self.folder / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for_port(self.port, timeout=20)
        if not wait_until(lambda: http_get(f"{self.url}/-/ready")[0] == 200, 20, every=0.1):
            msg = f"Prometheus never became ready:\n{self.log()}"
            raise TimeoutError(msg)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        self.process = None

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text() if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a successful API call; AssertionError with Prometheus' words otherwise."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{path} {params}: {body}"
        return answer["data"]

    def query(self, expr: str) -> list[Any]:
        """The result of an instant query at now: a list of series (or a scalar's value)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))


# ---------------------------------------------------------------- the deploy files

DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
ALERTS = ROOT / "deploy/prometheus/alerts.yml"


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of a dashboard: a panel target, a variable or an annotation."""

    dashboard: str
    where: str  # panel title, variable or annotation name
    kind: str  # panel | variable | annotation
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.kind} {self.where!r}: {self.expr}"


def dashboard_queries(path: Path) -> list[DashboardQuery]:
    board = json.loads(path.read_text())
    found = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            panels(panel.get("panels", []))  # rows hold their panels when collapsed
            for target in panel.get("targets", []):
                found.append(DashboardQuery(path.name, panel["title"], "panel", target["expr"]))

    panels(board["panels"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append(DashboardQuery(path.name, variable["name"], "variable",
                                        variable["definition"]))  # fmt: skip
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            found.append(DashboardQuery(path.name, annotation["name"], "annotation",
                                        annotation["expr"]))  # fmt: skip
    return found


def substitute(expr: str, stream: str, rate_interval: str = "30s", interval: str = "2s") -> str:
    """What Grafana sends: variables replaced (``$instance`` is All: ``.*``). ``interval``
    is a bar's width: two scrapes of the test's Prometheus, which has a few by then."""
    for name, value in (("__rate_interval", rate_interval), ("__interval", interval),
                        ("instance", ".*"), ("stream", stream)):  # fmt: skip
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return expr
