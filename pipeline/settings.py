"""The daemon's settings: one frozen object built from file + environment + flags.

Precedence, lowest first: built-in defaults, the TOML file, environment
variables ``SENSORCAST_<SECTION>_<KEY>``, command-line flags (``overrides``).
Everything is validated once, here; every error is a one-line ``ConfigError``
naming the key as the user wrote it (``mqtt.qos (sensorcast.toml)``,
``SENSORCAST_MQTT_QOS`` or ``--qos``), the bad value and the fix.

The MQTT password comes only from ``mqtt.password_file`` or the variable
``SENSORCAST_MQTT_PASSWORD``. Settings remember where it comes from, never the
password itself: ``Settings.password()`` reads it when it is needed.

>>> s = load_settings(env={"SENSORCAST_PIPELINE_WINDOW": "1m"}, overrides={"mqtt.qos": "0"})
>>> s.pipeline.window, s.mqtt.qos, s.mqtt.host, s.mqtt.port, s.mqtt.tls
(60.0, 0, 'localhost', 1883, False)
>>> load_settings(env={"SENSORCAST_MQTT_BROKR": "mqtt://broker"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pipeline.errors.ConfigError: SENSORCAST_MQTT_BROKR: unknown variable; did you mean ...BROKER?
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from connectors import topics
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.protocols import Forecaster
from pipeline.settings_schema import (
    CONFIG_ENV,
    ENV_PREFIX,
    KEY,
    KEYS,
    OTHER_ENV,
    PASSWORD_ENV,
    PASSWORD_HINT,
    SECTIONS,
    Given,
    Key,
    convert,
    mqtt_string_problem,
    parse_broker,
    suggest,
)

_ENV_KEYS = {key.env: key for key in KEYS}
_PIPELINE_FIELDS = ("window", "lateness", "idle_timeout", "max_streams", "stream_ttl",
                    "interval", "max_batch", "max_delay")  # fmt: skip
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_MODEL = "pipeline.model"


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The MQTT connection, subscriptions and payload decoding (durations in seconds)."""

    broker: str = "mqtt://localhost:1883"
    subscribe: tuple[str, ...] = ("sensors/#",)
    topic_template: str = "sensors/{site}/{device}/{measurement}"
    payload: str = "auto"
    json_value_field: str = "value"
    json_time_field: str = "ts"
    prefix: str = "sensorcast"
    qos: int = 1
    client_id: str = "sensorcast"
    protocol: str = "5"
    keepalive: float = 30.0
    username: str = ""  # the user in the broker URL, when this key is not set
    password_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    max_payload: int = 65_536
    queue_size: int = 100_000
    deadletter: bool = True

    @property
    def tls(self) -> bool:
        """TLS is on for ``mqtts://`` or when any ``tls_*`` file is given."""
        tls_files = self.tls_ca or self.tls_cert or self.tls_key
        return parse_broker(self.broker).scheme == "mqtts" or bool(tls_files)

    @property
    def host(self) -> str:
        return parse_broker(self.broker).host

    @property
    def port(self) -> int:
        """The URL's port, else 8883 with TLS and 1883 without."""
        port = parse_broker(self.broker).port
        return port if port is not None else (8883 if self.tls else 1883)


@dataclass(frozen=True, slots=True)
class StateSettings:
    dir: Path | None = None  # None: no snapshots
    snapshot_interval: float = 60.0
    journal_fsync: bool = False


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: str = "127.0.0.1"
    port: int = 9108  # 0: no HTTP endpoint
    max_streams: int = 1000  # streams with per-stream series, at most
    streams: tuple[str, ...] = ("*",)  # glob patterns of the streams that get them


class PasswordSource:
    """Where the MQTT password is read from when needed: a file, the environment, or
    nowhere. An opaque handle, not a dataclass: its repr, and what ``dataclasses.asdict``
    or ``copy.deepcopy`` make of it, say only where the password comes from."""

    __slots__ = ("_env", "file")

    def __init__(self, file: str = "", env: Mapping[str, str] | None = None) -> None:
        self.file = file
        self._env = None if file else env

    def __repr__(self) -> str:
        return f"PasswordSource({self.describe()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PasswordSource):
            return NotImplemented
        return self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(self.describe())

    def __deepcopy__(self, memo: dict[int, object]) -> PasswordSource:
        return self  # immutable in use; copying would copy the environment

    @property
    def is_set(self) -> bool:
        return bool(self.file) or self._env is not None

    def describe(self) -> str:
        if self.file:
            return f"file {self.file}"
        return PASSWORD_ENV if self._env is not None else "not set"

    def read(self) -> str | None:
        if self.file:
            return read_password_file(self.file, "mqtt.password_file")
        if self._env is None:
            return None
        secret = self._env.get(PASSWORD_ENV, "")
        if not secret:
            msg = f"{PASSWORD_ENV}: was set at start but is empty or unset now; set it again"
            raise ConfigError(msg)
        return secret


def read_password_file(path: str, label: str) -> str:
    """The first line of ``path``, stripped. Errors name the file, never its content."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        msg = f"{label}: {path!r} cannot be read ({exc.strerror}); give a readable file"
        raise ConfigError(msg) from None
    except UnicodeDecodeError:
        msg = f"{label}: {path!r} is not UTF-8 text; write the password on its first line"
        raise ConfigError(msg) from None
    secret = text.splitlines()[0].strip() if text else ""
    if not secret:
        msg = f"{label}: {path!r} has an empty first line; write the password there"
        raise ConfigError(msg)
    return secret


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon is told, validated. ``sources`` maps each key not left at its
    default (``"mqtt.broker"``) to where it was set: the file, the variable or the flag."""

    mqtt: MqttSettings = field(default_factory=MqttSettings)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model: str = "default"
    state: StateSettings = field(default_factory=StateSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log_level: str = "info"
    password_source: PasswordSource = field(default_factory=PasswordSource)
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # the checkpoint ``model`` names, loaded once by validation; None: load ``model``
    forecaster: Forecaster | None = field(default=None, repr=False, compare=False)

    def password(self) -> str | None:
        """The MQTT password, read now from its file or the environment; None if not set."""
        return self.password_source.read()

    def redacted(self) -> dict[str, dict[str, object]]:
        """Every key by section as TOML values, the password as ``"***"`` (``""`` if unset)."""
        out: dict[str, dict[str, object]] = {section: {} for section in SECTIONS}
        for key in KEYS:
            out[key.section][key.name] = _plain(self._value(key))
            if key.dotted == "mqtt.username":
                out["mqtt"]["password"] = "***" if self.password_source.is_set else ""
        return out

    def _value(self, key: Key) -> object:
        if key.dotted == "pipeline.model":
            return self.model
        if key.dotted == "log.level":
            return self.log_level
        return getattr(getattr(self, key.section), key.name)


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    if value is None:
        return ""
    return str(value) if isinstance(value, Path) else value


# ---------------------------------------------------------------- loading


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Defaults < the TOML file at ``path`` (else ``$SENSORCAST_CONFIG``, else none) <
    ``env`` (default ``os.environ``) < ``overrides`` (``{"mqtt.broker": ...}``; None = unset)."""
    env = os.environ if env is None else env
    given = {key.dotted: Given(key.default, key.dotted) for key in KEYS}
    if path is not None:
        given.update(read_file(Path(path), str(path)))
    elif env.get(CONFIG_ENV):
        given.update(read_file(Path(env[CONFIG_ENV]), env[CONFIG_ENV], via=CONFIG_ENV))
    given.update(from_env(env))
    given.update(from_overrides(overrides or {}))
    return build(given, env)


def read_file(path: Path, shown: str, via: str = "") -> dict[str, Given]:
    """The keys set in a TOML file; ``shown`` is the path as the user wrote it."""
    data = _parse_toml(path, shown, via)
    given: dict[str, Given] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(_misplaced_key(section, shown))
        if section not in SECTIONS:
            msg = f"[{section}] ({shown}): unknown section{suggest(section, SECTIONS)} "
            msg += f"(sections: {', '.join(SECTIONS)})"
            raise ConfigError(msg)
        for name, raw in table.items():
            dotted = _known_key(section, name, f"{section}.{name} ({shown})")
            given[dotted] = Given(raw, dotted, "file", shown)
    return given


def _parse_toml(path: Path, shown: str, via: str) -> dict[str, Any]:
    named = f" (named by {via})" if via else ""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Notepad starts files with a BOM
        return tomllib.loads(text)
    except FileNotFoundError:
        msg = f"config file {shown}{named} does not exist; check the path"
    except OSError as exc:
        msg = f"config file {shown}{named} cannot be read ({exc.strerror}); check the path"
    except UnicodeDecodeError:
        msg = f"config file {shown} is not UTF-8 text; save it as UTF-8"
    except tomllib.TOMLDecodeError as exc:
        msg = _toml_error(shown, str(exc))
    raise ConfigError(msg)


def _toml_error(shown: str, message: str) -> str:
    """``file:line: what``. tomllib's message never quotes the line (it may hold a secret)."""
    where = _TOML_WHERE.search(message)
    what = _TOML_WHERE.sub("", message)
    line = f"{shown}:{where.group(1)}: " if where else f"{shown}: "
    column = f" at column {where.group(2)}" if where else ""
    # the usual slip is a bare word (`sixty`, `60s`); other mistakes need no quoting advice
    bare = what.startswith(("Invalid value", "Expected newline or end of document"))
    hint = (
        '; text needs quotes, e.g. window = "60s"'
        if bare and "end of document)" not in what
        else ""
    )
    return f"{line}invalid TOML: {what}{column}{hint}"


def _misplaced_key(name: str, shown: str) -> str:
    homes = [key.dotted for key in KEYS if key.name == name]
    hint = f"; did you mean {homes[0]}?" if homes else suggest(name, KEY)
    if name == "password":
        hint = f"; {PASSWORD_HINT}"
    return f"{name} ({shown}): keys belong in a section such as [mqtt]{hint}"


def _known_key(section: str, name: str, label: str) -> str:
    """``section.name`` if it is a key; else a ConfigError with a suggestion."""
    dotted = f"{section}.{name}"
    if dotted in KEY:
        return dotted
    if name == "password":
        msg = f"{label}: passwords do not belong in config files or flags; {PASSWORD_HINT}"
        raise ConfigError(msg)
    names = [key.name for key in KEYS if key.section == section]
    hint = suggest(name, names) or f" (keys in [{section}]: {', '.join(names)})"
    msg = f"{label}: unknown key{hint}"
    raise ConfigError(msg)


def from_env(env: Mapping[str, str]) -> dict[str, Given]:
    """Keys set by ``SENSORCAST_*`` variables; an unknown one is an error."""
    given: dict[str, Given] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in OTHER_ENV:
            continue
        key = _ENV_KEYS.get(var)
        if key is None:
            msg = f"{var}: unknown variable{_env_hint(var)}"
            raise ConfigError(msg)
        given[key.dotted] = Given(env[var], key.dotted, "env", var)
    return given


def _env_hint(var: str) -> str:
    """A did-you-mean on what follows ``SENSORCAST_`` (the shared prefix would match all)."""
    known = {name.removeprefix(ENV_PREFIX): name for name in [*_ENV_KEYS, *OTHER_ENV]}
    close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), list(known), n=1)
    if close:
        return f"; did you mean {known[close[0]]}?"
    return " (keys are SENSORCAST_<SECTION>_<KEY>, e.g. SENSORCAST_MQTT_BROKER)"


def from_overrides(overrides: Mapping[str, object]) -> dict[str, Given]:
    """Keys set by command-line flags; None means the flag was not given."""
    given: dict[str, Given] = {}
    for dotted, raw in overrides.items():
        if raw is None:
            continue
        section, _, name = dotted.partition(".")
        if section not in SECTIONS:
            msg = f"{dotted}: unknown setting{suggest(dotted, KEY)}"
            raise ConfigError(msg)
        _known_key(section, name, dotted)
        given[dotted] = Given(raw, dotted, "flag", KEY[dotted].flag)
    return given


# ---------------------------------------------------------------- validation


def build(given: Mapping[str, Given], env: Mapping[str, str]) -> Settings:
    """Convert and check every value, then the keys that depend on each other."""
    values = {dotted: convert(_unloaded(KEY[dotted]), raw) for dotted, raw in given.items()}
    mqtt = _mqtt(values, given)
    pipeline = _pipeline(values, given)
    state_dir = values["state.dir"]
    return Settings(
        mqtt=mqtt,
        pipeline=pipeline,
        model=values[_MODEL],
        forecaster=_checkpoint(values[_MODEL], pipeline.interval, given[_MODEL]),
        state=StateSettings(
            Path(state_dir) if state_dir else None,
            values["state.snapshot_interval"],
            values["state.journal_fsync"],
        ),  # fmt: skip
        metrics=MetricsSettings(
            **{key.name: values[key.dotted] for key in KEYS if key.section == "metrics"}
        ),
        log_level=values["log.level"].lower(),
        password_source=_password_source(mqtt, given, env),
        sources={dotted: g.origin for dotted, g in given.items() if g.layer != "default"},
    )


def _unloaded(key: Key) -> Key:
    """``key``; pipeline.model without its check, which would load a checkpoint only to
    drop it: ``_checkpoint`` checks it instead, loading it once."""
    return replace(key, check=None) if key.dotted == _MODEL else key


def _checkpoint(spec: str, coverage: float, given: Given) -> Forecaster | None:
    """The checkpoint ``spec`` names, loaded with the interval's coverage, as the daemon
    runs it; None for a built-in name (not loaded to check it). Whatever the model's
    check refuses is refused in its words."""
    from models import BUILTIN, load_forecaster  # light: the loader imports on demand

    if spec in BUILTIN or not spec.strip():
        convert(KEY[_MODEL], given)  # names: refused or passed without loading
        return None
    try:
        return load_forecaster(spec, coverage)
    except ModelLoadError:
        convert(KEY[_MODEL], given)  # raises, worded like every other key's error
        raise


def _mqtt(values: Mapping[str, Any], given: Mapping[str, Given]) -> MqttSettings:
    fields = {key.name: values[key.dotted] for key in KEYS if key.section == "mqtt"}
    fields["username"] = _username(values, given)
    for need, missing in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        if fields[need] and not fields[missing]:
            msg = f"{given[f'mqtt.{need}'].label}: {fields[need]!r} needs mqtt.{missing} "
            msg += f"too; set it ({KEY[f'mqtt.{missing}'].env}) or remove {need}"
            raise ConfigError(msg)
    _check_no_loop(fields["subscribe"], fields["prefix"], given)
    return MqttSettings(**fields)


def _check_no_loop(filters: Sequence[str], prefix: str, given: Mapping[str, Given]) -> None:
    """Output topics inside a subscription would come back as input, without end."""
    for topic_filter in filters:
        if topics.reads_own_output(topic_filter, prefix):
            msg = f"{given['mqtt.prefix'].label}: {prefix!r} is inside the subscription "
            msg += f"{topic_filter!r} (mqtt.subscribe): the daemon would read its own output "
            msg += "back as input; give a prefix or subscriptions that do not overlap"
            raise ConfigError(msg)


def _username(values: Mapping[str, Any], given: Mapping[str, Given]) -> str:
    """The username key, else the URL's ``user@``; both set and different is an error."""
    in_url = parse_broker(values["mqtt.broker"]).username
    username: str = values["mqtt.username"]
    if username and in_url and username != in_url:
        msg = f"{given['mqtt.username'].label}: {username!r} differs from the user "
        msg += f"{in_url!r} in mqtt.broker; set the user in one place"
        raise ConfigError(msg)
    if in_url and (problem := mqtt_string_problem(in_url)):
        msg = f"{given['mqtt.broker'].label}: its user {problem}"
        raise ConfigError(msg)
    return username or in_url


def _password_source(
    mqtt: MqttSettings, given: Mapping[str, Given], env: Mapping[str, str]
) -> PasswordSource:
    label = given["mqtt.password_file"].label
    if mqtt.password_file and env.get(PASSWORD_ENV):
        msg = f"{label}: {mqtt.password_file!r} and {PASSWORD_ENV} are both set; keep one"
        raise ConfigError(msg)
    if mqtt.password_file:
        read_password_file(mqtt.password_file, label)  # fail now, not at the first connect
        source = PasswordSource(file=mqtt.password_file)
    else:
        source = PasswordSource(env=env) if env.get(PASSWORD_ENV) else PasswordSource()
    if source.is_set and not mqtt.username:
        where = label if mqtt.password_file else PASSWORD_ENV
        msg = f"{where}: a password is set but no user; set mqtt.username or user@ in mqtt.broker"
        raise ConfigError(msg)
    return source


def _pipeline(values: Mapping[str, Any], given: Mapping[str, Given]) -> PipelineConfig:
    """PipelineConfig checks its own values; its errors get the key's name and source."""
    try:
        return PipelineConfig(**{name: values[f"pipeline.{name}"] for name in _PIPELINE_FIELDS})
    except ConfigError as exc:
        name, sep, rest = str(exc).partition(": ")
        source = given.get(f"pipeline.{name}")
        msg = f"{source.label}: {rest}" if sep and source else f"pipeline.{exc}"
        raise ConfigError(msg) from exc


# ---------------------------------------------------------------- flags


def add_flags(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None) -> None:
    """A flag per setting (all, or those named like ``"mqtt.broker"``), each showing its
    variable in ``--help``; a flag not given stays None. ``overrides(args)`` collects them."""
    for key in KEYS if keys is None else [KEY[dotted] for dotted in keys]:
        kind: dict[str, Any] = {"metavar": key.kind.upper()}
        if key.kind == "bool":
            kind = {"action": argparse.BooleanOptionalAction}
        elif key.kind == "list":  # repeatable: --subscribe a --subscribe b
            kind = {"action": "append", "metavar": key.name.upper()}
        help_text = f"{key.help} [env: {key.env}]".replace("%", "%%")
        parser.add_argument(key.flag, dest=_dest(key), default=None, help=help_text, **kind)


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings flags of ``args`` (from ``add_flags``), for ``load_settings``."""
    given = {key.dotted: getattr(args, _dest(key)) for key in KEYS if hasattr(args, _dest(key))}
    return {k: ",".join(v) if isinstance(v, list) else v for k, v in given.items()}


def _dest(key: Key) -> str:
    return "setting_" + key.dotted.replace(".", "_")
