"""The deploy/ files hold together: promtool accepts the rules and their tests, every
path compose mounts and the Dockerfile copies exists, the systemd unit verifies, and
the dashboards use the provisioned data source and their own variables.

Docker, compose and Grafana are not on the test machines: these tests check what
can be checked without them; tests/deploy/test_prometheus_server.py runs every
dashboard query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_server import ALERTS, DASHBOARDS, dashboard_queries, promtool

from pipeline.cli import build_parser
from pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker/compose.yml"
DOCKERFILE = DEPLOY / "docker/Dockerfile"
UNIT = DEPLOY / "systemd/sensorcast.service"
GRAFANA = DEPLOY / "grafana"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------- Prometheus


def test_promtool_accepts_the_config_and_the_rules_without_warnings():
    config = promtool("check", "config", str(DEPLOY / "prometheus/prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(ALERTS))
    assert rules.returncode == 0 and "SUCCESS: 10 rules found" in rules.stdout, rules.stdout
    assert "WARNING" not in rules.stdout + rules.stderr


def test_promtool_rule_tests_pass():
    done = promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    alerts = {rule["alert"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]}
    cases = [
        case
        for test in load_yaml(DEPLOY / "prometheus/alerts_test.yml")["tests"]
        for case in test["alert_rule_test"]
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts == firing == quiet


def test_every_alert_has_a_severity_summary_and_description():
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def test_the_scrape_target_is_the_compose_service_on_the_default_port():
    (job,) = load_yaml(DEPLOY / "prometheus/prometheus.yml")["scrape_configs"]
    assert job["job_name"] == "sensorcast"  # the alerts and dashboards select this job
    port = load_settings(env={}).metrics.port
    assert job["static_configs"][0]["targets"] == [f"sensorcast:{port}"]
    assert "sensorcast" in load_yaml(COMPOSE)["services"]


# ---------------------------------------------------------------- compose and Docker


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount; named volumes are skipped."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((COMPOSE.parent / source).resolve(), target))
    return mounts


def _in_container(service: dict[str, Any], path: str) -> Path | None:
    """The repository file a container path of ``service`` maps to, if it is mounted."""
    for host, target in _bind_mounts(service):
        inside = PurePosixPath(path)
        if inside == PurePosixPath(target) or PurePosixPath(target) in inside.parents:
            return host / inside.relative_to(target)
    return None


def test_compose_mounts_files_that_exist_where_the_services_look():
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {"mosquitto", "sensorcast", "prometheus", "grafana"}
    for name, service in services.items():
        for host, _ in _bind_mounts(service):
            assert host.exists(), f"{name} mounts {host}, which is not in the repository"
    mosquitto = _in_container(services["mosquitto"], "/mosquitto/config/mosquitto.conf")
    assert mosquitto == DEPLOY / "mosquitto/mosquitto.conf"
    flags = dict(arg.split("=", 1) for arg in services["prometheus"]["command"])
    assert _in_container(services["prometheus"], flags["--config.file"]).is_file()
    grafana = services["grafana"]
    assert _in_container(grafana, "/etc/grafana/provisioning") == GRAFANA / "provisioning"
    (provider,) = load_yaml(GRAFANA / "provisioning/dashboards/sensorcast.yml")["providers"]
    assert _in_container(grafana, provider["options"]["path"]) == GRAFANA / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _in_container(grafana, home).is_file()


def test_compose_builds_the_dockerfile_and_wires_the_services_together():
    services = load_yaml(COMPOSE)["services"]
    build = services["sensorcast"]["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]) == DOCKERFILE
    environment = services["sensorcast"]["environment"]
    settings = load_settings(env=environment)  # every variable is a valid setting
    assert settings.mqtt.host == "mosquitto" and settings.metrics.address == "0.0.0.0"
    (datasource,) = load_yaml(GRAFANA / "provisioning/datasources/prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]  # loopback only


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_the_dockerfile_copies_files_that_exist_and_are_not_ignored():
    ignore = (DEPLOY / "docker/Dockerfile.dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [shlex.split(args) for op, args in _dockerfile() if op == "COPY"]
    assert copies
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in kept, f"{source} is excluded by the .dockerignore"


def test_the_dockerfile_runs_the_daemon_as_a_user_with_a_health_check():
    instructions = _dockerfile()
    ops = dict(instructions)
    assert ops["FROM"] == "python:3.11-slim"
    run = " ".join(args for op, args in instructions if op == "RUN")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in run
    assert ops["USER"] not in ("root", "0")
    assert "/readyz" in ops["HEALTHCHECK"] and "9108" in ops["HEALTHCHECK"]
    assert json.loads(ops["ENTRYPOINT"]) == ["sensorcast"]
    command = json.loads(ops["CMD"])
    config = command[command.index("--config") + 1]
    assert any(args.endswith(f" {config}") for op, args in instructions if op == "COPY")
    build_parser().parse_args(command)  # the CLI takes these arguments
    env = dict(re.findall(r"(SENSORCAST_\w+)=(\S+)", " ".join(
        args for op, args in instructions if op == "ENV")))  # fmt: skip
    assert load_settings(env=env).state.dir == Path(ops["VOLUME"].strip('[]"'))


def test_the_image_compiles_its_kernels_as_the_daemon_user_into_its_cache_dir():
    """Its own CPU's build and the portable one: the image may run on another CPU."""
    instructions = _dockerfile()
    runs = [(i, args) for i, (op, args) in enumerate(instructions) if op == "RUN"]
    step = next(i for i, args in runs if args.strip() == "sensorcast precompile --portable")
    user = max(i for i, (op, _) in enumerate(instructions) if op == "USER" and i < step)
    assert instructions[user][1] == dict(instructions)["USER"]  # the user that runs the daemon
    env = " ".join(args for op, args in instructions[:step] if op == "ENV")
    assert re.search(r"NUMBA_CACHE_DIR=/var/cache/sensorcast/", env)
    build_parser().parse_args(["precompile", "--portable"])


# ---------------------------------------------------------------- systemd


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return sections


def test_the_unit_is_a_hardened_notify_service_with_a_watchdog():
    service = {key: values[-1] for key, values in _unit()["Service"].items()}
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "60s" and service["StateDirectory"] == "sensorcast"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert "%S/sensorcast" in service["ReadWritePaths"].split()
    assert service["ExecStart"].endswith(" run --config /etc/sensorcast/sensorcast.toml")
    build_parser().parse_args(shlex.split(service["ExecStart"])[1:])
    env = dict(value.split("=", 1) for value in _unit()["Service"]["Environment"])
    env = {k: v.replace("%S", "/var/lib") for k, v in env.items() if k.startswith("SENSORCAST_")}
    assert load_settings(env=env).state.dir == Path("/var/lib/sensorcast")


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit_and_rates_it_well_hardened(tmp_path):
    fake = tmp_path / "sensorcast"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit = tmp_path / "sensorcast.service"
    unit.write_text(UNIT.read_text().replace("/opt/sensorcast/bin/sensorcast", str(fake)))
    verify = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stderr
    security = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    level = re.search(r"Overall exposure level for sensorcast.service: ([\d.]+)", security.stdout)
    assert level, security.stdout + security.stderr
    assert float(level.group(1)) <= 2.0, security.stdout


# ---------------------------------------------------------------- Grafana


def test_the_dashboards_have_fixed_uids_and_use_the_data_source_variable():
    boards = {path.name: json.loads(path.read_text()) for path in DASHBOARDS}
    uids = {board["uid"] for board in boards.values()}
    assert uids == {"sensorcast-overview", "sensorcast-stream"}
    for name, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
            assert panel["targets"] and panel.get("description"), panel["title"]


def test_the_stream_dashboard_follows_its_stream_variable():
    board = json.loads((GRAFANA / "dashboards/sensorcast-stream.json").read_text())
    variable = next(v for v in board["templating"]["list"] if v["name"] == "stream")
    assert not variable["multi"] and not variable["includeAll"]
    for query in dashboard_queries(GRAFANA / "dashboards/sensorcast-stream.json"):
        if query.kind != "variable":
            assert 'stream="$stream"' in query.expr, query
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Value and forecast", "Anomaly score", "Anomalies"} <= titles
    band = next(p for p in board["panels"] if p["title"] == "Value and forecast")
    legends = {target["legendFormat"] for target in band["targets"]}
    assert legends == {"value", "forecast", "lower", "upper"}
    assert any(
        prop == {"id": "custom.fillBelowTo", "value": "lower"}
        for override in band["fieldConfig"]["overrides"]
        for prop in override["properties"]
    )
    assert any(a.get("expr") for a in board["annotations"]["list"])  # anomaly markers


def test_the_overview_has_the_panels_operators_need():
    board = json.loads((GRAFANA / "dashboards/sensorcast-overview.json").read_text())
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Throughput", "Forecast latency", "Dropped readings by reason", "Anomalies",
            "Streams"} <= titles  # fmt: skip


def test_provisioning_points_at_the_dashboards_folder_and_one_default_data_source():
    (datasource,) = load_yaml(GRAFANA / "provisioning/datasources/prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    (provider,) = load_yaml(GRAFANA / "provisioning/dashboards/sensorcast.yml")["providers"]
    assert provider["type"] == "file"
