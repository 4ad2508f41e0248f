"""Payload decoders: documented examples, bad input per reason, and fuzzing."""

from __future__ import annotations

import json
import math
import pickle
import random
import time
from dataclasses import FrozenInstanceError

import pytest
from fuzz.hostile import check_decoded
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import payloads
from connectors.payloads import (
    MAX_READINGS,
    PAYLOAD_KINDS,
    Decoded,
    PayloadError,
    make_decoder,
)
from pipeline.errors import ConfigError
from pipeline.types import Reason

NOW = 1_700_000_000.0  # the receive time handed to every decoder
T2024 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
DECODERS = {kind: make_decoder(kind) for kind in PAYLOAD_KINDS}


def at_least(n: int) -> settings:
    """``n`` examples under the default profile; the ``long`` profile's count when larger."""
    return settings(max_examples=max(n, settings().max_examples))


def decode(kind: str, payload: bytes | str, received: float = NOW) -> list[Decoded]:
    raw = payload.encode() if isinstance(payload, str) else payload
    return DECODERS[kind](raw, received)


def rejected(kind: str, payload: bytes | str) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode(kind, payload)
    return caught.value


def one(value: float, name: str | None = None, timestamp: float | None = None) -> list[Decoded]:
    return [Decoded(name, value, timestamp)]


def check_error(exc: PayloadError) -> None:
    assert isinstance(exc.reason, Reason)
    assert str(exc) == exc.detail
    assert exc.detail and "\n" not in exc.detail and len(exc.detail) < 300


def survives(payload: bytes) -> None:
    """Every decoder returns a valid result or raises PayloadError, nothing else."""
    for decoder in DECODERS.values():
        try:
            result = decoder(payload, NOW)
        except PayloadError as exc:
            check_error(exc)
        else:
            check_decoded(result)


# -- the API -----------------------------------------------------------------------------


def test_make_decoder_kinds() -> None:
    assert PAYLOAD_KINDS == ("auto", "number", "json", "senml", "influx")
    for kind in PAYLOAD_KINDS:
        assert callable(make_decoder(kind))
    assert make_decoder("json", "temp", "time")(b'{"temp": 1, "time": 1e9}', NOW) == one(
        1, None, 1e9
    )
    assert make_decoder("auto", "temp", "time")(b'{"temp": 1, "time": 1e9}', NOW) == one(
        1, None, 1e9
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("xml",), "unknown format 'xml'"),
        (("JSON",), "unknown format 'JSON'"),
        (("json", "ts", "ts"), "two different"),
        (("json", "", "ts"), "non-empty"),
    ],
)
def test_make_decoder_rejects(args: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        make_decoder(*args)


def test_payload_error_and_decoded() -> None:
    exc = PayloadError(Reason.BAD_VALUE, "field 'value': 'x' is not a number")
    assert (exc.reason, exc.detail, str(exc)) == (Reason.BAD_VALUE, exc.detail, exc.detail)
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.detail) == (exc.reason, exc.detail)
    item = Decoded("temp", 1.0, None)
    with pytest.raises(FrozenInstanceError):
        item.value = 2.0  # type: ignore[misc]


# -- number ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "value"),
    [("21.4", 21.4), (" 21.4\n", 21.4), ("-3e2", -300.0), ("0", 0.0), ("+1.5", 1.5),
     (".5", 0.5), ("1E3", 1000.0), ("\ufeff7", 7.0), ("\t-0.0 ", -0.0)],
)  # fmt: skip
def test_number(payload: str, value: float) -> None:
    assert decode("number", payload) == one(value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", Reason.DECODE_ERROR),
        (" \n", Reason.DECODE_ERROR),
        ("abc", Reason.DECODE_ERROR),
        ("21,4", Reason.DECODE_ERROR),
        ("1_000", Reason.DECODE_ERROR),  # float() takes it; a sensor never means it
        ("٣", Reason.DECODE_ERROR),  # nor non-ASCII digits
        ("0x10", Reason.DECODE_ERROR),
        ("21.4 22.5", Reason.DECODE_ERROR),
        ('{"value": 1}', Reason.DECODE_ERROR),
        ("nan", Reason.NON_FINITE),
        ("-inf", Reason.NON_FINITE),
        ("Infinity", Reason.NON_FINITE),
        ("1e999", Reason.NON_FINITE),
        (b"\xff21", Reason.DECODE_ERROR),
    ],
)
def test_number_rejects(payload: str | bytes, reason: Reason) -> None:
    exc = rejected("number", payload)
    assert exc.reason is reason
    check_error(exc)


# -- JSON --------------------------------------------------------------------------------

ZIGBEE = (
    b'{"battery":97,"humidity":40.5,"linkquality":120,"temperature":21.4,"voltage":2995,'
    b'"battery_low":false,"update":{"state":"idle"},"power_outage_count":null,"mode":"auto"}'
)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("21.4", one(21.4)),
        ("-3", one(-3.0)),
        ('"21.5"', one(21.5)),  # numeric strings are numbers
        ('{"value": 21.4}', one(21.4)),
        ('{"value": "21.4", "unit": "C", "battery": 90}', one(21.4)),  # only value_field
        ('{"value": 1, "ts": 1700000000}', one(1, None, 1_700_000_000.0)),
        ('{"value": 1, "ts": 1700000000.25}', one(1, None, 1_700_000_000.25)),
        ('{"value": 1, "ts": 1700000000250}', one(1, None, 1_700_000_000.25)),  # ms
        ('{"value": 1, "ts": 1700000000250000}', one(1, None, 1_700_000_000.25)),  # µs
        ('{"value": 1, "ts": 1700000000250000000}', one(1, None, 1_700_000_000.25)),  # ns
        ('{"value": 1, "ts": "1700000000250000000"}', one(1, None, 1_700_000_000.25)),
        ('{"value": 1, "ts": "1700000000"}', one(1, None, 1_700_000_000.0)),
        ('{"value": 1, "ts": "2024-01-01T00:00:00Z"}', one(1, None, T2024)),
        ('{"value": 1, "ts": "2024-01-01T01:30:00+01:30"}', one(1, None, T2024)),
        ('{"value": 1, "ts": "2024-01-01 00:00:00.5"}', one(1, None, T2024 + 0.5)),  # naive=UTC
        ('{"value": 1, "ts": "2024-01-01"}', one(1, None, T2024)),
        ('{"value": 1, "ts": -2208988800}', one(1, None, -2_208_988_800.0)),  # 1900
        ('{"value": 1, "ts": null}', one(1)),  # null = use the receive time
        ('{"temperature": 21.4, "ts": 1700000000}', one(21.4, "temperature", 1_700_000_000.0)),
        ("[1, 2.5]", [Decoded(None, 1.0, None), Decoded(None, 2.5, None)]),
        (
            '[{"value": 1, "ts": 1.7e9}, {"value": 2, "ts": 1.7e9 }, {"t": 3}]',
            [Decoded(None, 1.0, 1.7e9), Decoded(None, 2.0, 1.7e9), Decoded("t", 3.0, None)],
        ),
        # an empty name is kept: the source refuses its empty stream level (bad_stream)
        ('{"a": 1, "": 2}', [Decoded("a", 1.0, None), Decoded("", 2.0, None)]),
    ],
)
def test_json(payload: str, expected: list[Decoded]) -> None:
    assert decode("json", payload) == expected


def test_json_zigbee2mqtt_object() -> None:
    assert decode("json", ZIGBEE) == [
        Decoded("battery", 97.0, None),
        Decoded("humidity", 40.5, None),
        Decoded("linkquality", 120.0, None),
        Decoded("temperature", 21.4, None),
        Decoded("voltage", 2995.0, None),
    ]


def test_json_custom_fields() -> None:
    decoder = make_decoder("json", value_field="reading", time_field="time")
    assert decoder(b'{"reading": 5, "time": "2024-01-01T00:00:00Z", "value": 9}', NOW) == (
        one(5.0, None, T2024)
    )
    assert decoder(b'{"value": 9, "ts": 3, "time": 1700000000}', NOW) == [
        Decoded("value", 9.0, 1_700_000_000.0),
        Decoded("ts", 3.0, 1_700_000_000.0),
    ]


@pytest.mark.parametrize(
    ("payload", "reason", "words"),
    [
        ("", Reason.DECODE_ERROR, "empty"),
        ("{", Reason.DECODE_ERROR, "not JSON"),
        ('{"value": 1} {"value": 2}', Reason.DECODE_ERROR, "extra data"),
        ("[]", Reason.DECODE_ERROR, "empty array"),
        ("{}", Reason.DECODE_ERROR, "no numeric fields"),
        (
            '{"on": true, "mode": "auto", "x": null, "n": {"a": "b", "c": [1]}, "l": [2]}',
            Reason.DECODE_ERROR,
            "no numeric",
        ),
        ("[[1, 2]]", Reason.DECODE_ERROR, "item 0"),
        ('{"value": {"a": 1}}', Reason.DECODE_ERROR, "field 'value': an object"),
        ('{"value": [1]}', Reason.DECODE_ERROR, "field 'value': an array"),
        ('{"value": "abc"}', Reason.BAD_VALUE, "field 'value': 'abc' is not a number"),
        ('{"value": true}', Reason.BAD_VALUE, "field 'value': a boolean"),
        ('{"value": null}', Reason.BAD_VALUE, "field 'value': null"),
        ('{"value": ""}', Reason.BAD_VALUE, "field 'value'"),
        ("true", Reason.BAD_VALUE, "boolean"),
        ("null", Reason.BAD_VALUE, "null"),
        ('"abc"', Reason.BAD_VALUE, "'abc'"),
        ('[1, "x"]', Reason.BAD_VALUE, "item 1"),
        ('{"value": NaN}', Reason.NON_FINITE, "field 'value'"),
        ('{"value": Infinity}', Reason.NON_FINITE, "field 'value'"),
        ('{"value": -Infinity}', Reason.NON_FINITE, "field 'value'"),
        ('{"value": "nan"}', Reason.NON_FINITE, "field 'value'"),
        ('{"value": 1e400}', Reason.NON_FINITE, "field 'value'"),
        ('{"value": ' + "9" * 400 + "}", Reason.NON_FINITE, "too large"),
        ('{"value": ' + "9" * 5000 + "}", Reason.DECODE_ERROR, "too long"),
        ('{"temperature": NaN, "humidity": 40}', Reason.NON_FINITE, "field 'temperature'"),
        ('{"value": 1, "ts": "yesterday"}', Reason.BAD_TIMESTAMP, "field 'ts': 'yesterday'"),
        ('{"value": 1, "ts": "2024-13-01"}', Reason.BAD_TIMESTAMP, "field 'ts'"),
        ('{"value": 1, "ts": true}', Reason.BAD_TIMESTAMP, "a boolean is not a timestamp"),
        ('{"value": 1, "ts": {"s": 1}}', Reason.BAD_TIMESTAMP, "an object"),
        ('{"value": 1, "ts": NaN}', Reason.BAD_TIMESTAMP, "field 'ts'"),
        ('{"value": 1, "ts": 1e20}', Reason.BAD_TIMESTAMP, "1900..2100"),
        ('{"value": 1, "ts": -2208988801}', Reason.BAD_TIMESTAMP, "1900..2100"),  # 1899
        ('{"value": 1, "ts": "2101-01-01T00:00:00Z"}', Reason.BAD_TIMESTAMP, "1900..2100"),
        ('{"value": 1, "ts": "9999-12-31"}', Reason.BAD_TIMESTAMP, "1900..2100"),
        ('{"temperature": 1, "ts": "soon"}', Reason.BAD_TIMESTAMP, "field 'ts'"),
        ("[" * 100_000 + "]" * 100_000, Reason.DECODE_ERROR, "nested too deeply"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, Reason.DECODE_ERROR, "nested too deeply"),
        # Telegraf's JSON
        (
            '{"fields": {"on": true}, "name": "x", "timestamp": 1700000000}',
            Reason.DECODE_ERROR,
            "no numeric fields in the Telegraf metric",
        ),
        (
            '{"fields": {"a": 1}, "name": "x", "timestamp": "soon"}',
            Reason.BAD_TIMESTAMP,
            "field 'timestamp'",
        ),
        (
            '{"fields": {"a": NaN}, "name": "x", "timestamp": 1700000000}',
            Reason.NON_FINITE,
            "field 'a'",
        ),
        (
            '{"metrics": [{"fields": {"a": 1}, "name": "x", "timestamp": 1}, {"a": 1}]}',
            Reason.DECODE_ERROR,
            "metric 1: not a Telegraf metric",
        ),
        (
            '{"metrics": [{"fields": {"a": 1}, "name": "x", "timestamp": 1e30}]}',
            Reason.BAD_TIMESTAMP,
            "metric 0: field 'timestamp'",
        ),
    ],
)
def test_json_rejects(payload: str, reason: Reason, words: str) -> None:
    exc = rejected("json", payload)
    assert exc.reason is reason
    assert words in exc.detail
    check_error(exc)


def test_json_detail_quotes_at_most_60_characters() -> None:
    exc = rejected("json", '{"value": "' + "x" * 1000 + '"}')
    assert exc.reason is Reason.BAD_VALUE and len(exc.detail) < 100


# what Tasmota publishes on tele/<device>/SENSOR (an energy plug with a sensor attached)
TASMOTA = (
    '{"Time": "2026-12-05T05:19:14", "ENERGY": {"TotalStartTime": "2026-01-01T00:00:00",'
    ' "Total": 1.234, "Power": 45, "Voltage": 230}, "AM2301": {"Temperature": 21.5,'
    ' "Humidity": 40.1}, "TempUnit": "C"}'
)


def test_json_nested_objects_name_their_numbers_by_path() -> None:
    assert decode("json", TASMOTA) == [
        Decoded("ENERGY/Total", 1.234, None),
        Decoded("ENERGY/Power", 45.0, None),
        Decoded("ENERGY/Voltage", 230.0, None),
        Decoded("AM2301/Temperature", 21.5, None),
        Decoded("AM2301/Humidity", 40.1, None),
    ]
    deep = '{"a": {"b": {"c": {"d": 1, "e": {"f": 2}}}}, "ts": 1700000000, "g": {"ts": 3}}'
    assert decode("json", deep) == [  # four levels, and "ts" is the time only at the top
        Decoded("a/b/c/d", 1.0, 1_700_000_000.0),
        Decoded("g/ts", 3.0, 1_700_000_000.0),
    ]


def test_json_moderately_nested_values_are_skipped() -> None:
    nested = '{"deep": ' + "[" * 200 + "]" * 200 + ', "t": 1}'
    assert decode("json", nested) == one(1.0, "t")


# -- Telegraf's JSON serializer ----------------------------------------------------------

# what outputs.mqtt with data_format = "json" publishes (Telegraf's docs, json serializer)
TELEGRAF_CPU = (
    '{"fields": {"usage_idle": 98.5, "usage_user": 1, "state": "ok", "up": true},'
    ' "name": "cpu", "tags": {"cpu": "cpu-total", "host": "edge-1"}, "timestamp": 1700000000}'
)


@pytest.mark.parametrize("kind", ["json", "auto"])
def test_telegraf_metric_fields_are_named_like_line_protocol(kind: str) -> None:
    assert decode(kind, TELEGRAF_CPU) == [
        Decoded("cpu/usage_idle", 98.5, 1_700_000_000.0),
        Decoded("cpu/usage_user", 1.0, 1_700_000_000.0),
    ]  # strings and booleans skipped, tags ignored, and no "timestamp" stream
    line = "cpu,cpu=cpu-total,host=edge-1 usage_idle=98.5,usage_user=1i 1700000000000000000"
    assert decode("influx", line) == decode(kind, TELEGRAF_CPU)


def test_a_telegraf_name_is_kept_as_it_is() -> None:
    payload = '{"fields": {"0": 0.5, "value": 1}, "name": "/", "timestamp": 1700000000}'
    assert decode("json", payload) == [  # the stream key's rules judge the levels later
        Decoded("//0", 0.5, 1_700_000_000.0),
        Decoded("/", 1.0, 1_700_000_000.0),
    ]


def test_a_telegraf_field_with_an_empty_name_is_kept_for_the_source_to_refuse() -> None:
    """Its stream key ends in an empty level, which the source counts and dead-letters
    (bad_stream), as it does for a plain object's ``{"": 5}``: never lost quietly."""
    payload = '{"fields": {"": 5, "x": 1}, "name": "cpu", "tags": {}, "timestamp": 1700000000}'
    assert decode("json", payload) == [
        Decoded("cpu/", 5.0, 1_700_000_000.0),
        Decoded("cpu/x", 1.0, 1_700_000_000.0),
    ]


def test_telegraf_batch_and_timestamp_units() -> None:
    ms, ns = (
        '{"fields": {"value": 3}, "name": "disk", "timestamp": ' + stamp + "}"
        for stamp in ("1700000000123", "1700000000123456789")
    )
    batch = '{"metrics": [' + ms + ", " + ns + "]}"
    assert decode("auto", batch) == [
        Decoded("disk", 3.0, 1_700_000_000.123),
        Decoded("disk", 3.0, 1_700_000_000.123456789),
    ]


@pytest.mark.parametrize(
    ("count", "seconds"),
    [(10**11, 1e8), (10**14, 1e8), (10**17, 1e8), (-(10**17), -1e8), (10**11 - 1, None)],
)
def test_an_epoch_count_at_a_units_threshold_is_in_the_finer_unit(count, seconds) -> None:
    # in the coarser unit each threshold is 1e11 s, the year 5138: never a valid time
    payload = f'{{"value": 1, "ts": {count}}}'
    if seconds is None:
        assert rejected("json", payload).reason is Reason.BAD_TIMESTAMP  # still seconds
    else:
        assert decode("json", payload) == [Decoded(None, 1.0, seconds)]


def test_an_object_with_more_than_telegrafs_keys_is_a_plain_object() -> None:
    payload = '{"fields": {"a": 1}, "name": "x", "timestamp": 1700000000, "temp": 4}'
    assert decode("json", payload) == [
        Decoded("fields/a", 1.0, None),
        Decoded("timestamp", 1.7e9, None),
        Decoded("temp", 4.0, None),
    ]


# -- SenML (RFC 8428 section 5 examples) -------------------------------------------------

DEV = "urn:dev:ow:10e2073a01080063"


def test_senml_single_datapoint() -> None:
    pack = f'[{{"n":"{DEV}","u":"Cel","v":23.1}}]'
    assert decode("senml", pack) == one(23.1, DEV)


def test_senml_base_name_is_concatenated() -> None:
    pack = f'[{{"bn":"{DEV}:","n":"voltage","u":"V","v":120.1}},{{"n":"current","u":"A","v":1.2}}]'
    assert decode("senml", pack) == [
        Decoded(f"{DEV}:voltage", 120.1, None),
        Decoded(f"{DEV}:current", 1.2, None),
    ]


def test_senml_base_time_and_relative_times() -> None:
    pack = (
        '[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,'
        '"n":"voltage","u":"V","v":120.1},'
        '{"n":"current","t":-5,"v":1.2},{"n":"current","t":-4,"v":1.3},'
        '{"n":"current","t":-3,"v":1.4},{"n":"current","t":-2,"v":1.5},'
        '{"n":"current","t":-1,"v":1.6},{"n":"current","v":1.7}]'
    )
    result = decode("senml", pack)
    assert [r.value for r in result] == [120.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7]
    assert result[0].name == "urn:dev:ow:10e2073a0108006:voltage"
    assert [r.timestamp for r in result] == pytest.approx(
        [1_276_020_076.001 + dt for dt in (0, -5, -4, -3, -2, -1, 0)]
    )


def test_senml_resolved_records() -> None:
    pack = (
        f'[{{"n":"{DEV}:voltage","t":1.320067464e+09,"u":"V","v":120.1}},'
        f'{{"n":"{DEV}:current","t":1.320067464e+09,"u":"A","v":1.2}}]'
    )
    assert decode("senml", pack) == [
        Decoded(f"{DEV}:voltage", 120.1, 1_320_067_464.0),
        Decoded(f"{DEV}:current", 1.2, 1_320_067_464.0),
    ]


def test_senml_multiple_data_types_skip_non_numeric_values() -> None:
    pack = (
        f'[{{"bn":"{DEV}:","bt":1.320067464e+09,"bu":"%RH","v":20}},'
        '{"u":"lon","v":24.30621},{"u":"lat","v":60.07965},{"t":60,"v":20.3},'
        '{"n":"label","vs":"Machine Room"},{"n":"open","vb":false},'
        '{"n":"nfc-reader","vd":"aGkgCg"},{"n":"energy","s":12.5}]'
    )
    result = decode("senml", pack)
    assert [r.value for r in result] == [20.0, 24.30621, 60.07965, 20.3]
    assert {r.name for r in result} == {f"{DEV}:"}
    assert [r.timestamp for r in result] == [1_320_067_464.0] * 3 + [1_320_067_524.0]


@pytest.mark.parametrize(
    ("pack", "expected"),
    [
        ('[{"n":"t","v":1}]', one(1.0, "t")),  # no time: "now"
        ('[{"n":"t","v":1,"t":0}]', one(1.0, "t")),
        ('[{"n":"t","v":1,"t":-30}]', one(1.0, "t", NOW - 30)),  # 30 s before receipt
        ('[{"n":"t","v":1,"t":5}]', one(1.0, "t", NOW + 5)),  # below 2**28: relative
        ('[{"bt":-10},{"n":"t","v":1,"t":4}]', one(1.0, "t", NOW - 6)),
        ('[{"n":"t","v":1,"t":268435456}]', one(1.0, "t", 268_435_456.0)),  # 2**28: absolute
        ('[{"v":1}]', one(1.0)),  # no name at all
        (
            '[{"bv":10,"n":"a","v":1},{"n":"b","v":-2}]',
            [Decoded("a", 11.0, None), Decoded("b", 8.0, None)],
        ),
        (
            '[{"bn":"x:","n":"a","v":1},{"bn":"y:","n":"a","v":2},{"n":"b","v":3}]',
            [Decoded("x:a", 1.0, None), Decoded("y:a", 2.0, None), Decoded("y:b", 3.0, None)],
        ),
        (
            '[{"bt":1.7e9,"n":"a","v":1},{"bt":1.8e9,"n":"a","v":2,"t":1},{"n":"a","v":3}]',
            [Decoded("a", 1.0, 1.7e9), Decoded("a", 2.0, 1.8e9 + 1), Decoded("a", 3.0, 1.8e9)],
        ),
        ('[{"bn":"dev/","n":"temp","v":"21.5"}]', one(21.5, "dev/temp")),
    ],
)  # fmt: skip
def test_senml(pack: str, expected: list[Decoded]) -> None:
    assert decode("senml", pack) == expected


@pytest.mark.parametrize(
    ("pack", "reason", "words"),
    [
        ('{"n":"t","v":1}', Reason.DECODE_ERROR, "JSON array"),
        ("[]", Reason.DECODE_ERROR, "JSON array"),
        ("[1]", Reason.DECODE_ERROR, "record 0: "),
        ('[{"n":"t","v":1}, "x"]', Reason.DECODE_ERROR, "record 1: "),
        ('[{"n":"label","vs":"x"},{"n":"b","vb":true}]', Reason.DECODE_ERROR, "no SenML record"),
        ('[{"n":"t","v":1,"ext_":2}]', Reason.DECODE_ERROR, "unsupported field 'ext_'"),
        ('[{"bn":5,"v":1}]', Reason.DECODE_ERROR, "field 'bn'"),
        ('[{"n":["a"],"v":1}]', Reason.DECODE_ERROR, "field 'n'"),
        ('[{"n":"t","v":true}]', Reason.BAD_VALUE, "field 'v'"),
        ('[{"n":"t","v":"hot"}]', Reason.BAD_VALUE, "field 'v'"),
        ('[{"n":"t","v":null}]', Reason.BAD_VALUE, "field 'v'"),
        ('[{"bv":"x","n":"t","v":1}]', Reason.BAD_VALUE, "field 'bv'"),
        ('[{"n":"t","v":NaN}]', Reason.NON_FINITE, "field 'v'"),
        ('[{"bv":1e308,"n":"t","v":1e308}]', Reason.NON_FINITE, "field 'v'"),
        ('[{"n":"t","v":1,"t":"now"}]', Reason.BAD_TIMESTAMP, "field 't'"),
        ('[{"bt":true,"n":"t","v":1}]', Reason.BAD_TIMESTAMP, "field 'bt'"),
        ('[{"n":"t","v":1,"t":Infinity}]', Reason.BAD_TIMESTAMP, "field 't'"),
        ('[{"n":"t","v":1,"t":5e9}]', Reason.BAD_TIMESTAMP, "1900..2100"),
        ('[{"n":"t","v":1,"t":-5e9}]', Reason.BAD_TIMESTAMP, "1900..2100"),
    ],
)
def test_senml_rejects(pack: str, reason: Reason, words: str) -> None:
    exc = rejected("senml", pack)
    assert exc.reason is reason
    assert words in exc.detail
    check_error(exc)


# -- InfluxDB line protocol --------------------------------------------------------------

NS = 1_700_000_000_000_000_000  # 1.7e9 s in nanoseconds


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("weather temp=11.5", one(11.5, "weather/temp")),
        (f"weather,site=pier temp=11.5 {NS}", one(11.5, "weather/temp", 1.7e9)),
        ("temp value=21.5", one(21.5, "temp")),  # a field called value: just the measurement
        (
            f"buoy,id=7 wave=1.2,period=9i,count=3u,ok=true,label=\"calm\" {NS}",
            [Decoded("buoy/wave", 1.2, 1.7e9), Decoded("buoy/period", 9.0, 1.7e9),
             Decoded("buoy/count", 3.0, 1.7e9)],
        ),
        ("m f=-1.5e3,g=-4i,h=1.", [Decoded("m/f", -1500.0, None), Decoded("m/g", -4.0, None),
                                   Decoded("m/h", 1.0, None)]),
        ("m a=T,b=FALSE,c=f,x=2", one(2.0, "m/x")),
        (f"m f=1 {NS + 500_000_000}", one(1.0, "m/f", 1.7e9 + 0.5)),
        ("m f=1 -2208988800000000000", one(1.0, "m/f", -2_208_988_800.0)),  # 1900
        (f"a x=1 {NS}\nb y=2 {NS}", [Decoded("a/x", 1.0, 1.7e9), Decoded("b/y", 2.0, 1.7e9)]),
        ("# comment\n\n  \nm f=1\r\n# another\r\n", one(1.0, "m/f")),
        ("  m f=1  ", one(1.0, "m/f")),
        ("m  f=1   1700000000000000000", one(1.0, "m/f", 1.7e9)),
        # escapes in measurement, tag keys/values and field keys; strings with , = space "
        (r"my\ room,loc\,a=b\=c temp\=x=1", one(1.0, "my room/temp=x")),
        (r"m\,n f\ g=2", one(2.0, "m,n/f g")),
        ('m s="a, b=c \\"quoted\\" \\\\",v=3', one(3.0, "m/v")),
        ('m s="",v=3', one(3.0, "m/v")),
        ('m s="x y" 1700000000000000000', None),  # only a string: rejected below
        (r"a\b f=1", one(1.0, "a\\b/f")),  # a backslash before other characters is literal
        ("m=1 f=1", one(1.0, "m=1/f")),  # '=' needs no escape in a measurement
    ],
)  # fmt: skip
def test_influx(lines: str, expected: list[Decoded] | None) -> None:
    if expected is None:
        assert rejected("influx", lines).reason is Reason.DECODE_ERROR
    else:
        assert decode("influx", lines) == expected


@pytest.mark.parametrize(
    ("lines", "reason", "words"),
    [
        ("m", Reason.DECODE_ERROR, "not line protocol"),
        ("m f", Reason.DECODE_ERROR, "not line protocol"),
        ("m f=", Reason.DECODE_ERROR, "not line protocol"),
        ("m =1", Reason.DECODE_ERROR, "not line protocol"),
        ("m f=1,", Reason.DECODE_ERROR, "not line protocol"),
        ("m,t f=1", Reason.DECODE_ERROR, "not line protocol"),
        ("m,=v f=1", Reason.DECODE_ERROR, "not line protocol"),
        (",t=1 f=1", Reason.DECODE_ERROR, "not line protocol"),
        ("m f=1 2 3", Reason.DECODE_ERROR, "not line protocol"),
        ('m f="open', Reason.DECODE_ERROR, "not line protocol"),
        ("m f=1=2", Reason.DECODE_ERROR, "not line protocol"),
        ('m f=true,s="x"', Reason.DECODE_ERROR, "no numeric fields"),
        ("# only a comment", Reason.DECODE_ERROR, "only comments"),
        ("m f=abc", Reason.DECODE_ERROR, "field 'f': 'abc'"),
        ("m f=1_000", Reason.DECODE_ERROR, "field 'f'"),
        ("m f=1.5i", Reason.DECODE_ERROR, "64-bit integer"),
        ("m f=9223372036854775808i", Reason.DECODE_ERROR, "64-bit integer"),
        ("m f=-1u", Reason.DECODE_ERROR, "64-bit integer"),
        ("m f=18446744073709551616u", Reason.DECODE_ERROR, "64-bit integer"),
        ("m f=NaN", Reason.NON_FINITE, "field 'f'"),
        ("m f=-inf", Reason.NON_FINITE, "field 'f'"),
        ("m f=1e999", Reason.NON_FINITE, "field 'f'"),
        ("m f=1 1.7e18", Reason.BAD_TIMESTAMP, "integer nanoseconds"),
        ("m f=1 tomorrow", Reason.BAD_TIMESTAMP, "integer nanoseconds"),
        ("m f=1 99999999999999999999999", Reason.BAD_TIMESTAMP, "integer nanoseconds"),
        ("m f=1 -3000000000000000000", Reason.BAD_TIMESTAMP, "1900..2100"),
        ("a x=1\nb y", Reason.DECODE_ERROR, "line 2: "),
    ],
)
def test_influx_rejects(lines: str, reason: Reason, words: str) -> None:
    exc = rejected("influx", lines)
    assert exc.reason is reason
    assert words in exc.detail
    check_error(exc)


def test_influx_seconds_timestamp_is_1970() -> None:
    # a second-precision timestamp read as nanoseconds lands in 1970: still in range
    assert decode("influx", "m f=1 1700000000000") == one(1.0, "m/f", 1700.0)


# -- auto --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("21.4", one(21.4)),
        (" -3e2\n", one(-300.0)),
        (".5", one(0.5)),  # not JSON: a plain number
        ("+1", one(1.0)),
        ('"7"', one(7.0)),
        ('{"value": 1, "ts": 1.7e9}', one(1.0, None, 1.7e9)),
        (ZIGBEE.decode(), decode("json", ZIGBEE)),
        ("[1, 2]", [Decoded(None, 1.0, None), Decoded(None, 2.0, None)]),
        ('[{"value": 1}]', one(1.0)),  # no SenML keys in the first element: JSON
        ('[{"n": "a", "v": 1}]', one(1.0, "a")),  # SenML
        ('[{"bn": "d:", "bt": 1.7e9}, {"n": "a", "v": 1}]', one(1.0, "d:a", 1.7e9)),
        ('[{"t": -5, "v": 1}]', one(1.0, None, NOW - 5)),  # SenML time, not a JSON field
        ("weather temp=11.5", one(11.5, "weather/temp")),
        (f"weather,site=pier temp=11.5 {NS}", one(11.5, "weather/temp", 1.7e9)),
        ("# header\nm value=2", one(2.0, "m")),
    ],
)
def test_auto(payload: str, expected: list[Decoded]) -> None:
    assert decode("auto", payload) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", Reason.DECODE_ERROR),
        ("nan", Reason.NON_FINITE),
        ("-inf", Reason.NON_FINITE),
        ("NaN", Reason.NON_FINITE),  # JSON's literal, read as a plain number
        ("-Infinity", Reason.NON_FINITE),
        ("true", Reason.BAD_VALUE),  # JSON's literals, as the json decoder says of them
        ("false", Reason.BAD_VALUE),
        ("null", Reason.BAD_VALUE),
        ("truth", Reason.DECODE_ERROR),  # neither JSON-looking nor a number nor influx
        ("hello", Reason.DECODE_ERROR),
        ("hello world", Reason.DECODE_ERROR),  # line protocol without fields
        ("1.2.3", Reason.DECODE_ERROR),
        ("{oops", Reason.DECODE_ERROR),
        ('{"value": "x"}', Reason.BAD_VALUE),
        ("[{}]", Reason.DECODE_ERROR),
        ('[{"v": true}]', Reason.BAD_VALUE),
        ("m f=1 later", Reason.BAD_TIMESTAMP),
        (b"\xc3\x28", Reason.DECODE_ERROR),
    ],
)
def test_auto_rejects(payload: str | bytes, reason: Reason) -> None:
    exc = rejected("auto", payload)
    assert exc.reason is reason
    check_error(exc)


# -- big payloads: the caller caps the size, but nothing may blow up ---------------------

MB10 = 10 * 1024 * 1024


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"1" * MB10, id="digits"),
        pytest.param(b"[" * MB10, id="open-brackets"),
        pytest.param(b"{" * MB10, id="open-braces"),
        pytest.param(b'{"value": "' + b"x" * MB10 + b'"}', id="long-string"),
        pytest.param(b"[" + b"1," * (MB10 // 2) + b"1]", id="many-numbers"),
        pytest.param(b"m f=1\n" * (MB10 // 6), id="many-lines"),
        pytest.param(b'm s="' + b'a \\" ,' * (MB10 // 8) + b'",v=1', id="long-influx-string"),
        pytest.param(bytes(range(256)) * (MB10 // 256), id="binary"),
        pytest.param(b" " * MB10, id="blank"),
    ],
)
def test_ten_megabytes(payload: bytes) -> None:
    for kind, decoder in DECODERS.items():
        start = time.perf_counter()
        try:
            result = decoder(payload, NOW)
        except PayloadError as exc:
            check_error(exc)
        else:
            check_decoded(result)
            assert len(result) <= MAX_READINGS
        assert time.perf_counter() - start < 5.0, kind


def test_too_many_values_is_too_large() -> None:
    batch = json.dumps(list(range(MAX_READINGS + 1))).encode()
    assert rejected("json", batch).reason is Reason.TOO_LARGE
    lines = "\n".join(f"m f={i}" for i in range(MAX_READINGS + 1))
    assert rejected("influx", lines).reason is Reason.TOO_LARGE
    pack = json.dumps([{"n": "a", "v": 1}] * (MAX_READINGS + 1))
    assert rejected("senml", pack).reason is Reason.TOO_LARGE
    wide = json.dumps({f"f{i}": i for i in range(MAX_READINGS + 1)})
    assert rejected("json", wide).reason is Reason.TOO_LARGE
    assert len(decode("json", json.dumps(list(range(MAX_READINGS))))) == MAX_READINGS


# -- properties --------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)


@at_least(300)
@given(FINITE)
def test_numbers_round_trip(x: float) -> None:
    for kind in ("number", "json", "auto"):
        assert decode(kind, repr(x)) == one(x)
    assert decode("json", json.dumps({"value": x})) == one(x)
    assert decode("influx", f"m value={x!r}") == one(x, "m")


NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


@at_least(150)
@given(st.dictionaries(NAMES, FINITE, min_size=1, max_size=8))
def test_json_fields_become_named_values(fields: dict[str, float]) -> None:
    fields.pop("value", None)
    fields.pop("ts", None)
    if not fields:
        return
    assert decode("json", json.dumps(fields)) == [Decoded(k, v, None) for k, v in fields.items()]


def influx_escape(text: str, special: str) -> str:
    text = text.replace("\\", "\\\\")
    for char in special:
        text = text.replace(char, "\\" + char)
    return text


INFLUX_NAME = st.text(st.sampled_from('ab ,=\\"é#'), min_size=1, max_size=8).filter(
    lambda s: not s.startswith("#")  # a comment line
)
STRING_FIELD = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=10)


@at_least(400)
@given(INFLUX_NAME, INFLUX_NAME, st.integers(-(2**63), 2**63 - 1), STRING_FIELD)
def test_influx_escaped_names_round_trip(
    measurement: str, key: str, number: int, string: str
) -> None:
    string_value = string.replace("\\", "\\\\").replace('"', '\\"')
    line = (
        f"{influx_escape(measurement, ', ')},tag\\ k=v\\,1 "
        f'{influx_escape(key, ", =")}={number}i,s="{string_value}"'
    )
    name = measurement if key == "value" else f"{measurement}/{key}"
    assert decode("influx", line) == one(float(number), name)


PLAIN_LINE = st.text(st.sampled_from("mf,= 1i.-eT"), min_size=1, max_size=20)


@at_least(1000)
@given(PLAIN_LINE)
def test_influx_fast_path_equals_regex_path(line: str) -> None:
    line = line.strip(" \t\r")
    if not line:
        return
    outcomes: list[object] = []
    for split in (payloads._split_plain, payloads._split_escaped):
        try:
            outcomes.append(split(line))
        except PayloadError as exc:
            outcomes.append(exc.reason)
    assert outcomes[0] == outcomes[1]


# -- fuzzing: nothing but PayloadError, only finite values -------------------------------
# Example budgets: 20,100 inputs at the default profile, about 15 s.

SCALARS = [None, True, False, 0, -5, 1, 21.5, 1.7e9, 1.7e12, 2**28, 4.2e9, -3e9, 1e11, 10**400,
           -(10**19), math.nan, math.inf, -math.inf, 1e308, "", "21.5", "nan", "-inf", "abc",
           "2024-01-01T00:00:00Z", "2024-01-01T00:00:00+05:00", "0001-01-01", "1e999", "\x00",
           "é", "\ud800"]  # fmt: skip
KEY_POOL = ["value", "ts", "v", "t", "n", "bn", "bt", "bv", "vs", "vb", "s", "x_", "temp", ""]


def random_json(rng: random.Random, depth: int = 0) -> object:
    """A JSON value shaped like sensor payloads: objects with the keys decoders look at."""
    roll = rng.random()
    if depth >= 4 or roll < 0.4:
        return rng.choice(SCALARS)
    if roll < 0.7:
        keys = rng.choices(KEY_POOL, k=rng.randrange(6))
        return {key: random_json(rng, depth + 1) for key in keys}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def dumps(data: object) -> bytes:
    text = json.dumps(data)  # NaN/Infinity as JSON's non-standard literals
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8 bytes


@at_least(6000)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(payload: bytes) -> None:
    survives(payload)


@at_least(7000)
@given(st.integers(0, 2**64))
def test_fuzz_random_json(seed: int) -> None:
    rng = random.Random(seed)
    data = random_json(rng)
    survives(dumps(data))
    survives(dumps([data, random_json(rng)]))  # a batch, or a SenML pack
    survives(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"))


JSON_SCALARS = st.sampled_from(SCALARS) | st.integers() | st.floats() | st.text(max_size=6)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEY_POOL) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=10,
)


@at_least(700)
@given(JSON_VALUES)
def test_fuzz_json_values(data: object) -> None:
    survives(dumps(data))
    survives(dumps([data]))


@at_least(3200)
@given(st.text(st.sampled_from('mf,= \\"1i0u.-eTt#\n\r\tNa'), max_size=40))
def test_fuzz_line_protocol_text(text: str) -> None:
    survives(text.encode())


@at_least(3200)
@given(st.text(st.sampled_from('[]{}",:.-+0123456789eE aNnIifty\\u'), max_size=40))
def test_fuzz_json_like_text(text: str) -> None:
    survives(text.encode())
