"""Valid payloads of every format, generated together with what they must decode to.

Each strategy draws ``(payload bytes, expected decodes)``; the expectation is worked
out from the format's own rules (RFC 8428 for SenML, InfluxDB's line protocol), not
from the decoder, so a round trip through the decoder checks it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from connectors.payloads import EPOCH_UNITS, MAX_TIME, MIN_TIME, SENML_RELATIVE, Decoded

Expected = list[Decoded]
FINITE = st.floats(allow_nan=False, allow_infinity=False)
MODERATE = st.floats(-1e300, 1e300, allow_nan=False)  # two of them add up to a finite sum
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECONDS = st.floats(MIN_TIME + 86_400, MAX_TIME - 86_400, allow_nan=False)
NAME = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
SENML_KEYS = frozenset({"bn", "n", "v", "bt", "t"})


# -- numbers ----------------------------------------------------------------------------

NUMBER_STYLES = ("{!r}", "{:.17e}", "{:.17g}", "{:.17E}", "+{!r}", " {!r} ", "\ufeff{!r}\r\n")


@st.composite
def numbers(draw: st.DrawFn) -> tuple[bytes, Expected]:
    """A plain number in one of several spellings (sign, exponent, BOM, whitespace)."""
    x = draw(FINITE)
    style = draw(st.sampled_from(NUMBER_STYLES))
    if style.startswith("+") and repr(x).startswith("-"):
        style = style[1:]
    return style.format(x).encode(), [Decoded(None, x, None)]


# -- JSON -------------------------------------------------------------------------------

ZONES: st.SearchStrategy[Any] = st.sampled_from(  # None: naive, read as UTC
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
# hypothesis bounds datetimes by naive wall time, whatever the zone drawn
WALL = (datetime(1900, 1, 2), datetime(2100, 12, 30))  # noqa: DTZ001
DATETIMES = st.datetimes(*WALL, timezones=ZONES)


@st.composite
def json_times(draw: st.DrawFn) -> tuple[object, float]:
    """A JSON time (epoch s, ms, µs or ns, number or text, or ISO 8601) and its epoch seconds."""
    units = {"ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
    style = draw(st.sampled_from(("seconds", "iso", *units)))
    as_text = draw(st.booleans())
    if style == "iso":
        when = draw(DATETIMES)
        aware = when if when.tzinfo else when.replace(tzinfo=UTC)
        return when.isoformat(), (aware - EPOCH).total_seconds()
    if style == "seconds":
        seconds = draw(SECONDS)
        return (repr(seconds) if as_text else seconds), seconds
    per_second = units[style]
    day = 86_400 * per_second
    count = draw(st.integers(int(MIN_TIME) * per_second + day, int(MAX_TIME) * per_second - day))
    threshold = next(t for t, p in EPOCH_UNITS if p == per_second)
    if abs(count) < threshold:  # that close to 1970, a number is taken for a coarser unit
        count += int(2 * threshold)
    return (str(count) if as_text else count), count / per_second


JSON_VALUES = FINITE | st.integers(-(2**63), 2**63) | FINITE.map(repr)
OTHER_JSON = st.none() | st.booleans() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)


@st.composite
def json_objects(draw: st.DrawFn, value_field: str, time_field: str) -> tuple[dict, Decoded]:
    """An object with ``value_field``, maybe a time and unrelated fields around them."""
    value = draw(JSON_VALUES)
    data: dict[str, object] = {}
    for name in draw(
        st.lists(NAME.filter(lambda n: n not in (value_field, time_field)), max_size=3)
    ):
        data[name] = draw(OTHER_JSON | FINITE)
    data[value_field] = value
    when = None
    if draw(st.booleans()):
        data[time_field], when = draw(json_times())
    elif draw(st.booleans()):
        data[time_field] = None  # null: the receive time
    return data, Decoded(None, float(value), when)


@st.composite
def json_payloads(
    draw: st.DrawFn, value_field: str = "value", time_field: str = "ts"
) -> tuple[bytes, Expected]:
    """One object, or a batch array of them, serialised in one of several styles."""
    items = draw(st.lists(json_objects(value_field, time_field), min_size=1, max_size=4))
    data: object = [item for item, _ in items] if draw(st.booleans()) else items[0][0]
    expected = [decoded for _, decoded in items] if isinstance(data, list) else [items[0][1]]
    text = json.dumps(
        data,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from((None, 0, 2))),
        separators=draw(st.sampled_from(((",", ":"), (", ", ": ")))),
    )
    return text.encode(), expected


TELEGRAF_FIELDS = FINITE | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.booleans()


@st.composite
def telegraf_metrics(draw: st.DrawFn) -> tuple[dict[str, object], Expected]:
    """One metric as Telegraf's JSON serializer writes it, and its numeric fields'
    readings, named like line protocol's (``name/field``, ``name`` for ``value``)."""
    name = draw(NAME)
    fields = draw(st.dictionaries(NAME, TELEGRAF_FIELDS, max_size=4))
    fields[draw(NAME)] = draw(FINITE)  # at least one number
    timestamp, when = draw(json_times().filter(lambda time: not isinstance(time[0], str)))
    metric: dict[str, object] = {"fields": fields, "name": name, "timestamp": timestamp}
    if draw(st.booleans()):
        metric["tags"] = draw(st.dictionaries(NAME, NAME, max_size=3))  # ignored
    expected = [
        Decoded(name if key == "value" else f"{name}/{key}", float(value), when)
        for key, value in fields.items()
        if type(value) in (int, float)
    ]
    return metric, expected


@st.composite
def telegraf_payloads(draw: st.DrawFn) -> tuple[bytes, Expected]:
    """One Telegraf metric, or a batch of them (``{"metrics": [...]}``)."""
    metrics = draw(st.lists(telegraf_metrics(), min_size=1, max_size=3))
    if draw(st.booleans()):
        data: object = {"metrics": [metric for metric, _ in metrics]}
        expected = [decoded for _, readings in metrics for decoded in readings]
    else:
        data, expected = metrics[0]
    return json.dumps(data, ensure_ascii=draw(st.booleans())).encode(), expected


def looks_senml(payload: bytes) -> bool:
    """Whether ``auto`` takes this JSON for SenML: an array whose first object has a SenML key."""
    data = json.loads(payload)
    return isinstance(data, list) and isinstance(data[0], dict) and bool(SENML_KEYS & set(data[0]))


# -- SenML ------------------------------------------------------------------------------


@st.composite
def senml_records(draw: st.DrawFn) -> dict[str, object]:
    record: dict[str, object] = {}
    if draw(st.booleans()):
        record["bn"] = draw(st.text(max_size=6))
    if draw(st.booleans()):
        record["bt"] = draw(st.sampled_from((0.0,)) | SECONDS.filter(lambda t: t >= SENML_RELATIVE))
    if draw(st.booleans()):
        record["bv"] = draw(MODERATE)
    if draw(st.booleans()):
        record["n"] = draw(st.text(max_size=6))
    if draw(st.booleans()):
        record["t"] = draw(st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000))
    kind = draw(st.sampled_from(("v", "v", "v", "vs", "vb", "none")))
    if kind == "v":
        record["v"] = draw(MODERATE | st.integers(-(2**53), 2**53))
    elif kind == "vs":
        record["vs"] = draw(st.text(max_size=4))
    elif kind == "vb":
        record["vb"] = draw(st.booleans())
    return record


def senml_expected(pack: list[dict[str, object]], received: float) -> Expected | None:
    """What RFC 8428 resolves the pack to; None when a time falls outside 1900..2100."""
    name, base_time, base_value = "", 0.0, 0.0
    out: Expected = []
    for record in pack:
        name = str(record.get("bn", name))
        base_time = float(record.get("bt", base_time))  # type: ignore[arg-type]
        base_value = float(record.get("bv", base_value))  # type: ignore[arg-type]
        if "v" not in record:
            continue
        time = base_time + float(record.get("t", 0.0))  # type: ignore[arg-type]
        when = time if time >= SENML_RELATIVE else (None if time == 0.0 else received + time)
        if when is not None and not MIN_TIME <= when < MAX_TIME:
            return None
        full = name + str(record.get("n", ""))
        out.append(Decoded(full or None, base_value + float(record["v"]), when))  # type: ignore[arg-type]
    return out


@st.composite
def senml_packs(draw: st.DrawFn, received: float) -> tuple[bytes, Expected | None]:
    """A pack and its resolution ([] if no record has ``v``, None if a time is out of range)."""
    pack = draw(st.lists(senml_records(), min_size=1, max_size=6))
    text = json.dumps(pack, ensure_ascii=draw(st.booleans()))
    return text.encode(), senml_expected(pack, received)


# -- InfluxDB line protocol ---------------------------------------------------------------

INFLUX_TEXT = st.text(st.sampled_from('ab1 ,=\\"é_-.#'), min_size=1, max_size=6)
INFLUX_NS = st.integers(int(MIN_TIME + 86_400) * 10**9, int(MAX_TIME - 86_400) * 10**9)


def influx_escape(text: str, special: str) -> str:
    text = text.replace("\\", "\\\\")
    for char in special:
        text = text.replace(char, "\\" + char)
    return text


@st.composite
def influx_fields(draw: st.DrawFn) -> tuple[str, float | None]:
    """``key=value`` text and the value it stands for (None: a string or boolean, skipped)."""
    kind = draw(st.sampled_from(("float", "int", "uint", "string", "bool")))
    if kind == "float":
        x = draw(FINITE)
        return repr(x), x
    if kind == "int":
        n = draw(st.integers(-(2**63), 2**63 - 1))
        return f"{n}i", float(n)
    if kind == "uint":
        n = draw(st.integers(0, 2**64 - 1))
        return f"{n}u", float(n)
    if kind == "bool":
        return draw(st.sampled_from(("t", "F", "true", "FALSE"))), None
    string = draw(st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=8))
    return '"' + string.replace("\\", "\\\\").replace('"', '\\"') + '"', None


@st.composite
def influx_lines(draw: st.DrawFn) -> tuple[str, Expected]:
    measurement = draw(INFLUX_TEXT.filter(lambda s: not s.startswith("#")))
    line = influx_escape(measurement, ", ")
    for _ in range(draw(st.integers(0, 2))):
        line += (
            f",{influx_escape(draw(INFLUX_TEXT), ', =')}={influx_escape(draw(INFLUX_TEXT), ', =')}"
        )
    pairs = draw(st.lists(st.tuples(INFLUX_TEXT, influx_fields()), max_size=3))
    numeric = influx_fields().filter(lambda field: field[1] is not None)  # one at least
    pairs.insert(draw(st.integers(0, len(pairs))), (draw(INFLUX_TEXT), draw(numeric)))
    stamp = draw(st.none() | INFLUX_NS)
    line += " " + ",".join(f"{influx_escape(key, ', =')}={text}" for key, (text, _) in pairs)
    when = None
    if stamp is not None:
        line += f" {stamp}"
        when = stamp / 1_000_000_000
    expected = [
        Decoded(measurement if key == "value" else f"{measurement}/{key}", value, when)
        for key, (_, value) in pairs
        if value is not None
    ]
    return line, expected


@st.composite
def influx_payloads(draw: st.DrawFn) -> tuple[bytes, Expected]:
    """Lines with blank lines, comments and CRLF endings between them."""
    lines = draw(st.lists(influx_lines(), min_size=1, max_size=4))
    text, expected = [], []
    for line, decoded in lines:
        text += draw(st.lists(st.sampled_from(("", "# a comment", "  ")), max_size=2))
        text.append(line)
        expected += decoded
    ending = draw(st.sampled_from(("\n", "\r\n")))
    return ending.join(text).encode(), expected
