"""Verdicts to files: CSV or JSON lines, one row per step.

CSV columns start with exactly ``stream,timestamp,value,forecast,lower,upper,
anomaly_score,is_anomaly`` and go on with the next-step forecast, the window
aggregates, the model name and ``dropped``: empty for a step, else the reason a
reading was dropped (such rows carry no forecast or score). Times are ISO 8601
UTC (``...Z``); an unknown number (no forecast yet) is an empty cell in CSV and
``null`` in JSON.
``flush`` fsyncs, so a flushed row survives a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from connectors.records import verdict_frame, verdict_records
from pipeline.errors import ConfigError, SinkError
from pipeline.types import VerdictBatch


class _FileSink:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._file: IO[str] = sys.stdout if self.path == "-" else self._open(self.path)

    @staticmethod
    def _open(path: str) -> IO[str]:
        try:
            return open(path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            msg = f"--out: cannot write {path}: {exc.strerror}"
            raise ConfigError(msg) from exc

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            msg = f"cannot write {self.path}: {exc.strerror or exc}"
            raise SinkError(msg) from exc

    def flush(self) -> None:
        with self._writing():
            self._file.flush()
            if self._file is not sys.stdout:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        self.flush()
        if self._file is not sys.stdout:
            self._file.close()


class CsvFileSink(_FileSink):
    """Writes ``CSV_COLUMNS``, a header first."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._header = True

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        with self._writing():
            frame = verdict_frame(verdicts)
            frame.to_csv(self._file, header=self._header, index=False, na_rep="")
        self._header = False


class JsonlFileSink(_FileSink):
    """Writes one JSON object per step (the MQTT output message)."""

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        with self._writing():
            self._file.writelines(json.dumps(r) + "\n" for r in verdict_records(verdicts))


def open_file_sink(path: str | Path) -> CsvFileSink | JsonlFileSink:
    """A sink chosen by the file's suffix: ``.csv`` (or ``-`` for stdout) or ``.jsonl``."""
    suffix = Path(str(path)).suffix.lower()
    if str(path) == "-" or suffix == ".csv":
        return CsvFileSink(path)
    if suffix in (".jsonl", ".ndjson"):
        return JsonlFileSink(path)
    msg = f"--out: {path} must end in .csv or .jsonl (or be - for CSV on stdout)"
    raise ConfigError(msg)
