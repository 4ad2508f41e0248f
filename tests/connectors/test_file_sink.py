"""CSV and JSON lines output: the header contract, empty cells, quoting when needed."""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from helpers import make_engine

from connectors import file_sink
from connectors.file_sink import open_file_sink
from connectors.records import CSV_COLUMNS
from pipeline.errors import SinkError
from pipeline.types import Reading, ReadingBatch, StreamKey, VerdictBatch

KEYS = ["plain/dev/temp", 'odd,"key"/dev/temp']


def verdicts(keys: list[str]) -> VerdictBatch:
    items = [Reading(StreamKey(k), 60.0 * t, float(t)) for t in range(3) for k in keys]
    return make_engine().process(ReadingBatch.from_readings(items))


def test_csv_starts_with_the_documented_header_and_leaves_unknowns_empty(tmp_path):
    sink = open_file_sink(tmp_path / "out.csv")
    sink.add(verdicts(KEYS[:1]))
    sink.add(verdicts(["other/dev/temp"]))
    sink.close()
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)  # once, unquoted
    assert len(lines) == 1 + 6
    first = lines[1].split(",")
    assert first[0] == "plain/dev/temp" and first[1] == "1970-01-01T00:00:00Z"
    assert first[3] == "" and first[-1] == ""  # no forecast yet; not dropped


def test_a_key_that_needs_quotes_is_quoted_and_reads_back_intact(tmp_path):
    sink = open_file_sink(tmp_path / "out.csv")
    sink.add(verdicts(KEYS))
    sink.close()
    frame = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(frame.columns) == list(CSV_COLUMNS)
    assert sorted(set(frame["stream"])) == sorted(KEYS)
    assert frame["value"].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


def test_jsonl_has_nulls_for_unknowns(tmp_path):
    sink = open_file_sink(tmp_path / "out.jsonl")
    sink.add(verdicts(KEYS[:1]))
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert rows[0]["forecast"] is None and rows[1]["forecast"] == 0.0


def test_csv_to_a_text_only_stdout_is_written_as_text(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdout", io.StringIO())
    sink = open_file_sink("-")
    sink.add(verdicts(KEYS[:1]))
    text = sys.stdout.getvalue()
    assert text.startswith(",".join(CSV_COLUMNS)) and text.count("\n") == 4


READ_TYPED = {".parquet": pd.read_parquet, ".arrow": pd.read_feather, ".feather": pd.read_feather}


@pytest.mark.parametrize("suffix", list(READ_TYPED))
def test_typed_files_hold_the_csv_rows_with_native_types(tmp_path, suffix):
    for name in ("out.csv", f"out{suffix}"):
        sink = open_file_sink(tmp_path / name)
        sink.add(verdicts(KEYS))
        sink.add(verdicts(["other/dev/temp"]))  # a batch of other stream keys
        sink.close()
    text = pd.read_csv(tmp_path / "out.csv")
    typed = READ_TYPED[suffix](tmp_path / f"out{suffix}")
    assert list(typed.columns) == list(CSV_COLUMNS) and len(typed) == len(text) == 9
    assert str(typed["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert typed["is_anomaly"].dtype == bool and typed["count"].dtype == np.int64
    assert typed["stream"].astype(str).tolist() == text["stream"].tolist()
    assert (typed["timestamp"] == pd.to_datetime(text["timestamp"])).all()
    np.testing.assert_array_equal(typed["value"].to_numpy(float), text["value"].to_numpy())
    for column in ("forecast", "lower", "upper", "next_forecast"):  # CSV: 12 digits
        np.testing.assert_allclose(typed[column].to_numpy(float), text[column], rtol=5e-12)


@pytest.mark.parametrize("suffix", list(READ_TYPED))
def test_a_typed_file_without_rows_still_has_the_columns(tmp_path, suffix):
    sink = open_file_sink(tmp_path / f"empty{suffix}")
    sink.close()
    sink.close()  # twice is harmless
    frame = READ_TYPED[suffix](tmp_path / f"empty{suffix}")
    assert list(frame.columns) == list(CSV_COLUMNS) and frame.empty


def test_a_csv_without_rows_still_has_its_header(tmp_path):
    path = tmp_path / "o.csv"
    sink = open_file_sink(path)
    sink.add(VerdictBatch.empty())
    sink.close()
    assert path.read_text() == ",".join(CSV_COLUMNS) + "\n"


# -- the early sync: a long output is put on disk while it is written ------------------------


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the sync thread never got there"
        time.sleep(0.005)


def _read_back(path, suffix):
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path) if suffix == ".parquet" else pd.read_feather(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".arrow"])
def test_a_long_output_is_synced_while_it_is_still_being_written(tmp_path, monkeypatch, suffix):
    synced: list[int] = []
    real_sync = getattr(os, "fdatasync", os.fsync)

    def recording(fd: int) -> None:
        synced.append(fd)
        real_sync(fd)

    monkeypatch.setattr(file_sink, "SYNC_EVERY", 1)  # a sync after every batch
    monkeypatch.setattr(os, "fdatasync", recording, raising=False)
    path = tmp_path / f"out{suffix}"
    sink = open_file_sink(path)
    batch = verdicts(KEYS)
    sink.add(batch)
    _wait_for(lambda: synced)  # synced by the thread, the file still open and unnamed
    assert not path.exists()
    sink.add(batch)
    sink.close()
    assert len(_read_back(path, suffix)) == 2 * len(batch)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".arrow"])
def test_a_failed_early_sync_fails_the_output_and_leaves_the_old_file(
    tmp_path, monkeypatch, suffix
):
    tried: list[int] = []

    def failing(fd: int) -> None:
        tried.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(file_sink, "SYNC_EVERY", 1)
    monkeypatch.setattr(os, "fdatasync", failing, raising=False)
    path = tmp_path / f"out{suffix}"
    path.write_text("an earlier run's rows\n")
    sink = open_file_sink(path)
    sink.add(verdicts(KEYS))
    _wait_for(lambda: tried)
    with pytest.raises(SinkError, match=rf"out\{suffix}: Input/output error"):
        sink.close()
    assert path.read_text() == "an earlier run's rows\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    sink.discard()  # what a failed run does with its sinks next: nothing left to do


def test_a_discarded_output_stops_its_sync_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(file_sink, "SYNC_EVERY", 1)
    sink = open_file_sink(tmp_path / "out.parquet")
    sink.add(verdicts(KEYS))
    sink.add(verdicts(KEYS))
    sink.discard()
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "sink-sync"]
