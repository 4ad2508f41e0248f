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

import json
import math
import os
import sys
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, SinkError
from pipeline.types import Reason, VerdictBatch

CSV_COLUMNS = (
    "stream",
    "timestamp",
    "value",
    "forecast",
    "lower",
    "upper",
    "anomaly_score",
    "is_anomaly",
    "next_timestamp",
    "next_forecast",
    "next_lower",
    "next_upper",
    "count",
    "min",
    "max",
    "model",
    "dropped",
)
_TIME_COLUMNS = ("timestamp", "next_timestamp")
# reason code -> label; "" for a step
_REASON_LABELS = np.array(["", *(Reason(c).label for c in range(1, max(Reason) + 1))], object)


def iso_times(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as ISO 8601 UTC strings, ``''`` for NaN.

    >>> iso_times(np.array([0.0, 1.5, np.nan])).tolist()
    ['1970-01-01T00:00:00.000Z', '1970-01-01T00:00:01.500Z', '']
    >>> iso_times(np.array([60.0])).tolist()
    ['1970-01-01T00:01:00Z']
    """
    finite = np.isfinite(seconds)
    whole = bool(np.all(seconds[finite] == np.round(seconds[finite])))
    unit: Literal["s", "ms"] = "s" if whole else "ms"
    stamps = np.zeros(len(seconds), f"datetime64[{unit}]")
    stamps[finite] = np.round(seconds[finite] * (1 if whole else 1000)).astype(np.int64)
    text = np.datetime_as_string(stamps, unit=unit, timezone="UTC").astype(object)
    text[~finite] = ""
    return text


def verdict_frame(verdicts: VerdictBatch) -> pd.DataFrame:
    """The output columns of a batch, times as ISO strings."""
    frame = pd.DataFrame({name: getattr(verdicts, name) for name in CSV_COLUMNS[:-2]})
    frame["is_anomaly"] = verdicts.is_anomaly.astype(np.int8)
    for name in _TIME_COLUMNS:
        frame[name] = iso_times(getattr(verdicts, name))
    frame["model"] = verdicts.model
    frame["dropped"] = _REASON_LABELS[verdicts.dropped]
    return frame


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

    def flush(self) -> None:
        try:
            self._file.flush()
            if self._file is not sys.stdout:
                os.fsync(self._file.fileno())
        except OSError as exc:
            msg = f"cannot write {self.path}: {exc.strerror}"
            raise SinkError(msg) from exc

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
        verdict_frame(verdicts).to_csv(self._file, header=self._header, index=False, na_rep="")
        self._header = False


class JsonlFileSink(_FileSink):
    """Writes one JSON object per step (the MQTT output message)."""

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        frame = verdict_frame(verdicts)
        for record in frame.to_dict("records"):
            self._file.write(json.dumps(_jsonable(record)) + "\n")


def _jsonable(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif (key in _TIME_COLUMNS or key == "dropped") and value == "":
            value = None
        elif key == "is_anomaly":
            value = bool(value)
        elif isinstance(value, np.integer):
            value = int(value)
        out[key] = value
    return out


def open_file_sink(path: str | Path) -> CsvFileSink | JsonlFileSink:
    """A sink chosen by the file's suffix: ``.csv`` (or ``-`` for stdout) or ``.jsonl``."""
    suffix = Path(str(path)).suffix.lower()
    if str(path) == "-" or suffix == ".csv":
        return CsvFileSink(path)
    if suffix in (".jsonl", ".ndjson"):
        return JsonlFileSink(path)
    msg = f"--out: {path} must end in .csv or .jsonl (or be - for CSV on stdout)"
    raise ConfigError(msg)
