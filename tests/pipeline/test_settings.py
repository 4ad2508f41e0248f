"""Settings: defaults < file < environment < flags, validated once, secrets never shown."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tomllib
from pathlib import Path

import pytest

from pipeline.check_config import render
from pipeline.cli import main
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.settings import (
    MqttSettings,
    Settings,
    StateSettings,
    add_flags,
    load_settings,
    overrides,
)
from pipeline.settings_schema import KEYS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy/sensorcast.toml"
SECRET = "hunter2-correct-horse"


def write(tmp_path: Path, text: str, name: str = "sensorcast.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path | None = None, env: dict[str, str] | None = None,
             flags: dict[str, object] | None = None) -> str:  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env or {}, flags)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SENSORCAST_* variables from the machine running the tests."""
    import os

    for var in [v for v in os.environ if v.startswith("SENSORCAST_")]:
        monkeypatch.delenv(var)


# ---------------------------------------------------------------- layers


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.pipeline == PipelineConfig()
    assert settings.state == StateSettings(dir=None, snapshot_interval=60.0)
    mqtt = settings.mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("localhost", 1883, False)
    assert (mqtt.keepalive, mqtt.max_payload, mqtt.subscribe) == (30.0, 65_536, ("sensors/#",))
    assert (settings.model, settings.log_level, settings.metrics.port) == ("default", "info", 9108)
    assert settings.password() is None
    assert dict(settings.sources) == {}


def test_file_values_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [mqtt]
        broker = "mqtts://ann@broker.example"
        subscribe = ["a/#", "b/+/c"]
        keepalive = 45
        max_payload = "1MiB"
        deadletter = false
        [pipeline]
        window = "5m"
        interval = 0.8
        model = "persistence"
        [state]
        dir = "snapshots"
        [log]
        level = "DEBUG"
    """)  # fmt: skip
    s = load_settings(path, env={})
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls, s.mqtt.username) == (
        "broker.example", 8883, True, "ann")  # fmt: skip
    assert s.mqtt.subscribe == ("a/#", "b/+/c")
    assert (s.mqtt.keepalive, s.mqtt.max_payload, s.mqtt.deadletter) == (45.0, 1 << 20, False)
    assert (s.pipeline.window, s.pipeline.interval, s.model) == (300.0, 0.8, "persistence")
    assert s.state.dir == Path("snapshots")
    assert s.log_level == "debug"
    assert s.sources["pipeline.window"] == str(path)


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nbroker = "mqtt://file"\nqos = 0\n[pipeline]\nwindow = "1m"\n')
    env = {
        "SENSORCAST_MQTT_BROKER": "mqtt://env:1884",
        "SENSORCAST_PIPELINE_WINDOW": "2m",
        "SENSORCAST_MQTT_SUBSCRIBE": "a/#, b/#,",
        "SENSORCAST_MQTT_DEADLETTER": "no",
        "SENSORCAST_MQTT_MAX_PAYLOAD": "512",
        "SENSORCAST_PIPELINE_INTERVAL": "0.5",
        "SENSORCAST_STATE_DIR": "",
    }
    s = load_settings(path, env)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.qos) == ("env", 1884, 0)  # qos: the file's
    assert (s.pipeline.window, s.pipeline.interval) == (120.0, 0.5)
    assert (s.mqtt.subscribe, s.mqtt.deadletter, s.mqtt.max_payload) == (("a/#", "b/#"), False, 512)
    assert s.sources["mqtt.broker"] == "SENSORCAST_MQTT_BROKER"
    assert s.sources["mqtt.qos"] == str(path)


@pytest.mark.parametrize("text", ["true", "1", "YES", "false", "0", "no"])
def test_environment_booleans(text: str) -> None:
    s = load_settings(env={"SENSORCAST_MQTT_DEADLETTER": text})
    assert s.mqtt.deadletter is (text.lower() in ("true", "1", "yes"))


def test_flags_override_environment_and_none_means_unset() -> None:
    env = {"SENSORCAST_MQTT_BROKER": "mqtt://env", "SENSORCAST_PIPELINE_WINDOW": "2m"}
    flags = {"mqtt.broker": "mqtt://flag", "pipeline.window": None, "metrics.port": 0,
             "mqtt.subscribe": ["x/#", "y/#"]}  # fmt: skip
    s = load_settings(env=env, overrides=flags)
    assert (s.mqtt.host, s.pipeline.window, s.metrics.port) == ("flag", 120.0, 0)
    assert s.mqtt.subscribe == ("x/#", "y/#")
    assert s.sources["mqtt.broker"] == "--broker"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\nport = 9200\n")
    assert load_settings(env={"SENSORCAST_CONFIG": str(path)}).metrics.port == 9200
    message = error_of(env={"SENSORCAST_CONFIG": str(tmp_path / "nope.toml")})
    assert message == (
        f"config file {tmp_path / 'nope.toml'} (named by SENSORCAST_CONFIG) does not exist; "
        "check the path"
    )


def test_derived_broker_fields() -> None:
    def mqtt(**flags: object) -> MqttSettings:
        return load_settings(env={}, overrides={f"mqtt.{k}": v for k, v in flags.items()}).mqtt

    assert (mqtt(broker="mqtts://h").port, mqtt(broker="mqtt://h:1").port) == (8883, 1)
    with_ca = mqtt(broker="mqtt://h", tls_ca=str(EXAMPLE))
    assert (with_ca.tls, with_ca.port) == (True, 8883)
    assert mqtt(broker="mqtt://[::1]:1884").host == "::1"
    assert mqtt(broker="mqtt://ann%40x@h/").username == "ann@x"


def test_flags_helper_names_each_flag_and_its_variable() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert "[env: SENSORCAST_STATE_DIR]" in " ".join(parser.format_help().split())
    args = parser.parse_args(["--qos", "0", "--no-deadletter", "--state-dir", "/tmp/s"])
    s = load_settings(env={}, overrides=overrides(args))
    assert (s.mqtt.qos, s.mqtt.deadletter, s.state.dir) == (0, False, Path("/tmp/s"))
    args = parser.parse_args(["--metrics-port", "99999"])
    assert error_of(flags=overrides(args)).startswith("--metrics-port: '99999' is out of range")


# ---------------------------------------------------------------- errors

FILE_ERRORS = [
    ("[mqqt]\nqos = 1", "[mqqt] (F): unknown section; did you mean mqtt? (sections: mqtt, "),
    ("[mqtt]\nbrokr = 'mqtt://h'", "mqtt.brokr (F): unknown key; did you mean broker?"),
    ("[log]\ncolour = 'red'", "log.colour (F): unknown key (keys in [log]: level)"),
    ("broker = 'mqtt://h'", "broker (F): keys belong in a section such as [mqtt]; did you mean "
     "mqtt.broker?"),
    ("[mqtt]\nqos = '1'", "mqtt.qos (F): '1' is text, not a whole number; write e.g. qos = 1"),
    ("[mqtt]\nsubscribe = 'a/#'", "mqtt.subscribe (F): 'a/#' is text, not a list of text; "
     'write e.g. subscribe = ["sensors/#"]'),
    ("[pipeline]\nwindow = 'soon'", "pipeline.window (F): 'soon' is not a duration; write e.g."),
    ("[pipeline]\nwindow = -5", "pipeline.window (F): -5 must be a finite, non-negative"),
    ("[mqtt]\nmax_payload = '64KB'", "mqtt.max_payload (F): '64KB' is not a size; write e.g. "
     "64KiB"),
    ("[mqtt]\nmax_payload = '1024MiB'", "mqtt.max_payload (F): '1024MiB' is out of range; use 1"),
    ("[mqtt]\nbroker = 'tcp://h:1883'", "mqtt.broker (F): 'tcp://h:1883' must start with "
     "mqtt:// (or mqtts:// for TLS)"),
    ("[mqtt]\nbroker = 'localhost:1883'", "mqtt.broker (F): 'localhost:1883' must start with"),
    ("[mqtt]\nbroker = 'mqtt://'", "mqtt.broker (F): 'mqtt://' has no host; write e.g."),
    ("[mqtt]\nbroker = 'mqtt://h:99999'", "mqtt.broker (F): 'mqtt://h:99999' has a bad host or "
     "port"),
    ("[mqtt]\nbroker = 'mqtt://h:x'", "mqtt.broker (F): 'mqtt://h:x' has a bad host or port"),
    ("[mqtt]\nbroker = 'mqtt://h:0'", "mqtt.broker (F): 'mqtt://h:0' has port 0"),
    ("[mqtt]\nbroker = 'mqtt://h/x'", "mqtt.broker (F): 'mqtt://h/x' must be only"),
    ("[mqtt]\nqos = 2", "mqtt.qos (F): 2 is not supported: QoS 2"),
    ("[mqtt]\nqos = 7", "mqtt.qos (F): 7 is not a QoS level; use 1 (at least once) or 0"),
    ("[mqtt]\npayload = 'jsn'", "mqtt.payload (F): 'jsn' is not one of auto, number, json, "
     "senml, influx; did you mean json?"),
    ("[mqtt]\nprotocol = '3.1'", "mqtt.protocol (F): '3.1' is not one of 5, 3.1.1"),
    ("[mqtt]\nprotocol = 5", 'mqtt.protocol (F): 5 is a whole number, not text; write e.g. '
     'protocol = "5"'),
    ("[mqtt]\nkeepalive = '500ms'", "mqtt.keepalive (F): '500ms' must be whole seconds"),
    ("[mqtt]\nclient_id = ''", "mqtt.client_id (F): '' must be non-empty text"),
    # MQTT strings: brokers refuse control characters (a reconnect loop, not an error)
    ('[mqtt]\nclient_id = "a\\u0001b"', "mqtt.client_id (F): 'a\\x01b' contains the control "
     "character '\\x01', which brokers refuse; remove it"),
    ("[mqtt]\nclient_id = '" + "x" * 65_532 + "'", "mqtt.client_id (F): '" + "x" * 75 + "...' "
     "(65,532 characters) is 65,532 bytes long; MQTT allows at most 65,531"),
    ('[mqtt]\nusername = "a\\u0000"', "mqtt.username (F): 'a\\x00' contains the control "
     "character '\\x00'"),
    ("[mqtt]\nbroker = 'mqtt://a%7Fb@h'", "mqtt.broker (F): its user contains the control "
     "character '\\x7f'"),
    ("[mqtt]\nsubscribe = []", "mqtt.subscribe (F): [] is empty; subscribe to at least one"),
    ("[mqtt]\nsubscribe = ['a/#', '']", "mqtt.subscribe (F): ['a/#', ''] holds an invalid topic "
     "filter ''"),
    ("[mqtt]\ntopic_template = ''", "mqtt.topic_template (F): '' is "),
    ("[mqtt]\nprefix = 'out/#'", "mqtt.prefix (F): 'out/#' is not a topic prefix: "),
    ("[mqtt]\ntls_ca = 'missing-ca.pem'", "mqtt.tls_ca (F): 'missing-ca.pem' cannot be read (No "
     "such file or directory); give the path of a readable file"),
    ("[mqtt]\npassword_file = '.'", "mqtt.password_file (F): '.' cannot be read (Is a directory)"),
    ("[mqtt]\ntls_cert = 'F'", "mqtt.tls_cert (F): 'F' needs mqtt.tls_key too; set it "
     "(SENSORCAST_MQTT_TLS_KEY) or remove tls_cert"),
    ("[mqtt]\ntls_key = 'F'", "mqtt.tls_key (F): 'F' needs mqtt.tls_cert too"),
    ("[mqtt]\nusername = 'bob'\nbroker = 'mqtt://ann@h'", "mqtt.username (F): 'bob' differs "
     "from the user 'ann' in mqtt.broker; set the user in one place"),
    ("[metrics]\nport = 70000", "metrics.port (F): 70000 is out of range; use 0 (off) to 65535"),
    ("[log]\nlevel = 'verbose'", "log.level (F): 'verbose' is not one of debug, info, warning, "
     "error"),
    ("[pipeline]\ninterval = 1.5", "pipeline.interval (F): 1.5 must be a coverage between 0 and "
     "1, e.g. 0.9"),
    ("[pipeline]\nmax_streams = 0", "pipeline.max_streams (F): 0 is out of range; use 1 to "
     "100000000"),
    ("[pipeline]\nmodel = 'nope.ckpt'", "pipeline.model (F): 'nope.ckpt' is not a usable model: "),
    ("[state]\ndir = 'F'", "state.dir (F): 'F' is a file, not a directory"),
    ("[state]\nsnapshot_interval = 0", "state.snapshot_interval (F): 0 is out of range; use "
     "100ms to 7d, e.g. 60s"),
    ("[metrics]\naddress = '300.1.1.1'", "metrics.address (F): '300.1.1.1' is neither an IP "
     "address nor a host name; use e.g. 127.0.0.1"),
    ("[mqtt]\nqos = 1\nbroker = mqtt://h", "F:3: invalid TOML: Invalid value at column 10; text "
     'needs quotes, e.g. window = "60s"'),
]  # fmt: skip


def test_a_repeated_table_gets_no_advice_on_quotes(tmp_path: Path) -> None:
    path = tmp_path / "sensorcast.toml"
    path.write_text("[mqtt]\nqos = 1\n[mqtt]\nqos = 0\n")
    expected = f"{path}:3: invalid TOML: Cannot declare ('mqtt',) twice at column 6"
    assert error_of(path) == expected


def test_only_a_bare_word_gets_advice_on_quotes(tmp_path: Path) -> None:
    path = tmp_path / "sensorcast.toml"
    path.write_text("[pipeline]\nwindow = 60s\n")
    assert error_of(path).endswith('at column 12; text needs quotes, e.g. window = "60s"')
    path.write_text("[pipeline\nwindow = '60s'\n")
    expected = (
        f"{path}:1: invalid TOML: Expected ']' at the end of a table declaration at column 10"
    )
    assert error_of(path) == expected


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sensorcast.toml"
    path.write_bytes("\ufeff[pipeline]\nwindow = '60s'\n".encode())
    assert main(["check-config", str(path)]) == 0


@pytest.mark.parametrize(("text", "expected"), FILE_ERRORS)
def test_file_errors_name_key_file_value_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    # a short relative path: a value over SHOWN_CHARACTERS is cut short in the message,
    # and the temporary folder's name alone can be that long
    monkeypatch.chdir(tmp_path)
    path = Path("sensorcast.toml")
    path.write_text(text.replace("'F'", repr(str(path))))
    message = error_of(path)
    assert message.startswith(expected.replace("(F)", f"({path})").replace("F:", f"{path}:")
                              .replace("'F'", repr(str(path))))  # fmt: skip


def test_missing_and_unreadable_config_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of(missing) == f"config file {missing} does not exist; check the path"
    assert error_of(tmp_path).startswith(f"config file {tmp_path} cannot be read (Is a directory)")


def test_a_config_file_in_another_encoding_is_named_and_one_with_a_bom_is_read(
    tmp_path: Path,
) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[mqtt]\nclient_id = "sonde-été"\n'.encode("latin-1"))
    assert error_of(latin) == f"config file {latin} is not UTF-8 text; save it as UTF-8"
    notepad = tmp_path / "notepad.toml"
    notepad.write_bytes('\ufeff[mqtt]\nclient_id = "sonde-été"\n'.encode())
    settings = load_settings(notepad, {}, None)
    assert settings.mqtt.client_id == "sonde-été"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SENSORCAST_MQTT_QOS": "2"}, "SENSORCAST_MQTT_QOS: '2' is not supported: QoS 2"),
        ({"SENSORCAST_MQTT_QOS": "one"}, "SENSORCAST_MQTT_QOS: 'one' is not a whole number; "
         "write e.g. 1"),
        ({"SENSORCAST_MQTT_DEADLETTER": "maybe"}, "SENSORCAST_MQTT_DEADLETTER: 'maybe' is not "
         "true or false; write e.g. true"),
        ({"SENSORCAST_PIPELINE_WINDOW": "1 fortnight"}, "SENSORCAST_PIPELINE_WINDOW: "
         "'1 fortnight' is not a duration"),
        ({"SENSORCAST_PIPELINE_INTERVAL": "90"}, "SENSORCAST_PIPELINE_INTERVAL: 90.0 must be a "
         "coverage between 0 and 1"),
        ({"SENSORCAST_MQTT_BROKER": "ws://h"}, "SENSORCAST_MQTT_BROKER: 'ws://h' must start with"),
        ({"SENSORCAST_MQTT_BROKR": "x"}, "SENSORCAST_MQTT_BROKR: unknown variable; did you mean "
         "SENSORCAST_MQTT_BROKER?"),
        ({"SENSORCAST_PIPELINE_WINDOWS": "1m"}, "SENSORCAST_PIPELINE_WINDOWS: unknown variable; "
         "did you mean SENSORCAST_PIPELINE_WINDOW?"),
        ({"SENSORCAST_MQTT_PASWORD": "x"}, "SENSORCAST_MQTT_PASWORD: unknown variable; did you "
         "mean SENSORCAST_MQTT_PASSWORD?"),
        ({"SENSORCAST_ZZZ": "1"}, "SENSORCAST_ZZZ: unknown variable (keys are "
         "SENSORCAST_<SECTION>_<KEY>, e.g. SENSORCAST_MQTT_BROKER)"),
        ({"SENSORCAST_MQTT_PASSWORD": "x"}, "SENSORCAST_MQTT_PASSWORD: a password is set but no "
         "user; set mqtt.username or user@ in mqtt.broker"),
    ],
)  # fmt: skip
def test_environment_errors_name_the_variable(env: dict[str, str], expected: str) -> None:
    assert error_of(env=env).startswith(expected)


def test_our_other_variables_are_not_unknown(tmp_path: Path) -> None:
    env = {"SENSORCAST_DATA": "/data", "SENSORCAST_CONFIG": "", "PATH": "/bin"}
    assert load_settings(env=env) == Settings()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"mqtt.broker": "tcp://h"}, "--broker: 'tcp://h' must start with mqtt://"),
        ({"pipeline.interval": 2.0}, "--interval: 2.0 must be a coverage between 0 and 1"),
        ({"state.snapshot_interval": "never"}, "--snapshot-interval: 'never' is not a duration"),
        ({"mqtt.brokr": "x"}, "mqtt.brokr: unknown key; did you mean broker?"),
        ({"mqtt.password": "x"}, "mqtt.password: passwords do not belong in config files or "
         "flags; put the password in a file named by mqtt.password_file, or in "
         "SENSORCAST_MQTT_PASSWORD"),
        ({"mqqt.broker": "x"}, "mqqt.broker: unknown setting; did you mean mqtt.broker?"),
    ],
)  # fmt: skip
def test_flag_errors_name_the_flag(flags: dict[str, object], expected: str) -> None:
    assert error_of(flags=flags).startswith(expected)


def test_file_error_sources_name_the_layer_that_set_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nqos = 1\n")
    assert error_of(path, env={"SENSORCAST_MQTT_QOS": "5"}).startswith("SENSORCAST_MQTT_QOS:")
    message = error_of(path, env={"SENSORCAST_MQTT_QOS": "5"}, flags={"mqtt.qos": 9})
    assert message.startswith("--qos: 9 is not a QoS level")


# ---------------------------------------------------------------- topics


def test_topic_checks_name_the_key_and_the_problem() -> None:
    assert error_of(flags={"mqtt.subscribe": "a/#, a/#/b"}).startswith(
        "--subscribe: 'a/#, a/#/b' holds an invalid topic filter 'a/#/b': '#' must be the whole"
    )
    assert error_of(flags={"mqtt.topic_template": "a/{x"}).startswith(
        "--topic-template: 'a/{x' level '{x' has an unbalanced brace"
    )
    assert error_of(flags={"mqtt.prefix": "out/+"}) == (
        "--prefix: 'out/+' is not a topic prefix: holds an MQTT wildcard (+ or #); a topic to "
        "publish to cannot; write e.g. sensorcast"
    )
    assert error_of(flags={"mqtt.prefix": "/x"}) == (
        "--prefix: '/x' is not a topic prefix: has an empty level (a leading, trailing or doubled "
        "'/'); write e.g. sensorcast"
    )
    assert load_settings(env={}, overrides={"mqtt.topic_template": "s/{site}/_/#"})


# ---------------------------------------------------------------- the password


def test_password_from_file_is_read_when_asked_and_never_shown(tmp_path: Path) -> None:
    secret_file = write(tmp_path, f"{SECRET}\nignored second line\n", "mqtt.secret")
    path = write(tmp_path, f'[mqtt]\nusername = "ann"\npassword_file = "{secret_file}"\n')
    s = load_settings(path, env={})
    assert s.password() == SECRET
    assert s.redacted()["mqtt"]["password"] == "***"
    for shown in (repr(s), str(s), repr(s.redacted()), render(s)):
        assert SECRET not in shown
    assert str(secret_file) in repr(s)  # where it comes from is fine to show
    secret_file.write_text("rotated\n")
    assert s.password() == "rotated"


def test_password_from_environment_is_never_shown() -> None:
    env = {"SENSORCAST_MQTT_PASSWORD": SECRET, "SENSORCAST_MQTT_BROKER": "mqtt://ann@h"}
    s = load_settings(env=env)
    assert (s.password(), s.mqtt.username) == (SECRET, "ann")
    for shown in (repr(s), str(s), repr(s.redacted()), render(s), repr(dataclasses.asdict(s))):
        assert SECRET not in shown
    assert copy.deepcopy(s) == s and copy.deepcopy(s).password() == SECRET
    assert "# password: *** (from SENSORCAST_MQTT_PASSWORD)" in render(s)


@pytest.mark.parametrize(
    "text",
    [
        f'[mqtt]\nbroker = "mqtt://ann:{SECRET}@h:1883"',
        f'[mqtt]\nbroker = "tcp://ann:{SECRET}@h"',
        f'[mqtt]\nbroker = "ann:{SECRET}@h"',
        f'[mqtt]\npassword = "{SECRET}"',
        f"[mqtt]\npassword = {SECRET}",  # invalid TOML: the line is not quoted back
        f'password = "{SECRET}"',
        f'[mqtt]\npasword = "{SECRET}"',
    ],
)
def test_errors_never_show_the_password(tmp_path: Path, text: str) -> None:
    assert SECRET not in error_of(write(tmp_path, text))


def test_password_errors(tmp_path: Path) -> None:
    assert error_of(env={"SENSORCAST_MQTT_BROKER": f"mqtt://ann:{SECRET}@h"}) == (
        "SENSORCAST_MQTT_BROKER: 'mqtt://ann:***@h' embeds a password; remove it from the URL "
        "and put the password in a file named by mqtt.password_file, or in "
        "SENSORCAST_MQTT_PASSWORD"
    )
    empty = write(tmp_path, "\n", "empty.secret")
    env = {"SENSORCAST_MQTT_USERNAME": "ann", "SENSORCAST_MQTT_PASSWORD_FILE": str(empty)}
    assert error_of(env=env) == (
        f"SENSORCAST_MQTT_PASSWORD_FILE: '{empty}' has an empty first line; write the password "
        "there"
    )
    empty.write_text(SECRET)
    message = error_of(env={**env, "SENSORCAST_MQTT_PASSWORD": SECRET})
    assert message == (
        f"SENSORCAST_MQTT_PASSWORD_FILE: '{empty}' and SENSORCAST_MQTT_PASSWORD are both set; "
        "keep one"
    )


# ---------------------------------------------------------------- the example and check-config


def test_example_config_holds_every_key_at_its_default() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    assert {f"{s}.{k}": v for s, table in raw.items() for k, v in table.items()} == {
        key.dotted: key.default for key in KEYS
    }
    assert load_settings(EXAMPLE, env={}) == load_settings(env={}) == Settings()


def test_check_config_prints_redacted_settings_that_load_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path = write(tmp_path, '[mqtt]\nbroker = "mqtts://ann@b:8884"\n[pipeline]\nwindow = "90s"\n')
    monkeypatch.setenv("SENSORCAST_MQTT_PASSWORD", SECRET)
    monkeypatch.setenv("SENSORCAST_STATE_SNAPSHOT_INTERVAL", "5m")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert f'broker = "mqtts://ann@b:8884"  # from {path}; host b, port 8884, TLS on' in out
    assert 'window = "90s"' in out and 'max_payload = "64KiB"' in out
    assert 'snapshot_interval = "5m"  # from SENSORCAST_STATE_SNAPSHOT_INTERVAL' in out
    printed = write(tmp_path, out, "printed.toml")
    assert load_settings(printed, env={"SENSORCAST_MQTT_PASSWORD": SECRET}) == load_settings(
        path, env={"SENSORCAST_MQTT_PASSWORD": SECRET, "SENSORCAST_STATE_SNAPSHOT_INTERVAL": "5m"}
    )


def test_check_config_rejects_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    path = write(tmp_path, "[mqtt]\nqos = 2\n")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"sensorcast: error: mqtt.qos ({path}): 2 is not supported")
    assert captured.err.count("\n") == 1


def test_a_negative_duration_is_called_negative() -> None:
    assert error_of(flags={"pipeline.window": "-5s"}) == (
        "--window: '-5s' is negative; give a duration like 60s"
    )
