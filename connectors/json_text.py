"""Verdict rows as JSON objects, written by one compiled pass over the columns.

The MQTT sink publishes one JSON object per step, and ``--out FILE.jsonl`` writes
the same objects a line each. Built as a dict per row and serialised one by one
(``verdict_records`` and ``orjson``), a message cost the daemon's main thread
about 3 us in a tick of 34 and 8 us in a tick of 8,192; here every object goes
straight from the numpy columns into one byte buffer (1.4 and 0.7 us), with the
CSV writer's compiled spelling of numbers and times (``connectors/csv_text.py``).

An object holds ``CSV_COLUMNS`` in order, as ``verdict_records`` gives them:

* ``stream``, ``model`` and ``dropped`` are JSON strings (UTF-8, escaped as JSON
  requires); ``timestamp`` and ``next_timestamp`` ``iso_times``' text;
  ``is_anomaly`` ``true`` or ``false``; ``count`` an integer.
* Numbers are spelled as in CSV: ``value``, ``min`` and ``max`` the shortest
  decimal that reads back as the same float64, the model's numbers to
  ``MODEL_DIGITS`` significant digits. A whole number keeps a ``.0``
  (``21.0``, ``-0.0``) so that a JSON reader reads a float, as it did from
  ``orjson``; exponents are JSON's (``1e+22``, ``1.5e-7``).
* NaN, infinities and times nobody can spell are ``null`` (JSON has none of them).
* ``dropped`` is a dropped reading's reason; a step's is ``null`` in JSON lines
  and left out of its MQTT message (``with_dropped=False``), as documented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numba
import numpy as np
import orjson

from connectors.byte_copy import copy_bytes
from connectors.csv_text import (
    MAX_NUMBER,
    MAX_TIME,
    column_args,
    early_pointers,
    longest,
    put_exact,
    put_int,
    put_model,
    put_text,
    put_time,
    room,
    text_table,
)
from connectors.records import CSV_COLUMNS
from pipeline.pointers import data_pointer
from pipeline.types import Reason, VerdictBatch

# what JSON must escape in a string: the quote, the backslash, control characters
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_NULL = np.frombuffer(b"null", np.uint8)
_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)


def json_string(text: str) -> bytes:
    r"""``text`` as a JSON string's UTF-8, quotes included. A lone surrogate, which UTF-8
    cannot hold, is written as its ``\u`` escape.

    >>> json_string('a"b'), json_string("café"), json_string("\ud800")
    (b'"a\\"b"', b'"caf\xc3\xa9"', b'"\\ud800"')
    """
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        return json.dumps(text).encode()


def string_table(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``text_table`` of ``texts`` as JSON strings, quotes included. Plain ASCII texts
    with nothing to escape (the rule: stream keys) are encoded as one string."""
    joined = "".join(texts)
    if not joined.isascii() or _NEEDS_ESCAPE.search(joined):
        encoded = [json_string(text) for text in texts]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded])
        return np.frombuffer(b"".join(encoded), np.uint8), offsets
    offsets = np.zeros(len(texts) + 1, np.int64)
    offsets[1:] = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)) + 2)  # + quotes
    quoted = '"' + '""'.join(texts) + '"' if texts else ""  # "a""b": "a" then "b"
    return np.frombuffer(quoted.encode(), np.uint8), offsets


# each field's text before its value: '{"stream":', ',"timestamp":', ...
_FIELD_TEXT, _FIELD_ENDS = text_table(
    [("{" if i == 0 else ",") + f'"{name}":' for i, name in enumerate(CSV_COLUMNS)]
)
# where each field stands in CSV_COLUMNS (and in the fields' texts)
_STREAM, _TIME, _VALUE = (CSV_COLUMNS.index(name) for name in ("stream", "timestamp", "value"))
_FORECAST, _IS_ANOMALY = CSV_COLUMNS.index("forecast"), CSV_COLUMNS.index("is_anomaly")
_NEXT_TIME, _NEXT_FORECAST = CSV_COLUMNS.index("next_timestamp"), CSV_COLUMNS.index("next_forecast")
_COUNT, _MIN, _MODEL = (CSV_COLUMNS.index(name) for name in ("count", "min", "model"))
_DROPPED = CSV_COLUMNS.index("dropped")
# "" for a step (it never has one written), else the reason as a JSON string
_LABEL_TEXT, _LABEL_ENDS = string_table(["", *(Reason(c).label for c in range(1, max(Reason) + 1))])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_field(buf, pos, f):
    return copy_bytes(buf, pos, _FIELD_TEXT, _FIELD_ENDS[f], _FIELD_ENDS[f + 1])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _as_float(buf, start, end):
    """A number's text from ``start`` to ``end``, with ``.0`` added where it has no point
    and no exponent: JSON readers read ``21`` as an integer, ``21.0`` as a float."""
    for j in range(start, end):
        if buf[j] == 46 or buf[j] == 101:  # "." or "e"
            return end
    buf[end] = 46
    buf[end + 1] = 48
    return end + 2


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_word(buf, pos, word):
    return copy_bytes(buf, pos, word, 0, word.shape[0])


# The three below are called, not inlined: each inlined site is compiled again, with
# all it inlines (the kernel took 25 s to compile with them inlined, 17 s so)


@numba.njit(cache=True, error_model="numpy")
def _put_reading(buf, pos, x, d, s):
    """A reading (``put_exact``) as a JSON number, or null."""
    if not np.isfinite(x):
        return _put_word(buf, pos, _NULL)
    return _as_float(buf, pos, put_exact(buf, pos, x, d, s))


@numba.njit(cache=True, error_model="numpy")
def _put_model_number(buf, pos, y):
    """A model's number (``put_model``) as a JSON number, or null."""
    if not np.isfinite(y):
        return _put_word(buf, pos, _NULL)
    return _as_float(buf, pos, put_model(buf, pos, y))


@numba.njit(cache=True, error_model="numpy")
def _put_time_or_null(buf, pos, seconds, early):
    buf[pos] = 34
    end = put_time(buf, pos + 1, seconds, early)
    if end == pos + 1:  # nothing spelled: no time
        return _put_word(buf, pos, _NULL)
    buf[end] = 34
    return end + 1


@numba.njit(cache=True, error_model="numpy")
def write_objects(
    buffer,
    key_code,
    key_blob,
    key_offsets,
    columns,
    model_name,
    with_dropped,
    newline,
    ends,
):
    """Each row's JSON object into ``buffer`` (``object_bound`` bytes a row), end to
    end; ``ends[i]`` where row i's ends. ``columns`` is ``column_args``'s tuple. Keys
    and the model name are JSON strings already. A step's ``dropped`` is written
    (``null``) only ``with_dropped``; a newline ends each object if ``newline``."""
    timestamp, early, exact, exact_d, exact_s, model, flag, next_timestamp, count, reason = columns
    buf = data_pointer(buffer)
    early_at = early_pointers(early)
    pos = 0
    for i in range(timestamp.shape[0]):
        pos = _put_field(buf, pos, _STREAM)
        pos = put_text(buf, pos, key_blob, key_offsets, key_code[i])
        pos = _put_field(buf, pos, _TIME)
        pos = _put_time_or_null(buf, pos, timestamp[i], early_at)
        for e in range(3):  # value; min and max after the count
            if e == 0:
                pos = _put_field(buf, pos, _VALUE)
            else:
                if e == 1:
                    pos = _put_field(buf, pos, _COUNT)
                    pos = put_int(buf, pos, count[i])
                pos = _put_field(buf, pos, _MIN + e - 1)  # "max" follows "min"
            pos = _put_reading(buf, pos, exact[e, i], exact_d[e, i], exact_s[e, i])
            if e > 0:
                continue
            for c in range(7):  # forecast, lower, upper, anomaly_score; next_forecast, ...
                if c == 4:
                    pos = _put_field(buf, pos, _IS_ANOMALY)
                    pos = _put_word(buf, pos, _TRUE if flag[i] else _FALSE)
                    pos = _put_field(buf, pos, _NEXT_TIME)
                    pos = _put_time_or_null(buf, pos, next_timestamp[i], early_at)
                    pos = _put_field(buf, pos, _NEXT_FORECAST)
                else:
                    pos = _put_field(buf, pos, _FORECAST + c if c < 4 else _NEXT_FORECAST + c - 4)
                pos = _put_model_number(buf, pos, model[c, i])
        pos = _put_field(buf, pos, _MODEL)
        pos = _put_word(buf, pos, model_name)
        if reason[i] != 0 or with_dropped:
            pos = _put_field(buf, pos, _DROPPED)
            if reason[i] == 0:
                pos = _put_word(buf, pos, _NULL)
            else:
                pos = put_text(buf, pos, _LABEL_TEXT, _LABEL_ENDS, reason[i])
        buf[pos] = 125  # "}"
        pos += 1
        if newline:
            buf[pos] = 10
            pos += 1
        ends[i] = pos
    return pos


def object_bound(longest_key: int, model_name: int) -> int:
    """Bytes an object can take at most (its key and model name as JSON strings)."""
    return _FIXED_BOUND + longest_key + model_name


# the fields' names, the longest reason, times, numbers, count, flag, "}" and a newline
_FIXED_BOUND = int(_FIELD_ENDS[-1]) + int(np.diff(_LABEL_ENDS).max()) + 2 * (MAX_TIME + 2)
_FIXED_BOUND += 10 * (MAX_NUMBER + 2) + 20 + 5 + 2


class JsonObjects:
    """Turns verdict batches into JSON objects, reusing one buffer between batches."""

    def __init__(self, *, with_dropped: bool, newline: bool) -> None:
        self.with_dropped = with_dropped
        self.newline = newline
        self._buffer = np.empty(0, np.uint8)
        self._ends = np.empty(0, np.int64)
        self._model = ("", json_string(""))

    def of(self, verdicts: VerdictBatch) -> tuple[memoryview, np.ndarray]:
        """The objects' UTF-8 end to end, and where each ends; both valid until the next
        call."""
        codes, keys = _codes(verdicts)
        key_blob, key_offsets = string_table(keys)
        if self._model[0] != verdicts.model:
            self._model = (verdicts.model, json_string(verdicts.model))
        model_name = np.frombuffer(self._model[1], np.uint8)
        n = len(verdicts)
        self._buffer = room(self._buffer, n * object_bound(longest(key_offsets), len(model_name)))
        self._ends = room(self._ends, n)
        written = write_objects(
            self._buffer,
            codes,
            key_blob,
            key_offsets,
            column_args(verdicts),
            model_name,
            self.with_dropped,
            self.newline,
            self._ends,
        )
        return self._buffer.data[:written], self._ends[:n]


def warm_up() -> None:
    """Load the compiled writer (numba's cache) now, not in the first tick's latency."""
    JsonObjects(with_dropped=False, newline=False).of(VerdictBatch.blank(1))


def _codes(verdicts: VerdictBatch) -> tuple[np.ndarray, list[str]]:
    """(codes, keys) with ``keys[codes]`` the stream column: the engine's own codes when
    it gave them, else numbered here (pandas' factorize would load pandas into the
    daemon, which never needs it)."""
    if verdicts.coded is not None:
        return verdicts.coded.codes.astype(np.int64, copy=False), verdicts.coded.names.tolist()
    numbered: dict[str, int] = {}
    codes = [numbered.setdefault(key, len(numbered)) for key in verdicts.stream.tolist()]
    return np.array(codes, np.int64), list(numbered)
