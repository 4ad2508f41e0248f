"""Security (issue 7, item 6): no unpickling of outside files, secrets never shown,
hostile stream names never become wildcard topics, a payload size limit, and a
configurable metrics bind address.

Related tests elsewhere: a pickled model checkpoint is refused in
``tests/models/test_rnn.py``; the daemon's own log with a password, and errors
quoting a broker URL, in ``tests/connectors/test_mqtt_security.py`` and
``tests/pipeline/test_settings.py``; output-topic escaping over generated keys in
``tests/fuzz/test_topics_fuzz.py``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import pickle
import socket
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from brokers import Mosquitto, free_port
from daemons import Collector, client, running, settings_for, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_server import http_get

from connectors.topics import unescape_level
from models.persistence import PersistenceForecaster
from pipeline.check_config import render
from pipeline.cli import main
from pipeline.detect import GaussianTailDetector
from pipeline.errors import SnapshotError
from pipeline.settings import Settings, load_settings
from pipeline.settings_schema import KEY
from pipeline.snapshot import inspect_snapshot, read_snapshot
from pipeline.state import StateTable

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models", "connectors")

# -- no pickle where outside files are loaded -------------------------------------------

UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}


def _name(node: ast.expr) -> str:
    """``a.b.c`` for an attribute chain, ``""`` for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "?"
    return None


def _unsafe_call(call: ast.Call) -> str | None:
    name = _name(call.func)
    last = name.rsplit(".", 1)[-1]
    if name.split(".")[0] in UNSAFE_MODULES and last in ("load", "loads", "Unpickler", "open"):
        return name
    if last in ("read_pickle", "unsafe_load") or name in ("marshal.load", "marshal.loads"):
        return name
    root = name.split(".")[0]
    if last == "load" and root == "torch" and _keyword(call, "weights_only") is not True:
        return f"{name} without weights_only=True"
    if last == "load" and root in ("np", "numpy") and _keyword(call, "allow_pickle"):
        return f"{name} with allow_pickle"
    if name == "yaml.load" and _keyword(call, "Loader") is None:
        return "yaml.load without a safe Loader"
    return None


def unpickling(source: str) -> list[str]:
    """Every import of a pickle-like module and every call that can unpickle, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names]
            for name in names:
                if name and name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"line {node.lineno}: imports {name}")
        elif isinstance(node, ast.Call) and (what := _unsafe_call(node)):
            found.append(f"line {node.lineno}: {what}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "from joblib import load",
        "import dill as d",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "np.load(f, allow_pickle=True)",
        "numpy.load(f, allow_pickle=flag)",
        "pd.read_pickle(path)",
        "frame = pandas.read_pickle(path)",
        "yaml.load(text)",
        "marshal.loads(data)",
    ],
)
def test_the_unpickling_check_finds_each_way_in(source: str) -> None:
    assert unpickling(source)


@pytest.mark.parametrize(
    "source",
    ["torch.load(p, weights_only=True)", "np.load(f, allow_pickle=False)", "np.load(f)",
     "json.load(f)", "safetensors.torch.load_file(p)", "yaml.load(t, Loader=yaml.SafeLoader)"],
)  # fmt: skip
def test_the_unpickling_check_lets_safe_loaders_pass(source: str) -> None:
    assert unpickling(source) == []


def test_no_module_of_the_package_can_unpickle() -> None:
    files = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 30
    found = {str(p.relative_to(ROOT)): unpickling(p.read_text()) for p in files}
    assert {path: lines for path, lines in found.items() if lines} == {}


class Exploit:
    """Unpickling this writes ``marker``: proof that a load executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (self.marker.write_text, ("executed",))


def pickled_snapshots(folder: Path, marker: Path) -> list[Path]:
    """A raw pickle, and an .npz whose arrays hold pickled objects (np.savez allows them)."""
    raw = folder / "raw.npz"
    raw.write_bytes(pickle.dumps(Exploit(marker)))
    npz = folder / "objects.npz"
    meta = np.frombuffer(json.dumps({"schema": 1}).encode(), np.uint8)
    np.savez(npz, meta=meta, keys=np.array([Exploit(marker)], dtype=object))
    return [raw, npz]


def test_a_snapshot_holding_a_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for path in pickled_snapshots(tmp_path, marker):
        table = StateTable(PersistenceForecaster(), GaussianTailDetector())
        with pytest.raises(SnapshotError):
            read_snapshot(table, path, {}, now=0.0)
        with pytest.raises(SnapshotError):
            inspect_snapshot(path)
        assert len(table) == 0
    assert not marker.exists()


def run_cli(*args: str) -> tuple[int, str]:
    """``sensorcast ARGS`` in this process: the exit code and what it wrote to stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, stderr.getvalue()


def test_replay_refuses_a_pickled_state_file_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    log = tmp_path / "room.csv"
    log.write_text("timestamp,value\n2020-01-01T00:00:00Z,21.5\n")
    for path in pickled_snapshots(tmp_path, marker):
        code, stderr = run_cli("replay", str(log), "--model", "persistence", "--state", str(path))
        assert code == 2 and stderr.startswith("sensorcast: error: ") and stderr.count("\n") == 1
    assert not marker.exists()


def test_a_pickled_model_file_is_refused_by_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    log = tmp_path / "room.csv"
    log.write_text("timestamp,value\n2020-01-01T00:00:00Z,21.5\n")
    for name in ("model.safetensors", "model.json"):
        (tmp_path / name).write_bytes(pickle.dumps(Exploit(marker)))
    for name in ("model.safetensors", "model.json", "model.pt"):
        code, stderr = run_cli("replay", str(log), "--model", str(tmp_path / name))
        assert code == 2 and stderr.startswith("sensorcast: error: ") and stderr.count("\n") == 1
    assert not marker.exists()


# -- secrets never shown ----------------------------------------------------------------

SECRETS = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\x00"), min_size=1)


def shown(settings: Settings) -> list[str]:
    """Every way settings are printed: the daemon's "settings:" line, check-config, repr."""
    return [json.dumps(settings.redacted()), render(settings), repr(settings), str(settings)]


@settings(max_examples=200)
@given(SECRETS.map(lambda text: "S3cr3t-" + text))
def test_a_password_from_the_environment_is_never_printed(secret: str) -> None:
    env = {"SENSORCAST_MQTT_PASSWORD": secret, "SENSORCAST_MQTT_BROKER": "mqtt://ann@broker"}
    loaded = load_settings(env=env)
    assert loaded.password() == secret
    assert loaded.redacted()["mqtt"]["password"] == "***"
    for text in shown(loaded):
        assert secret not in text


def test_a_password_file_is_named_but_its_content_never_printed(tmp_path: Path) -> None:
    secret = "S3cr3t-from-a-file"
    (tmp_path / "password").write_text(secret + "\n")
    env = {"SENSORCAST_MQTT_PASSWORD_FILE": str(tmp_path / "password")}
    loaded = load_settings(env=env, overrides={"mqtt.broker": "mqtts://ann@broker:8883"})
    assert loaded.password() == secret
    for text in shown(loaded):
        assert secret not in text
    assert str(tmp_path / "password") in render(loaded)


# -- against a real broker: topics, payload size, metrics address -----------------------

HOSTILE_FIELDS = {
    "a+b": 1.0,  # a single-level wildcard
    "c#d": 2.0,  # a multi-level wildcard
    "x/y": 3.0,  # an extra level
    "%E": 4.0,  # the empty-level marker itself
    "é🌡": 5.0,  # kept as it is
    "tab\there": 6.0,  # a control character brokers refuse
    "ends/": 7.0,  # an empty last level: not a stream key
    "nul\u0000": 8.0,  # NUL: not a stream key
    "x" * 300: 9.0,  # longer than a stream key may be
    "\ud800": 10.0,  # a lone surrogate (a JSON escape): no UTF-8 topic or snapshot holds it
    "": 11.0,  # no name: an empty level
}
SAFE_NAMES = ("a+b", "c#d", "x/y", "%E", "é🌡", "tab\there")  # valid stream-key levels


def close(publisher: mqtt.Client) -> None:
    publisher.disconnect()
    publisher.loop_stop()


def test_hostile_stream_names_are_published_on_escaped_topics(mosquitto: Mosquitto) -> None:
    everything = Collector(mosquitto.port, "#")
    with running(settings_for(mosquitto.url)) as daemon:
        pub = client(mosquitto.port)
        payload = {**HOSTILE_FIELDS, "ts": 1_700_000_000}
        pub.publish("sensors/s%25/d/m", json.dumps(payload), qos=1).wait_for_publish(5)
        close(pub)
        assert wait_until(lambda: daemon.engine.stats.steps >= len(SAFE_NAMES), 20)
        # the input, a forecast per valid key, a dead letter per invalid one
        invalid = len(HOSTILE_FIELDS) - len(SAFE_NAMES)
        assert wait_until(lambda: len(everything.messages) >= len(SAFE_NAMES) + 1 + invalid, 20)
        assert daemon.engine.stats.dropped == {"bad_stream": invalid}
    everything.close()
    forecasts = {}
    for topic, message in everything.messages:
        levels = topic.split("/")
        assert "" not in levels and "+" not in topic and "#" not in topic and "\x00" not in topic
        if topic.startswith("sensorcast/forecast/"):
            forecasts[topic] = message["stream"]
    keys = {"/".join(map(unescape_level, t.split("/")[2:])) for t in forecasts}
    # the input level "s%25" is escape_level's spelling of "s%": read back as the key "s%"
    assert keys == set(forecasts.values()) == {f"s%/d/m/{name}" for name in SAFE_NAMES}


def test_payload_size_limit_default_and_config_key() -> None:
    assert Settings().mqtt.max_payload == 65_536
    assert KEY["mqtt.max_payload"].env == "SENSORCAST_MQTT_MAX_PAYLOAD"
    assert load_settings(env={"SENSORCAST_MQTT_MAX_PAYLOAD": "1KiB"}).mqtt.max_payload == 1024


def test_payloads_over_the_configured_limit_are_rejected(mosquitto: Mosquitto) -> None:
    dead = Collector(mosquitto.port, "sensorcast/deadletter")
    with running(settings_for(mosquitto.url, mqtt__max_payload="1KiB")) as daemon:
        pub = client(mosquitto.port)
        pub.publish("sensors/s/d/fits", b"21.5".ljust(1024), qos=1).wait_for_publish(5)
        pub.publish("sensors/s/d/over", b"21.5".ljust(1025), qos=1).wait_for_publish(5)
        close(pub)
        assert wait_until(lambda: daemon.engine.stats.steps >= 1 and bool(dead.messages), 20)
    dead.close()
    assert [(m["topic"], m["reason"], m["detail"]) for _, m in dead.messages] == [
        ("sensors/s/d/over", "too_large", "1025 bytes > 1024")
    ]


def loopback_alias_works() -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True


def test_metrics_bind_only_the_configured_address(mosquitto: Mosquitto) -> None:
    assert Settings().metrics.address == "127.0.0.1"  # not every interface by default
    if not loopback_alias_works():
        pytest.skip("127.0.0.2 is not a loopback address here")
    port = free_port()
    given = settings_for(mosquitto.url, metrics__address="127.0.0.2", metrics__port=port)
    with running(given):
        assert http_get(f"http://127.0.0.2:{port}/healthz") == (200, "ok\n")
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 0  # nothing listens there
