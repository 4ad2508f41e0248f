"""`sensorcast check-config` refuses what `run` would refuse: models, addresses, bounds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "models/weights"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SENSORCAST_* variables from the machine running the tests."""
    import os

    for var in [v for v in os.environ if v.startswith("SENSORCAST_")]:
        monkeypatch.delenv(var)


def check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str
) -> tuple[int, str, str]:
    path = tmp_path / "sensorcast.toml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> str:
    """The one error line, without ``sensorcast: error: `` and the file named after the key."""
    code, out, err = check_config(capsys, tmp_path, text)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and "Traceback" not in err
    message = err.removeprefix("sensorcast: error: ").rstrip("\n")
    return message.replace(f" ({tmp_path / 'sensorcast.toml'})", "")


def model(spec: Path | str) -> str:
    return f'[pipeline]\nmodel = "{spec}"\n'


# ---------------------------------------------------------------- pipeline.model


@pytest.mark.parametrize("name", ["default", "persistence"])
def test_built_in_models_pass(capsys, tmp_path, name):
    code, out, err = check_config(capsys, tmp_path, model(name))
    assert code == 0, err
    assert f'model = "{name}"' in out


@pytest.mark.parametrize("name", ["river-holtwinters", "river-snarimax"])
def test_river_baselines_are_for_replay_and_evaluate_only(capsys, tmp_path, name):
    assert "is a baseline for replay and evaluate only" in refused(capsys, tmp_path, model(name))


def test_checkpoints_pass_as_a_file_or_a_directory(capsys, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(WEIGHTS / "default.json", folder / "model.json")
    shutil.copy(WEIGHTS / "default.safetensors", folder / "model.safetensors")
    for spec in (WEIGHTS / "default.json", WEIGHTS / "default.safetensors", folder):
        code, _, err = check_config(capsys, tmp_path, model(spec))
        assert code == 0, err


def test_a_text_file_is_not_a_model(capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    # the rest is the loader's own reason, which follows its path rules
    message = refused(capsys, tmp_path, model(notes))
    assert message.startswith(f"pipeline.model: '{notes}' is not a usable model: ")
    # it offers only what the daemon runs: River's baselines are replay's and evaluate's
    assert "default, persistence" in message and "river" not in message


def test_a_directory_without_model_json_is_not_a_model(capsys, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    message = refused(capsys, tmp_path, model(folder))
    assert message.startswith(f"pipeline.model: '{folder}' is not a usable model: ")
    assert "model.json" in message


def test_a_checkpoint_needs_its_weights_and_matching_ones(capsys, tmp_path):
    lonely = tmp_path / "lonely.json"
    shutil.copy(WEIGHTS / "default.json", lonely)
    message = refused(capsys, tmp_path, model(lonely))
    assert message.startswith(f"pipeline.model: '{lonely}' ") and "lonely.safetensors" in message
    (tmp_path / "lonely.safetensors").write_bytes(b"\0" * 64)  # not the weights it names
    message = refused(capsys, tmp_path, model(lonely))
    assert message.startswith(f"pipeline.model: '{lonely}' is not a usable model: ")


def test_an_empty_model_is_not_the_current_directory(capsys, tmp_path):
    assert refused(capsys, tmp_path, model("")).startswith("pipeline.model: '' is empty; give")


# ---------------------------------------------------------------- metrics.address


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "0.0.0.0", "::", "::1", "fe80::1%eth0", "localhost",
                "metrics.example.com", "metrics.example.com.", "edge-box-3"],
)  # fmt: skip
def test_ip_addresses_and_host_names_pass(capsys, tmp_path, address):
    code, out, err = check_config(capsys, tmp_path, f'[metrics]\naddress = "{address}"\n')
    assert code == 0, err
    assert f'address = "{address}"' in out


@pytest.mark.parametrize(
    "address", ["300.1.1.1", "1.2.3", "foo bar", "", "-edge", "edge-", "a..b", "[::1]",
                "http://host", "x" * 64],
)  # fmt: skip
def test_other_addresses_are_refused_naming_metrics_address(capsys, tmp_path, address):
    assert refused(capsys, tmp_path, f'[metrics]\naddress = "{address}"\n') == (
        f"metrics.address: {address!r} is neither an IP address nor a host name; use e.g. "
        "127.0.0.1 (this host only), 0.0.0.0 or :: (every interface)"
    )


# ---------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pipeline.window", "1e30", "1e+30 is out of range; use 0 (every reading is a step) to "
         "30d, e.g. 60s"),
        ("pipeline.window", '"31d"', "'31d' is out of range; use 0 (every reading is a step)"),
        ("pipeline.window", "-1", "-1 must be a finite, non-negative duration"),
        ("pipeline.lateness", '"8d"', "'8d' is out of range; use 0 (none) to 7d, e.g. 30s"),
        ("pipeline.idle_timeout", "0", "0 is out of range; use 1ms to 30d, e.g. 2m"),
        ("pipeline.stream_ttl", '"0s"', "'0s' is out of range; use 1s to 365d, e.g. 1d"),
        ("pipeline.stream_ttl", "1e30", "1e+30 is out of range; use 1s to 365d"),
        ("pipeline.max_delay", "0", "0 is out of range; use 1ms to 10s, e.g. 50ms"),
        ("pipeline.max_delay", '"1h"', "'1h' is out of range; use 1ms to 10s"),
        ("pipeline.max_streams", "0", "0 is out of range; use 1 to 100000000, e.g. 1000000"),
        ("pipeline.max_batch", "9223372036854775807", "9223372036854775807 is out of range; "
         "use 1 to 1000000, e.g. 8192"),
        ("state.snapshot_interval", "0", "0 is out of range; use 100ms to 7d, e.g. 60s"),
        ("state.snapshot_interval", '"1000000000000000000000000000000s"',
         "'1000000000000000000000000000000s' is out of range; use 100ms to 7d"),
    ],
)  # fmt: skip
def test_absurd_durations_and_counts_name_the_key_and_the_range(
    capsys, tmp_path, key, value, expected
):
    section, name = key.split(".")
    message = refused(capsys, tmp_path, f"[{section}]\n{name} = {value}\n")
    assert message.startswith(f"{key}: {expected}")


@pytest.mark.parametrize(
    ("key", "value"),
    [("pipeline.window", '"30d"'), ("pipeline.lateness", '"7d"'), ("pipeline.idle_timeout",
     '"1ms"'), ("pipeline.stream_ttl", '"365d"'), ("pipeline.max_delay", '"10s"'),
     ("pipeline.max_delay", '"1ms"'), ("state.snapshot_interval", '"0.2s"'),
     ("state.snapshot_interval", '"7d"'), ("pipeline.max_streams", "100000000")],
)  # fmt: skip
def test_the_ends_of_each_range_pass(capsys, tmp_path, key, value):
    section, name = key.split(".")
    code, _, err = check_config(capsys, tmp_path, f"[{section}]\n{name} = {value}\n")
    assert code == 0, err


def test_the_shipped_config_and_the_container_settings_pass(capsys, monkeypatch):
    assert main(["check-config", str(ROOT / "deploy/sensorcast.toml")]) == 0
    monkeypatch.setenv("SENSORCAST_METRICS_ADDRESS", "0.0.0.0")  # deploy/docker
    monkeypatch.setenv("SENSORCAST_STATE_DIR", "/var/lib/sensorcast")
    assert main(["check-config", str(ROOT / "deploy/sensorcast.toml")]) == 0
    assert "from SENSORCAST_METRICS_ADDRESS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "key"),
    [(model("notes.txt"), "pipeline.model"), ('[metrics]\naddress = "foo bar"\n',
     "metrics.address")],
)  # fmt: skip
def test_run_refuses_them_at_start_naming_the_same_key(tmp_path, text, key):
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "sensorcast.toml").write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", "sensorcast.toml",
         "--broker", "mqtt://127.0.0.1:1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"sensorcast: error: {key} (sensorcast.toml): ")
    assert done.stderr.count("\n") == 1


def test_run_loads_a_checkpoint_once_with_its_interval(monkeypatch):
    # validation loads it (a bad checkpoint is refused before start); the daemon keeps it
    from models import checkpoint
    from pipeline.daemon import Daemon
    from pipeline.settings import load_settings

    loads: list[tuple[object, ...]] = []
    load = checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a: loads.append(a) or load(*a))
    spec = str(WEIGHTS / "default.json")
    given = {"pipeline.model": spec, "pipeline.interval": "0.8", "metrics.port": 0}
    daemon = Daemon(load_settings(env={}, overrides=given))
    assert loads == [(spec, 0.8)]
    assert daemon.engine.forecaster.coverage == 0.8


# ---------------------------------------------------------------- state.dir


def test_a_state_dir_that_cannot_be_made_is_refused_naming_the_key_and_path(
    capsys, tmp_path, monkeypatch
):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder is needed")  # stops mkdir, even for root
    state = blocker / "state"
    why = f"cannot write in {state} (Not a directory); give a folder you can write to"
    assert refused(capsys, tmp_path, f'[state]\ndir = "{state}"\n') == f"state.dir: {why}"
    monkeypatch.setenv("SENSORCAST_STATE_DIR", str(state))
    assert refused(capsys, tmp_path, "") == f"state.dir (SENSORCAST_STATE_DIR): {why}"


def test_a_state_dir_still_to_be_made_passes_and_is_left_to_the_daemon(capsys, tmp_path):
    state = tmp_path / "var" / "state"
    code, _, err = check_config(capsys, tmp_path, f'[state]\ndir = "{state}"\n')
    assert code == 0, err
    assert not (tmp_path / "var").exists()  # a check leaves nothing behind


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path):
    """``sensorcast check-config | head -1``: no BrokenPipeError traceback, SIGPIPE's code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "check-config"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before it prints: its first write finds no reader
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


@pytest.mark.parametrize(
    ("mqtt", "inside"),
    [
        ('subscribe = ["loop/#"]\nprefix = "loop/out"', "loop/#"),
        ('subscribe = ["#"]\nprefix = "loop2"', "#"),
        ('subscribe = ["sensors/#", "$share/g/sensorcast/+/+"]', "$share/g/sensorcast/+/+"),
        ('subscribe = ["+/deadletter"]', "+/deadletter"),
    ],
)
def test_a_prefix_inside_a_subscription_is_refused(capsys, tmp_path, mqtt, inside):
    """The daemon would read its own forecasts and dead letters back, without end."""
    message = refused(capsys, tmp_path, f"[mqtt]\n{mqtt}\n")
    assert message.startswith("mqtt.prefix: ")
    assert f"is inside the subscription {inside!r}" in message


@pytest.mark.parametrize(
    "subscribe", ['["sensors/#"]', '["sensorcast/deadletter/+"]', '["+/forecast"]', '["a/+/+"]']
)
def test_subscriptions_beside_the_prefix_pass(capsys, tmp_path, subscribe):
    code, _, err = check_config(capsys, tmp_path, f"[mqtt]\nsubscribe = {subscribe}\n")
    assert code == 0, err


@pytest.mark.parametrize(
    "text",
    [
        '[state]\ndir = "a\\u0000b"',
        '[mqtt]\npassword_file = "p\\u0000w"',
        '[mqtt]\ntls_ca = "c\\u0000a"',
        '[mqtt]\nbroker = "mqtt://a\\u0000b:1883"',
        '[mqtt]\nsubscribe = ["sensors/#", "a\\u0000b"]',
    ],
)
def test_a_nul_character_in_any_text_is_one_line(capsys, tmp_path, text):
    """No path, URL, topic or name holds one: refused before it reaches the OS (which
    raised ValueError: embedded null byte) or a broker (which was retried forever)."""
    key = text.split("\n")[0].strip("[]") + "." + text.split("\n")[1].split(" ")[0]
    message = refused(capsys, tmp_path, text + "\n")
    assert message.startswith(f"{key}: ") and "NUL" in message
