"""Fuzzing the payload decoders: hostile input, round trips, and ``auto`` against the rest.

Complements ``tests/connectors/test_payloads.py`` (random bytes, random JSON trees,
small alphabets): here inputs are built from pieces that break parsers, valid
payloads are mutated, and generated valid payloads of every format must decode
back to exactly what was encoded. Every input goes through every decoder, which
returns finite values with sane times or raises ``PayloadError`` with a decoder
``Reason`` (``hostile.outcome``); anything else is a crash and fails the test.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from connectors.payloads import PAYLOAD_KINDS, Decoder, make_decoder
from fuzz.hostile import NOW, Generated, encode, examples, hostile_payload, mutate, outcome
from fuzz.payload_formats import (
    NAME,
    Expected,
    influx_payloads,
    json_payloads,
    looks_senml,
    numbers,
    senml_packs,
    telegraf_payloads,
)
from pipeline.types import Reason

DECODERS = [make_decoder(kind) for kind in PAYLOAD_KINDS] + [
    make_decoder("json", value_field="v", time_field="time"),
    make_decoder("auto", value_field="temp", time_field="t"),
]
AUTO, NUMBER, JSON, SENML, INFLUX = (make_decoder(kind) for kind in PAYLOAD_KINDS)


def survives(payload: bytes) -> None:
    """Every decoder decodes ``payload`` within the contract or rejects it with a reason."""
    for decoder in DECODERS:
        outcome(decoder, payload)


def round_trips(decoder: Decoder, payload: bytes, expected: Expected) -> None:
    assert outcome(decoder, payload) == expected


# -- hostile input ----------------------------------------------------------------------


SEEDS = st.integers(0, 2**64)
PER_SEED = 20  # hostile payloads built from one seed


@examples(2_000)
@given(SEEDS)
def test_hostile_fragments(generated: Generated, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(PER_SEED):
        payload = hostile_payload(rng)
        survives(payload)
    generated.add(PER_SEED)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xef\xbb\xbf\xef\xbb\xbf21.5",  # two BOMs
        b'{"value": 1, "ts": "\\ud800"}',
        encode('[{"bn": "\ud800", "v": 1}]'),
        b"\x00",
        b"m\x00 v=1",
    ],
)
def test_hostile_examples(payload: bytes) -> None:
    survives(payload)


@examples(6_000)
@given(st.text(st.characters(exclude_categories=()), max_size=60))
def test_any_unicode_text_including_surrogates_and_controls(
    generated: Generated, text: str
) -> None:
    generated.add()
    survives(encode(text))


OPENERS = ("[", '{"value":', '{"a":', '[{"v":', "[[", '{"ts":')


@examples(300)
@given(st.sampled_from(OPENERS), st.integers(1, 200_000), st.booleans())
@example('{"a":', 100_000, True)
def test_deep_nesting(generated: Generated, opener: str, depth: int, closed: bool) -> None:
    closer = "".join("]" if char == "[" else "}" for char in opener if char in "[{")[::-1]
    generated.add()
    survives((opener * depth + "1" + (closer * depth if closed else "")).encode())


HUGE_SPOTS = (
    "{}",
    '{{"value": {}}}',
    '{{"value": 1, "ts": {}}}',
    '{{"value": 1, "ts": "{}"}}',
    '[{{"v": {}}}]',
    '[{{"v": 1, "t": {}}}]',
    '[{{"bt": {}, "v": 1}}]',
    '[{{"bv": {}, "v": 1e308}}]',
    "m v={}i",
    "m v={}u",
    "m v={}",
    "m v=1 {}",
    "m {}=1",
)
HUGE = (
    st.integers(-(10**4000), 10**4000).map(str)
    | st.integers(1, 6000).map(lambda n: "9" * n)
    | st.integers(-100_000, 100_000).map(lambda e: f"1e{e}")
    | st.floats().map(repr)
    | st.sampled_from(("NaN", "Infinity", "-Infinity", "1e999", "-0", "0e0", "1E+308"))
)


@examples(4_000)
@given(st.sampled_from(HUGE_SPOTS), HUGE)
@example("m v={}i", "9223372036854775808")  # one over int64
@example("m v={}u", "18446744073709551616")  # one over uint64
@example('{{"value": {}}}', "1" + "0" * 4_400)  # over Python's int-from-text limit
def test_huge_and_non_finite_numbers_everywhere(
    generated: Generated, spot: str, number: str
) -> None:
    generated.add()
    survives(spot.format(number).encode())


LONG_UNITS = ("1", "a", " ", ",", "m v=1\n", '{"a":1,', "[1,", "#x\n", "\\", '"', "é", "\x00")


@examples(250)
@given(st.sampled_from(LONG_UNITS), st.integers(1, 300_000), st.sampled_from(("", "m v=1 ", "[")))
def test_very_long_lines(generated: Generated, unit: str, times: int, start: str) -> None:
    generated.add()
    survives((start + unit * times).encode())


# -- round trips ------------------------------------------------------------------------

SPACE = st.text(st.sampled_from(" \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u3000"), max_size=3)


@examples(4_000)
@given(numbers())
def test_numbers_in_every_spelling_round_trip(
    generated: Generated, case: tuple[bytes, Expected]
) -> None:
    payload, expected = case
    generated.add()
    round_trips(NUMBER, payload, expected)
    round_trips(AUTO, payload, expected)


@examples(700)
@given(json_payloads(), SPACE, SPACE, st.booleans())
def test_json_round_trips_with_times_and_padding(
    generated: Generated, case: tuple[bytes, Expected], before: str, after: str, bom: bool
) -> None:
    payload, expected = case
    padded = ("\ufeff" if bom else "").encode() + before.encode() + payload + after.encode()
    generated.add()
    round_trips(JSON, padded, expected)
    if not looks_senml(payload):
        round_trips(AUTO, padded, expected)


@st.composite
def field_names(draw: st.DrawFn) -> tuple[str, str]:
    value_field = draw(NAME)
    return value_field, draw(NAME.filter(lambda name: name != value_field))


@examples(300)
@given(st.data(), field_names())
def test_json_round_trips_with_configured_fields(
    generated: Generated, data: st.DataObject, fields: tuple[str, str]
) -> None:
    payload, expected = data.draw(json_payloads(*fields))
    generated.add()
    round_trips(make_decoder("json", *fields), payload, expected)


@examples(700)
@given(senml_packs(NOW))
def test_senml_round_trips(generated: Generated, case: tuple[bytes, Expected | None]) -> None:
    payload, expected = case
    generated.add()
    result = outcome(SENML, payload)
    if expected is None:
        assert result is Reason.BAD_TIMESTAMP
    elif not expected:
        assert result is Reason.DECODE_ERROR  # no record with a numeric value
    else:
        assert result == expected
        if looks_senml(payload):
            assert outcome(AUTO, payload) == expected


@examples(500)
@given(influx_payloads())
def test_line_protocol_round_trips(generated: Generated, case: tuple[bytes, Expected]) -> None:
    payload, expected = case
    generated.add()
    round_trips(INFLUX, payload, expected)
    if payload.decode().strip()[0] not in '[{"-+.0123456789':  # auto takes it for line protocol
        round_trips(AUTO, payload, expected)


@examples(500)
@given(telegraf_payloads())
def test_telegraf_json_round_trips(generated: Generated, case: tuple[bytes, Expected]) -> None:
    payload, expected = case
    generated.add()
    round_trips(JSON, payload, expected)
    round_trips(AUTO, payload, expected)


# -- mutated valid payloads -------------------------------------------------------------

VALID = st.one_of(
    numbers().map(lambda case: case[0]),
    json_payloads().map(lambda case: case[0]),
    telegraf_payloads().map(lambda case: case[0]),
    senml_packs(NOW).map(lambda case: case[0]),
    influx_payloads().map(lambda case: case[0]),
)
MUTANTS = 24  # mutants of each valid payload


@examples(1_500)
@given(VALID, SEEDS)
def test_mutated_valid_payloads(generated: Generated, payload: bytes, seed: int) -> None:
    rng = random.Random(seed)
    survives(payload)
    for _ in range(MUTANTS):
        survives(mutate(rng, payload))
    generated.add(1 + MUTANTS)
