"""Shared pieces of the fuzz tests: the input count, example budgets, hostile text, and
the decoder contract.

Each fuzz test takes the session-wide ``generated`` counter (``tests/conftest.py``)
and calls ``generated.add(n)`` once per hypothesis example with the number of
generated inputs that example fed to the code under test (a payload decoded by
every decoder, a topic matched, a file replayed). Most examples feed one input;
the bulk tests draw a structured input and a seed, and feed that input plus
mutants made from it with the seed.
"""

from __future__ import annotations

import math
import random

from hypothesis import settings

from connectors import payloads
from connectors.payloads import Decoded, Decoder, PayloadError
from pipeline.types import Reason

NOW = 1_700_000_000.0  # the receive time handed to every decoder
# What a decoder may answer with; STREAM_LIMIT, LATE and the rest belong to later stages.
DECODER_REASONS = frozenset(
    {
        Reason.DECODE_ERROR,
        Reason.BAD_VALUE,
        Reason.NON_FINITE,
        Reason.BAD_TIMESTAMP,
        Reason.TOO_LARGE,
    }
)


class Generated:
    """Generated inputs fed, and hypothesis examples run, so far in this run."""

    def __init__(self) -> None:
        self.inputs = 0
        self.examples = 0

    def add(self, n: int = 1) -> None:
        """One example ran and fed ``n`` inputs."""
        self.inputs += n
        self.examples += 1


def examples(n: int) -> settings:
    """``n`` examples in the default profile; ``fuzz`` and ``long`` run ten times as many.

    The default budgets add up to more than 10^5 inputs in well under 90 s.
    """
    scale = min(10, max(1, settings().max_examples // 100))
    return settings(max_examples=n * scale)


# -- hostile text ------------------------------------------------------------------------

# Pieces that break parsers: literals JSON does not have, numbers floats cannot hold,
# a 5,000-digit integer (over Python's int-from-text limit), BOMs, NUL and other
# controls, separators of every format, escapes, lone surrogates and non-characters.
FRAGMENTS = (
    "{", "}", "[", "]", '"', ":", ",", " ", "\n", "\r\n", "\t", "\\", "=", "#", "/",
    '"value"', '"ts"', '"v"', '"t"', '"n"', '"bn"', '"bt"', '"bv"', '"x_"', '"temp"',
    "NaN", "Infinity", "-Infinity", "nan", "inf", "-inf", "1e999", "-1e999", "1e-999",
    "-0", "0", "21.5", "+1", ".5", "1_000", "0x10", "1i", "1u", "-9223372036854775809i",
    "18446744073709551616u", "9" * 400, "1" + "0" * 5_000, "1700000000000",
    "1700000000000000000", '"2024-02-30T25:61:00Z"', '"2024-01-01T00:00:00+05:00"',
    "true", "false", "null", "t", "F", "m,tag=a", "m ", " value=", "f=1", 's="x y"',
    "\ufeff", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\ufffe", "\U0010ffff",
    "é", "🌡", "٣", "１", "\ud800", '"\\ud800"', "\\u0000", '"\\"', "%", "+", "$SYS",
)  # fmt: skip
RAW_BYTES = (b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80")


def encode(text: str) -> bytes:
    """UTF-8, lone surrogates kept as the (invalid) bytes they would be."""
    return text.encode("utf-8", "surrogatepass")


def hostile_payload(rng: random.Random) -> bytes:
    """Bytes built from parser-breaking fragments, sometimes with invalid UTF-8 spliced in."""
    raw = encode("".join(rng.choices(FRAGMENTS, k=rng.randrange(25))))
    for _ in range(rng.randrange(3)):
        at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + rng.choice(RAW_BYTES) + raw[at:]
    return raw


MUTATIONS = ("insert", "delete", "replace", "truncate", "repeat")


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` with one to four bytes or fragments inserted, deleted, replaced, cut or repeated."""
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(raw) + 1)
        action = rng.choice(MUTATIONS)
        if action == "insert":
            piece = encode(rng.choice(FRAGMENTS)) + rng.choice((b"", *RAW_BYTES))
            raw = raw[:at] + piece + raw[at:]
        elif action == "delete":
            raw = raw[:at] + raw[at + rng.randint(1, 8) :]
        elif action == "replace":
            raw = raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :]
        elif action == "truncate":
            raw = raw[:at]
        else:
            raw = raw[:at] + raw[at:] * rng.randint(2, 4)
    return raw


# -- the decoder contract ----------------------------------------------------------------


def check_decoded(result: object) -> list[Decoded]:
    """What every successful decode promises: finite values, sane times, names as text
    (an empty one included: the source refuses its empty stream level, counted)."""
    assert isinstance(result, list) and result
    for item in result:
        assert type(item) is Decoded
        assert type(item.value) is float and math.isfinite(item.value)
        assert item.name is None or type(item.name) is str
        if item.timestamp is not None:
            assert type(item.timestamp) is float
            assert payloads.MIN_TIME <= item.timestamp < payloads.MAX_TIME
    return result


def check_rejection(exc: PayloadError) -> None:
    """A rejection carries a decoder reason and one short line saying why."""
    assert type(exc.reason) is Reason and exc.reason in DECODER_REASONS
    assert str(exc) == exc.detail
    assert exc.detail and "\n" not in exc.detail and "\r" not in exc.detail
    assert len(exc.detail) < 300


def outcome(decoder: Decoder, payload: bytes) -> list[Decoded] | Reason:
    """The checked result, or the checked rejection's reason; any other exception is a crash."""
    try:
        result = decoder(payload, NOW)
    except PayloadError as exc:
        check_rejection(exc)
        return exc.reason
    return check_decoded(result)
