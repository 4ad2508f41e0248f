"""Verdicts as the rows and messages users see: column order, ISO times, JSON values.

The file sinks and the MQTT sink all take their columns, times and values from
here, so every output speaks the same format.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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
TIME_COLUMNS = ("timestamp", "next_timestamp")
# reason code -> label; "" for a step
REASON_LABELS = np.array(["", *(Reason(c).label for c in range(1, max(Reason) + 1))], object)


LAST_ISO_SECOND = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def iso_times(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as ISO 8601 UTC strings, ``''`` for NaN and for times past year
    9999 (a forecast's next time can overflow where a stream's interval is absurd).
    A time on a whole second is written without a fraction, any other to the
    millisecond: each time by itself, so a reading's time reads the same whatever
    else shared its batch.

    >>> iso_times(np.array([0.0, 1.5, np.nan])).tolist()
    ['1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z', '']
    >>> iso_times(np.array([60.0, 1e300])).tolist()
    ['1970-01-01T00:01:00Z', '']
    """
    finite, millis = epoch_millis(seconds)
    text = np.full(len(seconds), "", object)
    whole = finite & (millis % 1000 == 0)
    seconds_only = (millis[whole] // 1000).astype("datetime64[s]")
    text[whole] = np.datetime_as_string(seconds_only, unit="s", timezone="UTC")
    fraction = finite & ~whole
    with_millis = millis[fraction].astype("datetime64[ms]")
    text[fraction] = np.datetime_as_string(with_millis, unit="ms", timezone="UTC")
    return text


def epoch_millis(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(writable, milliseconds): times ISO 8601 can spell, as int64 ms (0 elsewhere)."""
    finite = np.isfinite(seconds) & (np.abs(seconds) <= LAST_ISO_SECOND)
    millis = np.zeros(len(seconds), np.int64)
    millis[finite] = np.round(seconds[finite] * 1000).astype(np.int64)
    return finite, millis


def verdict_records(verdicts: VerdictBatch) -> list[dict[str, Any]]:
    """One JSON-able dict per row, keys in ``CSV_COLUMNS`` order: what a row's JSON
    object holds, for Python callers (the sinks write the objects themselves, compiled:
    ``connectors.json_text``, which is tested against this).

    NaN, infinities and empty times become None (JSON has no such numbers), flags
    booleans.
    """
    columns = [_json_column(verdicts, name) for name in CSV_COLUMNS]
    return [dict(zip(CSV_COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)]


def _json_column(verdicts: VerdictBatch, name: str) -> list[Any]:
    n = len(verdicts)
    if name == "model":
        return [verdicts.model] * n
    if name == "dropped":
        return [None if code == 0 else REASON_LABELS[code] for code in verdicts.dropped.tolist()]
    if name in TIME_COLUMNS:
        return [text or None for text in iso_times(getattr(verdicts, name)).tolist()]
    values = getattr(verdicts, name).tolist()
    if name in ("stream", "count", "is_anomaly"):
        return values
    return [x if math.isfinite(x) else None for x in values]  # NaN, inf -> None: JSON has neither
