"""The daemon against a mosquitto that demands TLS client certificates or a password.

Round trips run the daemon in a thread (``running``); the failures run the real
``sensorcast run`` command, which must end in one ``sensorcast: error:`` line and
exit code 2, and never print the password, whatever the log level.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from brokers import Certificates, Mosquitto, make_certificates, password_config, tls_config
from daemons import running, settings_for, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.daemon import Daemon
from pipeline.errors import ConfigError
from pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
USER = "sensor-1"
SECRET = "Corr3ct-H0rse-Battery"  # distinctive, so a leak into any output is found
WRONG = "Wr0ng-Stap1e-Guess"
READING = {"value": 21.5, "ts": 1_700_000_000}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_broker(tmp_path: Path, certs: Certificates) -> Any:
    broker = Mosquitto(tmp_path / "mosquitto", extra=tls_config(certs)).start()
    yield broker
    broker.stop()


@pytest.fixture
def password_broker(tmp_path: Path) -> Any:
    extra = password_config(tmp_path / "auth", {USER: SECRET})
    broker = Mosquitto(tmp_path / "mosquitto", extra=extra).start()
    yield broker
    broker.stop()


class Peer:
    """A paho client of the secured broker that keeps every forecast it receives."""

    def __init__(
        self, port: int, certs: Certificates | None = None, password: str | None = None
    ) -> None:
        self.forecasts: list[tuple[str, Any]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        if certs is not None:
            self.client.tls_set(certs.ca, certs.client_cert, certs.client_key)
        if password is not None:
            self.client.username_pw_set(USER, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("sensorcast/forecast/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "the test client could not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.forecasts.append((message.topic, json.loads(message.payload)))

    def publish_reading(self) -> None:
        self.client.publish("sensors/site/dev/temp", json.dumps(READING), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def assert_round_trip(peer: Peer, settings: Any) -> None:
    try:
        with running(settings):
            peer.publish_reading()
            assert wait_until(lambda: bool(peer.forecasts), 10), "no forecast came back"
    finally:
        peer.close()
    topic, forecast = peer.forecasts[0]
    assert topic == "sensorcast/forecast/site/dev/temp"
    assert (forecast["stream"], forecast["value"]) == ("site/dev/temp", READING["value"])
    assert forecast["timestamp"] == "2023-11-14T22:13:20Z"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``sensorcast run`` to its end; no snapshots, no metrics, no SENSORCAST_* from outside.
    A daemon still running after ``timeout`` is killed (TimeoutExpired)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SENSORCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--metrics-port", "0", *args],
        cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, no traceback, and exactly one error line (log lines may come before it)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("sensorcast: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# ---------------------------------------------------------------- TLS


def test_tls_with_client_certificates_round_trips_a_reading(tls_broker, certs):
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    settings = settings_for(
        url, mqtt__tls_ca=certs.ca, mqtt__tls_cert=certs.client_cert,
        mqtt__tls_key=certs.client_key,
    )  # fmt: skip
    assert_round_trip(Peer(tls_broker.port, certs=certs), settings)


# paho leaks the socket of a failed TLS handshake (Client._ssl_wrap_socket does not close
# it); the CLI exits right away, but in-process the garbage collector reports it.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_an_unrelated_ca_is_a_config_error_naming_tls_ca(tls_broker, certs):
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    daemon = Daemon(settings_for(url, mqtt__tls_ca=certs.other_ca))
    with pytest.raises(ConfigError, match=r"TLS.*mqtt\.tls_ca"):
        daemon.run()
    gc.collect()  # the leaked socket is reported now, under this test's filter

    line = the_error_line(run_cli("--broker", url, "--tls-ca", certs.other_ca))
    assert "TLS" in line and "mqtt.tls_ca" in line and url in line


@pytest.mark.parametrize("wrong", ["ca", "cert"])
def test_a_tls_file_that_does_not_load_is_named_alone(certs, wrong):
    """A key given as the CA, or a CA as the client certificate: the one setting (and
    file) that did not load is named, not all three."""
    flags = {
        "ca": ["--tls-ca", certs.client_key],
        "cert": ["--tls-ca", certs.ca, "--tls-cert", certs.ca, "--tls-key", certs.client_key],
    }
    line = the_error_line(run_cli("--broker", "mqtts://127.0.0.1:1", *flags[wrong]))
    if wrong == "ca":
        assert line.startswith(f"sensorcast: error: mqtt.tls_ca ({certs.client_key}): cannot load")
    else:
        assert line.startswith(
            f"sensorcast: error: mqtt.tls_cert and mqtt.tls_key ({certs.ca}, {certs.client_key}): "
            "cannot load"
        )  # fmt: skip


def test_a_missing_client_certificate_is_a_config_error(tls_broker, certs):
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    # The refusal comes within milliseconds of the handshake, but a retrying daemon would
    # run forever; 30 s leaves room for a slow start (importing torch) on a loaded machine.
    try:
        result = run_cli("--broker", url, "--tls-ca", certs.ca, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon was still retrying the refused TLS connection after 30 s")
    assert "mqtt.tls_cert" in the_error_line(result)


@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_a_certificate_for_another_name_names_the_broker_host(tls_broker, certs):
    # the broker's certificate names the address 127.0.0.1 only, not the name localhost
    url = f"mqtts://localhost:{tls_broker.port}"
    settings = settings_for(url, mqtt__tls_ca=certs.ca, mqtt__tls_cert=certs.client_cert,
                            mqtt__tls_key=certs.client_key)  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        Daemon(settings).run()
    message = str(refused.value)
    del refused  # its traceback holds paho's leaked socket: reported now, under the filter
    gc.collect()
    assert "mismatch" in message.lower()
    assert message.endswith("connect by a name the broker's certificate holds (mqtt.broker)")


def test_an_encrypted_key_is_refused_before_any_prompt(tmp_path, certs):
    encrypted = tmp_path / "client-enc.key"
    command = ["openssl", "pkey", "-in", certs.client_key, "-aes256", "-passout",
               "pass:secret", "-out", str(encrypted)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    result = run_cli("--broker", "mqtts://127.0.0.1:1", "--tls-ca", certs.ca,
                     "--tls-cert", certs.client_cert, "--tls-key", str(encrypted))  # fmt: skip
    line = the_error_line(result)
    assert "--tls-key" in line and "is encrypted with a passphrase" in line
    assert "Enter PEM pass phrase" not in result.stdout + result.stderr


# -------------------------------------------------- replay --to a TLS listener

LOG_ROWS = "".join(f"{1_700_000_000 + 60 * i},{20 + i % 5}\n" for i in range(30))


def replay_to(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``sensorcast replay small.csv ARGS`` in this process: exit code, its one line."""
    from pipeline.cli import main

    log = tmp_path / "small.csv"
    log.write_text("timestamp,value\n" + LOG_ROWS)
    code = main(["replay", str(log), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, (out if code == 0 else err).strip()


def test_replay_publishes_to_a_tls_listener_with_a_client_certificate(
    tls_broker, certs, tmp_path, capsys
):
    received: list[Any] = []
    peer = Peer(tls_broker.port, certs=certs)
    peer.client.subscribe("sensors/#", qos=1)
    peer.client.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    try:
        code, line = replay_to(tmp_path, capsys, "--to", f"mqtts://127.0.0.1:{tls_broker.port}",
                               "--tls-ca", certs.ca, "--tls-cert", certs.client_cert,
                               "--tls-key", certs.client_key)  # fmt: skip
        assert code == 0 and line.startswith("published 30 readings to mqtts://"), line
        assert wait_until(lambda: len(received) == 30, 10), len(received)
    finally:
        peer.close()
    assert [m["value"] for m in received] == [20 + i % 5 for i in range(30)]


@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tls-ca", "other_ca"], "--tls-ca"),  # an unrelated CA: the handshake fails
        (["--tls-ca", "ca"], "--tls-cert"),  # no client certificate: the broker hangs up
    ],
)
def test_replay_to_a_tls_listener_that_says_no_is_one_line_naming_the_flag(
    tls_broker, certs, tmp_path, capsys, flags, named
):
    files = [getattr(certs, value) if value in ("ca", "other_ca") else value for value in flags]
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    code, line = replay_to(tmp_path, capsys, "--to", url, *files)
    gc.collect()  # paho's leaked socket of a failed handshake is reported under the filter
    assert code == 2 and line.startswith("sensorcast: error: --to") and "\n" not in line
    assert named in line and url in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--tls-ca", "ca"], "--tls-ca: the TLS files are for --to"),
        (
            ["--to", "mqtts://127.0.0.1:1", "--tls-cert", "client_cert"],
            "--tls-cert needs --tls-key",
        ),
        (
            ["--to", "mqtts://127.0.0.1:1", "--tls-ca", "missing.pem"],
            "--tls-ca: missing.pem cannot be read",
        ),
    ],  # fmt: skip
)
def test_replay_tls_flags_misused_are_one_line(certs, tmp_path, capsys, monkeypatch, flags,
                                               expected):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    files = [getattr(certs, f) if f in ("ca", "client_cert") else f for f in flags]
    code, line = replay_to(tmp_path, capsys, *files)
    assert code == 2 and line.startswith(f"sensorcast: error: {expected}"), line


# ---------------------------------------------------------------- passwords


def test_password_from_a_file_round_trips_a_reading(password_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    password_file = tmp_path / "password"
    password_file.write_text(SECRET + "\n")
    url = f"mqtt://{USER}@127.0.0.1:{password_broker.port}"
    settings = settings_for(url, mqtt__password_file=str(password_file))
    assert_round_trip(Peer(password_broker.port, password=SECRET), settings)
    assert SECRET not in caplog.text


def test_password_from_the_environment_round_trips_a_reading(password_broker, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"mqtt://{USER}@127.0.0.1:{password_broker.port}"
    given = {"mqtt.broker": url, "metrics.port": 0, "pipeline.max_delay": "20ms"}
    settings = load_settings(env={"SENSORCAST_MQTT_PASSWORD": SECRET}, overrides=given)
    assert_round_trip(Peer(password_broker.port, password=SECRET), settings)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("level", ["info", "debug"])
@pytest.mark.parametrize("source", ["file", "env"])
def test_a_wrong_password_is_refused_with_the_fix_and_never_printed(
    password_broker, tmp_path, source, level
):
    url = f"mqtt://{USER}@127.0.0.1:{password_broker.port}"
    args = ["--broker", url, "--log-level", level]
    env = {}
    if source == "file":
        password_file = tmp_path / "password"
        password_file.write_text(WRONG + "\n")
        args += ["--password-file", str(password_file)]
    else:
        env["SENSORCAST_MQTT_PASSWORD"] = WRONG
    result = run_cli(*args, env=env)
    line = the_error_line(result)
    assert "refused" in line and url in line
    assert "mqtt.password_file" in line and "SENSORCAST_MQTT_PASSWORD" in line
    for secret in (WRONG, SECRET):
        assert secret not in result.stdout
        assert secret not in result.stderr
    assert f'"level": "{level}"' in result.stderr  # the settings line: the level was on
