"""The compiled JSON writer against ``verdict_records``: the same keys, strings, times,
flags and readings; the model's numbers as the CSV writer spells them."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spelling import awkward_floats, spread_of_times

from connectors.csv_text import CsvRows
from connectors.json_text import JsonObjects, string_table
from connectors.records import CSV_COLUMNS, verdict_records
from pipeline.types import Reason, VerdictBatch

READINGS = ("value", "min", "max")
MODEL = ("forecast", "lower", "upper", "anomaly_score", "next_forecast", "next_lower",
         "next_upper")  # fmt: skip
KEYS = ["site/dev/temp", 'a "quoted" key', "back\\slash", "tab\tand\nline", "\x00\x1f",
        "café/θ/温度", "emoji 🌡", "lone \ud800 surrogate", ""]  # fmt: skip


def objects(batch: VerdictBatch, with_dropped: bool = True) -> list[dict]:
    data, ends = JsonObjects(with_dropped=with_dropped, newline=False).of(batch)
    text = bytes(data)
    starts = [0, *ends[:-1].tolist()]
    return [json.loads(text[a:b]) for a, b in zip(starts, ends.tolist(), strict=True)]


def awkward_batch(n: int, seed: int) -> VerdictBatch:
    """Every column awkward: numbers of every kind, times ISO 8601 can and cannot spell,
    keys that JSON must escape, flags, counts, dropped rows."""
    rng = np.random.default_rng(seed)
    batch = VerdictBatch.blank(n, model='gru "32"')
    x = np.resize(awkward_floats(n, seed), n)  # (n,): every kind, some twice
    for k, name in enumerate((*READINGS, *MODEL)):
        getattr(batch, name)[:] = x if k == 0 else rng.permutation(x)
    batch.min[::2] = batch.value[::2]  # most readings are their own min and max
    batch.stream[:] = np.array(KEYS, object)[rng.integers(0, len(KEYS), n)]
    times = spread_of_times(0.25, seed)
    batch.timestamp[:] = rng.permutation(times)[:n]
    batch.next_timestamp[:] = rng.permutation(times)[:n]
    batch.count[:] = rng.integers(-(2**62), 2**62, n)
    batch.is_anomaly[:] = rng.random(n) < 0.3
    batch.dropped[:] = np.where(rng.random(n) < 0.2, rng.integers(1, max(Reason) + 1, n), 0)
    return batch


def csv_model_numbers(batch: VerdictBatch) -> pd.DataFrame:
    """The model's numbers as the CSV writer spells them, read back as floats (keys
    plain: a lone surrogate is not UTF-8, and CSV has no escape for it)."""
    plain = dataclasses.replace(batch, stream=np.full(len(batch), "s", object), coded=None)
    text = bytes(CsvRows().of(plain)).decode()
    frame = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    frame.columns = list(CSV_COLUMNS)
    return frame[list(MODEL)].replace("", "nan").astype(float)


def same(a: object, b: object) -> bool:
    """Equal and of one type; a float's zero of the same sign."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b and np.copysign(1.0, a) == np.copysign(1.0, b)
    return a == b


@pytest.mark.parametrize("seed", [0, 1])
def test_every_object_reads_back_as_its_record(seed):
    batch = awkward_batch(4_000, seed)
    expected = verdict_records(batch)
    csv_numbers = csv_model_numbers(batch)
    got = objects(batch)
    assert len(got) == len(expected) == len(batch)
    for i, (mine, record) in enumerate(zip(got, expected, strict=True)):
        assert list(mine) == list(CSV_COLUMNS)
        for name in CSV_COLUMNS:
            if name in MODEL and record[name] is not None:
                # the CSV writer's 12 significant digits, still a float
                wanted = float(csv_numbers[name].iloc[i])
                assert same(mine[name], wanted), (i, name, mine[name], wanted)
            else:
                assert same(mine[name], record[name]), (i, name, mine[name], record[name])


def test_a_whole_number_is_written_as_a_float_and_minus_zero_keeps_its_sign():
    batch = VerdictBatch.blank(4, model="gru")
    batch.stream[:] = "s"
    batch.value[:] = [21.0, -0.0, 1e22, 1e-7]
    data, _ = JsonObjects(with_dropped=False, newline=False).of(batch)
    text = bytes(data).decode()
    assert '"value":21.0,' in text and '"value":-0.0,' in text
    assert '"value":1e+22,' in text and '"value":1e-7,' in text
    assert [type(o["value"]) for o in objects(batch)] == [float] * 4


def test_a_step_leaves_dropped_out_only_when_asked_and_a_dropped_row_keeps_it():
    batch = VerdictBatch.blank(2, model="gru")
    batch.stream[:] = ["a", "b"]
    batch.dropped[1] = Reason.LATE
    in_lines = objects(batch, with_dropped=True)
    in_messages = objects(batch, with_dropped=False)
    assert in_lines[0]["dropped"] is None and "dropped" not in in_messages[0]
    assert in_lines[1]["dropped"] == in_messages[1]["dropped"] == "late"


def test_each_object_ends_a_line_in_json_lines():
    batch = awkward_batch(300, seed=2)
    data, ends = JsonObjects(with_dropped=True, newline=True).of(batch)
    lines = bytes(data).split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(batch) + 1
    assert [len(line) + 1 for line in lines[:-1]] == np.diff(ends, prepend=0).tolist()
    assert [json.loads(line) for line in lines[:-1]] == objects(batch)


def test_one_writer_serves_batches_of_any_size_in_turn():
    writer = JsonObjects(with_dropped=True, newline=False)
    big, small = awkward_batch(2_000, seed=3), awkward_batch(3, seed=4)
    for batch in (big, small, VerdictBatch.empty("gru"), big):
        data, ends = writer.of(batch)
        assert len(ends) == len(batch) and (len(ends) == 0 or ends[-1] == len(data))


def test_keys_are_json_strings_whatever_they_hold():
    blob, offsets = string_table(KEYS)
    texts = [bytes(blob[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert [json.loads(text) for text in texts] == KEYS
    plain, plain_offsets = string_table(["a/b", "c"])
    assert bytes(plain) == b'"a/b""c"' and plain_offsets.tolist() == [0, 5, 8]
    assert string_table([])[1].tolist() == [0]


@given(st.lists(st.text(), min_size=1, max_size=20),
       st.lists(st.floats(), min_size=1, max_size=20))  # fmt: skip
def test_any_key_and_any_reading_read_back_as_themselves(keys, values):
    n = max(len(keys), len(values))
    batch = VerdictBatch.blank(n, model="gru")
    batch.stream[:] = np.resize(np.array(keys, object), n)
    batch.value[:] = np.resize(np.array(values), n)
    for got, key, value in zip(objects(batch), batch.stream, batch.value, strict=True):
        assert got["stream"] == key
        assert same(got["value"], float(value)) if np.isfinite(value) else got["value"] is None
