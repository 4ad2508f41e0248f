"""Replay CSV sensor logs as ``ReadingBatch``es: the CSV implementation of ``Source``.

Files are read with pandas in chunks of ``chunk_rows`` rows (memory stays flat on a
multi-GB log; a small plain file is read whole by Arrow, ``connectors.csv_whole``)
and replayed one after another; a directory stands for every ``*.csv`` below it,
sorted. Three formats are recognised from the header (``format=`` forces
one), see ``connectors.csv_formats``:

* ``nab``  -- ``timestamp,value``; the stream is the file's stem (or its path under
  a directory argument, e.g. ``realKnownCause/machine_temperature_system_failure``);
* ``long`` -- time, ``stream`` (or ``key``/``sensor``/``series``) and ``value`` columns;
* ``wide`` -- time column(s) and one stream per numeric column, ``{station}/{column}``
  or ``{file stem}/{column}``.

Times may be ISO 8601, epoch seconds or milliseconds, split year/month/day/hour
columns or a Date + Time pair; see ``connectors.timestamps``.

Every reading carries ``partition`` = the file's path (as given) and ``seq`` = its
physical line number (the header is line 1), so every rejection names its line and
``seek`` resumes after a snapshot (under any path naming the file, see
``file_positions``). Empty cells and NDBC missing-value codes are counted in
``ReadingBatch.missing`` (with ``start``/``end``, only those of rows in that span);
unreadable times, values and stream names become
``Rejection``s folded per reason and column, pointing at the first line; a row with
more fields than the header is skipped as a ``decode_error``. Line numbers assume no
quoted field spans several lines.

>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     path = pathlib.Path(folder, "room.csv")
...     text = "timestamp,value\\n2020-01-01T00:00:00Z,21.5\\n2020-01-01T00:01:00Z,\\n"
...     _ = path.write_text(text)
...     source = CsvSource([path])
...     batch = source.poll(100, timeout=0.0)
...     end = source.poll(100, timeout=0.0)
>>> batch.streams, batch.timestamp.tolist(), batch.value.tolist(), batch.seq.tolist()
(('room',), [1577836800.0], [21.5], [2])
>>> batch.missing, end
(1, None)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import warnings
import zoneinfo
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from connectors import timestamps
from connectors.csv_formats import (
    FORMATS,
    Layout,
    Named,
    cell_text,
    expand,
    inspect,
    read_error,
    stream_problem,
    time_problem,
)
from connectors.csv_whole import whole_frame
from connectors.records import iso_times
from pipeline.clock import Clock, SystemClock
from pipeline.errors import ConfigError
from pipeline.types import (
    ReadingBatch,
    Reason,
    Rejection,
    all_stream_keys_valid,
    stream_key_problem,
)

log = logging.getLogger(__name__)

TIME, KEY = -1, -2  # problem fields that are not value columns (which count from 0)
ALL_TIME = (-math.inf, math.inf)  # a span of event time that keeps every row


class CsvSource:
    """Replays CSV files in order; see the module docstring for formats and positions.

    ``columns`` picks a wide file's value columns; ``timezone`` is the zone of naive
    times (default UTC); ``speed=N`` releases readings as event time advances N times
    faster than ``clock`` time, from each file's first reading (None: no pacing);
    ``start``/``end`` (epoch seconds) keep only readings in that span of event time.
    """

    def __init__(
        self,
        paths: Sequence[str | Path] | Sequence[Named],
        *,
        format: str = "auto",
        columns: Sequence[str] | None = None,
        chunk_rows: int = 65_536,
        speed: float | None = None,
        timezone: str | None = None,
        start: float | None = None,
        end: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.paths = paths
        self.format = format
        self.columns = columns
        self.chunk_rows = chunk_rows
        self.speed = speed
        self.timezone = timezone
        self.start = start
        self.end = end
        self.clock = clock
        _validate(self)
        self._clock = clock or SystemClock()
        # every file is inspected now, so a bad file fails before any replay starts
        self._layouts = [
            inspect(file.path, format=format, columns=columns, name=file.name, prefix=file.prefix)
            for file in _named(paths)
        ]
        self._index = 0
        self._file: _FileReader | None = None
        self._positions: dict[str, int] = {}
        self._anchor: tuple[float, float] | None = None  # (monotonic, event time) at start

    @property
    def files(self) -> list[Path]:
        return [layout.path for layout in self._layouts]

    def poll(self, max_items: int, timeout: float) -> ReadingBatch | None:
        """Up to ``max_items`` readings of one file (whole rows), or None when all are done.

        A row is never split across batches, so a resumed replay cannot lose half of
        one; a single row wider than ``max_items`` comes alone.
        """
        while (file := self._current()) is not None:
            batch = self._take(file, max(max_items, 1), timeout)
            if batch is None:
                self._next_file()
            elif len(batch) or batch.rejections or batch.missing or self.speed:
                return batch
        return None

    def seek(self, positions: Mapping[str, int]) -> None:
        """Skip every row whose line is at or before its file's position; a key of
        ``positions`` is any path naming the file (see ``file_positions``)."""
        self._positions.update(file_positions(positions))
        if self._file is not None:
            self._file.seek(self._positions.get(file_key(self._file.layout.path), -1))

    def commit(self) -> None:
        """Nothing to confirm: a file's position lives in the snapshot."""

    def pause(self) -> None:
        """Stop the replay here: the next poll returns None."""
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._index = len(self._layouts)

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _current(self) -> _FileReader | None:
        if self._file is None and self._index < len(self._layouts):
            layout = self._layouts[self._index]
            span = (_or(self.start, -math.inf), _or(self.end, math.inf))
            self._file = _FileReader(layout, self.chunk_rows, self.timezone, span)
            position = self._positions.get(file_key(layout.path), -1)
            self._file.seek(_resume_line(layout.path, position))
        return self._file

    def _next_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._index += 1
        self._anchor = None  # each file's replay starts at its own first reading

    def _take(self, file: _FileReader, max_items: int, timeout: float) -> ReadingBatch | None:
        upcoming = file.next_time()
        if upcoming is None:  # the file is done, but for malformed last lines
            return file.take(max_items, math.inf)
        if self.end is not None and upcoming > self.end:  # a log need not be sorted by time:
            return self._within(file.take(max_items, math.inf, after=self.end))  # skip, read on
        if self.start is not None and upcoming < self.start:
            before = math.nextafter(self.start, -math.inf)  # a row at `start` is paced
            return self._within(file.take(max_items, before))  # skipped, never paced
        if self.speed is None:
            return self._within(file.take(max_items, math.inf))
        if self._anchor is None and not math.isnan(upcoming):
            self._anchor = (self._clock.monotonic(), upcoming)
        if upcoming > self._due():  # nothing due yet: wait for it, at most `timeout`
            self._clock.sleep(min(timeout, (upcoming - self._due()) / self.speed))
        return self._within(file.take(max_items, self._due()))

    def _within(self, batch: ReadingBatch | None) -> ReadingBatch | None:
        """Only the readings between ``start`` and ``end`` (event time)."""
        if batch is None or (self.start is None and self.end is None):
            return batch
        t = batch.timestamp
        keep = (t >= (self.start if self.start is not None else -math.inf)) & (
            t <= (self.end if self.end is not None else math.inf)
        )
        return batch if keep.all() else batch.take(keep)

    def _due(self) -> float:
        """The event time that is due now: event time runs ``speed`` times wall time."""
        if self._anchor is None or self.speed is None:
            return math.inf
        started, first = self._anchor
        return first + (self._clock.monotonic() - started) * self.speed


class ChainedSource:
    """Several sources one after another (``LOG:COLUMNS`` specs with their own columns)."""

    def __init__(self, sources: Sequence[CsvSource]) -> None:
        self.sources = list(sources)
        self._index = 0

    @property
    def files(self) -> list[Path]:
        return [path for source in self.sources for path in source.files]

    def poll(self, max_items: int, timeout: float) -> ReadingBatch | None:
        while self._index < len(self.sources):
            batch = self.sources[self._index].poll(max_items, timeout)
            if batch is not None:
                return batch
            self._index += 1
        return None

    def seek(self, positions: Mapping[str, int]) -> None:
        for source in self.sources:
            source.seek(positions)

    def commit(self) -> None:
        """Nothing to confirm: positions live in the snapshot."""

    def pause(self) -> None:
        self.close()

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self._index = len(self.sources)


def file_key(path: Path) -> str:
    """The key of a file's position in a snapshot: its resolved absolute path, so that it
    is found again whether the file is named ``a.csv``, ``./a.csv`` or ``res/a.csv``."""
    return str(path.resolve())


def file_positions(positions: Mapping[str, int]) -> dict[str, int]:
    """``positions`` (by partition: a path as typed, relative to the working directory)
    keyed by ``file_key``; of two keys naming one file, the later wins. Snapshots written
    before keys were resolved are read this way too.

    >>> file_positions({"a.csv": 3, "./a.csv": 5}) == {str(Path.cwd().resolve() / "a.csv"): 5}
    True
    """
    return {file_key(Path(key)): position for key, position in positions.items()}


def _named(paths: Sequence[str | Path] | Sequence[Named]) -> list[Named]:
    """The files to replay: ``paths`` expanded, unless already (``expand_groups``)."""
    if all(isinstance(path, Named) for path in paths):
        return [path for path in paths if isinstance(path, Named)]
    return expand([path for path in paths if not isinstance(path, Named)])


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _resume_line(path: Path, position: int) -> int:
    """``position``, or -1 (from the start) when the file now ends before that line:
    it was truncated or replaced by a new log (rotated), whose lines are all new."""
    if position <= 0:
        return position
    lines = _line_count(path)
    if lines < position:
        log.warning(
            "%s: has %d lines, but the snapshot read it up to line %d; it was truncated "
            "or replaced, so it is read from the start",
            path,
            lines,
            position,
        )
        return -1
    return position


def _line_count(path: Path) -> int:
    """Lines in the file, a last line without its newline included."""
    count, last = 0, b"\n"
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _validate(source: CsvSource) -> None:
    problem = None
    if source.format not in FORMATS:
        problem = f"format={source.format!r} is not one of {', '.join(FORMATS)}"
    elif isinstance(source.columns, str):
        problem = f"columns={source.columns!r} must be a list of column names"
    elif not isinstance(source.chunk_rows, int) or source.chunk_rows < 1:
        problem = f"chunk_rows={source.chunk_rows} must be at least 1"
    elif source.start is not None and source.end is not None and source.start > source.end:
        start, end = iso_times(np.array([source.start, source.end]))  # not epoch seconds
        problem = f"start={start} is after end={end}"
    elif source.speed is not None and not (0 < source.speed < math.inf):
        problem = f"speed={source.speed} must be a positive factor (or None: no pacing)"
    elif isinstance(source.paths, str | Path) or not source.paths:
        problem = "paths must be a non-empty list of CSV files or directories"
    elif source.timezone is not None and not known_zone(source.timezone):
        problem = f"timezone={source.timezone!r} is not an IANA zone such as 'Europe/Dublin'"
    if problem:
        raise ConfigError(problem)


def known_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class _FileReader:
    """One file being replayed: its pandas chunk reader and the parsed chunk being served."""

    def __init__(
        self, layout: Layout, chunk_rows: int, timezone: str | None, span: tuple[float, float]
    ) -> None:
        self.layout = layout
        self.partition = str(layout.path)
        self.timezone = timezone
        self.span = span  # (start, end) event time: rows outside count no missing or problems
        self._frames = _chunks(layout, chunk_rows)
        self._next_line = layout.first_line
        self._chunk: Chunk | None = None
        self._cursor = 0  # next row of the chunk to hand out
        self._skip_to = -1
        self._malformed: dict[int, str] = {}  # lines pandas skipped, not yet reported
        self._skipped: set[int] = set()  # lines pandas skipped, not yet numbered past

    def seek(self, position: int) -> None:
        self._skip_to = position
        if self._chunk is not None:
            after = int(np.searchsorted(self._chunk.seq, position, "right"))
            self._cursor = max(self._cursor, after)

    def next_time(self) -> float | None:
        """Event time of the next row (NaN if it has none); None at the end of the file."""
        chunk = self._current()
        return None if chunk is None else float(chunk.time[self._cursor])

    def take(self, max_items: int, due: float, after: float = -math.inf) -> ReadingBatch | None:
        """The next rows up to the first not yet ``due``, or (``after``) the first that is
        not after that time."""
        chunk = self._current()
        if chunk is None:
            return self._with_malformed(None, math.inf)  # None once all is said
        start, self._cursor = self._cursor, chunk.cut(self._cursor, max_items, due, after)
        batch = chunk.batch(start, self._cursor, self.partition, self.span)
        rest = chunk.seq[self._cursor] if self._cursor < len(chunk.seq) else math.inf
        return self._with_malformed(batch, rest)

    def close(self) -> None:
        self._frames.close()  # leaves the `with` in _chunks: the file is closed
        self._chunk = None

    def _current(self) -> Chunk | None:
        """The chunk with rows left to serve, reading on as needed; None at the end."""
        while self._chunk is None or self._cursor >= len(self._chunk.seq):
            read = next(self._frames, None)
            if read is None:
                self._chunk = None
                return None
            frame, malformed = read
            self._malformed.update((n, why) for n, why in malformed.items() if n > self._skip_to)
            self._skipped |= malformed.keys()  # pandas may warn of lines it read ahead
            seq = _line_numbers(self._next_line, len(frame), self._skipped)
            self._next_line = int(seq[-1]) + 1 if len(seq) else self._next_line
            self._skipped = {n for n in self._skipped if n >= self._next_line}
            if not len(seq) or seq[-1] <= self._skip_to:
                continue  # wholly before the seek position: not even parsed
            self._chunk = parse_chunk(self.layout, frame, seq, self.timezone)
            self._cursor = int(np.searchsorted(self._chunk.seq, self._skip_to, "right"))
        return self._chunk

    def _with_malformed(self, batch: ReadingBatch | None, before: float) -> ReadingBatch | None:
        """``batch`` (None: an empty one) carrying the malformed lines before line
        ``before``, folded into one rejection at the first of them."""
        lines = sorted(n for n in self._malformed if n < before)
        if not lines:
            return batch
        first = lines[0]
        detail = f"{self.layout.path}: line {first}: {self._malformed[first]}; the row is skipped"
        rejection = Rejection(Reason.DECODE_ERROR, detail, self.partition, first, None, len(lines))
        for line in lines:
            del self._malformed[line]
        if batch is None:
            return ReadingBatch.empty(self.partition, [rejection])
        return dataclasses.replace(batch, rejections=(rejection, *batch.rejections))


def _line_numbers(first: int, rows: int, malformed: set[int]) -> np.ndarray:
    """Line numbers of ``rows`` rows read from line ``first`` on, past the malformed
    lines pandas skipped among them."""
    skipped = np.asarray(sorted(line for line in malformed if line >= first), np.int64)
    lines = np.arange(first, first + rows + len(skipped), dtype=np.int64)
    if not len(skipped):  # the usual case: no sort
        return lines
    return np.setdiff1d(lines, skipped, assume_unique=True)[:rows]


def _chunks(
    layout: Layout, chunk_rows: int
) -> Generator[tuple[pd.DataFrame, dict[int, str]], None, None]:
    """The file's rows in chunks, each with the malformed lines (more fields than the
    header) pandas skipped while reading it, by line number; pandas' and the codec's
    errors translated. A small plain file is read whole by Arrow instead
    (``connectors.csv_whole``): the same rows, no malformed lines."""
    whole = whole_frame(layout)
    if whole is not None:
        for start in range(0, len(whole), chunk_rows):
            yield whole.iloc[start : start + chunk_rows], {}
        return
    options = {**layout.read_options(), "on_bad_lines": "warn"}
    head = dict(layout.head_malformed)  # a first row the layout skipped, reported here
    try:
        with pd.read_csv(layout.path, chunksize=chunk_rows, **options) as reader:
            while True:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    frame = next(reader, None)
                malformed = {**head, **_skipped_lines(caught)}
                head = {}
                if frame is None:
                    if malformed:  # the last lines were malformed
                        yield pd.DataFrame(columns=list(layout.names)), malformed
                    return
                yield frame, malformed
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise read_error(layout.path, exc) from exc


_SKIPPED = re.compile(r"Skipping line (\d+): (.+)")


def _skipped_lines(caught: Sequence[warnings.WarningMessage]) -> dict[int, str]:
    """{line: what was wrong} from pandas' bad-line warnings; other warnings go on."""
    lines: dict[int, str] = {}
    for warning in caught:
        found = _SKIPPED.findall(str(warning.message))
        if not found:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
        lines.update((int(line), why.strip()) for line, why in found)
    return lines


@dataclass(slots=True)
class Chunk:
    """One parsed block of rows; batches are cut from it at row boundaries.

    Readings are in row-major order (row, then value column); problems are in row
    order. ``field`` is a value column's index, or TIME / KEY.
    """

    layout: Layout
    timezone: str | None
    frame: pd.DataFrame  # the raw rows, for the text of rejection details
    seq: np.ndarray  # (R,) int64 line number of each row
    time: np.ndarray  # (R,) float64 event time, NaN where unreadable
    key_code: np.ndarray  # (R,) int64 index into the row keys, -1 for none
    streams: list[str]  # stream name of each code: key * C + value column
    row: np.ndarray  # (n,) int64 row of each reading, ascending
    code: np.ndarray  # (n,) int64 stream code of each reading
    timestamp: np.ndarray  # (n,) float64
    value: np.ndarray  # (n,) float64
    missing_row: np.ndarray  # (m,) int64 row of each missing cell, ascending
    problem_row: np.ndarray  # (p,) int64, ascending
    problem_reason: np.ndarray  # (p,) int64 Reason
    problem_field: np.ndarray  # (p,) int64

    def cut(
        self, start: int, max_items: int, due: float = math.inf, after: float = -math.inf
    ) -> int:
        """End of the next batch: whole rows, at most ``max_items`` readings (at least one
        row), and only rows whose event time is due; with ``after``, only rows whose event
        time is after it (the rows beyond ``--end``, skipped in one go)."""
        first = int(np.searchsorted(self.row, start))
        if first + max_items >= len(self.row):
            stop = len(self.seq)
        else:
            stop = max(int(self.row[first + max_items]), start + 1)
        time = self.time[start:stop]
        stops = time > due  # NaN times never wait
        if after > -math.inf:
            stops |= ~(time > after)  # a NaN time is not skipped: it is reported
        late = np.flatnonzero(stops)
        return start + int(late[0]) if len(late) else stop

    def batch(
        self, start: int, stop: int, partition: str, span: tuple[float, float] = ALL_TIME
    ) -> ReadingBatch:
        """Rows [start, stop) as a batch; missing cells and problems of rows whose time is
        outside ``span`` are left out, as their readings are (by the source)."""
        lo, hi = np.searchsorted(self.row, [start, stop])
        index, codes = pd.factorize(self.code[lo:hi])
        missing = np.searchsorted(self.missing_row, [start, stop])
        return ReadingBatch(
            streams=tuple(map(self.streams.__getitem__, codes.tolist())),
            stream_index=index.astype(np.int32),
            timestamp=self.timestamp[lo:hi].copy(),
            value=self.value[lo:hi].copy(),
            seq=self.seq[self.row[lo:hi]],
            partition=partition,
            rejections=self._rejections(start, stop, partition, span),
            missing=int(np.count_nonzero(self._in_span(self.missing_row[slice(*missing)], span))),
        )

    def _in_span(self, rows: np.ndarray, span: tuple[float, float]) -> np.ndarray:
        """(len(rows),) bool: the row's time is in ``span``, or unreadable (NaN: a bad
        timestamp is reported wherever it is)."""
        time = self.time[rows]
        return ~((time < span[0]) | (time > span[1]))

    def _rejections(
        self, start: int, stop: int, partition: str, span: tuple[float, float]
    ) -> tuple[Rejection, ...]:
        """One rejection per (reason, column) among rows [start, stop) in ``span``, at its
        first line."""
        lo, hi = np.searchsorted(self.problem_row, [start, stop])
        kept = lo + np.flatnonzero(self._in_span(self.problem_row[lo:hi], span))
        if not len(kept):
            return ()
        pairs = np.stack([self.problem_reason[kept], self.problem_field[kept]], axis=1)
        _, first, counts = np.unique(pairs, axis=0, return_index=True, return_counts=True)
        order = np.argsort(first)
        return tuple(self._rejection(int(kept[first[i]]), int(counts[i]), partition) for i in order)

    def _rejection(self, i: int, count: int, partition: str) -> Rejection:
        row, field = int(self.problem_row[i]), int(self.problem_field[i])
        reason = Reason(int(self.problem_reason[i]))
        where = f"{self.layout.path}: line {self.seq[row]}"
        stream = None
        if reason is Reason.BAD_TIMESTAMP:
            detail = f"{where}, {time_problem(self.layout, self.frame, row, self.timezone)}"
        elif reason is Reason.BAD_STREAM:
            detail = f"{where}, {stream_problem(self.layout, self.frame, row)}"
        else:
            column = self.layout.values[field]
            text = cell_text(self.frame, column, row)
            detail = f"{where}, column {column!r}: cannot read {text!r} as a number"
            stream = self._stream_of(row, field)
        return Rejection(reason, detail, partition, int(self.seq[row]), stream, count)

    def _stream_of(self, row: int, field: int) -> str:
        key = int(self.key_code[row])
        return self.streams[key * len(self.layout.values) + field]


def parse_chunk(
    layout: Layout, frame: pd.DataFrame, seq: np.ndarray, timezone: str | None
) -> Chunk:
    """Turn raw rows (``seq``: the line number of each) into readings, missing cells and
    problems, all column-wise."""
    # empty lines: neither readings nor problems
    blank = np.asarray(frame.isna().to_numpy().all(axis=1))
    time = timestamps.parse(frame, layout.time, timezone)
    key_code, keys = _keys(layout, frame)
    streams = layout.stream_names(keys)
    key_ok = np.append(_valid_keys(streams, len(keys)), False)[key_code]  # -1: no key
    values, bad = _values(layout, frame)  # (R, C)
    absent = np.isnan(values)
    if layout.sentinels:
        absent |= values == np.asarray(layout.sentinels)
    live = ~blank & ~np.isnan(time) & key_ok  # rows whose cells are readings or missing
    rows, columns = np.nonzero(live[:, None] & ~absent)
    problems = _problems(blank, time, key_ok, live[:, None] & bad)
    return Chunk(
        layout,
        timezone,
        frame,
        seq,
        time,
        key_code,
        streams,
        row=rows.astype(np.int64),
        code=key_code[rows] * len(layout.values) + columns,
        timestamp=time[rows],
        value=values[rows, columns],
        missing_row=np.nonzero(live[:, None] & absent & ~bad)[0].astype(np.int64),
        problem_row=problems[0],
        problem_reason=problems[1],
        problem_field=problems[2],
    )


def _keys(layout: Layout, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Each row's key (long: its stream; wide: its station) as a code into the key list."""
    if layout.key is None:
        return np.zeros(len(frame), np.int64), [""]
    column = frame[layout.key]
    if isinstance(column.dtype, pd.CategoricalDtype):  # as read: the codes are there
        codes, uniques = column.cat.codes.to_numpy(), column.cat.categories
    else:
        codes, uniques = pd.factorize(column)  # empty cells get -1
    # strip the few distinct keys rather than every cell; " a" and "a" become one key
    stripped = pd.Series(uniques, dtype="str").str.strip()
    merged, keys = pd.factorize(stripped.mask(stripped == ""))
    mapped = np.append(merged, -1)[codes]  # code -1 picks the appended -1
    return mapped.astype(np.int64), keys.tolist()  # str, as the column was read as text


def _valid_keys(streams: Sequence[str], keys: int) -> np.ndarray:
    """(K,) bool: whether every stream name of key k is a valid stream key."""
    width = len(streams) // max(keys, 1)
    if all_stream_keys_valid(streams):
        return np.ones(keys, dtype=bool)
    bad = {i // width for i, name in enumerate(streams) if stream_key_problem(name)}
    return np.array([k not in bad for k in range(keys)], dtype=bool)


def _values(layout: Layout, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(R, C) float64 values, NaN when empty or unreadable, and (R, C) bool unreadable."""
    pairs = [_numbers(frame[column]) for column in layout.values]
    return np.column_stack([v for v, _ in pairs]), np.column_stack([b for _, b in pairs])


def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(np.float64, na_value=np.nan), np.zeros(len(column), bool)
    numbers = timestamps.numbers(column).to_numpy(np.float64, na_value=np.nan)
    text = column.astype("str").str.strip()
    written = (text.notna() & (text != "")).to_numpy(bool)
    return numbers, np.isnan(numbers) & written


def _problems(
    blank: np.ndarray, time: np.ndarray, key_ok: np.ndarray, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with no time, rows with no valid stream, unreadable value cells: in row order."""
    no_time = np.flatnonzero(~blank & np.isnan(time))
    no_key = np.flatnonzero(~blank & ~np.isnan(time) & ~key_ok)
    bad_rows, bad_columns = np.nonzero(bad)
    rows = np.concatenate([no_time, no_key, bad_rows]).astype(np.int64)
    reasons = np.repeat(
        [Reason.BAD_TIMESTAMP, Reason.BAD_STREAM, Reason.BAD_VALUE],
        [len(no_time), len(no_key), len(bad_rows)],
    ).astype(np.int64)
    fields = np.concatenate([np.full(len(no_time), TIME), np.full(len(no_key), KEY), bad_columns])
    order = np.argsort(rows, kind="stable")
    return rows[order], reasons[order], fields[order].astype(np.int64)
