"""Payload decoders: an MQTT message body to named numbers, or one ``PayloadError``.

Every decoder is called as ``decoder(payload, received)`` (``received`` = the
receive time, epoch seconds) and returns a non-empty list of ``Decoded`` with
finite values, or raises ``PayloadError`` whose ``reason`` is the metric label:

* ``DECODE_ERROR`` — empty, not UTF-8, not parseable, wrong structure, no value;
* ``BAD_VALUE`` — a value that is not a number (a string like ``"abc"``, a
  boolean, null); numeric strings such as ``"21.5"`` are accepted;
* ``NON_FINITE`` — NaN or infinity (JSON ``NaN``/``Infinity``, ``"nan"``, 1e999);
* ``BAD_TIMESTAMP`` — a timestamp that is present but unreadable or outside
  the years 1900..2100;
* ``TOO_LARGE`` — more than ``MAX_READINGS`` values in one payload (or more
  than 20 times as many JSON elements or lines, refused before parsing them).

A payload is taken or rejected whole. Formats (``kind``):

``number``
    A plain number: ``21.4``, `` 21.4\\n``, ``-3e2``. No name, no timestamp.
``json``
    A number; or an object with ``value_field`` (one unnamed value); or an
    object without it, where every number becomes a value named after its field
    (zigbee2mqtt style), and the numbers of an object inside it are named
    ``field/inner`` (Tasmota's ``{"ENERGY": {"Power": 45}}``), down to
    ``NESTED_LEVELS`` levels (booleans, strings, nulls and arrays are skipped; a
    number under an empty name makes a stream key with an empty level, which the
    source rejects as ``bad_stream``); or an array of these (a batch).
    ``time_field`` holds epoch seconds, milliseconds, microseconds or
    nanoseconds (told apart by size: from 1e11, 1e14 and 1e17 on), either as a
    number or as text, or ISO 8601 text (naive = UTC); null or absent means
    the receive time. Telegraf's JSON metrics are recognised by their keys
    (exactly ``fields``, ``name``, ``timestamp`` and optionally ``tags``), one
    or a batch ``{"metrics": [...]}``: like line protocol, each numeric field
    is a value named ``name/field`` (``name`` for a field called ``value``),
    at ``timestamp`` in any of the epoch units above; tags are ignored.
``senml``
    An RFC 8428 JSON pack. Name = base name + name; time = base time + time,
    where a resolved time below 2**28 is relative to the receive time (0 = the
    receive time itself); the base value is added to ``v``. Records without a
    numeric ``v`` (``vs``, ``vb``, ``vd``, sums) are skipped; a field whose label
    ends in ``_`` ("must understand") rejects the pack, as the RFC asks.
``influx``
    InfluxDB line protocol, one or more lines. Integer (``3i``), unsigned
    (``3u``) and float fields are values; strings and booleans are skipped. The
    name is ``measurement/field``, or ``measurement`` for a field called
    ``value``. Tags are ignored: put the device into the topic instead. The
    timestamp is integer nanoseconds. Blank lines and ``#`` comments are skipped.
``auto``
    Decided by the first character after whitespace: ``[`` is SenML when the
    first element is an object with any of ``bn n v bt t``, else JSON; ``{`` and
    ``"`` are JSON; a digit, ``-``, ``+`` or ``.`` is JSON, or a plain number when
    it is not valid JSON; anything else is line protocol when it holds a space
    and a plain number (``nan``, ``inf``) when it does not.

>>> decode = make_decoder("auto")
>>> decode(b"21.4", 0.0)
[Decoded(name=None, value=21.4, timestamp=None)]
>>> decode(b'{"temperature": 21.4, "battery_low": false, "ts": 1700000000000}', 0.0)
[Decoded(name='temperature', value=21.4, timestamp=1700000000.0)]
>>> decode(b"weather,site=pier temp=11.5,wind=3i 1700000000000000000", 0.0)[1]
Decoded(name='weather/wind', value=3.0, timestamp=1700000000.0)
>>> decode(b'{"fields": {"idle": 98.5}, "name": "cpu", "tags": {}, "timestamp": 1700000000}', 0.0)
[Decoded(name='cpu/idle', value=98.5, timestamp=1700000000.0)]
>>> decode(b'[{"bn": "buoy-7:", "n": "wave", "v": 1.2, "t": -10}]', 1700000000.0)
[Decoded(name='buoy-7:wave', value=1.2, timestamp=1699999990.0)]
>>> decode(b'{"value": "high"}', 0.0)
Traceback (most recent call last):
...
connectors.payloads.PayloadError: field 'value': 'high' is not a number
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from pipeline.errors import ConfigError
from pipeline.types import MAX_TIME, MIN_TIME, Reason

PAYLOAD_KINDS = ("auto", "number", "json", "senml", "influx")
MAX_READINGS = 10_000  # values in one payload; more is TOO_LARGE
NESTED_LEVELS = 4  # a JSON object's numbers are read this many objects deep
_MAX_ELEMENTS = 20 * MAX_READINGS  # commas in a JSON payload, and lines of line protocol
# Epoch numbers from these on are in ms, µs, ns (1e11 s is the year 5138; 1e14 µs is 1973):
# a count at a threshold is a valid time only in the finer unit
EPOCH_UNITS = ((1e17, 1_000_000_000), (1e14, 1_000_000), (1e11, 1_000))
SENML_RELATIVE = 2.0**28  # SenML times below this are relative to "now"
_MAX_NUMBER_TEXT = 1_000  # characters: a longer string is not taken for a number
_QUOTE = 60  # characters of input quoted in a detail
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The decoder's own scanner, (text, index) -> (value, end): json.loads without its wrapping
_SCAN_JSON: Callable[[str, int], tuple[object, int]]
_SCAN_JSON = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_SENML_KEYS = ("bn", "n", "v", "bt", "t")
_INFLUX_BOOLS = frozenset(("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"))


@dataclass(frozen=True, slots=True)
class Decoded:
    """One value from a payload."""

    name: str | None  # JSON field, SenML name, influx measurement/field; None if unnamed
    value: float  # finite
    timestamp: float | None  # epoch seconds UTC from the payload; None = the receive time


class PayloadError(Exception):
    """A payload that cannot be decoded; ``reason`` is why, ``detail`` one short line."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[PayloadError], tuple[Reason, str]]:
        return (PayloadError, (self.reason, self.detail))


Decoder = Callable[[bytes, float], list[Decoded]]


def make_decoder(kind: str = "auto", value_field: str = "value", time_field: str = "ts") -> Decoder:
    """The decoder for payloads of ``kind`` (one of ``PAYLOAD_KINDS``)."""
    if kind not in PAYLOAD_KINDS:
        msg = f"payload: unknown format {kind!r}; use one of {', '.join(PAYLOAD_KINDS)}"
        raise ConfigError(msg)
    if not value_field or not time_field or value_field == time_field:
        msg = (
            f"json_value_field {value_field!r} and json_time_field {time_field!r} "
            "must be two different, non-empty field names"
        )
        raise ConfigError(msg)
    if kind == "number":
        return decode_number
    if kind == "senml":
        return decode_senml
    if kind == "influx":
        return decode_influx
    decode = decode_json if kind == "json" else decode_auto
    return partial(decode, value_field=value_field, time_field=time_field)


# -- the decoders ------------------------------------------------------------------------


def decode_number(payload: bytes, received: float) -> list[Decoded]:
    """A payload that is one plain number."""
    return [Decoded(None, _plain_number(_text(payload)), None)]


def decode_json(
    payload: bytes, received: float, value_field: str = "value", time_field: str = "ts"
) -> list[Decoded]:
    """A JSON number, object or array of them; see the module docstring."""
    return _json_items(_load_json(_text(payload)), value_field, time_field)


def decode_senml(payload: bytes, received: float) -> list[Decoded]:
    """An RFC 8428 JSON SenML pack."""
    return _senml(_load_json(_text(payload)), received)


def decode_influx(payload: bytes, received: float) -> list[Decoded]:
    """InfluxDB line protocol, one or more lines."""
    return _influx(_text(payload))


def decode_auto(
    payload: bytes, received: float, value_field: str = "value", time_field: str = "ts"
) -> list[Decoded]:
    """Any of the formats, told apart by the first character (module docstring)."""
    text = _text(payload)
    first = text[0]
    if first in '[{"':
        data = _load_json(text)
        if first == "[" and _looks_senml(data):
            return _senml(data, received)
        return _json_items(data, value_field, time_field)
    if first in "-+.0123456789":
        try:
            data = _load_json(text)
        except PayloadError:  # ".5", "+1", "1_000", "-inf": not JSON
            return [Decoded(None, _plain_number(text), None)]
        return _json_items(data, value_field, time_field)
    if " " not in text:
        return [Decoded(None, _plain_number(text), None)]
    return _influx(text)


# -- shared pieces -----------------------------------------------------------------------


def _text(payload: bytes) -> str:
    try:
        text = str(payload, "utf-8")
    except UnicodeDecodeError as exc:
        msg = f"payload is not valid UTF-8 (byte {exc.start})"
        raise PayloadError(Reason.DECODE_ERROR, msg) from None
    text = text.removeprefix("\ufeff").strip()
    if not text:
        raise PayloadError(Reason.DECODE_ERROR, "payload is empty")
    return text


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "...")


def _kind_of(data: object) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, dict):
        return "an object"
    if isinstance(data, list):
        return "an array"
    return "a string" if isinstance(data, str) else type(data).__name__


def _number_text(text: str) -> float | None:
    """A decimal number written as text, or None; NaN and infinities pass through."""
    text = text.strip()
    if len(text) > _MAX_NUMBER_TEXT or not text.isascii() or "_" in text:
        return None  # float() would take "1_0" and non-ASCII digits
    try:
        return float(text)
    except ValueError:
        return None


def _plain_number(text: str) -> float:
    value = _number_text(text)
    if value is None and text.strip() in ("true", "false", "null"):  # JSON, just not a number
        raise PayloadError(Reason.BAD_VALUE, f"payload {_quote(text)} is not a number")
    if value is None:
        raise PayloadError(Reason.DECODE_ERROR, f"payload {_quote(text)} is not a number")
    if not math.isfinite(value):
        raise PayloadError(Reason.NON_FINITE, f"payload {_quote(text)} is not finite")
    return value


def _label(field: str | None) -> str:
    return "value" if field is None else f"field {_quote(field)}"


def _finite(data: object, field: str | None) -> float:
    """A JSON value as a finite float; raises BAD_VALUE, NON_FINITE or DECODE_ERROR.

    ``field`` names where the value came from for the detail (None: the payload).
    """
    if isinstance(data, float):
        value = data
    elif isinstance(data, bool):
        raise PayloadError(Reason.BAD_VALUE, f"{_label(field)}: a boolean is not a number")
    elif isinstance(data, int):
        try:
            value = float(data)
        except OverflowError:
            msg = f"{_label(field)}: integer too large for a float"
            raise PayloadError(Reason.NON_FINITE, msg) from None
    elif isinstance(data, str):
        parsed = _number_text(data)
        if parsed is None:
            msg = f"{_label(field)}: {_quote(data)} is not a number"
            raise PayloadError(Reason.BAD_VALUE, msg)
        value = parsed
    elif isinstance(data, dict | list):
        msg = f"{_label(field)}: {_kind_of(data)}, not a number"
        raise PayloadError(Reason.DECODE_ERROR, msg)
    else:
        raise PayloadError(Reason.BAD_VALUE, f"{_label(field)}: {_kind_of(data)} is not a number")
    if not math.isfinite(value):
        raise PayloadError(Reason.NON_FINITE, f"{_label(field)}: {value} is not finite")
    return value


def _checked_time(seconds: float, what: str, shown: object) -> float:
    if not MIN_TIME <= seconds < MAX_TIME:  # False for NaN too
        text = shown if isinstance(shown, str) else repr(shown)
        msg = f"{what}: {_quote(text)} is not a time in the years 1900..2100"
        raise PayloadError(Reason.BAD_TIMESTAMP, msg)
    return seconds


def _epoch(data: object, field: str) -> float:
    """A JSON timestamp (epoch s, ms, µs or ns, as a number or text, or ISO 8601) in
    epoch seconds."""
    if isinstance(data, bool) or not isinstance(data, int | float | str):
        msg = f"field {_quote(field)}: {_kind_of(data)} is not a timestamp"
        raise PayloadError(Reason.BAD_TIMESTAMP, msg)
    if not isinstance(data, str):
        return _field_time(_epoch_seconds(data), field, data)
    digits = data.strip().removeprefix("-")
    if digits.isascii() and digits.isdigit() and len(digits) <= 30:
        # exact: nanoseconds have more digits than a float holds
        return _field_time(_epoch_seconds(int(data)), field, data)
    number = None if data[4:5] == "-" else _number_text(data)  # YYYY-...: not a number
    if number is None:
        return _field_time(_iso(data, field), field, data)
    return _field_time(_epoch_seconds(number), field, data)


def _field_time(seconds: float, field: str, shown: object) -> float:
    """``_checked_time`` of a JSON field's time: its name is spelled for the error only
    (this runs for every message)."""
    if MIN_TIME <= seconds < MAX_TIME:
        return seconds
    return _checked_time(seconds, f"field {_quote(field)}", shown)


def _epoch_seconds(count: int | float) -> float:
    """An epoch count in s, ms, µs or ns (told apart by size) as seconds; an integer
    count is divided exactly, and one too large for a float is infinite."""
    per_second = 1
    for threshold, unit in EPOCH_UNITS:  # a loop, not next(generator): half the cost
        if abs(count) >= threshold:
            per_second = unit
            break
    try:
        return count / per_second
    except OverflowError:
        return math.inf


def _iso(text: str, field: str) -> float:
    try:
        when = datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return (when - _EPOCH).total_seconds()
    except (ValueError, OverflowError):
        msg = f"field {_quote(field)}: {_quote(text)} is not ISO 8601 or epoch seconds/ms"
        raise PayloadError(Reason.BAD_TIMESTAMP, msg) from None


# -- JSON --------------------------------------------------------------------------------


def _load_json(text: str) -> object:
    """``json.loads`` for stripped text, through the decoder's scanner: half the cost."""
    if len(text) > _MAX_ELEMENTS and text.count(",") > _MAX_ELEMENTS:  # bound parse memory
        msg = f"more than {_MAX_ELEMENTS:,} JSON elements in one payload"
        raise PayloadError(Reason.TOO_LARGE, msg)
    try:
        data, end = _SCAN_JSON(text, 0)
    except StopIteration as exc:  # no value where one must start
        msg = f"payload is not JSON: expecting a value at character {exc.value}"
        raise PayloadError(Reason.DECODE_ERROR, msg) from None
    except json.JSONDecodeError as exc:
        msg = f"payload is not JSON: {exc.msg} at character {exc.pos}"
        raise PayloadError(Reason.DECODE_ERROR, msg) from None
    except ValueError:  # an integer over Python's 4,300-digit limit
        raise PayloadError(Reason.DECODE_ERROR, "payload is not JSON: a number too long") from None
    except RecursionError:  # raised cleanly by the C scanner, long before the stack ends
        raise PayloadError(Reason.DECODE_ERROR, "payload is JSON nested too deeply") from None
    if end != len(text):
        msg = f"payload is not JSON: extra data at character {end}"
        raise PayloadError(Reason.DECODE_ERROR, msg)
    return data


def _json_items(data: object, value_field: str, time_field: str) -> list[Decoded]:
    if type(data) is dict:
        if _is_telegraf_batch(data):
            return _telegraf_batch(data["metrics"])
        if _is_telegraf(data):
            return _telegraf(data)
        return _json_object(data, value_field, time_field)
    if type(data) is not list:
        return [Decoded(None, _finite(data, None), None)]
    if not data:
        raise PayloadError(Reason.DECODE_ERROR, "payload is an empty array")
    if len(data) > MAX_READINGS:
        raise PayloadError(Reason.TOO_LARGE, f"{len(data)} items > {MAX_READINGS} in one payload")
    out: list[Decoded] = []
    for index, item in enumerate(data):
        try:
            if type(item) is dict:
                out += _json_object(item, value_field, time_field)
            elif type(item) is list:
                raise PayloadError(Reason.DECODE_ERROR, "an array inside the batch array")
            else:
                out.append(Decoded(None, _finite(item, None), None))
        except PayloadError as exc:
            raise PayloadError(exc.reason, f"item {index}: {exc.detail}") from None
        if len(out) > MAX_READINGS:
            raise PayloadError(Reason.TOO_LARGE, f"more than {MAX_READINGS} values in one payload")
    return out


def _json_object(data: dict[str, object], value_field: str, time_field: str) -> list[Decoded]:
    stamp = data.get(time_field)
    when = None if stamp is None else _epoch(stamp, time_field)
    if value_field in data:
        return [Decoded(None, _finite(data[value_field], value_field), when)]
    out: list[Decoded] = []
    _numeric_fields(data, "", when, time_field, out, NESTED_LEVELS)
    if not out:
        raise PayloadError(Reason.DECODE_ERROR, f"no numeric fields and no {_quote(value_field)}")
    return out


def _numeric_fields(
    data: dict[str, object],
    prefix: str,
    when: float | None,
    skip: str | None,
    out: list[Decoded],
    levels: int,
) -> None:
    """Every number of ``data``, named ``prefix + field``; an object inside is read the same
    way, its fields named ``field/inner`` (Tasmota's ``{"ENERGY": {"Power": 45}}``), down to
    ``levels`` levels. Booleans, strings, nulls and arrays are skipped, and so is the time
    field ``skip`` at the top (None: none is). A number with an empty name is kept: its
    stream key has an empty level, which the source refuses (counted, dead-lettered),
    never loses quietly."""
    for name, value in data.items():
        kind = type(value)  # exactly: bool is an int subclass, and is skipped here
        if not prefix and name == skip:
            continue
        if kind is float or kind is int:
            out.append(Decoded(prefix + name, _finite(value, prefix + name), when))
        elif isinstance(value, dict) and levels > 1:
            _numeric_fields(value, f"{prefix}{name}/", when, skip, out, levels - 1)
        if len(out) > MAX_READINGS:
            raise PayloadError(Reason.TOO_LARGE, f"more than {MAX_READINGS} values in one payload")


# -- Telegraf's JSON serializer ------------------------------------------------------------

_TELEGRAF_KEYS = frozenset(("fields", "name", "tags", "timestamp"))


def _is_telegraf(data: dict[str, object]) -> bool:
    """``{"fields": {...}, "name": "cpu", "tags": {...}, "timestamp": 1700000000}``."""
    return (
        type(data.get("fields")) is dict
        and type(data.get("name")) is str
        and "timestamp" in data
        and data.keys() <= _TELEGRAF_KEYS
    )


def _is_telegraf_batch(data: dict[str, object]) -> bool:
    """``{"metrics": [...]}``, what Telegraf sends with ``batch = true``."""
    metrics = data.get("metrics")
    return len(data) == 1 and type(metrics) is list and bool(metrics) and type(metrics[0]) is dict


def _telegraf_batch(metrics: list[object]) -> list[Decoded]:
    if len(metrics) > MAX_READINGS:
        msg = f"{len(metrics)} metrics > {MAX_READINGS} in one batch"
        raise PayloadError(Reason.TOO_LARGE, msg)
    out: list[Decoded] = []
    for index, metric in enumerate(metrics):
        if type(metric) is not dict or not _is_telegraf(metric):
            msg = f"metric {index}: not a Telegraf metric (fields, name, tags, timestamp)"
            raise PayloadError(Reason.DECODE_ERROR, msg)
        try:
            out += _telegraf(metric)
        except PayloadError as exc:
            raise PayloadError(exc.reason, f"metric {index}: {exc.detail}") from None
        if len(out) > MAX_READINGS:
            raise PayloadError(Reason.TOO_LARGE, f"more than {MAX_READINGS} values in one payload")
    return out


def _telegraf(metric: dict[str, object]) -> list[Decoded]:
    """One metric's numeric fields, named like line protocol's; strings and booleans skipped."""
    measurement = metric["name"]
    fields = metric["fields"]
    assert isinstance(measurement, str) and isinstance(fields, dict)  # by _is_telegraf
    when = _epoch(metric["timestamp"], "timestamp")
    values: list[Decoded] = []
    _numeric_fields(fields, "", when, None, values, 1)  # the time is not among the fields
    if not values:
        raise PayloadError(Reason.DECODE_ERROR, "no numeric fields in the Telegraf metric")
    return [Decoded(_field_name(measurement, d.name or ""), d.value, when) for d in values]


def _field_name(measurement: str, field: str) -> str | None:
    """Line protocol's name of a field: ``measurement/field``, ``measurement`` for a field
    called ``value``, ``field`` without a measurement."""
    if field == "value":
        return measurement or None
    return f"{measurement}/{field}" if measurement else field


# -- SenML (RFC 8428) --------------------------------------------------------------------


def _looks_senml(data: object) -> bool:
    if type(data) is not list or not data or type(data[0]) is not dict:
        return False
    return any(key in data[0] for key in _SENML_KEYS)


def _senml(pack: object, received: float) -> list[Decoded]:
    if type(pack) is not list or not pack:
        raise PayloadError(Reason.DECODE_ERROR, "a SenML pack is a non-empty JSON array")
    if len(pack) > MAX_READINGS:
        raise PayloadError(Reason.TOO_LARGE, f"{len(pack)} records > {MAX_READINGS} in one pack")
    base = _SenmlBase()
    out: list[Decoded] = []
    for index, record in enumerate(pack):
        try:
            decoded = base.resolve(record, received)
        except PayloadError as exc:
            raise PayloadError(exc.reason, f"record {index}: {exc.detail}") from None
        if decoded is not None:
            out.append(decoded)
    if not out:
        raise PayloadError(Reason.DECODE_ERROR, "no SenML record has a numeric value 'v'")
    return out


class _SenmlBase:
    """The base fields in force; each record may redefine them for itself and later ones."""

    __slots__ = ("name", "time", "value")

    def __init__(self) -> None:
        self.name = ""
        self.time = 0.0
        self.value = 0.0

    def resolve(self, record: object, received: float) -> Decoded | None:
        if type(record) is not dict:
            raise PayloadError(Reason.DECODE_ERROR, f"{_kind_of(record)}, not an object")
        for label in record:
            if label.endswith("_"):
                raise PayloadError(Reason.DECODE_ERROR, f"unsupported field {_quote(label)}")
        if "bn" in record:
            self.name = _senml_name(record["bn"], "bn")
        if "bt" in record:
            self.time = _senml_time(record["bt"], "bt")
        if "bv" in record:
            self.value = _finite(record["bv"], "bv")
        if "v" not in record:
            return None  # a string, boolean or data value, or a sum: not a reading
        value = self.value + _finite(record["v"], "v")
        if not math.isfinite(value):
            raise PayloadError(Reason.NON_FINITE, "field 'v': base value + value is not finite")
        name = self.name + _senml_name(record.get("n", ""), "n")
        time = self.time + _senml_time(record.get("t", 0.0), "t")
        if time >= SENML_RELATIVE:  # absolute
            return Decoded(name or None, value, _checked_time(time, "time", time))
        if time == 0.0:  # "now"
            return Decoded(name or None, value, None)
        when = _checked_time(received + time, "time", f"{time:g} s relative")
        return Decoded(name or None, value, when)


def _senml_name(data: object, field: str) -> str:
    if not isinstance(data, str):
        msg = f"field {field!r}: {_kind_of(data)}, not a string"
        raise PayloadError(Reason.DECODE_ERROR, msg)
    return data


def _senml_time(data: object, field: str) -> float:
    seconds = math.nan
    if isinstance(data, int | float) and not isinstance(data, bool):
        try:
            seconds = float(data)
        except OverflowError:
            seconds = math.inf
    if not math.isfinite(seconds):
        msg = f"field {field!r}: {_kind_of(data)} is not a finite number of seconds"
        raise PayloadError(Reason.BAD_TIMESTAMP, msg)
    return seconds


# -- InfluxDB line protocol --------------------------------------------------------------

# Possessive quantifiers throughout: every token is unambiguous, so no backtracking.
_KEY = r"(?:[^\\,= ]|\\.)++"  # tag keys, tag values, field keys: \, \= and \  escape
_VALUE = r'(?:"(?:[^"\\]|\\.)*+"|[^\\,= "]++)'  # a quoted string, or a bare token
_FIELD = re.compile(rf"({_KEY})=({_VALUE})", re.DOTALL)
_LINE = re.compile(
    r"((?:[^\\, ]|\\.)++)"  # measurement: \, and \  escape
    rf"(?:,{_KEY}={_KEY})*+"  # tags, ignored
    rf"[ ]++({_KEY}={_VALUE}(?:,{_KEY}={_VALUE})*+)"  # fields
    r"(?:[ ]++([^ ]++))?+",  # timestamp
    re.DOTALL,
)
_UNESCAPE = re.compile(r"\\([,= \\])")
_Line = tuple[str, list[tuple[str, str]], str | None]  # measurement, (key, raw value), time


def _influx(text: str) -> list[Decoded]:
    lines = text.split("\n", _MAX_ELEMENTS)
    if len(lines) > _MAX_ELEMENTS:
        raise PayloadError(Reason.TOO_LARGE, f"more than {_MAX_ELEMENTS:,} lines in one payload")
    out: list[Decoded] = []
    for number, line in enumerate(lines, 1):
        line = line.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        try:
            _influx_line(line, out)
        except PayloadError as exc:
            raise PayloadError(exc.reason, f"line {number}: {exc.detail}") from None
        if len(out) > MAX_READINGS:
            raise PayloadError(Reason.TOO_LARGE, f"more than {MAX_READINGS} values in one payload")
    if not out:
        raise PayloadError(Reason.DECODE_ERROR, "no line protocol lines, only comments")
    return out


def _influx_line(line: str, out: list[Decoded]) -> None:
    measurement, fields, stamp = _split_plain(line) if _is_plain(line) else _split_escaped(line)
    when = None if stamp is None else _influx_time(stamp)
    count = len(out)
    for key, raw in fields:
        value = _influx_value(key, raw)
        if value is not None:
            out.append(Decoded(_field_name(measurement, key), value, when))
    if len(out) == count:
        raise PayloadError(Reason.DECODE_ERROR, "no numeric fields (strings and booleans skipped)")


def _is_plain(line: str) -> bool:
    return "\\" not in line and '"' not in line


def _split_plain(line: str) -> _Line:
    """A line without escapes or strings, by splitting (the common, fast case)."""
    parts = [part for part in line.split(" ") if part]
    if len(parts) not in (2, 3):
        raise _syntax(line)
    measurement, *tags = parts[0].split(",")
    if not measurement or any(not _pair(tag) for tag in tags):
        raise _syntax(line)
    fields = []
    for field in parts[1].split(","):
        key, _, raw = field.partition("=")
        if not _pair(field):
            raise _syntax(line)
        fields.append((key, raw))
    return measurement, fields, parts[2] if len(parts) == 3 else None


def _pair(text: str) -> bool:
    """``key=value``, both non-empty, with no second ``=``."""
    key, sep, value = text.partition("=")
    return bool(key and sep and value) and "=" not in value


def _split_escaped(line: str) -> _Line:
    """A line with backslash escapes or quoted strings, by regular expressions."""
    match = _LINE.fullmatch(line)
    if match is None:
        raise _syntax(line)
    measurement, fields, stamp = match.groups()
    pairs = []
    start = 0
    while (field := _FIELD.match(fields, start)) is not None:
        pairs.append((_unescape(field.group(1)), field.group(2)))
        start = field.end() + 1
    return _unescape(measurement), pairs, stamp


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(r"\1", text) if "\\" in text else text


def _syntax(line: str) -> PayloadError:
    return PayloadError(Reason.DECODE_ERROR, f"not line protocol: {_quote(line)}")


def _influx_value(key: str, raw: str) -> float | None:
    """A field's value as a float, or None for a string or boolean field."""
    if raw[0] == '"' or raw in _INFLUX_BOOLS:
        return None
    suffix = raw[-1]
    if suffix == "i" or suffix == "u":
        number = _integer(raw[:-1], signed=suffix == "i")
        if number is None:
            msg = f"field {_quote(key)}: {_quote(raw)} is not a 64-bit integer"
            raise PayloadError(Reason.DECODE_ERROR, msg)
        return float(number)
    value = _number_text(raw)
    if value is None:
        msg = f"field {_quote(key)}: {_quote(raw)} is not a number, boolean or string"
        raise PayloadError(Reason.DECODE_ERROR, msg)
    if not math.isfinite(value):
        raise PayloadError(Reason.NON_FINITE, f"field {_quote(key)}: {_quote(raw)} is not finite")
    return value


def _integer(text: str, signed: bool = True) -> int | None:
    digits = text[1:] if signed and text.startswith("-") else text
    if not (0 < len(digits) <= 20 and digits.isascii() and digits.isdigit()):
        return None
    number = int(text)
    low, high = (-(2**63), 2**63 - 1) if signed else (0, 2**64 - 1)
    return number if low <= number <= high else None


def _influx_time(text: str) -> float:
    nanoseconds = _integer(text)
    if nanoseconds is None:
        msg = f"timestamp {_quote(text)} is not integer nanoseconds"
        raise PayloadError(Reason.BAD_TIMESTAMP, msg)
    return _checked_time(nanoseconds / 1_000_000_000, "timestamp", f"{text} ns")
