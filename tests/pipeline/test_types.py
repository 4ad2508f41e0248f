"""Stream keys checked in bulk; verdict batches: interleaving the rows of dropped readings
with the steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import make_engine
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.types import (
    MAX_STREAM_KEY_LENGTH,
    Reading,
    ReadingBatch,
    StreamCodes,
    StreamKey,
    VerdictBatch,
    all_stream_keys_valid,
    stream_key_problem,
)


def coded_rows(codes: list[int], names: list[str], start: float) -> VerdictBatch:
    """Rows of the streams ``names[codes]``, timestamps counting up from ``start``."""
    n = len(codes)
    code_array = np.asarray(codes, np.int64)
    name_array = np.asarray(names, object)
    base = VerdictBatch.of_dropped(
        name_array[code_array] if n else np.empty(0, object),
        start + np.arange(n, dtype=np.float64),
        np.arange(n, dtype=np.float64) * 0.5,
        np.full(n, 3, np.uint8),
        "m",
    )
    return dataclasses.replace(base, coded=StreamCodes(code_array, name_array))


# a StreamCodes names each key once
names_strategy = st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True)


@given(
    first_names=names_strategy,
    second_names=names_strategy,
    first_codes=st.lists(st.integers(0, 3), max_size=12),
    second_codes=st.lists(st.integers(0, 3), max_size=12),
    positions=st.lists(st.integers(0, 5), min_size=24, max_size=24),
)
def test_interleave_is_concat_then_take_in_position_order(
    first_names, second_names, first_codes, second_codes, positions
):
    first_codes = [c % len(first_names) for c in first_codes]
    second_codes = [c % len(second_names) for c in second_codes]
    first = coded_rows(first_codes, first_names, 0.0)
    second = coded_rows(second_codes, second_names, 100.0)
    position = np.asarray(positions[: len(first) + len(second)], np.int64)

    merged = first.interleave(second, position)

    expected = VerdictBatch.concat([first, second]).take(np.argsort(position, kind="stable"))
    for name in VerdictBatch.column_names():
        np.testing.assert_array_equal(getattr(merged, name), getattr(expected, name))
        assert getattr(merged, name).dtype == getattr(expected, name).dtype
    codes, names = merged.stream_codes()  # left to the caller: found by hashing the keys
    assert names[codes].tolist() == merged.stream.tolist()


@pytest.mark.parametrize("config", [{}, {"window": 120}, {"lateness": 30}])
def test_a_batch_with_dropped_readings_keeps_its_rows_in_reading_order_with_their_codes(config):
    engine = make_engine(report_dropped=True, **config)
    batch = ReadingBatch.from_readings([
        Reading(StreamKey("s1"), 0.0, 1.0),
        Reading(StreamKey("s2"), 0.0, 5.0),
        Reading(StreamKey("s1"), 0.0, 2.0),  # a repeat of s1's time: dropped
        Reading(StreamKey("s1"), 600.0, 3.0),
        Reading(StreamKey("s3"), float("nan"), 4.0),  # no time: dropped
        Reading(StreamKey("s2"), 600.0, 6.0),
        Reading(StreamKey("s2"), 1200.0, 7.0),
    ])  # fmt: skip

    verdicts = engine.process(batch)

    dropped = verdicts.dropped != 0
    # held back for lateness, the repeat is found when its stream's readings are released
    in_order = sorted if "lateness" in config else list
    assert in_order(verdicts.stream[dropped].tolist()) == ["s1", "s3"]
    assert in_order(verdicts.value[dropped].tolist()) == [2.0, 4.0]
    steps = verdicts.stream[~dropped].tolist()
    if not config:  # a step per reading, at its reading
        assert verdicts.stream.tolist() == ["s1", "s2", "s1", "s1", "s3", "s2", "s2"]
        assert verdicts.value.tolist() == [1.0, 5.0, 2.0, 3.0, 4.0, 6.0, 7.0]
    else:
        assert set(steps) <= {"s1", "s2"} and len(steps) < 5
    codes, names = verdicts.stream_codes()
    assert names[codes].tolist() == verdicts.stream.tolist()
    assert len(set(names.tolist())) == len(names)
    assert (verdicts.coded is not None) == ("lateness" not in config)  # known, not hashed


# keys made of the characters that matter: separators, NUL, newlines, a non-ASCII letter
# and a lone surrogate (from a JSON escape)
KEYS = st.lists(
    st.text(alphabet="ab/\x00\n\u00e9\ud800", max_size=8)
    | st.just("a" * MAX_STREAM_KEY_LENGTH)
    | st.just("a" * (MAX_STREAM_KEY_LENGTH + 1)),
    max_size=6,
)


@given(KEYS)
@example(["a/", "b"])  # an empty level at a key's edge, beside a separator
@example(["a", "/b"])
@example(["a", "b//c"])
@example(["a", "", "b"])
@example(["a\x00"])
@example(["a" * (MAX_STREAM_KEY_LENGTH + 1)])
def test_keys_checked_in_bulk_pass_only_when_each_key_passes(keys):
    each_ok = all(stream_key_problem(key) is None for key in keys)
    if all_stream_keys_valid(keys):
        assert each_ok
    elif each_ok:  # a refusal may only send good keys to the check one by one
        assert any("\n" in key or not key.isascii() for key in keys)
