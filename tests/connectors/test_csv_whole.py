"""Arrow's whole-file read against pandas' chunked one: where a file is plain enough
for Arrow, the source gives the same readings, line numbers and rejections either
way; anything else is left to pandas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_engine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connectors import csv_source, csv_whole
from connectors.csv_formats import inspect
from connectors.csv_source import CsvSource
from pipeline.errors import InputFileError
from pipeline.types import ReadingBatch

BUNDLED_NAB = Path(__file__).parents[2] / "data/nab/realKnownCause"
NAB_FILE = BUNDLED_NAB / "machine_temperature_system_failure.csv"


def everything(source: CsvSource, max_items: int = 1_000, signed_zeros: bool = True) -> list[tuple]:
    """Every batch's readings, line numbers, rejections and missing count."""
    out = []
    while (batch := source.poll(max_items, 0.0)) is not None:
        out.append(flat(batch, signed_zeros))
    source.close()
    return out


def flat(batch: ReadingBatch, signed_zeros: bool = True) -> tuple:
    """A batch as plain values; ``signed_zeros=False`` takes -0.0 as 0.0, as the engine
    does (parsers differ on the sign: see the test of a zero written with a minus)."""
    names = tuple(batch.streams[i] for i in batch.stream_index)
    value = batch.value if signed_zeros else batch.value + 0.0
    values = value.view(np.int64).tolist()  # bit for bit: -0.0 is not 0.0
    times = batch.timestamp.tolist()
    return names, times, values, batch.seq.tolist(), batch.rejections, batch.missing


def both_ways(
    monkeypatch: pytest.MonkeyPatch, path: Path, signed_zeros: bool = True, **options: object
) -> list[tuple]:
    """The source's output read by Arrow, asserted equal to pandas' (which it returns)."""
    assert whole(path, **options) is not None, "the file should be read by Arrow"
    by_arrow = everything(CsvSource([path], **options), signed_zeros=signed_zeros)  # type: ignore[arg-type]
    with monkeypatch.context() as patched:
        patched.setattr(csv_source, "whole_frame", lambda layout: None)
        by_pandas = everything(CsvSource([path], **options), signed_zeros=signed_zeros)  # type: ignore[arg-type]
    assert by_arrow == by_pandas
    return by_pandas


def whole(path: Path, **options: object) -> object:
    fmt = str(options.get("format", "auto"))
    return csv_whole.whole_frame(inspect(path, format=fmt))


def write(folder: Path, text: str | bytes, name: str = "log.csv") -> Path:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_the_bundled_nab_file_reads_the_same(monkeypatch):
    out = both_ways(monkeypatch, NAB_FILE)
    assert sum(len(batch[0]) for batch in out) == 22_695


@pytest.mark.parametrize("chunk_rows", [1, 7, 65_536])
def test_chunks_and_a_seek_read_the_same(monkeypatch, tmp_path, chunk_rows):
    rows = "".join(f"2020-01-01T00:{m:02d}:00Z,{m * 0.1!r}\n" for m in range(60))
    path = write(tmp_path, "timestamp,value\n" + rows)
    both_ways(monkeypatch, path, chunk_rows=chunk_rows)
    with_seek = []
    for reader in (lambda layout: csv_whole.whole_frame(layout), lambda layout: None):
        monkeypatch.setattr(csv_source, "whole_frame", reader)
        source = CsvSource([path], chunk_rows=chunk_rows)
        source.seek({str(path): 20})
        with_seek.append(everything(source, 11))
    assert with_seek[0] == with_seek[1]
    assert with_seek[0][0][3][0] == 21  # the first line after the one sought


TEXTS = {
    "iso with fractions and offsets": "time,value\n2020-01-01T00:00:00.5Z,1.5\n"
    "2020-01-01T01:00:00+01:00,-0.0\n2020-01-01T00:00:01.25+00:00,1e-300\n",
    "epoch seconds, integers": "ts,value\n1577836800,1\n1577836830,-7\n"
    "1577836860,12345678901234567\n",
    "epoch milliseconds": "ts,value\n1577836800000,2.5\n1577836830000,3.5\n",
    "crlf": "timestamp,value\r\n2020-01-01T00:00:00Z,1\r\n2020-01-01T00:01:00Z,2\r\n",
    "no final newline": "timestamp,value\n2020-01-01T00:00:00Z,1\n2020-01-01T00:01:00Z,2",
    "wide without a key": "time,TEMP,PRES,DEWP\n2020-01-01 00:00,1.5,1013.25,-3\n"
    "2020-01-01 01:00,1.25,1013.5,-3.5\n",
    "semicolons": "time;TEMP;PRES\n2020-01-01 00:00;1.5;1013.25\n2020-01-01 01:00;1.25;1013.5\n",
    # a long log's times are text to pandas too, never categories it would respell
    "long, epoch times with fractions": "ts,stream,value\n1600000000.5,a,1\n1600000060,a,2\n",
    "long, epoch times with a leading zero": "ts,stream,value\n01600000000,a,1\n1600000060,a,2\n",
    "a bad and a repeated time": "timestamp,value\n2020-01-01T00:00:00Z,1\nnot a time,2\n"
    "2020-01-01T00:00:00Z,3\n2020-13-01T00:00:00Z,4\n",
    "spaced and signed values": "timestamp,value\n2020-01-01T00:00:00Z, 1.5\n"
    "2020-01-01T00:01:00Z,+2.5\t\n2020-01-01T00:02:00Z,.5\n2020-01-01T00:03:00Z,1.\n",
    "long, iso times": "timestamp,stream,value\n2020-01-01T00:00:00Z,a/x,1\n"
    "2020-01-01T00:00:00Z,b/x,2\n2020-01-01T00:01:00Z,a/x,3\n2020-01-01T00:01:00Z,b/x,4\n",
    "long, epoch times": "ts,sensor,value\n1600000000,a,1\n1600000000,b,2\n1600000060,a,3\n",
    "long, keys like numbers": "timestamp,stream,value\n2020-01-01T00:00:00Z,007,1\n"
    "2020-01-01T00:00:00Z,7,2\n2020-01-01T00:00:00Z,1e3,3\n",
    "long, padded and bad keys": "timestamp,stream,value\n2020-01-01T00:00:00Z, a/b ,1\n"
    "2020-01-01T00:00:00Z,a/b,2\n2020-01-01T00:00:00Z,a//b,3\n2020-13-01T00:00:00Z,c,4\n",
    "wide with a station": "time,station,TEMP,PRES\n2020-01-01 00:00,044005,1.5,1013\n"
    "2020-01-01 00:00,44005,2.5,1014\n2020-01-01 01:00,044005,1.25,1012\n",
    "long decimals": "timestamp,value\n2020-01-01T00:00:00Z,74.93588199999998\n"
    "2020-01-01T00:05:00Z,0.30000000000000004\n2020-01-01T00:10:00Z,1.7976931348623157e308\n",
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_plain_files_read_the_same(monkeypatch, tmp_path, name):
    out = both_ways(monkeypatch, write(tmp_path, TEXTS[name]))
    assert out and sum(len(batch[0]) for batch in out) >= 2


def test_naive_times_in_a_zone_read_the_same(monkeypatch, tmp_path):
    path = write(tmp_path, "timestamp,value\n2021-03-28 01:30:00,1\n2021-03-28 02:30:00,2\n")
    out = both_ways(monkeypatch, path, timezone="Europe/Berlin")
    (rejection,) = [r for batch in out for r in batch[4]]  # 02:30 does not exist that day
    assert "Europe/Berlin" in rejection.detail


FALLBACKS = {
    "a quote": 'timestamp,value\n"2020-01-01T00:00:00Z",1\n',
    "a blank line": "timestamp,value\n2020-01-01T00:00:00Z,1\n\n2020-01-01T00:01:00Z,2\n",
    "a blank last line": "timestamp,value\n2020-01-01T00:00:00Z,1\n\n",
    "lone carriage returns": "timestamp,value\r2020-01-01T00:00:00Z,1\r",
    "a byte-order mark": "\ufefftimestamp,value\n2020-01-01T00:00:00Z,1\n",
    "an empty value": "timestamp,value\n2020-01-01T00:00:00Z,\n2020-01-01T00:01:00Z,2\n",
    "a nan value": "timestamp,value\n2020-01-01T00:00:00Z,nan\n",
    "an inf value": "timestamp,value\n2020-01-01T00:00:00Z,inf\n",
    "a text value": "timestamp,value\n2020-01-01T00:00:00Z,1\n2020-01-01T00:01:00Z,abc\n",
    "a time pandas reads as missing": "timestamp,value\nNA,1\n2020-01-01T00:00:00Z,2\n",
    "an empty time": "timestamp,value\n,1\n2020-01-01T00:00:00Z,2\n",
    "an extra field": "timestamp,value\n2020-01-01T00:00:00Z,1,9\n2020-01-01T00:01:00Z,2\n",
    "a missing field": "timestamp,value\n2020-01-01T00:00:00Z\n2020-01-01T00:01:00Z,2\n",
    "an empty key": "timestamp,stream,value\n2020-01-01T00:00:00Z,,1\n2020-01-01T00:00:00Z,a,2\n",
    "a key pandas reads as missing": "timestamp,stream,value\n2020-01-01T00:00:00Z,NA,1\n",
    "an index column": "No,time,TEMP\n1,2020-01-01 00:00,1.5\n2,2020-01-01 01:00,1.25\n",
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_anything_else_is_left_to_pandas(tmp_path, name):
    assert whole(write(tmp_path, FALLBACKS[name])) is None


def test_text_that_is_not_utf8_is_left_to_pandas(tmp_path):
    rows = "".join(f"2020-01-01T00:00:{s % 60:02d}Z,{s}\n" for s in range(2_000))
    text = "timestamp,value\n" + rows + "2020-01-02T00:00:00Z\xe9,1\n"  # past the head
    path = write(tmp_path, text.encode("latin-1"))
    assert whole(path) is None


def test_a_file_past_the_size_limit_is_left_to_pandas(monkeypatch, tmp_path):
    path = write(tmp_path, TEXTS["crlf"])
    assert whole(path) is not None
    monkeypatch.setattr(csv_whole, "WHOLE_BYTES", path.stat().st_size - 1)
    assert whole(path) is None


def decimal_text(x: float, style: int) -> str:
    return (repr(x), f"{x:.3f}", f"{x:.17g}", f"{x:e}")[style]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from(["a/x", "7", "007", " b ", "c//d"]),
                  st.floats(-1e6, 1e6)),
        min_size=1, max_size=60,
    ),
    st.booleans(),
)  # fmt: skip
def test_any_plain_long_file_reads_the_same(tmp_path_factory, rows, iso):
    folder = tmp_path_factory.mktemp("long")
    start = np.datetime64("2020-01-01T00:00:00")
    lines = [
        f"{start + np.timedelta64(60 * m, 's') if iso else 1_577_836_800 + 60 * m},{key},{v!r}\n"
        for m, key, v in rows
    ]
    path = write(folder, "timestamp,stream,value\n" + "".join(lines))
    with pytest.MonkeyPatch.context() as monkeypatch:
        both_ways(monkeypatch, path, chunk_rows=16)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=40),
    st.integers(0, 3),
)
def test_any_plain_nab_file_reads_the_same(tmp_path_factory, values, seconds, style):
    folder = tmp_path_factory.mktemp("plain")
    times = np.datetime_as_string(
        np.datetime64("2020-01-01T00:00:00") + np.array(seconds, "timedelta64[s]")
    )
    rows = [f"{t},{decimal_text(v, style)}\n" for t, v in zip(times, values, strict=False)]
    path = write(folder, "timestamp,value\n" + "".join(rows))
    with pytest.MonkeyPatch.context() as monkeypatch:
        both_ways(monkeypatch, path, chunk_rows=16)


def test_a_zero_written_with_a_minus_replays_alike_however_it_is_read(monkeypatch, tmp_path):
    """pandas reads "-0" as 0 in a chunk of integers and as -0.0 beside a decimal, Arrow
    always as -0.0: the engine takes every zero as 0.0, so the replay is the same."""
    rows = ["2020-01-01T00:00:00Z,-0", "2020-01-01T00:01:00Z,1.5", "2020-01-01T00:02:00Z,-0.0"]
    path = write(tmp_path, "timestamp,value\n" + "\n".join(rows) + "\n")
    replays = []
    for reader in (csv_whole.whole_frame, lambda layout: None):
        for chunk_rows in (1, 65_536):
            monkeypatch.setattr(csv_source, "whole_frame", reader)
            source, engine, out = CsvSource([path], chunk_rows=chunk_rows), make_engine(), []
            while (batch := source.poll(1_000, 0.0)) is not None:
                verdicts = engine.process(batch)
                out.append(np.stack([verdicts.value, verdicts.min, verdicts.max]))  # (3, n)
            replays.append(np.hstack(out).view(np.int64).tolist())  # bit for bit
    assert all(replay == replays[0] for replay in replays)
    read = np.array(replays[0], np.int64).view(np.float64).ravel()
    assert sorted(set(read.tolist())) == [0.0, 1.5] and not np.signbit(read).any()


ODD_TIMES = [
    "2020-01-01T00:00:00Z", "2020-01-01 00:00:00", "2020-01-01T00:00", "2020-01-01",
    "2020-01-01T00:00:00.123456789Z", "2020-01-01T00:00:00+05:30", "2020-1-1 00:00:00",
    "20200101", "1600000000", "1600000000.0", "1600000000000", " 2020-01-01T00:00:00Z",
    "2020-01-01T24:00:00Z", "2020-02-30T00:00:00Z", "0001-01-01T00:00:00Z",
    "2020-01-01T00:00:00z", "2020-06-01T12:00:00+1400", "2020-W01", "-1", "1e9",
]  # fmt: skip
ODD_VALUES = [
    "1", "-0", "+1.5", "1E5", ".5", "5.", " 3 ", "1e400", "-1e400", "4.9e-324", "1e-400",
    "00012", "-.5e-3", "1.7976931348623157e308", "123456789012345678901234567890", "3\t",
]  # fmt: skip
ODD_KEYS = ["a/x", "é/ü", "a b/c", "7", "007", "a/x ", "1e3", "True"]


ODD_HEADERS = {"nab": "timestamp,value", "long": "timestamp,stream,value",
               "wide": "time,TEMP,PRES", "station": "time,station,TEMP,PRES"}  # fmt: skip
# the fields of a (time, key, value, value) row each layout writes
ODD_FIELDS = {"nab": (0, 2), "long": (0, 1, 2), "wide": (0, 2, 3), "station": (0, 1, 2, 3)}


def odd_log(kind: str, rows: list[tuple[str, ...]], sep: str = ",", end: str = "\n") -> str:
    """A log of ``kind`` from (time, key, value, value) rows, each layout's fields."""
    lines = [ODD_HEADERS[kind].replace(",", sep)]
    lines += [sep.join(row[i] for i in ODD_FIELDS[kind]) for row in rows]
    return end.join(lines) + end


def odd_rows(max_size: int) -> st.SearchStrategy[list[tuple[str, ...]]]:
    """1 to ``max_size`` (time, key, value, value) rows of odd but plain cells."""
    row = st.tuples(st.sampled_from(ODD_TIMES), st.sampled_from(ODD_KEYS),
                    st.sampled_from(ODD_VALUES), st.sampled_from(ODD_VALUES))  # fmt: skip
    return st.lists(row, min_size=1, max_size=max_size)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.sampled_from(["nab", "long", "wide", "station"]),
    odd_rows(30),
    st.sampled_from([",", "\t", ";"]),
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from([1, 5, 65_536]),
)  # fmt: skip
def test_odd_cells_read_alike_by_arrow_and_pandas(tmp_path_factory, kind, rows, sep, end, chunk):
    """Logs of odd but plain cells: wherever Arrow reads one whole, its readings (zeros
    taken as 0.0, as the engine takes them), lines and rejections are pandas'."""
    path = write(tmp_path_factory.mktemp("odd"), odd_log(kind, rows, sep, end))
    try:
        readable = whole(path) is not None
    except InputFileError:
        readable = False  # no usable time column at all: an error either way
    assume(readable)
    with pytest.MonkeyPatch.context() as monkeypatch:
        both_ways(monkeypatch, path, signed_zeros=False, chunk_rows=chunk)


def joined(batches: list[tuple]) -> tuple:
    """``everything``'s batches as one, so that reads cut into chunks differently compare:
    rejections of one reason in one batch are folded into one (counted), so they are
    compared by reason: how many, and the first line of each."""
    columns = tuple([cell for batch in batches for cell in batch[field]] for field in range(4))
    by_reason: dict[object, list[int]] = {}
    for rejection in (r for batch in batches for r in batch[4]):
        count_and_first = by_reason.setdefault(rejection.reason, [0, rejection.seq])
        count_and_first[0] += rejection.count
    return (*columns, by_reason, sum(batch[5] for batch in batches))


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(["nab", "long", "wide", "station"]), odd_rows(40))
def test_odd_cells_read_alike_in_chunks_of_any_size(tmp_path_factory, kind, rows):
    """pandas' chunks decide what a cell shares its column with (a time with nine
    decimals gives a column nanoseconds, and a far year in it was then no time): a
    reading must not depend on them (nor, in a long log, on whether all of a chunk's
    times look like numbers). Zeros taken as 0.0, as the engine takes them."""
    path = write(tmp_path_factory.mktemp("odd"), odd_log(kind, rows))
    try:
        inspect(path)
    except InputFileError:
        assume(False)  # no usable time column at all: an error either way
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(csv_source, "whole_frame", lambda layout: None)
        reads = [
            joined(everything(CsvSource([path], chunk_rows=chunk), signed_zeros=False))
            for chunk in (1, 3, 65_536)
        ]
    assert reads[0] == reads[1] == reads[2]
