"""What a CSV log looks like: separator, header, prelude lines, format and columns.

``inspect`` reads the first lines and a fixed sample of rows (not the whole file)
and returns a ``Layout`` that says how to read every chunk. Formats:

* ``nab``  -- exactly ``timestamp,value``: one stream, named after the file.
* ``long`` -- a time column, a stream column (``stream``/``key``/``sensor``/``series``)
  and ``value``: one reading per row, the row names its stream.
* ``wide`` -- a time column (or split time columns) and one stream per value column,
  named ``{station}/{column}`` when a text ``station``/``station_id``/``site``/``device``
  column says whose row it is, else ``{file stem}/{column}``.

Quirks handled: whitespace-separated NDBC stdmet files (``YY MM DD hh mm ...`` or
``#YY``, and their ``99``/``999``/``9999`` missing-value codes), an ERDDAP units row
as line 2, and UCI files whose rows carry one more field (a row id) than the header.
Decisions that depend on the data (ISO or epoch time, which columns are numeric)
use the first ``SAMPLE_ROWS`` rows, so they do not depend on the chunk size.
``expand`` turns path arguments into files; the ``*_problem`` helpers word rejections.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from connectors import timestamps
from connectors.timestamps import TimeSpec
from pipeline.errors import InputFileError
from pipeline.types import stream_key_problem

FORMATS = ("auto", "long", "wide", "nab")
SAMPLE_ROWS = 1000
WHITESPACE = r"\s+"
ROW_ID = "<row id>"  # the unnamed leading field of UCI occupancy rows
TRAILING = "<trailing separator>"  # the empty field after a separator that ends every row
UNNAMED = (ROW_ID, TRAILING)  # fields the header does not name: never a column to replay
STREAM_NAMES = ("stream", "key", "sensor", "series")
KEY_NAMES = ("station", "station_id", "site", "device")
INDEX_NAMES = frozenset({"no", "id", "index", "unnamed: 0", *(n.lower() for n in UNNAMED)})
NDBC_MISSING = {  # NDBC stdmet missing-value codes, per column (older files: WD, BAR)
    **dict.fromkeys(("WSPD", "GST", "WVHT", "DPD", "APD", "VIS", "TIDE"), 99.0),
    **dict.fromkeys(("WDIR", "WD", "MWD", "ATMP", "WTMP", "DEWP"), 999.0),
    **dict.fromkeys(("PRES", "BAR"), 9999.0),
}


@dataclass(frozen=True, slots=True)
class Layout:
    """How to read one file, decided once when it is opened."""

    path: Path
    sep: str
    names: tuple[str, ...]  # every column as read, a leading ROW_ID or TRAILING included
    skip: int  # lines before the first data row: the header, maybe a units row
    format: str  # nab | long | wide
    time: TimeSpec
    values: tuple[str, ...]  # the value columns, one stream each (per key)
    key: str | None = None  # long: the stream column; wide: the station column
    prefix: str = ""  # nab: the stream name; wide without key: the first level
    sentinels: tuple[float, ...] = ()  # NDBC only: missing-value code per value column
    # a first data row with too many fields, skipped here: (line, what is wrong)
    head_malformed: tuple[tuple[int, str], ...] = ()

    @property
    def first_line(self) -> int:
        return self.skip + 1

    def read_options(self) -> dict[str, Any]:
        """Arguments for ``pd.read_csv``; blank lines kept so row n is line first_line + n."""
        text = [*self.time.columns] if self.time.kind != "split" else []
        dtype = dict.fromkeys(text, "str")
        # Text, never categories: pandas turns categories that all read as numbers into
        # numbers, by chunk (keys "007" and "7" would be one stream "7", and a chunk
        # whose times all look like numbers would read them unlike the next chunk).
        # ``timestamps.parse`` still parses each distinct time once.
        if self.key:
            dtype[self.key] = "str"
        return {
            "sep": self.sep,
            "header": None,
            "names": list(self.names),
            "skiprows": self.skip,
            "dtype": dtype,
            "skip_blank_lines": False,
            "low_memory": False,  # else pandas guesses dtypes per block and warns
        }

    def stream_names(self, keys: Sequence[str]) -> list[str]:
        """Names for every (key, value column) pair, key-major: index = key * C + column."""
        if self.format == "nab":
            return [self.prefix for _ in keys]
        if self.format == "long":
            return list(keys)
        return [f"{key or self.prefix}/{column}" for key in keys for column in self.values]


def inspect(
    path: Path,
    *,
    format: str = "auto",
    columns: Sequence[str] | None = None,
    name: str = "",
    prefix: str = "",
) -> Layout:
    """Read the head of ``path`` and decide how to replay it; InputFileError if unusable.

    ``name`` is the stream name a nab file gets, ``prefix`` the first level of a wide
    file's stream names (both default to the file's stem; see ``expand``).
    """
    lines = _head(path, 4)
    sep = _separator(lines[0])
    try:
        return _layout(path, lines, sep, format, columns, name, prefix)
    except csv.Error as exc:  # a field past the csv module's limit: not a log's header
        msg = f"{path}: its first lines are not CSV a log can start with ({exc}); "
        msg += "give a log whose first line names its columns"
        raise InputFileError(msg) from exc


def _layout(
    path: Path,
    lines: list[str],
    sep: str,
    format: str,
    columns: Sequence[str] | None,
    name: str,
    prefix: str,
) -> Layout:
    names = _clean_names(path, _fields(lines[0], sep))
    time = timestamps.find(names)
    skip = 2 if time and _is_units_row(lines[1:], names, sep, time) else 1
    rows = [_fields(line, sep) for line in lines[skip : skip + 2]]
    widths = [len(fields) for fields in rows]
    if widths and all(width == len(names) + 1 for width in widths):
        if all(fields[-1] == "" for fields in rows) and sep != WHITESPACE:
            names = [*names, TRAILING]  # every row ends with a separator (an export's habit)
        else:
            names = [ROW_ID, *names]  # every row starts with an unnamed row id (UCI's files)
    head_malformed: tuple[tuple[int, str], ...] = ()
    if widths and widths[0] > len(names):  # pandas would take the extra fields as an index
        head_malformed = ((skip + 1, f"expected {len(names)} fields, saw {widths[0]}"),)
        skip += 1
    sample = _sample(path, sep, names, skip)
    chosen = _detect(names) if format == "auto" else format
    if time is None:
        raise _missing(path, "time column", chosen, names)
    spec, read = timestamps.settled(time, sample)
    if not read:
        _check_time(path, spec, sample, skip + 1)
    base = {"path": path, "sep": sep, "names": tuple(names), "skip": skip, "time": spec,
            "head_malformed": head_malformed}  # fmt: skip
    if chosen == "wide":
        return _wide(base, sample, columns, prefix or path.stem)
    if columns is not None:
        msg = f"{path}: columns= picks value columns of wide files, but this file is {chosen}"
        raise InputFileError(msg)
    return _nab(base, sample, name or path.stem) if chosen == "nab" else _long(base, sample)


class Named(NamedTuple):
    """A file to replay and the names its streams get."""

    path: Path
    name: str  # a nab file's stream: its stem, or its path below the folder it was found in
    prefix: str  # a wide file's first level when no station column names its rows: its stem


def expand(paths: Sequence[str | Path]) -> list[Named]:
    """Files to replay, each once, with the names their streams get. Names that different
    files share (``a/x.csv b/x.csv``) are lengthened by parent folders until they differ
    (``a/x``, ``b/x``), so two series never become one stream."""
    return expand_groups([paths])[0]


def expand_groups(groups: Sequence[Sequence[str | Path]]) -> list[list[Named]]:
    """``expand`` of several groups at once (one per ``LOG:COL`` spec), so that files of
    different groups that share a name are told apart too; a file may be in several
    groups (``x.csv:TEMP x.csv:PRES``) and has one name in all of them."""
    listed = [_listed(paths) for paths in groups]
    unique: dict[Path, tuple[Path, str]] = {}
    for files in listed:
        for path, name in files:
            unique.setdefault(path.resolve(), (path, name))
    real = [path.with_suffix("") for path in unique]
    names = _distinct([name for _, name in unique.values()], real)
    prefixes = _distinct([path.stem for path, _ in unique.values()], real)
    named = dict(zip(unique, zip(names, prefixes, strict=True), strict=True))
    return [[Named(path, *named[path.resolve()]) for path, _ in files] for files in listed]


def _listed(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(file, name) for every file ``paths`` name: a folder's CSV files by their path
    below it, a file by its stem; a file named twice is an InputFileError."""
    files: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.csv") if p.is_file())
            if not found:
                msg = f"{path}: directory has no *.csv files; give a CSV file or a folder of them"
                raise InputFileError(msg)
            files += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in found]
        elif path.is_file():
            files.append((path, path.stem))
        elif path.exists():  # a pipe (<(...)), a device: read once, not as a log is
            msg = f"{path}: not a regular file (a pipe or a device); a log is read twice "
            msg += "(its head tells its format), so save it to a file and give that"
            raise InputFileError(msg)
        else:
            msg = f"{path}: no such file or directory; check the path"
            raise InputFileError(msg)
    _refuse_repeats([path for path, _ in files])
    return files


def _refuse_repeats(paths: Sequence[Path]) -> None:
    seen: dict[Path, Path] = {}
    for path in paths:
        if (real := path.resolve()) in seen:
            msg = f"{path}: the same log is given twice (as {seen[real]} too); its readings "
            msg += "would all be dropped as late the second time: name each log once"
            raise InputFileError(msg)
        seen[real] = path


def _distinct(names: list[str], real: Sequence[Path]) -> list[str]:
    """``names``, where several files share one, replaced by as many trailing parts of
    each file's real path as it takes to tell them apart."""
    names = list(names)
    for name in {n for n in names if names.count(n) > 1}:
        clashing = [i for i, n in enumerate(names) if n == name]
        depth = 2
        while len({real[i].parts[-depth:] for i in clashing}) < len(clashing):
            depth += 1
        for i in clashing:
            names[i] = "/".join(real[i].parts[-depth:])
    return names


def _head(path: Path, count: int = 3) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            lines = [line.rstrip("\r\n") for _, line in zip(range(count), file, strict=False)]
    except (UnicodeDecodeError, OSError) as exc:
        raise read_error(path, exc) from exc
    if not lines or not lines[0].strip() and _only_white_space(path):
        msg = f"{path}: file is empty; expected a header line and data rows"
        raise InputFileError(msg)
    if not lines[0].strip():
        msg = f"{path}: line 1 is blank; the header must be the first line "
        msg += "(remove the blank lines before it)"
        raise InputFileError(msg)
    return lines


def _only_white_space(path: Path) -> bool:
    """Whether ``path`` holds nothing but white space (read only when its first line is
    blank, to tell an empty file from a header after blank lines)."""
    with path.open(encoding="utf-8-sig", errors="replace") as file:
        return not any(line.strip() for line in file)


def _fields(line: str, sep: str) -> list[str]:
    if sep == WHITESPACE:
        return line.split()
    return next(csv.reader([line], delimiter=sep), [])


def _cells(line: str, sep: str, width: int) -> list[str]:
    """A raw row's fields under the header's names (a leading row id or a trailing
    separator's empty field dropped)."""
    fields = _fields(line, sep)
    return fields[1:] if len(fields) == width + 1 and fields[-1] != "" else fields[:width]


def _clean_names(path: Path, raw: Sequence[str]) -> list[str]:
    """Header names, stripped, unnamed ones numbered (as pandas names them); a name given
    twice is an InputFileError: which of the two a stream or --columns means is unknown."""
    names: list[str] = []
    for i, name in enumerate(raw):
        name = name.strip() or f"Unnamed: {i}"
        if name in names:
            msg = f"{path}: column {name!r} appears twice in the header (fields "
            msg += f"{names.index(name) + 1} and {i + 1}); rename one of them"
            raise InputFileError(msg)
        names.append(name)
    return names


def _separator(header: str) -> str:
    """Commas; else tabs or semicolons, when the header has them; else any whitespace
    (NDBC's aligned columns)."""
    for sep in (",", "\t", ";"):
        if sep in header:
            return sep
    return WHITESPACE


def _is_units_row(rows: Sequence[str], names: Sequence[str], sep: str, time: TimeSpec) -> bool:
    """ERDDAP's units line: its time fails, the next row's parses, and no cell is a number."""
    if len(rows) < 2:
        return False
    cells = [_cells(row, sep, len(names)) for row in rows[:2]]
    if any(_PLAIN_NUMBER.match(cell) for cell in cells[0]):
        return False  # a units row holds no numbers; most files stop here, cheaply
    padded = [row + [""] * (len(names) - len(row)) for row in cells]
    frame = pd.DataFrame(padded, columns=list(names), dtype="str").replace("", np.nan)
    times = timestamps.parse(frame, timestamps.settle(time, frame.iloc[1:]))
    first = timestamps.numbers(frame.iloc[0].dropna())
    return bool(np.isnan(times[0]) and not np.isnan(times[1]) and first.isna().all())


_PLAIN_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _sample(path: Path, sep: str, names: Sequence[str], skip: int) -> pd.DataFrame:
    text = [n for n in names if n.lower() in {*timestamps.SINGLE_NAMES, *STREAM_NAMES, *KEY_NAMES}]
    try:
        sample = pd.read_csv(
            path,
            sep=sep,
            header=None,
            names=list(names),
            skiprows=skip,
            nrows=SAMPLE_ROWS,
            dtype=dict.fromkeys(text, object),  # Python text: "str" (Arrow) costs 0.3 ms a file
            low_memory=False,
            on_bad_lines="skip",  # too many fields: counted when the rows are read
        )
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise read_error(path, exc) from exc
    if sample.dropna(how="all").empty:
        msg = f"{path}: has no data rows (only a header); add rows or drop the file"
        raise InputFileError(msg)
    return sample


def _detect(names: Sequence[str]) -> str:
    lower = [n.lower() for n in names if n not in UNNAMED]
    if lower == ["timestamp", "value"]:
        return "nab"
    if _named(names, STREAM_NAMES) and _named(names, ("value",)):
        return "long"
    return "wide"


def _named(names: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The first column whose lower-cased name is in ``wanted`` (in ``wanted``'s order)."""
    lower = {n.lower(): n for n in reversed(names)}
    return next((lower[w] for w in wanted if w in lower), None)


def _missing(path: Path, what: str, format: str, names: Sequence[str]) -> InputFileError:
    found = ", ".join(n for n in names if n not in UNNAMED)
    hint = {
        "nab": "a nab file has exactly the columns timestamp,value",
        "long": "a long file has a time column, a stream column (stream/key/sensor/series) "
        "and value",
        "wide": "name the time column timestamp/time/ts/date/datetime or use split "
        "year,month,day,hour columns",
    }[format]
    return InputFileError(f"{path}: no {what} (columns found: {found}); {hint}")


def _check_time(path: Path, spec: TimeSpec, sample: pd.DataFrame, first_line: int) -> None:
    """A time column where no sample row parses is the wrong column or format: stop early."""
    if not np.isnan(timestamps.parse(sample, spec)).all():
        return
    rows = np.flatnonzero(sample[list(spec.columns)].notna().any(axis=1).to_numpy())
    row = int(rows[0]) if len(rows) else 0
    text = timestamps.text_of(sample, spec, row)
    msg = (
        f"{path}: line {first_line + row}, column '{spec.label}': cannot read {text!r} "
        f"as a time; {timestamps.EXPECTED}"
    )
    raise InputFileError(msg)


def _nab(base: dict[str, Any], sample: pd.DataFrame, name: str) -> Layout:
    path, names = base["path"], base["names"]
    value = _named(names, ("value",))
    if value is None:
        raise _missing(path, "column 'value'", "nab", names)
    _check_numbers(path, sample, value)
    _check_stream(path, name, "")
    return Layout(format="nab", values=(value,), prefix=name, **base)


def _long(base: dict[str, Any], sample: pd.DataFrame) -> Layout:
    path, names = base["path"], base["names"]
    stream, value = _named(names, STREAM_NAMES), _named(names, ("value",))
    if stream is None or value is None:
        what = "stream column" if stream is None else "column 'value'"
        raise _missing(path, what, "long", names)
    _check_numbers(path, sample, value)
    return Layout(format="long", values=(value,), key=stream, **base)


def _wide(
    base: dict[str, Any], sample: pd.DataFrame, picked: Sequence[str] | None, prefix: str
) -> Layout:
    path, names, time = base["path"], base["names"], base["time"]
    key = _named(names, KEY_NAMES)
    if picked is None:
        skip = {*time.columns, key}
        values = [n for n in names if n not in skip and n.lower() not in INDEX_NAMES]
        values = [n for n in values if _has_numbers(sample[n]) and not _blank(n, sample[n])]
    else:
        not_values = {*time.columns, key} - {None}
        values = [_picked(path, sample, column, not_values) for column in dict.fromkeys(picked)]
    if not values:
        raise _missing(path, "numeric value column", "wide", names)
    for column in values:
        _check_stream(path, f"{'k' if key else prefix}/{column}", column)
    sentinels = _sentinels(base["sep"], time, values)
    return Layout(
        format="wide",
        values=tuple(values),
        key=key,
        prefix=prefix,
        sentinels=sentinels,
        **base,
    )


def _picked(path: Path, sample: pd.DataFrame, column: str, not_values: set[str]) -> str:
    """A value column asked for by name (``--columns``, ``LOG:COL``), repeats dropped."""
    if column not in sample.columns:
        found = ", ".join(n for n in sample.columns if n not in UNNAMED)
        msg = f"{path}: no column {column!r} to replay (columns found: {found}); pick "
        msg += "value columns from those (--columns or LOG:COLUMN,COLUMN)"
        raise InputFileError(msg)
    if column in not_values:
        msg = f"{path}: {column!r} is the time or station column, not a value to replay; "
        msg += "pick value columns (--columns or LOG:COLUMN,COLUMN)"
        raise InputFileError(msg)
    _check_numbers(path, sample, column)
    return column


def _blank(name: str, column: pd.Series) -> bool:
    """A column without a name or a value in the sample: the empty field after a
    separator that ends the header and every row, not a sensor."""
    return name.startswith("Unnamed: ") and bool(column.isna().all())


def _has_numbers(column: pd.Series) -> bool:
    """Numeric dtype, or text where some non-empty cell reads as a number."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        return True
    cells = _written(column)
    return bool(cells.empty or timestamps.numbers(cells).notna().any())


def _written(column: pd.Series) -> pd.Series:
    """The cells that hold some text (blank ones are missing values, not text)."""
    cells = column.dropna().astype("str").str.strip()
    return cells[cells != ""]


def _check_numbers(path: Path, sample: pd.DataFrame, column: str) -> None:
    if not _has_numbers(sample[column]):
        first = str(_written(sample[column]).iloc[0])
        msg = (
            f"{path}: column {column!r} holds no numbers (first: {first!r}); "
            "pick a numeric value column"
        )
        raise InputFileError(msg)


def _check_stream(path: Path, name: str, column: str) -> None:
    problem = stream_key_problem(name)
    if problem:
        where = f"column {column!r} " if column else ""
        msg = f"{path}: {where}cannot name a stream: {problem}; rename the file or column"
        raise InputFileError(msg)


def _sentinels(sep: str, time: TimeSpec, values: Sequence[str]) -> tuple[float, ...]:
    """NDBC missing-value codes; other formats have none (99 is a fine temperature there)."""
    ndbc = (
        sep == WHITESPACE
        and time.kind == "split"
        and time.columns[0].lstrip("#")
        in (
            "YY",
            "YYYY",
        )
    )
    if not ndbc:
        return ()
    return tuple(NDBC_MISSING.get(column, math.nan) for column in values)


def read_error(path: Path, exc: Exception) -> InputFileError:
    """Translate what pandas, the codec or the OS raised into a one-line message with the fix."""
    if isinstance(exc, UnicodeDecodeError):
        where = _first_bad_byte(path)
        msg = f"{path}: not UTF-8 text ({where or 'a bad byte'}); save it as UTF-8"
        return InputFileError(msg)
    if isinstance(exc, OSError):
        msg = f"{path}: cannot read it ({exc.strerror or exc}); check that it is there and "
        return InputFileError(msg + "that you may read it")
    detail = " ".join(str(exc).split())  # pandas' messages can hold a newline
    detail = re.sub(r"^Error tokenizing data\. C error: ", "", detail)
    line = re.search(r"\bline (\d+)", detail)
    where = f"line {line.group(1)}: " if line else ""
    msg = f"{path}: {where}pandas cannot read it ({detail}); fix or remove the malformed row"
    return InputFileError(msg)


def _first_bad_byte(path: Path) -> str | None:
    """``line 3001, byte 0xe9``: where the file first stops being UTF-8 (the codec's own
    offset counts from the start of whatever buffer it was decoding)."""
    try:
        data = path.read_bytes()
        data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"line {line}, byte 0x{data[exc.start]:02x}"
    except OSError:
        return None
    return None


def cell_text(frame: pd.DataFrame, column: str, row: int) -> str:
    """One raw cell as text, for a rejection's detail."""
    cell = frame[column].iloc[row]
    return "" if pd.isna(cell) else str(cell)


def time_problem(layout: Layout, frame: pd.DataFrame, row: int, zone: str | None) -> str:
    """Why a row's time was rejected, naming the column and its text."""
    spec = layout.time
    text = timestamps.text_of(frame, spec, row)
    if not text.strip():
        return f"column {spec.label!r}: no time"
    if zone and spec.kind != "epoch":
        dst = "or a DST change skips or repeats that hour"
        return f"column {spec.label!r}: cannot read {text!r} as a time in {zone} ({dst})"
    return f"column {spec.label!r}: cannot read {text!r} as a time; {timestamps.EXPECTED}"


def stream_problem(layout: Layout, frame: pd.DataFrame, row: int) -> str:
    """Why a row's stream name was rejected."""
    column = layout.key or ""
    key = cell_text(frame, column, row).strip()
    if not key:
        return f"column {column!r}: no stream name"
    names = layout.stream_names([key])
    problem = next((p for p in map(stream_key_problem, names) if p), f"bad stream {key!r}")
    return f"column {column!r}: {problem}"
