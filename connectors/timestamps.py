"""Event times for CSV replay: which columns hold the time, and vectorised parsing.

A file's time is one of:

* one column named ``timestamp``, ``datetime``, ``ts``, ``time`` or ``date`` (any case)
  holding ISO 8601 text (``2013-12-02 21:15:00``, ``...T21:15:00Z``, ``...+01:00``)
  or epoch numbers (seconds, or milliseconds when larger than 1e11; larger than 1e11
  seconds even as milliseconds, or infinite, is no time);
* split columns ``year, month, day, hour[, minute]`` (UCI Beijing) or NDBC's
  ``YY MM DD hh [mm]`` (``#YY`` and ``YYYY`` too);
* a ``Date`` + ``Time`` pair (``2017/12/22``, ``10:49:41``).

Naive times are UTC unless a zone is given. Every parser works on whole columns
and returns float64 seconds since the epoch, NaN where a row's time did not parse.

>>> frame = pd.DataFrame({"time": ["2020-01-01T00:00:00Z", "1577836800000", "soon"]})
>>> spec = settle(find(["time"]), frame)
>>> spec.kind, parse(frame, spec).tolist()
('iso', [1577836800.0, nan, nan])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa

SINGLE_NAMES = ("timestamp", "datetime", "ts", "time", "date")
EXPECTED = "expected ISO 8601, epoch seconds/ms, or split year/month/day/hour columns"
MS_THRESHOLD = 1e11  # epoch values above this are milliseconds (1e11 s is the year 5138)
UNITS = ("year", "month", "day", "hour", "minute")
_WORDS = {  # split-column names: plain words (any case) and NDBC's tokens (exact case)
    "year": ({"year"}, {"YY", "#YY", "YYYY", "#YYYY"}),
    "month": ({"month"}, {"MM"}),
    "day": ({"day"}, {"DD"}),
    "hour": ({"hour"}, {"hh"}),
    "minute": ({"minute"}, {"mm"}),
}
# Split-column parts outside these bounds are unreadable: it keeps every assembled time
# inside pandas' nanosecond range (1677..2262), beyond which pandas raises, not coerces.
_SPLIT_RANGES = {"year": (1678, 2261), "month": (1, 12), "day": (1, 31), "hour": (0, 24),
                 "minute": (0, 60)}  # fmt: skip
_EPOCH = pd.Timestamp(0, tz="UTC")
# ISO text that carries its own zone after its clock time: Z, +01:00, +0100 or +01
# (PostgreSQL's timestamptz); after the clock, so a date's -01 is not taken for one
_OFFSET = r"\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d\d(?::?\d\d)?)\s*$"


@dataclass(frozen=True, slots=True)
class TimeSpec:
    """Where a file keeps its event time and how to read it."""

    kind: str  # "text" until settled, then "iso" | "epoch"; or "split" | "pair"
    columns: tuple[str, ...]  # split: year, month, day, hour[, minute]; pair: date, time
    two_digit_years: bool = False  # NDBC ``YY`` before 1999

    @property
    def label(self) -> str:
        return "/".join(self.columns)


def numbers(cells: pd.Series) -> pd.Series:
    """``pd.to_numeric(cells, errors="coerce")``, also when a cell is an integer too long
    for a float: pandas reads those as Python ints, and then raises OverflowError instead
    of coercing; as text they read as +-inf, like any number out of a float's range.

    >>> numbers(pd.Series([int("9" * 400), 1], dtype=object)).tolist()
    [inf, 1.0]
    """
    if cells.dtype == object or isinstance(cells.dtype, pd.StringDtype):
        try:  # Arrow's parser is several times faster, and agrees wherever it accepts
            parsed = pa.array(cells, pa.string(), from_pandas=True).cast(pa.float64())
            return pd.Series(parsed.to_numpy(zero_copy_only=False), index=cells.index)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # a cell Arrow does not read: pandas coerces it to NaN
        cells = _unplussed(cells)
    try:
        return pd.to_numeric(cells, errors="coerce")
    except OverflowError:
        return pd.to_numeric(cells.astype("str"), errors="coerce")


_PLUS = r"^(\s*)\+(?=[0-9.])"


def _unplussed(cells: pd.Series) -> pd.Series:
    """Text cells without a leading ``+``: ``pd.to_numeric`` reads a signed number by
    a less exact parser, an ulp off for a quarter of numbers written with 17 or more
    digits, where Arrow, pandas' CSV reader and ``float`` agree. Cells that are not
    text (a Python int pandas made of a long integer) are left as they are."""
    try:
        stripped = cells.str.replace(_PLUS, r"\1", regex=True)
    except AttributeError:  # not one text cell (only long integers): nothing to strip
        return cells
    return stripped.where(stripped.notna(), cells)


def find(names: Sequence[str]) -> TimeSpec | None:
    """The time columns among ``names``, or None when there are none."""
    lower = {name.lower(): name for name in reversed(names)}
    for word in SINGLE_NAMES[:3]:
        if word in lower:
            return TimeSpec("text", (lower[word],))
    if "date" in lower and "time" in lower:
        return TimeSpec("pair", (lower["date"], lower["time"]))
    split = _split_columns(names)
    if split is not None:
        return split
    for word in SINGLE_NAMES[3:]:
        if word in lower:
            return TimeSpec("text", (lower[word],))
    return None


def _split_columns(names: Sequence[str]) -> TimeSpec | None:
    found: dict[str, str] = {}
    for name in names:
        for unit, (words, tokens) in _WORDS.items():
            if unit not in found and (name.lower() in words or name in tokens):
                found[unit] = name
    if any(unit not in found for unit in UNITS[:4]):
        return None
    columns = tuple(found[unit] for unit in UNITS if unit in found)
    return TimeSpec("split", columns, two_digit_years=found["year"].lstrip("#") == "YY")


def settle(spec: TimeSpec, sample: pd.DataFrame) -> TimeSpec:
    """Decide ISO text or epoch numbers for a single column, by what most sample cells are."""
    return settled(spec, sample)[0]


def settled(spec: TimeSpec, sample: pd.DataFrame) -> tuple[TimeSpec, bool]:
    """``settle``, and whether every sample cell was read as a time on the way (then
    some sample row has a time, and checking it again would parse the sample twice)."""
    if spec.kind != "text":
        return spec, False
    cells = sample[spec.columns[0]].dropna()
    if len(cells) and _iso_by_arrow(cells) is not None:
        return replace(spec, kind="iso"), True  # every cell an ISO time, so none a number
    numeric = numbers(cells).notna()
    if len(cells) and numeric.mean() >= 0.5 and _basic_dates(cells):
        return replace(spec, kind="iso"), False
    kind = "epoch" if len(cells) and numeric.mean() >= 0.5 else "iso"
    return replace(spec, kind=kind), False


def _basic_dates(cells: pd.Series) -> bool:
    """Every cell a date written YYYYMMDD (20200131), which pandas reads as ISO 8601: as
    epoch seconds they would all fall within 1970-1973."""
    text = cells.astype("str").str.strip()
    if not text.str.fullmatch(r"(19|20)\d{6}").all():
        return False
    return bool(pd.to_datetime(text, format="%Y%m%d", errors="coerce").notna().all())


DISTINCT_PROBE = 256  # rows of a text time column that tell whether its times repeat


def _distinct(column: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """(codes, distinct texts) of a time column whose times repeat (a long log's streams
    sharing each step), so that each is parsed once; None where they do not. Categories
    come with theirs; a text column is factorized only when its first rows repeat their
    times, as finding them costs about as much as parsing times that never repeat."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), pd.Series(column.cat.categories.astype("str"))
    if len(column) < DISTINCT_PROBE or pd.api.types.is_float_dtype(column.dtype):
        return None
    if 2 * column.iloc[:DISTINCT_PROBE].nunique(dropna=False) > DISTINCT_PROBE:
        return None
    codes, uniques = pd.factorize(column)
    if 2 * len(uniques) > len(column):
        return None
    return codes, pd.Series(uniques, dtype=column.dtype)


def parse(frame: pd.DataFrame, spec: TimeSpec, timezone: str | None = None) -> np.ndarray:
    """Seconds since the epoch, UTC, for every row: (n,) float64, NaN where unreadable."""
    column = frame[spec.columns[0]]
    if len(spec.columns) == 1 and (found := _distinct(column)) is not None:
        # each distinct text parsed once; code -1 (an empty cell) picks the appended NaN
        codes, uniques = found
        distinct = pd.DataFrame({spec.columns[0]: uniques})
        return np.append(parse(distinct, spec, timezone), np.nan)[codes]
    if spec.kind == "epoch":
        return _epoch(column)
    if spec.kind == "split":
        times = _split(frame, spec)
        return _seconds(_in_zone(times, timezone) if timezone else times)
    text = _pair_text(frame, spec) if spec.kind == "pair" else column
    if timezone is None and (seconds := _iso_by_arrow(text)) is not None:
        return seconds
    # pandas reads "now" and "today" as the wall clock: never an event time
    wall_clock = text.isin(("now", "today"))  # exactly these, pandas strips nothing
    cells = text.mask(wall_clock)
    seconds = _iso_seconds(cells, timezone)
    # pandas gives a column one unit: nanoseconds where one cell has nine decimals, and
    # then a year outside 1677-2262 in the same column is no time, alone it is one. So
    # cells it could not read are read again on their own, and a time does not depend
    # on which others share its chunk.
    again = np.flatnonzero(np.isnan(seconds) & cells.notna().to_numpy(bool))
    if 0 < len(again) < len(cells):
        seconds = seconds.copy()  # pandas' own array may be read-only
        seconds[again] = _iso_seconds(cells.iloc[again], timezone)
    return seconds


def _iso_seconds(cells: pd.Series, timezone: str | None) -> np.ndarray:
    """``parse``'s seconds of ISO 8601 text by pandas: a zone in the text wins, naive
    times are in ``timezone`` (UTC when None)."""
    times = pd.to_datetime(cells, utc=True, format="ISO8601", errors="coerce")
    if timezone is None:
        return _seconds(times)
    naive = ~cells.astype("str").str.contains(_OFFSET, regex=True, na=False).to_numpy(bool)
    return np.where(naive, _seconds(_in_zone(times, timezone)), _seconds(times))


def _iso_by_arrow(text: pd.Series) -> np.ndarray | None:
    """Seconds of strict ISO 8601 text by Arrow's parser, or None to leave it to pandas.

    Arrow reads a column of ``2014-04-01 00:00:00`` about seven times faster than
    ``pd.to_datetime``. It takes only exact ISO forms (all naive, or all with a zone)
    and refuses the whole column over one cell it does not read (a blank, "now", a
    year out of the nanosecond range, 24:00): then pandas reads it, as before. Where
    both read a column they agree: exactly on whole seconds, within a float's
    rounding (well under a microsecond) on fractions.
    """
    if len(text) == 0 or not (text.dtype == object or isinstance(text.dtype, pd.StringDtype)):
        return None
    try:
        cells = pa.array(text, pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    for kind in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):  # naive is UTC
        try:
            nanoseconds = cells.cast(kind).cast(pa.int64())
        except pa.ArrowInvalid:
            continue
        whole, fraction = np.divmod(nanoseconds.fill_null(0).to_numpy(), 1_000_000_000)
        seconds = whole + fraction / 1e9  # whole seconds exact, as pandas gives them
        seconds[nanoseconds.is_null().to_numpy(zero_copy_only=False)] = np.nan
        return seconds
    return None


def text_of(frame: pd.DataFrame, spec: TimeSpec, row: int) -> str:
    """The raw cells of one row's time, for an error message."""
    cells = [frame[column].iloc[row] for column in spec.columns]
    return " ".join("" if pd.isna(cell) else str(cell) for cell in cells)


def _epoch(column: pd.Series) -> np.ndarray:
    epoch = numbers(column).to_numpy(np.float64, na_value=np.nan)
    seconds = np.where(np.abs(epoch) > MS_THRESHOLD, epoch / 1000.0, epoch)
    # over 1e11 s even read as milliseconds (past the year 5138), or infinite: no time
    return np.where(np.abs(seconds) <= MS_THRESHOLD, seconds, np.nan)


def _split(frame: pd.DataFrame, spec: TimeSpec) -> pd.Series:
    parts = {
        unit: numbers(frame[column]) for unit, column in zip(UNITS, spec.columns, strict=False)
    }
    if spec.two_digit_years:  # NDBC wrote 2-digit years until 1998
        parts["year"] = parts["year"].where(parts["year"] >= 100, parts["year"] + 1900)
    for unit, values in parts.items():
        parts[unit] = values.where(values.between(*_SPLIT_RANGES[unit]))
    return pd.to_datetime(pd.DataFrame(parts), utc=True, errors="coerce")


def _pair_text(frame: pd.DataFrame, spec: TimeSpec) -> pd.Series:
    date, clock = (frame[column].astype("str") for column in spec.columns)
    # ISO 8601 wants dashes; year-first dates with slashes are the common variant
    return date.str.strip().str.replace("/", "-", regex=False) + " " + clock.str.strip()


def _in_zone(times: pd.Series, timezone: str) -> pd.Series:
    """Read wall times (parsed as if UTC) as wall times in ``timezone``.

    The hour a DST change repeats or skips has no single answer: NaT, so rejected.
    """
    wall = times.dt.tz_localize(None)
    return wall.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")


def _seconds(times: pd.Series) -> np.ndarray:
    """Epoch seconds in the times' own unit: pandas keeps years like 9999 in seconds or
    microseconds, and the nanosecond epoch would overflow subtracting from them."""
    epoch = _EPOCH.as_unit(times.dt.unit)
    return (times - epoch).dt.total_seconds().to_numpy(np.float64, na_value=np.nan)
