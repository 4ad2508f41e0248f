"""The settings keys: section, name, type, default, flag, help and check of each.

One table, ``KEYS``, drives the TOML reader, the ``SENSORCAST_<SECTION>_<KEY>``
environment variables, the command-line flags, the example config's test and
``sensorcast check-config``. A raw value travels as a ``Given`` that remembers
where the user wrote it, so every error names the key the way the user wrote it.

>>> KEY["mqtt.max_payload"].env, KEY["state.dir"].flag
('SENSORCAST_MQTT_MAX_PAYLOAD', '--state-dir')
>>> size = KEY["mqtt.max_payload"]
>>> convert(size, Given("1MiB", size.dotted, "env", size.env))
1048576
>>> convert(size, Given(True, size.dotted, "file", "sc.toml"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pipeline.errors.ConfigError: mqtt.max_payload (sc.toml): True is true/false, not a size; ...
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from connectors import topics
from pipeline.config import DAY, LONGEST_LATENESS, LONGEST_WINDOW, parse_duration
from pipeline.errors import ConfigError, ModelLoadError

ENV_PREFIX = "SENSORCAST_"
PASSWORD_ENV = "SENSORCAST_MQTT_PASSWORD"
CONFIG_ENV = "SENSORCAST_CONFIG"
OTHER_ENV = (PASSWORD_ENV, CONFIG_ENV, "SENSORCAST_DATA")  # ours, but not keys
PASSWORD_HINT = f"put the password in a file named by mqtt.password_file, or in {PASSWORD_ENV}"
MQTT_MAX_PACKET = 268_435_455  # bytes: the largest packet MQTT can frame
DAEMON_MODELS = ("default", "persistence")  # River baselines keep state snapshots cannot hold

Check = Callable[[Any], str | None]  # converted value -> "what is wrong; the fix", or None


@dataclass(frozen=True, slots=True)
class Key:
    """One setting. ``default`` is written as in deploy/sensorcast.toml."""

    section: str
    name: str
    kind: str  # text | int | number | bool | list | duration | size
    default: object
    help: str
    check: Check | None = None
    flag_name: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section}_{self.name}".upper()

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Given:
    """A raw value and where the user wrote it: a layer (default, file, env, flag) and
    its origin there (the file's path, the variable, the flag)."""

    raw: object
    dotted: str
    layer: str = "default"
    origin: str = ""

    @property
    def label(self) -> str:
        """How an error names this value: as the user wrote it."""
        if self.layer == "file":
            return f"{self.dotted} ({self.origin})"
        return self.origin if self.layer in ("env", "flag") else self.dotted

    @property
    def textual(self) -> bool:
        """Text to convert (environment, flags) rather than a typed TOML value."""
        return self.layer in ("env", "flag") and isinstance(self.raw, str)


# ---------------------------------------------------------------- checks


def suggest(word: object, candidates: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(str(word), list(candidates), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def one_of(*choices: str, fold: bool = False) -> Check:
    def check(value: str) -> str | None:
        if (value.lower() if fold else value) in choices:
            return None
        return f"is not one of {', '.join(choices)}{suggest(value, choices)}"

    return check


def not_empty(example: str) -> Check:
    def check(value: str) -> str | None:
        if value and "\0" not in value:
            return None
        return f"must be non-empty text without NUL characters, e.g. {example}"

    return check


MQTT_STRING_BYTES = 65_535  # an MQTT string's length field is 16 bits
SINK_SUFFIX = "-pub"  # the publishing connection's client id is the daemon's plus this


def mqtt_string_problem(text: str, limit: int = MQTT_STRING_BYTES) -> str | None:
    """Why ``text`` cannot be sent as an MQTT string (client id, user name), or None.

    MQTT strings are UTF-8 of at most 65,535 bytes without U+0000; brokers such as
    mosquitto also refuse the other control characters as a malformed packet, which
    would mean reconnecting forever rather than an error at start.
    """
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if size > limit:
        return f"is {size:,} bytes long; MQTT allows at most {limit:,}"
    if bad := next((c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F), None):
        return f"contains the control character {bad!r}, which brokers refuse; remove it"
    return None


def check_client_id(value: str) -> str | None:
    if problem := not_empty("sensorcast")(value):
        return problem
    return mqtt_string_problem(value, MQTT_STRING_BYTES - len(SINK_SUFFIX))


def check_username(value: str) -> str | None:
    return mqtt_string_problem(value)


def in_range(low: float, high: float, fix: str) -> Check:
    """Numbers, durations (seconds) and sizes (bytes) from ``low`` to ``high``."""

    def check(value: float) -> str | None:
        return None if low <= value <= high else f"is out of range; {fix}"

    return check


def check_qos(value: int) -> str | None:
    if value in (0, 1):
        return None
    if value == 2:
        return (
            "is not supported: QoS 2 costs two more round trips per message, and the "
            "pipeline already drops QoS 1 redeliveries as duplicates; use 1"
        )
    return "is not a QoS level; use 1 (at least once) or 0 (at most once)"


def check_keepalive(seconds: float) -> str | None:
    if seconds == int(seconds) and 0 <= seconds <= 65_535:
        return None
    return "must be whole seconds from 0 (off) to 65535, e.g. 30s"


def check_key(path: str) -> str | None:
    """A readable private key without a passphrase: the daemon cannot type one in."""
    if problem := check_readable(path):
        return problem
    if path and b"ENCRYPTED" in Path(path).read_bytes()[:65_536]:
        return (
            "is encrypted with a passphrase, which a service cannot type in; give an "
            "unencrypted key (openssl pkey -in KEY -out KEY.plain)"
        )
    return None


def check_readable(path: str) -> str | None:
    """An empty path means 'not set'; anything else must be a file we can read."""
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return f"cannot be read ({why}); give the path of a readable file"
    return None


def check_model(spec: str) -> str | None:
    """A built-in name, or a checkpoint that loads: the loader `run` uses decides, so a
    text file or a folder without model.json fails here, not at the daemon's start."""
    from models import BUILTIN, load_forecaster  # light: the loader imports on demand

    if spec in DAEMON_MODELS:  # not loaded: the shipped model is tested, and loading costs
        return None
    if spec in BUILTIN:
        return (
            "is a baseline for replay and evaluate only (River's state cannot be "
            "snapshotted); use default, persistence or a checkpoint path"
        )
    if not spec.strip():  # not the current directory, as a path "" would be
        return "is empty; give default, persistence or a checkpoint path"
    try:
        load_forecaster(spec, names=DAEMON_MODELS)
    except ModelLoadError as exc:
        why = str(exc).removeprefix("--model: ").removeprefix(f"unknown model {spec!r}; ")
        return f"is not a usable model: {why}"
    return None


def check_state_dir(path: str) -> str | None:
    if not path or not Path(path).exists() or Path(path).is_dir():
        return None
    return "is a file, not a directory; give a directory for snapshots (created if missing)"


def check_globs(patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        if not pattern or "\0" in pattern:
            return f'holds {pattern!r}; give glob patterns of stream keys, e.g. ["office-3/*"]'
    return None


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_address(address: str) -> str | None:
    """An IP literal (``::``, ``fe80::1%eth0``) or a name that could be a host name.

    Not resolved: a name that does not resolve is reported when the daemon binds.

    >>> [check_address(a) is None for a in ("0.0.0.0", "::", "localhost", "m.example.")]
    [True, True, True, True]
    >>> [check_address(a) is None for a in ("300.1.1.1", "foo bar", "-x", "", "a..b")]
    [False, False, False, False, False]
    """
    try:
        ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        return None
    labels = address.removesuffix(".").split(".")
    plausible = (
        len(address) <= 253
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 300.1.1.1 is a bad IP address, not a host name
    )
    if plausible:
        return None
    return (
        "is neither an IP address nor a host name; use e.g. 127.0.0.1 (this host only), "
        "0.0.0.0 or :: (every interface)"
    )


# ---------------------------------------------------------------- topics


def _without_value(problem: str, value: str, name: str = "") -> str:
    """``problem`` without connectors.topics' leading ``name: 'value':`` (shown already)."""
    problem = problem.removeprefix(f"{name}: ") if name else problem
    for shown in (f"{value!r}: ", f"{value[:60]!r}: ", f"{value!r} "):
        if problem.startswith(shown):
            return problem.removeprefix(shown)
    return problem


def check_filters(filters: tuple[str, ...]) -> str | None:
    if not filters:
        return 'is empty; subscribe to at least one topic filter, e.g. ["sensors/#"]'
    for topic_filter in filters:
        if problem := topics.check_filter(topic_filter):
            problem = _without_value(problem, topic_filter)
            return f"holds an invalid topic filter {topic_filter!r}: {problem}"
    return None


def check_template(template: str) -> str | None:
    try:
        topics.TopicTemplate(template)
    except ConfigError as exc:
        return _without_value(str(exc), template, "topic_template")
    return None


def check_prefix(prefix: str) -> str | None:
    problem = topics.check_prefix(prefix)
    problem = _without_value(problem, prefix) if problem else None
    return f"is not a topic prefix: {problem}; write e.g. sensorcast" if problem else None


# ---------------------------------------------------------------- broker URL


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """``mqtt[s]://[user@]host[:port]``, taken apart; ``port`` is None when not given."""

    scheme: str
    host: str
    port: int | None
    username: str


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (everything up to the last ``@``).

    >>> redact_url("mqtt://ann:s3cr@t@broker:1883"), redact_url("mqtt://broker")
    ('mqtt://ann:***@broker:1883', 'mqtt://broker')
    """
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}:***@{tail}" if colon else url


def parse_broker(url: str) -> BrokerUrl:
    """Raises ValueError saying what is wrong and how to fix it (never echoing a password)."""
    if redact_url(url) != url:
        msg = f"embeds a password; remove it from the URL and {PASSWORD_HINT}"
        raise ValueError(msg)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        msg = "has a bad host or port; write e.g. mqtt://localhost:1883 (ports 1-65535)"
        raise ValueError(msg) from None
    if parts.scheme not in ("mqtt", "mqtts") or not url.startswith(f"{parts.scheme}://"):
        msg = "must start with mqtt:// (or mqtts:// for TLS), e.g. mqtt://localhost:1883"
        raise ValueError(msg)
    if not parts.hostname:
        msg = "has no host; write e.g. mqtt://broker.example:1883"
        raise ValueError(msg)
    if port == 0:
        msg = "has port 0; use a port from 1 to 65535, e.g. mqtt://localhost:1883"
        raise ValueError(msg)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        msg = "must be only mqtt[s]://[user@]host[:port], with no path or query"
        raise ValueError(msg)
    return BrokerUrl(parts.scheme, parts.hostname, port, unquote(parts.username or ""))


def check_broker(url: str) -> str | None:
    try:
        parse_broker(url)
    except ValueError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- the table

_M, _P = "mqtt", "pipeline"
KEYS: tuple[Key, ...] = (
    Key(_M, "broker", "text", "mqtt://localhost:1883", "mqtt[s]://[user@]host[:port]",
        check_broker),
    Key(_M, "subscribe", "list", ["sensors/#"], "topic filters to subscribe to", check_filters),
    Key(_M, "topic_template", "text", "sensors/{site}/{device}/{measurement}",
        "maps topics to stream keys", check_template),
    Key(_M, "payload", "text", "auto", "payload format",
        one_of("auto", "number", "json", "senml", "influx")),
    Key(_M, "json_value_field", "text", "value", "JSON field holding the value",
        not_empty("value")),
    Key(_M, "json_time_field", "text", "ts", "JSON field holding the time", not_empty("ts")),
    Key(_M, "prefix", "text", "sensorcast", "prefix of the output topics", check_prefix),
    Key(_M, "qos", "int", 1, "QoS of subscriptions and publishes (0 or 1)", check_qos),
    Key(_M, "client_id", "text", "sensorcast", "fixed client id (persistent session)",
        check_client_id),
    Key(_M, "protocol", "text", "5", "MQTT version: 5 or 3.1.1", one_of("5", "3.1.1")),
    Key(_M, "keepalive", "duration", "30s", "MQTT keepalive", check_keepalive),
    Key(_M, "username", "text", "", "user name (or user@ in the broker URL)", check_username),
    Key(_M, "password_file", "text", "", "file whose first line is the password",
        check_readable),
    Key(_M, "tls_ca", "text", "", "CA file; any tls_* turns TLS on", check_readable),
    Key(_M, "tls_cert", "text", "", "client certificate (needs tls_key)", check_readable),
    Key(_M, "tls_key", "text", "", "client certificate's key", check_key),
    Key(_M, "max_payload", "size", "64KiB", "larger payloads are rejected",
        in_range(1, MQTT_MAX_PACKET, f"use 1 to {MQTT_MAX_PACKET} bytes, e.g. 64KiB")),
    Key(_M, "queue_size", "int", 100_000, "bounded queue from network to engine",
        in_range(1, 2**31, "use a positive whole number, e.g. 100000")),
    Key(_M, "deadletter", "bool", True, "publish rejected input to {prefix}/deadletter"),
    # Bounds on durations and counts: generous, but a typo (a zero, a unit too big)
    # is refused at start rather than found as a stalled or state-less daemon.
    Key(_P, "window", "duration", "0", "tumbling window; 0 = every reading is a step",
        in_range(0, LONGEST_WINDOW, "use 0 (every reading is a step) to 30d, e.g. 60s")),
    Key(_P, "lateness", "duration", "0", "allowed out-of-order lateness",
        in_range(0, LONGEST_LATENESS, "use 0 (none) to 7d, e.g. 30s")),
    # 0 would close every open window at every tick
    Key(_P, "idle_timeout", "duration", "2m",
        "close a silent stream's window after (at least the window)",
        in_range(0.001, 30 * DAY, "use 1ms to 30d, e.g. 2m")),
    Key(_P, "max_streams", "int", 1_000_000, "streams tracked at once",
        in_range(1, 100_000_000, "use 1 to 100000000, e.g. 1000000")),
    # 0 would forget every stream's state at every tick
    Key(_P, "stream_ttl", "duration", "1d", "evict a stream silent this long",
        in_range(1, 365 * DAY, "use 1s to 365d, e.g. 1d")),
    Key(_P, "interval", "number", 0.9, "forecast interval coverage, in (0, 1)"),
    Key(_P, "max_batch", "int", 8192, "readings per engine tick",
        in_range(1, 1_000_000, "use 1 to 1000000, e.g. 8192")),
    # 0 polls in a busy loop; over 10s, an idle daemon would tick (and ping systemd's
    # watchdog, WatchdogSec=60s) too rarely
    Key(_P, "max_delay", "duration", "50ms", "longest wait before a tick runs",
        in_range(0.001, 10, "use 1ms to 10s, e.g. 50ms")),
    Key(_P, "model", "text", "default", "default, persistence or a checkpoint path",
        check_model),
    Key("state", "dir", "text", "", "snapshot directory; empty = no snapshots", check_state_dir,
        "--state-dir"),
    Key("state", "snapshot_interval", "duration", "60s", "time between snapshots",
        in_range(0.1, 7 * DAY, "use 100ms to 7d, e.g. 60s")),
    Key("state", "journal_fsync", "bool", False,
        "fsync the journal every tick: survives power loss, costs a disk flush per tick"),
    Key("metrics", "address", "text", "127.0.0.1", "address of /metrics",
        check_address, "--metrics-address"),
    Key("metrics", "port", "int", 9108, "port of /metrics; 0 = off",
        in_range(0, 65_535, "use 0 (off) to 65535, e.g. 9108"), "--metrics-port"),
    Key("metrics", "max_streams", "int", 1000, "streams with per-stream series; 0 = none",
        in_range(0, 1_000_000, "use 0 (none) to 1000000, e.g. 1000"), "--metrics-max-streams"),
    Key("metrics", "streams", "list", ["*"], "glob patterns of streams with per-stream series",
        check_globs, "--metrics-streams"),
    Key("log", "level", "text", "info", "debug, info, warning or error",
        one_of("debug", "info", "warning", "error", fold=True), "--log-level"),
)  # fmt: skip
KEY = {key.dotted: key for key in KEYS}
SECTIONS = tuple(dict.fromkeys(key.section for key in KEYS))


# ---------------------------------------------------------------- conversion

_KINDS = {
    "text": "text",
    "int": "a whole number",
    "number": "a number",
    "bool": "true or false",
    "list": "a list of text",
    "duration": "a duration",
    "size": "a size",
}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|mib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2}


def toml_value(value: object) -> str:
    """``value`` written as TOML.

    >>> print(toml_value(["a", 'say "hi"']), toml_value(True), toml_value(0.5))
    ["a", "say \\"hi\\""] true 0.5
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return '"' + "".join(_toml_char(c) for c in str(value)) + '"'


def _toml_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    return f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char


SHOWN_CHARACTERS = 80  # a value quoted in an error message is cut to this, keeping one line


def _shown(key: Key, raw: object) -> str:
    """``raw`` as an error message quotes it: the broker URL without its password, and a
    very long value cut short (``'xxxx...'``, 65,533 characters)."""
    text = repr(redact_url(raw)) if key.name == "broker" and isinstance(raw, str) else repr(raw)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    length = f" ({len(raw):,} characters)" if isinstance(raw, str) else ""
    return f"{text[: SHOWN_CHARACTERS - 4]}...{text[-1]}{length}"


def _type_of(raw: object) -> str:
    for kind, name in ((bool, "true/false"), (str, "text"), (int, "a whole number"),
                       (float, "a number"), (list, "a list"), (dict, "a table")):  # fmt: skip
        if isinstance(raw, kind):
            return name
    return "a date or time"


def _wrong(key: Key, raw: object, textual: bool) -> ValueError:
    if textual:
        plain = ",".join(key.default) if isinstance(key.default, list) else key.default
        plain = str(plain).lower() if isinstance(plain, bool) else plain  # as TOML writes it
        return ValueError(f"is not {_KINDS[key.kind]}; write e.g. {plain}")
    example = f"{key.name} = {toml_value(key.default)}"
    return ValueError(f"is {_type_of(raw)}, not {_KINDS[key.kind]}; write e.g. {example}")


def _parse(key: Key, raw: object, textual: bool) -> Any:
    kind = key.kind
    if kind == "text" and isinstance(raw, str):
        return raw
    if textual and isinstance(raw, str):
        return _parse_text(key, raw)
    if kind == "list" and isinstance(raw, list | tuple) and all(isinstance(s, str) for s in raw):
        return tuple(raw)
    if kind in ("int", "size") and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind == "number" and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind == "bool" and isinstance(raw, bool):
        return raw
    if kind == "size" and isinstance(raw, str):
        return _parse_size(raw)
    if kind == "duration" and isinstance(raw, str | int | float) and not isinstance(raw, bool):
        return _parse_duration(raw)
    raise _wrong(key, raw, textual)


def _parse_text(key: Key, text: str) -> Any:
    try:
        if key.kind == "list":
            return tuple(item.strip() for item in text.split(",") if item.strip())
        if key.kind == "int":
            return int(text)
        if key.kind == "number":
            return float(text)
        if key.kind == "bool":
            return _BOOLS[text.strip().lower()]
    except (ValueError, KeyError):
        raise _wrong(key, text, textual=True) from None
    return _parse_size(text) if key.kind == "size" else _parse_duration(text)


def _parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        msg = "is not a size; write e.g. 64KiB, 1MiB, 512B or a number of bytes"
        raise ValueError(msg)
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


def _parse_duration(raw: str | int | float) -> float:
    try:
        return parse_duration(raw, "")
    except ConfigError as exc:
        why = str(exc).removeprefix(": ")  # the key is named by the caller, the value too
        raise ValueError(why.removeprefix(f"{raw!r} ").removeprefix(f"{raw} ")) from None


def convert(key: Key, given: Given) -> Any:
    """The typed, checked value of ``given``; a ConfigError naming where it was written."""
    try:
        value = _parse(key, given.raw, given.textual)
    except ValueError as exc:
        msg = f"{given.label}: {_shown(key, given.raw)} {exc}"
        raise ConfigError(msg) from None
    texts = value if isinstance(value, (list, tuple)) else [value]
    has_nul = any(isinstance(text, str) and "\0" in text for text in texts)
    try:
        problem = key.check(value) if key.check else None
    except ValueError:  # a check that opens a path: the OS refuses one with a NUL in it
        if not has_nul:
            raise
        problem = None
    if problem:
        msg = f"{given.label}: {_shown(key, given.raw)} {problem}"
        raise ConfigError(msg)
    if has_nul:  # no path, URL or name holds one
        msg = f"{given.label}: holds a NUL character (\\u0000); remove it"
        raise ConfigError(msg)
    return value
