"""Verdicts to files: CSV or JSON lines, one row per step.

CSV columns start with exactly ``stream,timestamp,value,forecast,lower,upper,
anomaly_score,is_anomaly`` and go on with the next-step forecast, the window
aggregates, the model name and ``dropped``: empty for a step, else the reason a
reading was dropped (such rows carry no forecast or score). Times are ISO 8601
UTC (``...Z``; a time off the whole second to the millisecond, each time by
itself, so the same time is always spelled the same); an unknown number (no
forecast yet) is an empty cell in CSV and ``null`` in JSON.
Rows are written to a temporary file beside the output, which is synced and
renamed over it when the run ends well: a run that fails midway (a malformed
log, an interrupt) leaves the file that was there before. The sync starts
early: every ``SYNC_EVERY`` bytes a thread asks the OS to put what has been
written on disk (``fdatasync``), while rows go on being made, so the sync at
the end has only the tail left (it was 13% of a replay of 1,000 synthetic
streams, ``sensorcast bench --scenario replay``). The thread waits on the disk,
not the CPU.

CSV is written by one compiled pass from the columns to the bytes
(``connectors.csv_text``): formatting the numbers took most of a replay's time,
with pandas' ``to_csv`` and then with Arrow's writer (``sensorcast bench
--scenario replay``). JSON lines are written the same way, with the same
spelling (``connectors.json_text``), one object per line as the MQTT sink
publishes it, plus ``dropped``. Readings (``value``, ``min``, ``max``) are written as the
shortest text that reads back as the same float64; the model's numbers
(``forecast``, the bounds, ``anomaly_score`` and the ``next_`` ones) to 12
significant digits, which is more than the float32 network or any sensor
resolves. A text cell with a comma, a quote or a line break is quoted.

Parquet (``.parquet``) holds the same columns with native types (UTC
timestamps, booleans, nulls) and skips text formatting altogether, for bulk
replays read back by pandas, polars or DuckDB. Its rows become readable when
the sink closes (the file's footer is written last). Arrow IPC (``.arrow`` or
``.feather``: Feather v2 is the same file) holds the same typed columns
uncompressed, the layout they have in memory: the cheapest to write (a tenth
of Parquet's time) and to read (``pandas.read_feather``, ``polars.read_ipc``,
DuckDB's ``arrow`` extension), at about a third more bytes than Parquet.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as parquet

from connectors.arrow_table import verdict_table
from connectors.csv_text import CsvRows
from connectors.json_text import JsonObjects
from connectors.records import CSV_COLUMNS
from pipeline.errors import ConfigError, SinkError
from pipeline.types import VerdictBatch
from pipeline.writable import beside


def _beside(path: str) -> tuple[Path, Path]:
    """(the file to write, the temporary file beside it that is written first). A symlink
    is followed, so the file it points to is the one replaced."""
    final = Path(os.path.realpath(path))
    return final, beside(final)


def _discard(file: IO[Any], tmp: Path) -> None:
    """A sink's temporary file closed and removed (once), its output left as it was."""
    if not file.closed:
        _remove(file, tmp)


def _remove(file: IO[Any], tmp: Path) -> None:
    """A temporary file closed, if it is not yet, and removed."""
    with contextlib.suppress(OSError):
        file.close()
    with contextlib.suppress(OSError):
        tmp.unlink()


def _stop_quietly(sync: _SyncBehind) -> None:
    """The sync thread ended for a file about to be removed: its errors no longer matter."""
    with contextlib.suppress(OSError):
        sync.stop()


SYNC_EVERY = 8 * 2**20  # bytes written between the early syncs


class _SyncBehind:
    """Syncs a file to disk in a thread while it is still being written.

    The owner calls ``wrote`` after each write; every ``SYNC_EVERY`` bytes the
    rows are handed to the OS and the thread's next ``fdatasync`` puts them on
    disk. The owner's own ``fsync`` before the rename stays: this only leaves
    it less to do. ``stop`` must come before the file is closed.
    """

    def __init__(self, file: IO[Any]) -> None:
        self._file = file
        self._unsynced = 0
        self._kick = threading.Event()
        self._stopping = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        self._unsynced += size
        if self._unsynced < SYNC_EVERY:
            return
        self._unsynced = 0
        self._file.flush()  # the rows to the OS, where the thread's sync finds them
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(self._file.fileno(),), name="sink-sync", daemon=True
            )
            self._thread.start()
        self._kick.set()

    def _run(self, fd: int) -> None:
        sync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._stopping:
                return
            try:
                sync(fd)
            except OSError as exc:  # raised by stop, in the owner's thread
                self._error = exc
                return

    def stop(self) -> None:
        """The thread ended (after the sync it is in, if any); an error one of its syncs
        met is raised here."""
        if self._thread is not None:
            self._stopping = True
            self._kick.set()
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class _FileSink:
    """Rows go to a temporary file beside ``path``, renamed over it by ``close``: a run
    that fails (bad input mid-file, an interrupt) calls ``discard`` instead and leaves
    whatever ``path`` held before. ``-`` is stdout, written as it comes."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._final, self._tmp = _beside(self.path) if self.path != "-" else (Path(), Path())
        self._file: IO[str] = sys.stdout if self.path == "-" else self._open(self._tmp)
        self._sync = _SyncBehind(self._file)

    def _open(self, tmp: Path) -> IO[str]:
        try:
            return open(tmp, "w", encoding="utf-8", newline="")
        except OSError as exc:
            msg = f"--out: cannot write {self.path}: {exc.strerror}"
            raise ConfigError(msg) from exc

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            msg = f"cannot write {self.path}: {exc.strerror or exc}"
            raise SinkError(msg) from exc

    def flush(self) -> None:
        """Rows handed to the OS (stdout's reader sees them). No fsync: the rows are in
        a temporary file that no one reads until ``close`` syncs it and renames it."""
        with self._writing():
            self._file.flush()

    def close(self) -> None:
        """Every row on disk, then the file in its place."""
        if self._file is sys.stdout:
            self.flush()
        elif not self._file.closed:
            try:
                with self._writing():
                    self._file.flush()
                    self._sync.stop()
                    os.fsync(self._file.fileno())
                    self._file.close()
                    os.replace(self._tmp, self._final)
            except SinkError:
                _remove(self._file, self._tmp)  # what could not be made durable is dropped
                raise

    def discard(self) -> None:
        """The rows are dropped and ``path`` is left as it was."""
        if self._file is not sys.stdout:
            _stop_quietly(self._sync)
            _discard(self._file, self._tmp)

    def _wrote(self, size: int) -> None:
        if self._file is not sys.stdout:
            self._sync.wrote(size)


class _TextFileSink(_FileSink):
    """A file sink of text rows, handed over as UTF-8 bytes."""

    def _write_bytes(self, data: memoryview) -> None:
        """UTF-8 rows straight to the file's byte layer (no decode and re-encode)."""
        raw = getattr(self._file, "buffer", None)
        if raw is None:  # a text-only stream (a redirected stdout)
            self._file.write(str(data, "utf-8"))
            return
        self._file.flush()  # what was written as text goes first
        raw.write(data)


class CsvFileSink(_TextFileSink):
    """Writes ``CSV_COLUMNS``, a header first."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._header = True
        self._rows = CsvRows()

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        rows = self._rows.of(verdicts)
        with self._writing():
            self._write_header()
            self._write_bytes(rows)
            self._wrote(len(rows))

    def close(self) -> None:
        if not self._file.closed:
            with self._writing():
                self._write_header()  # a run with no rows still leaves a CSV with columns
        super().close()

    def _write_header(self) -> None:
        if self._header:
            self._file.write(",".join(CSV_COLUMNS) + "\n")
            self._header = False


class JsonlFileSink(_TextFileSink):
    """Writes one JSON object per line: a step's MQTT message, with ``dropped``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._objects = JsonObjects(with_dropped=True, newline=True)

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        lines, _ = self._objects.of(verdicts)
        with self._writing():
            self._write_bytes(lines)
            self._wrote(len(lines))


_DICTIONARY_COLUMNS = ["stream", "model", "dropped"]
# Snappy only where it pays: interval bounds are noise to it (it kept 100.0% of their
# bytes on 1,000 synthetic streams) and compressing them cost a tenth of the write.
_COMPRESSION = {
    name: "none" if name.endswith(("lower", "upper")) else "snappy" for name in CSV_COLUMNS
}


class _TableFileSink:
    """Writes ``CSV_COLUMNS`` with native types, a table per batch, through a writer
    made for the first table's schema. Like the text sinks, into a temporary file
    that ``close`` renames over ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._final, self._tmp = _beside(self.path)
        try:
            self._file = open(self._tmp, "wb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            msg = f"--out: cannot write {path}: {exc.strerror}"
            raise ConfigError(msg) from exc
        self._writer: Any = None
        self._sync = _SyncBehind(self._file)

    def _table(self, verdicts: VerdictBatch) -> pa.Table:
        return verdict_table(verdicts)

    def _open_writer(self, schema: pa.Schema) -> Any:
        raise NotImplementedError

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        self._write(self._table(verdicts))

    def _write(self, table: pa.Table) -> None:
        try:
            if self._writer is None:
                self._writer = self._open_writer(table.schema)
            self._writer.write_table(table)
            self._sync.wrote(table.nbytes)  # about what the writer wrote
        except OSError as exc:
            msg = f"cannot write {self.path}: {exc.strerror or exc}"
            raise SinkError(msg) from exc

    def flush(self) -> None:
        """Nothing to do: the rows are readable once the file is closed."""

    def close(self) -> None:
        if self._file.closed:
            return
        if self._writer is None:  # no rows: still a valid file, with the columns
            self._write(self._table(VerdictBatch.empty()))
        assert self._writer is not None
        try:
            self._writer.close()
            self._file.flush()
            self._sync.stop()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._final)
        except OSError as exc:
            _remove(self._file, self._tmp)  # what could not be made durable is dropped
            msg = f"cannot write {self.path}: {exc.strerror or exc}"
            raise SinkError(msg) from exc

    def discard(self) -> None:
        """The rows are dropped and ``path`` is left as it was."""
        _stop_quietly(self._sync)
        if self._writer is not None and not self._file.closed:
            # closed before its file: left open, the writer's finaliser would write its
            # footer into the closed file (a warning at exit)
            with contextlib.suppress(OSError, ValueError, pa.ArrowException):
                self._writer.close()
        _discard(self._file, self._tmp)


class ParquetFileSink(_TableFileSink):
    """Parquet: one row group per batch, snappy where it pays."""

    def _open_writer(self, schema: pa.Schema) -> parquet.ParquetWriter:
        # dictionaries only where values repeat: hashing every float costs half the write
        return parquet.ParquetWriter(
            self._file, schema, use_dictionary=_DICTIONARY_COLUMNS, compression=_COMPRESSION
        )


class ArrowFileSink(_TableFileSink):
    """An Arrow IPC file (Feather v2), uncompressed: one record batch per batch."""

    def _table(self, verdicts: VerdictBatch) -> pa.Table:
        # an IPC file holds one dictionary per column for all its batches, and each
        # batch's stream keys come with their own: the keys go in as plain strings
        table = verdict_table(verdicts)
        stream = table.schema.get_field_index("stream")
        return table.set_column(stream, "stream", table["stream"].cast(pa.string()))

    def _open_writer(self, schema: pa.Schema) -> ipc.RecordBatchFileWriter:
        return ipc.new_file(self._file, schema)


_SINKS: dict[str, type[CsvFileSink | JsonlFileSink | _TableFileSink]] = {
    ".csv": CsvFileSink,
    ".jsonl": JsonlFileSink,
    ".ndjson": JsonlFileSink,
    ".parquet": ParquetFileSink,
    ".arrow": ArrowFileSink,
    ".feather": ArrowFileSink,
}


def open_file_sink(path: str | Path) -> CsvFileSink | JsonlFileSink | _TableFileSink:
    """A sink chosen by the file's suffix: ``.csv`` (or ``-`` for stdout), ``.jsonl``,
    ``.parquet`` or ``.arrow``/``.feather``."""
    if str(path) == "-":
        return CsvFileSink(path)
    sink = _SINKS.get(Path(str(path)).suffix.lower())
    if sink is None:
        msg = f"--out: {path} must end in .csv, .jsonl, .parquet, .arrow or .feather (or be - "
        msg += "for CSV on stdout)"
        raise ConfigError(msg)
    return sink(path)
