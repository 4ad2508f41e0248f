"""Fuzzing the CSV reader and ``sensorcast replay`` with generated and corrupted logs.

Complements ``tests/connectors/test_csv_source.py`` (one hand-written file per
quirk): generated nab, long and wide logs in every time style must replay to
exactly the readings written into them, and corrupted ones (hostile cells, broken
quoting, cut, repeated and very long lines, invalid UTF-8, NUL, BOMs) must give
readings and rejections counted by reason, or one ``InputFileError`` naming the
file, never anything else. ``sensorcast replay`` on them ends with exit 0, or
with exit 2 and one line.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.csv_source import CsvSource
from fuzz.csv_files import LogFile, corrupt, log_files
from fuzz.hostile import Generated, examples
from pipeline.cli import main
from pipeline.errors import InputFileError
from pipeline.types import ReadingBatch, Reason, stream_key_problem

ROOT = Path(__file__).resolve().parents[2]
SEEDS = st.integers(0, 2**64)
READER_REASONS = {Reason.BAD_TIMESTAMP, Reason.BAD_STREAM, Reason.BAD_VALUE, Reason.DECODE_ERROR}


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is one per test)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def replay(path: Path, chunk_rows: int) -> list[ReadingBatch]:
    """Every batch the reader gives for ``path``, small batches and chunks included."""
    batches = []
    with CsvSource([path], chunk_rows=chunk_rows) as source:
        while (batch := source.poll(7, timeout=0.0)) is not None:
            batches.append(batch)
    return batches


def readings_of(batches: list[ReadingBatch]) -> list[tuple[str, float, float]]:
    return [
        (batch.streams[i], t, v)
        for batch in batches
        for i, t, v in zip(
            batch.stream_index.tolist(), batch.timestamp.tolist(), batch.value.tolist(), strict=True
        )
    ]


def check_batch(batch: ReadingBatch, path: Path, lines: int) -> None:
    """Readings have a valid stream, a time and a value; rejections a reason and one line."""
    assert all(stream_key_problem(stream) is None for stream in batch.streams)
    assert not np.isnan(batch.timestamp).any() and not np.isnan(batch.value).any()
    assert ((batch.seq >= 2) & (batch.seq <= lines + 1)).all()
    assert batch.partition == str(path) and batch.missing >= 0
    for rejection in batch.rejections:
        assert rejection.reason in READER_REASONS and rejection.count >= 1
        assert rejection.detail.startswith(f"{path}: line ") and "\n" not in rejection.detail


# -- valid logs round-trip --------------------------------------------------------------


@examples(300)
@given(log_files("log"), st.integers(1, 40))
def test_generated_logs_replay_to_what_was_written(
    generated: Generated, log: LogFile, chunk_rows: int
) -> None:
    with scratch() as folder:
        path = folder / "log.csv"
        path.write_text(log.text, encoding="utf-8", newline="")
        batches = replay(path, chunk_rows)
    generated.add()
    got = readings_of(batches)
    assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in log.readings]
    assert all(
        math.isclose(a[2], b[2], rel_tol=1e-15) for a, b in zip(got, log.readings, strict=True)
    )
    assert sum(batch.missing for batch in batches) == log.missing
    assert not any(batch.rejections for batch in batches)


# -- corrupted logs: readings, counted rejections, or one error -------------------------


def survives(path: Path, chunk_rows: int) -> None:
    raw = path.read_bytes()
    lines = raw.count(b"\n") + raw.replace(b"\r\n", b"").count(b"\r") + 1  # a lone CR ends a line
    try:
        batches = replay(path, chunk_rows)
    except InputFileError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message
        return
    for batch in batches:
        check_batch(batch, path, lines)


@examples(500)
@given(log_files("log"), SEEDS, st.sampled_from((2, 65_536)))
def test_corrupted_logs_give_readings_rejections_or_one_error(
    generated: Generated, log: LogFile, seed: int, chunk_rows: int
) -> None:
    with scratch() as folder:
        path = folder / "log.csv"
        path.write_bytes(corrupt(random.Random(seed), log.text))
        survives(path, chunk_rows)
    generated.add()


# -- sensorcast replay ------------------------------------------------------------------


def run_replay(path: Path, out: Path) -> tuple[int, str]:
    """``sensorcast replay`` in this process: the exit code and what it wrote to stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    args = ["replay", str(path), "--model", "persistence", "--out", str(out), "--no-progress"]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    return code, stderr.getvalue()


@examples(100)
@given(log_files("log"), SEEDS)
def test_replay_command_on_hostile_logs_exits_0_or_2_with_one_line(
    generated: Generated, log: LogFile, seed: int
) -> None:
    with scratch() as folder:
        path = folder / "log.csv"
        path.write_bytes(corrupt(random.Random(seed), log.text))
        code, stderr = run_replay(path, folder / "out.csv")
    generated.add()
    if code == 2:
        assert stderr.startswith("sensorcast: error: ") and stderr.count("\n") == 1
    else:
        assert code == 0


HOSTILE_LOG = (
    "\ufefftimestamp,value\n"
    "2020-01-01T00:00:00Z,21.5\n"
    "2020-01-01T00:01:00Z,inf\n"
    "1e300,1\n"
    "9999999999999999999999,2\n"
    "now,3\n"
    "2020-01-01T00:02:00Z,\x00\n"
    "2020-01-01T00:03:00Z,1e999\n"
    "2020-01-01T00:04:00Z," + "9" * 400 + "\n"
    "\n"
    "2020-01-01T00:05:00Z,22\n"
)


@pytest.mark.parametrize(
    ("text", "code"),
    [(HOSTILE_LOG.encode(), 0), (b"timestamp,value\n\xff\xfe,1\n", 2), (b"\x00\x00\x00\n", 2)],
)
def test_replay_process_on_a_hostile_log(tmp_path: Path, text: bytes, code: int) -> None:
    """The real command in its own process: no traceback, whatever the log holds."""
    path = tmp_path / "hostile.csv"
    path.write_bytes(text)
    command = [sys.executable, "-m", "pipeline.cli", "replay", str(path), "--model", "persistence"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr
    assert result.returncode == code, result.stderr
    if code == 2:
        assert result.stderr.startswith("sensorcast: error: ") and result.stderr.count("\n") == 1
    else:
        # of 9 rows, 3 times are unreadable (1e300 and 22 digits are no ISO time, 'now' is
        # no event time), NUL no number; inf, 1e999 and 400 nines are read and not finite
        assert result.stdout.startswith("streams 1  readings 5  steps 2  ")
        for count in ("bad_timestamp: 3", "bad_value: 1", "non_finite: 3"):
            assert f"dropped {count} " in result.stdout


# -- crashes the fuzzing found ----------------------------------------------------------

# Times pandas keeps outside its nanosecond range (1677..2262): reading them raised
# OutOfBoundsDatetime (ISO and Date + Time text, subtracting the epoch) or ValueError
# (split columns, assembling them); now they are readings the engine drops as
# bad_timestamp, or rejections of the reader.
OUT_OF_RANGE_TIMES = [
    "timestamp,value\n9999-12-31T23:59:59Z,1\n2020-01-01T00:00:00Z,2\n",
    "timestamp,value\n0001-01-01,1\n2020-01-01T00:00:00Z,2\n",
    "Date,Time,temp\n9999/12/31,00:00:00,1\n2020/01/01,00:00:00,2\n",
    "year,month,day,hour,minute,temp\n11976,5,3,19,33,1\n2020,1,1,0,0,2\n",
    "year,month,day,hour,temp\n2020,1,1,100000000,1\n2020,1,1,0,2\n",
]


@pytest.mark.parametrize("text", OUT_OF_RANGE_TIMES)
def test_times_beyond_pandas_range_are_dropped_not_a_crash(tmp_path: Path, text: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(text)
    batches = replay(path, chunk_rows=65_536)
    readings = readings_of(batches)
    rejected = [r.reason for batch in batches for r in batch.rejections]
    assert readings[-1][1:] == (1_577_836_800.0, 2.0)
    assert len(readings) + len(rejected) == 2 and set(rejected) <= {Reason.BAD_TIMESTAMP}
    code, stderr = run_replay(path, tmp_path / "out.csv")
    assert (code, stderr) == (0, "")


def test_absurd_epoch_numbers_are_unreadable_times(tmp_path: Path) -> None:
    """2e30 or inf went through as times and broke the replay output's ISO column."""
    path = tmp_path / "log.csv"
    path.write_text("timestamp,value\n199999980,1\n2e30,2\ninf,3\n-1e20,4\n1e14,5\n")
    batches = replay(path, chunk_rows=65_536)
    assert readings_of(batches) == [("log", 199_999_980.0, 1.0), ("log", 1e11, 5.0)]
    rejections = [r for batch in batches for r in batch.rejections]
    assert [(r.reason, r.seq, r.count) for r in rejections] == [(Reason.BAD_TIMESTAMP, 3, 3)]
    assert "cannot read '2e30' as a time" in rejections[0].detail
    assert run_replay(path, tmp_path / "out.csv") == (0, "")


@pytest.mark.parametrize(
    "text",
    [
        "timestamp,value\n2020-01-01T00:00:00Z," + "9" * 400 + "\n2020-01-01T00:01:00Z,2\n",
        "year,month,day,hour,temp\n" + "9" * 400 + ",1,1,0,1\n2020,1,1,0,2\n",
    ],
)
def test_integers_too_long_for_a_float_are_no_crash(tmp_path: Path, text: str) -> None:
    """pandas reads such cells as Python ints, and to_numeric raised OverflowError on them."""
    path = tmp_path / "log.csv"
    path.write_text(text)
    batches = replay(path, chunk_rows=65_536)
    assert readings_of(batches)[-1][1:] == (
        1_577_836_860.0 if "value" in text else 1_577_836_800.0,
        2.0,
    )
    assert run_replay(path, tmp_path / "out.csv") == (0, "")
