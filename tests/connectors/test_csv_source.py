"""CsvSource: formats, time styles, positions, bad input, pacing, and the bundled real logs."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors.csv_source import CsvSource
from pipeline.errors import ConfigError, InputFileError
from pipeline.protocols import Source
from pipeline.testing import FakeClock
from pipeline.types import ReadingBatch, Reason, Rejection

SHARED_DATA = Path("/work/shared/data")
T0 = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def shared(relative: str) -> Path:
    """A file of the shared real-data folder; the test is skipped when it is not there."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared data file {path} is not present on this machine")
    return path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@dataclass
class Replay:
    """Everything a source produced, flattened: one tuple per reading."""

    rows: list[tuple[str, float, float, int]] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    missing: int = 0
    sizes: list[int] = field(default_factory=list)

    def add(self, batch: ReadingBatch) -> None:
        names = [batch.streams[i] for i in batch.stream_index]
        columns = (batch.timestamp.tolist(), batch.value.tolist(), batch.seq.tolist())
        self.rows += zip(names, *columns, strict=True)
        self.partitions += [batch.partition] * len(batch)
        self.rejections += batch.rejections
        self.missing += batch.missing
        self.sizes.append(len(batch))

    @property
    def streams(self) -> set[str]:
        return {row[0] for row in self.rows}

    def of(self, stream: str) -> list[tuple[str, float, float, int]]:
        return [row for row in self.rows if row[0] == stream]

    def rejected(self, reason: Reason) -> int:
        return sum(r.count for r in self.rejections if r.reason is reason)


def drain(source: CsvSource, max_items: int = 10_000) -> Replay:
    replay = Replay()
    while (batch := source.poll(max_items, 0.0)) is not None:
        replay.add(batch)
    return replay


def replay(*paths: Path, **options: object) -> Replay:
    return drain(CsvSource(list(paths), **options))  # type: ignore[arg-type]


# -- formats -------------------------------------------------------------------------


def test_is_a_source(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "timestamp,value\n2020-01-01T00:00:00Z,1\n")
    assert isinstance(CsvSource([path]), Source)


def test_nab_file_is_one_stream_named_after_the_file(tmp_path: Path) -> None:
    text = "timestamp,value\n2020-01-01 00:00:00,1.5\n2020-01-01 00:05:00,2.5\n"
    path = write(tmp_path, "machine.csv", text)
    out = replay(path)
    assert out.rows == [("machine", T0, 1.5, 2), ("machine", T0 + 300, 2.5, 3)]
    assert out.partitions == [str(path)] * 2


def test_directory_expands_recursively_sorted_and_names_nab_streams_by_relative_path(
    tmp_path: Path,
) -> None:
    text = "timestamp,value\n2020-01-01T00:00:00Z,1\n"
    write(tmp_path, "data/realKnownCause/b.csv", text)
    write(tmp_path, "data/a.csv", text)
    write(tmp_path, "data/notes.txt", "not a log")
    source = CsvSource([tmp_path / "data"])
    assert source.files == [tmp_path / "data/a.csv", tmp_path / "data/realKnownCause/b.csv"]
    out = drain(source)
    assert [row[0] for row in out.rows] == ["a", "realKnownCause/b"]
    assert out.partitions == [str(p) for p in source.files]


def test_files_sharing_a_name_get_distinct_streams(tmp_path: Path) -> None:
    nab = "timestamp,value\n2020-01-01T00:00:00Z,1\n"
    wide = "time,TEMP\n2020-01-01T00:00:00Z,1\n"
    paths = [
        write(tmp_path, "site/a/x.csv", nab),
        write(tmp_path, "site/b/x.csv", nab),
        write(tmp_path, "c/w.csv", wide),
        write(tmp_path, "d/w.csv", wide),
        write(tmp_path, "e/y.csv", nab),
    ]
    assert replay(*paths).streams == {"a/x", "b/x", "c/w/TEMP", "d/w/TEMP", "y"}


def test_a_log_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "data/x.csv", "timestamp,value\n2020-01-01T00:00:00Z,1\n")
    with pytest.raises(InputFileError, match="x.csv: the same log is given twice"):
        CsvSource([path, tmp_path / "data"])


@pytest.mark.parametrize("column", ["stream", "key", "sensor", "series"])
def test_long_format_takes_the_stream_from_a_column(tmp_path: Path, column: str) -> None:
    text = (
        f"ts,{column},value\n"
        "2020-01-01T00:00:00Z,site/a/temp,20\n"
        "2020-01-01T00:00:00Z,site/b/temp,21\n"
        "2020-01-01T00:01:00Z,site/a/temp,22\n"
    )
    out = replay(write(tmp_path, "long.csv", text))
    assert out.rows == [
        ("site/a/temp", T0, 20.0, 2),
        ("site/b/temp", T0, 21.0, 3),
        ("site/a/temp", T0 + 60, 22.0, 4),
    ]


@pytest.mark.parametrize("keys", [["007", "7", "1e3"], ["true", "True"]])
def test_keys_that_read_as_numbers_stay_as_written(tmp_path: Path, keys: list[str]) -> None:
    # pandas reads a column of categories that all look like numbers (or booleans) as such
    rows = [f"2020-01-01T00:00:00Z,{key},{i}\n" for i, key in enumerate(keys)]
    out = replay(write(tmp_path, "long.csv", "timestamp,stream,value\n" + "".join(rows)))
    assert [row[0] for row in out.rows] == keys
    rows = [f"2020-01-01 00:00,{key},{i}\n" for i, key in enumerate(keys)]
    out = replay(write(tmp_path, "wide.csv", "time,station,TEMP\n" + "".join(rows)))
    assert [row[0] for row in out.rows] == [f"{key}/TEMP" for key in keys]


def test_long_format_rejects_empty_and_malformed_stream_names(tmp_path: Path) -> None:
    text = (
        "timestamp,stream,value\n"
        "2020-01-01T00:00:00Z,a/b,1\n"
        "2020-01-01T00:00:00Z,,2\n"
        "2020-01-01T00:00:00Z,a//b,3\n"
        "2020-01-01T00:00:00Z,a//b,4\n"
        "2020-01-01T00:00:00Z,  ,4\n"
        "2020-01-01T00:01:00Z,a/b,5\n"
    )
    path = write(tmp_path, "long.csv", text)
    out = replay(path)
    assert [row[2] for row in out.rows] == [1.0, 5.0]
    assert out.rejected(Reason.BAD_STREAM) == 4
    first = out.rejections[0]
    assert (first.reason, first.seq, first.count) == (Reason.BAD_STREAM, 3, 4)
    assert f"{path}: line 3, column 'stream'" in first.detail
    assert "no stream name" in first.detail


def test_long_format_names_the_malformed_key(tmp_path: Path) -> None:
    text = "timestamp,stream,value\n2020-01-01T00:00:00Z,a//b,3\n"
    out = replay(write(tmp_path, "long.csv", text))
    assert out.rows == []
    assert "'a//b' has an empty level" in out.rejections[0].detail


def test_wide_format_with_station_column(tmp_path: Path) -> None:
    text = (
        "time,station_id,WaveHeight,WindSpeed\n"
        "2020-01-01T00:00:00Z,M4,4.3,7.2\n"
        "2020-01-01T00:00:00Z,M5,4.4,\n"
    )
    out = replay(write(tmp_path, "buoys.csv", text))
    assert out.rows == [
        ("M4/WaveHeight", T0, 4.3, 2),
        ("M4/WindSpeed", T0, 7.2, 2),
        ("M5/WaveHeight", T0, 4.4, 3),
    ]
    assert out.missing == 1


def test_wide_format_skips_index_and_text_columns_by_default(tmp_path: Path) -> None:
    text = (
        "No,id,Unnamed: 0,timestamp,TEMP,wd,RAIN\n"
        "1,7,0,2020-01-01T00:00:00Z,-2.5,NE,0\n"
        "2,8,1,2020-01-01T01:00:00Z,-3.0,E,0.5\n"
    )
    out = replay(write(tmp_path, "station.csv", text))
    assert out.streams == {"station/TEMP", "station/RAIN"}
    assert out.of("station/RAIN") == [
        ("station/RAIN", T0, 0.0, 2),
        ("station/RAIN", T0 + 3600, 0.5, 3),
    ]


def test_wide_format_skips_a_leading_unnamed_index(tmp_path: Path) -> None:
    text = ",timestamp,TEMP\n0,2020-01-01T00:00:00Z,1\n1,2020-01-01T01:00:00Z,2\n"
    out = replay(write(tmp_path, "saved_by_pandas.csv", text))
    assert out.streams == {"saved_by_pandas/TEMP"}


def test_wide_columns_picks_the_value_columns(tmp_path: Path) -> None:
    text = "timestamp,a,b,c\n2020-01-01T00:00:00Z,1,2,3\n"
    out = replay(write(tmp_path, "w.csv", text), columns=["c", "a"])
    assert out.rows == [("w/c", T0, 3.0, 2), ("w/a", T0, 1.0, 2)]


def test_forced_format_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "timestamp,value\n2020-01-01T00:00:00Z,1\n")
    assert replay(path, format="wide").streams == {"m/value"}


def test_uci_style_row_id_before_every_row_is_not_a_stream(tmp_path: Path) -> None:
    text = (
        '"date","Temperature","Occupancy"\n'
        '"140","2020-01-01 00:00:00",23.7,1\n'
        '"141","2020-01-01 00:01:00",23.8,0\n'
    )
    out = replay(write(tmp_path, "room.txt", text))
    assert out.rows == [
        ("room/Temperature", T0, 23.7, 2),
        ("room/Occupancy", T0, 1.0, 2),
        ("room/Temperature", T0 + 60, 23.8, 3),
        ("room/Occupancy", T0 + 60, 0.0, 3),
    ]


def test_erddap_units_row_is_skipped_and_lines_stay_right(tmp_path: Path) -> None:
    text = (
        "time,station_id,AtmosphericPressure\n"
        "UTC,,millibars\n"
        "2020-01-01T00:00:00Z,M4,981.9\n"
        "2020-01-01T00:00:00Z,M5,abc\n"
    )
    path = write(tmp_path, "erddap.csv", text)
    out = replay(path)
    assert out.rows == [("M4/AtmosphericPressure", T0, 981.9, 3)]
    (bad,) = out.rejections
    assert (bad.reason, bad.seq, bad.stream) == (Reason.BAD_VALUE, 4, "M5/AtmosphericPressure")
    assert bad.detail == (
        f"{path}: line 4, column 'AtmosphericPressure': cannot read 'abc' as a number"
    )


# -- time styles ---------------------------------------------------------------------

TIME_STYLES = {
    "iso naive": ("timestamp,value\n", "2020-01-01 00:00:00,1\n2020-01-01T00:00:30,2\n"),
    "iso Z": ("time,value\n", "2020-01-01T00:00:00Z,1\n2020-01-01T00:00:30.000Z,2\n"),
    "iso offset": (
        "datetime,value\n",
        "2020-01-01T01:00:00+01:00,1\n2020-01-01T00:00:30+00:00,2\n",
    ),
    "epoch s": ("ts,value\n", "1577836800,1\n1577836830.0,2\n"),
    "epoch ms": ("ts,value\n", "1577836800000,1\n1577836830000,2\n"),
    "split": ("year,month,day,hour,minute,value\n", "2020,1,1,0,0,1\n2020,1,1,0,0.5,2\n"),
    "date + time": ("Date,Time,value\n", "2020/01/01,00:00:00\t,1\n2020-01-01,00:00:30,2\n"),
}


@pytest.mark.parametrize("style", list(TIME_STYLES))
def test_time_styles(tmp_path: Path, style: str) -> None:
    header, rows = TIME_STYLES[style]
    out = replay(write(tmp_path, "t.csv", header + rows), format="wide")
    assert [(row[1], row[2]) for row in out.rows] == [(T0, 1.0), (T0 + 30, 2.0)]
    assert out.rejections == []


def test_split_hour_columns_without_minutes(tmp_path: Path) -> None:
    text = '"No","year","month","day","hour","TEMP"\n1,2020,1,1,0,-2.3\n2,2020,1,1,1,-2.5\n'
    out = replay(write(tmp_path, "beijing.csv", text))
    assert out.rows == [("beijing/TEMP", T0, -2.3, 2), ("beijing/TEMP", T0 + 3600, -2.5, 3)]


@pytest.mark.parametrize("first", ["YY", "#YY"])
def test_ndbc_whitespace_file_with_units_line_and_sentinels(tmp_path: Path, first: str) -> None:
    text = (
        f"{first}  MM DD hh mm WDIR WSPD   PRES  ATMP\n"
        "#yr  mo dy hr mn degT  m/s    hPa  degC\n"
        "2020 01 01 00 50  316  4.8 1008.1   6.8\n"
        "2020 01 01 01 50  999 99.0 9999.0 999.0\n"
        "  98 01 01 02 50  296  5.5 1007.8   6.1\n"  # NDBC wrote 2-digit years until 1998
    )
    out = replay(write(tmp_path, "buoy_44005_2012.dat", text))
    assert out.of("buoy_44005_2012/WDIR") == [
        ("buoy_44005_2012/WDIR", T0 + 3000, 316.0, 3),
        ("buoy_44005_2012/WDIR", _utc("1998-01-01 02:50"), 296.0, 5),
    ]
    assert out.missing == 4  # one row of sentinels, not rejections
    assert out.rejections == []


def _utc(text: str) -> float:
    return pd.Timestamp(text, tz="UTC").timestamp()


def test_sentinel_codes_are_readings_outside_ndbc_files(tmp_path: Path) -> None:
    text = "timestamp,WDIR,PRES\n2020-01-01T00:00:00Z,999,9999.0\n"
    out = replay(write(tmp_path, "other.csv", text))
    assert [row[2] for row in out.rows] == [999.0, 9999.0]
    assert out.missing == 0


def test_naive_times_are_read_in_the_given_zone(tmp_path: Path) -> None:
    text = (
        "timestamp,value\n"
        "2020-01-01 00:00:00,1\n"  # winter: Dublin is UTC+0
        "2020-07-01 12:00:00,2\n"  # summer: UTC+1
        "2020-07-01T12:00:00Z,3\n"  # carries its zone: unchanged
    )
    out = replay(write(tmp_path, "dublin.csv", text), timezone="Europe/Dublin")
    assert [row[1] for row in out.rows] == [
        T0,
        _utc("2020-07-01 11:00"),
        _utc("2020-07-01 12:00"),
    ]


def test_zone_does_not_move_epoch_times(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "ts,value\n1577836800,1\n")
    assert replay(path, timezone="Asia/Shanghai").rows[0][1] == T0


def test_a_repeated_dst_hour_is_a_bad_timestamp_naming_the_zone(tmp_path: Path) -> None:
    text = "timestamp,value\n2020-10-25 00:30:00,1\n2020-10-25 01:30:00,2\n"
    out = replay(write(tmp_path, "dst.csv", text), timezone="Europe/Dublin")
    assert [row[2] for row in out.rows] == [1.0]
    (bad,) = out.rejections
    assert bad.reason is Reason.BAD_TIMESTAMP and bad.seq == 3
    assert "'2020-10-25 01:30:00' as a time in Europe/Dublin" in bad.detail


# -- row-level problems --------------------------------------------------------------


def test_bad_timestamps_are_folded_and_other_rows_come_through(tmp_path: Path) -> None:
    text = (
        "timestamp,value\n"
        "2020-01-01T00:00:00Z,1\n"
        "yesterday,2\n"
        "2020-01-01T00:02:00Z,3\n"
        "2020-13-01T00:00:00Z,4\n"
        ",5\n"
    )
    path = write(tmp_path, "t.csv", text)
    out = replay(path)
    assert [(row[2], row[3]) for row in out.rows] == [(1.0, 2), (3.0, 4)]
    (bad,) = out.rejections
    assert (bad.reason, bad.seq, bad.count) == (Reason.BAD_TIMESTAMP, 3, 3)
    assert bad.partition == str(path)
    assert bad.detail.startswith(f"{path}: line 3, column 'timestamp': cannot read 'yesterday'")


def test_now_and_today_are_not_event_times(tmp_path: Path) -> None:
    # pandas would read them as the wall clock, which would make replay unrepeatable
    text = "timestamp,value\n2020-01-01T00:00:00Z,1\nnow,2\nToday,3\n"
    out = replay(write(tmp_path, "t.csv", text))
    assert [row[2] for row in out.rows] == [1.0]
    assert out.rejected(Reason.BAD_TIMESTAMP) == 2


def test_bad_values_are_folded_per_column(tmp_path: Path) -> None:
    text = (
        "timestamp,a,b\n"
        "2020-01-01T00:00:00Z,1,x\n"
        "2020-01-01T00:01:00Z,abc,2\n"
        "2020-01-01T00:02:00Z,3,y\n"
    )
    out = replay(write(tmp_path, "w.csv", text))
    assert [(row[0], row[3]) for row in out.rows] == [("w/a", 2), ("w/b", 3), ("w/a", 4)]
    summary = [(r.reason, r.stream, r.seq, r.count) for r in out.rejections]
    assert summary == [(Reason.BAD_VALUE, "w/b", 2, 2), (Reason.BAD_VALUE, "w/a", 3, 1)]


def test_empty_and_nan_cells_are_missing_not_rejected(tmp_path: Path) -> None:
    text = "timestamp,a,b\n2020-01-01T00:00:00Z,,NaN\n2020-01-01T00:01:00Z,1, \n"
    out = replay(write(tmp_path, "w.csv", text))
    assert out.rows == [("w/a", T0 + 60, 1.0, 3)]
    assert (out.missing, out.rejections) == (3, [])


@pytest.mark.parametrize("chunk_rows", [2, 100])
def test_rows_outside_start_and_end_count_no_missing_and_no_problems(
    tmp_path: Path, chunk_rows: int
) -> None:
    text = f"ts,value\n{T0},\n{T0 + 1},abc\n{T0 + 2},1\n{T0 + 3},\nnever,2\n{T0 + 4},\n{T0 + 5},x\n"
    path = write(tmp_path, "a.csv", text)
    out = replay(path, start=T0 + 2, end=T0 + 3, chunk_rows=chunk_rows)
    assert [row[2] for row in out.rows] == [1.0] and out.missing == 1  # the cell at T0 + 3
    # a row without a time may belong anywhere: it is still reported
    assert [(r.reason, r.seq) for r in out.rejections] == [(Reason.BAD_TIMESTAMP, 6)]


@pytest.mark.parametrize("chunk_rows", [2, 3, 100])
def test_end_keeps_readings_of_a_log_not_sorted_by_time(tmp_path: Path, chunk_rows: int) -> None:
    # every reading of stream a, then every reading of b: rows after --end come first
    rows = [f"{T0 + t},{s},{t}" for s in "ab" for t in range(4)]
    path = write(tmp_path, "two.csv", "ts,stream,value\n" + "\n".join(rows) + "\n")
    out = replay(path, end=T0 + 1, chunk_rows=chunk_rows)
    assert sorted((row[0], row[2]) for row in out.rows) == [
        ("a", 0.0), ("a", 1.0), ("b", 0.0), ("b", 1.0)
    ]  # fmt: skip


def test_a_separator_that_ends_every_row_is_not_a_column(tmp_path: Path) -> None:
    text = "timestamp,TEMP\n2020-01-01T00:00:00Z,21.5,\n2020-01-01T00:01:00Z,21.6,\n"
    out = replay(write(tmp_path, "export.csv", text))
    assert out.rows == [("export/TEMP", T0, 21.5, 2), ("export/TEMP", T0 + 60, 21.6, 3)]
    assert (out.missing, out.rejections) == (0, [])
    text = "timestamp,value,\n2020-01-01T00:00:00Z,1,\n"  # the header ends with one too
    out = replay(write(tmp_path, "m.csv", text))
    assert (out.rows, out.missing) == ([("m/value", T0, 1.0, 2)], 0)


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    text = "timestamp,value\n2020-01-01T00:00:00Z,1\n\n2020-01-01T00:01:00Z,2\n\n"
    out = replay(write(tmp_path, "gaps.csv", text))
    assert [row[3] for row in out.rows] == [2, 4]
    assert (out.missing, out.rejections) == (0, [])


# -- file-level errors ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pipe_or_a_device_is_refused_as_not_a_regular_file(tmp_path, kind):
    """A log is read twice (its head, then all of it): a pipe, as ``<(zcat log.gz)``
    gives, cannot be; it is not missing either."""
    path = Path("/dev/null")
    if kind == "fifo":
        path = tmp_path / "p.csv"
        os.mkfifo(path)
    with pytest.raises(InputFileError) as caught:
        CsvSource([path])
    assert str(caught.value) == (
        f"{path}: not a regular file (a pipe or a device); a log is read twice (its head "
        "tells its format), so save it to a file and give that"
    )


@pytest.mark.parametrize(
    ("name", "text", "options", "message"),
    [
        ("empty.csv", "", {}, "file is empty"),
        ("blank.csv", "\n \n\t\n\n", {}, "file is empty"),
        (
            "lead.csv",
            "\n\ntimestamp,value\n2020-01-01T00:00:00Z,1\n",
            {},
            "line 1 is blank; the header must be the first line",
        ),
        ("head.csv", "timestamp,value\n", {}, "has no data rows"),
        ("head.csv", "timestamp,value\n\n\n", {}, "has no data rows"),
        ("x.csv", "a,b\n1,2\n", {}, "no time column (columns found: a, b)"),
        (
            "x.csv",
            "timestamp,value\n2020-01-01T00:00:00Z,1\n",
            {"format": "long"},
            "no stream column (columns found: timestamp, value)",
        ),
        (
            "x.csv",
            "timestamp,reading\n2020-01-01T00:00:00Z,1\n",
            {"format": "nab"},
            "no column 'value' (columns found: timestamp, reading)",
        ),
        (
            "x.csv",
            "timestamp,value\n2020-01-01T00:00:00Z,abc\n",
            {},
            "column 'value' holds no numbers (first: 'abc')",
        ),
        (
            "x.csv",
            "timestamp,value\nyesterday,1\ntoday,2\n",
            {},
            "line 2, column 'timestamp': cannot read 'yesterday' as a time; expected ISO 8601",
        ),
        (
            "x.csv",
            'timestamp,value\n2020-01-01T00:00:00Z,1\n2020-01-01T00:01:00Z,"2\n',
            {},
            "pandas cannot read it (EOF inside string",
        ),
        ("x.csv", "timestamp,a\n2020-01-01T00:00:00Z,1\n", {"columns": ["b"]}, "no column 'b'"),
        (
            "x.csv",
            "time,a\n1577836800,1\n",
            {"columns": ["a", "time"]},
            "'time' is the time or station column, not a value to replay",
        ),
        (
            "x.csv",
            "timestamp,wd\n2020-01-01T00:00:00Z,NE\n",
            {"columns": ["wd"]},
            "column 'wd' holds no numbers (first: 'NE')",
        ),
        (
            "x.csv",
            "timestamp,value\n2020-01-01T00:00:00Z,1\n",
            {"columns": ["value"]},
            "columns= picks value columns of wide files, but this file is nab",
        ),
    ],
)
def test_unusable_files_name_the_file_and_the_problem(
    tmp_path: Path, name: str, text: str, options: dict[str, object], message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(InputFileError) as caught:
        replay(path, **options)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_malformed_row_deep_in_the_file_is_reported_when_reached(tmp_path: Path) -> None:
    rows = "".join(f"{T0 + i},{i}\n" for i in range(2_000))
    path = write(tmp_path, "x.csv", "ts,value\n" + rows + f"{T0},1,2\n")
    source = CsvSource([path], chunk_rows=500)
    assert len(source.poll(100, 0.0) or ()) == 100
    out = drain(source)
    assert len(out.rows) == 1_900 and [str(r) for r in out.rejections] == [
        f"decode_error at {path}:2002: {path}: line 2002: expected 2 fields, saw 3; "
        "the row is skipped"
    ]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=f"^{tmp_path / 'nope.csv'}: no such file"):
        CsvSource([tmp_path / "nope.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=f"^{tmp_path / 'empty'}: directory has no"):
        CsvSource([tmp_path / "empty"])


def test_binary_file_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"timestamp,value\n\xff\xfe\x00,1\n")
    with pytest.raises(InputFileError, match=rf"^{path}: not UTF-8 text \(line 2, byte 0xff\)"):
        CsvSource([path])


def test_a_bad_byte_deep_in_the_file_is_placed_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    rows = "".join(f"{1_700_000_000 + 60 * i},{i}\n" for i in range(5000))
    path.write_bytes(b"timestamp,value\n" + rows.encode() + b"1800000000,7\xe9\n")
    source = CsvSource([path])
    with pytest.raises(InputFileError, match=rf"^{path}: not UTF-8 text \(line 5002, byte 0xe9\)"):
        while source.poll(100_000, 0) is not None:
            pass


def test_a_file_that_cannot_be_read_is_one_line(tmp_path: Path, monkeypatch) -> None:
    # root reads a mode-000 file anyway, so the refusal is the OS's error, raised here
    path = tmp_path / "x.csv"
    path.write_text("timestamp,value\n1700000000,1\n")
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    expected = f"{path}: cannot read it (Permission denied); check that it is there and that "
    with pytest.raises(InputFileError, match="^" + re.escape(f"{expected}you may read it") + "$"):
        CsvSource([path])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "json"}, "format='json'"),
        ({"chunk_rows": 0}, "chunk_rows=0"),
        ({"speed": 0.0}, "speed=0.0"),
        ({"timezone": "Mars/Olympus"}, "timezone='Mars/Olympus'"),
        ({"columns": "TEMP"}, "columns='TEMP'"),
        # times as ISO 8601, not as epoch seconds
        ({"start": T0 + 60, "end": T0}, "start=2020-01-01T00:01:00Z is after end=2020-01-01T00:00"),
    ],
)
def test_bad_settings_are_config_errors(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    path = write(tmp_path, "a.csv", "timestamp,value\n2020-01-01T00:00:00Z,1\n")
    with pytest.raises(ConfigError, match=message):
        CsvSource([path], **options)  # type: ignore[arg-type]


# -- chunks, batches and positions ---------------------------------------------------


def messy_wide_file(folder: Path, rows: int = 60) -> Path:
    """A wide file with a station column, gaps, bad times, bad values and bad keys."""
    lines = ["time,station,a,b"]
    for i in range(rows):
        time = "never" if i % 11 == 5 else pd.Timestamp(T0 + 60 * i, unit="s").isoformat()
        station = "" if i % 13 == 7 else f"S{i % 3}"
        a = "abc" if i % 7 == 3 else ("" if i % 5 == 0 else f"{i * 0.1:.3f}")
        lines.append(f"{time},{station},{a},{i}")
    return write(folder, "messy.csv", "\n".join(lines) + "\n")


def test_small_chunks_give_exactly_the_readings_of_one_big_chunk(tmp_path: Path) -> None:
    path = messy_wide_file(tmp_path)
    big = replay(path)
    small = drain(CsvSource([path], chunk_rows=7), max_items=5)
    assert small.rows == big.rows
    assert small.missing == big.missing > 0
    for reason in (Reason.BAD_TIMESTAMP, Reason.BAD_VALUE, Reason.BAD_STREAM):
        assert small.rejected(reason) == big.rejected(reason) > 0
    first_lines = {r.reason: r.seq for r in small.rejections[::-1]}
    assert first_lines == {Reason.BAD_TIMESTAMP: 7, Reason.BAD_VALUE: 5, Reason.BAD_STREAM: 9}


def test_batches_hold_whole_rows_up_to_max_items(tmp_path: Path) -> None:
    text = "timestamp,a,b,c\n" + "".join(f"{T0 + i},1,2,3\n" for i in range(10))
    source = CsvSource([write(tmp_path, "w.csv", text)])
    out = drain(source, max_items=7)
    assert out.sizes == [6, 6, 6, 6, 6]
    assert drain(CsvSource([source.files[0]]), max_items=2).sizes == [3] * 10


def test_batches_come_from_one_file_each(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", f"ts,value\n{T0},1\n{T0 + 1},2\n")
    b = write(tmp_path, "b.csv", f"ts,value\n{T0},3\n")
    source = CsvSource([b, a])
    batches = [source.poll(100, 0.0) for _ in range(3)]
    assert [(x.partition, len(x)) for x in batches if x] == [(str(b), 1), (str(a), 2)]


@pytest.mark.parametrize("chunk_rows", [2, 3, 100])
def test_rows_with_too_many_fields_are_skipped_counted_and_lines_stay_right(
    tmp_path: Path, chunk_rows: int
) -> None:
    lines = [f"2020-01-01T00:00:{i:02d}Z,{i}" + (",9" if i in (3, 4, 9) else "") for i in range(10)]
    path = write(tmp_path, "a.csv", "\n".join(["timestamp,value", *lines]) + "\n")
    out = replay(path, chunk_rows=chunk_rows)
    kept = [i for i in range(10) if i not in (3, 4, 9)]
    assert [row[2] for row in out.rows] == kept
    assert [row[3] for row in out.rows] == [i + 2 for i in kept]  # the file's line numbers
    assert out.rejected(Reason.DECODE_ERROR) == 3
    first = next(r for r in out.rejections if r.reason is Reason.DECODE_ERROR)
    assert first.seq == 5 and "line 5: expected 2 fields, saw 3" in first.detail
    resumed = CsvSource([path], chunk_rows=chunk_rows)
    resumed.seek({str(path): 7})  # past two of them: only the last is reported again
    rest = drain(resumed)
    assert [row[2] for row in rest.rows] == [6, 7, 8] and rest.rejected(Reason.DECODE_ERROR) == 1


def test_seek_skips_exactly_the_rows_up_to_the_position(tmp_path: Path) -> None:
    path = messy_wide_file(tmp_path)
    full = replay(path)
    source = CsvSource([path], chunk_rows=7)
    source.seek({str(path): 20, "other.csv": 99})
    resumed = drain(source)
    assert resumed.rows == [row for row in full.rows if row[3] > 20]
    assert min(r.seq for r in resumed.rejections) > 20


def test_resume_from_the_last_position_continues_without_loss(tmp_path: Path) -> None:
    path = messy_wide_file(tmp_path)
    full = replay(path)
    first = CsvSource([path], chunk_rows=9)
    head = Replay()
    for _ in range(4):
        batch = first.poll(10, 0.0)
        assert batch is not None
        head.add(batch)
    position = max(row[3] for row in head.rows)
    second = CsvSource([path], chunk_rows=9)
    second.seek({str(path): position})
    assert head.rows + drain(second).rows == full.rows


def test_seek_during_replay_and_on_a_later_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", "ts,value\n" + "".join(f"{T0 + i},{i}\n" for i in range(10)))
    b = write(tmp_path, "b.csv", "ts,value\n" + "".join(f"{T0 + i},{i}\n" for i in range(10)))
    source = CsvSource([a, b])
    assert [int(v) for v in source.poll(3, 0.0).value] == [0, 1, 2]  # type: ignore[union-attr]
    source.seek({str(a): 8, str(b): 10})
    out = drain(source)
    assert [(Path(p).name, row[3]) for p, row in zip(out.partitions, out.rows, strict=True)] == [
        ("a.csv", 9),
        ("a.csv", 10),
        ("a.csv", 11),
        ("b.csv", 11),
    ]


@pytest.mark.parametrize("key", ["a.csv", "./a.csv", "../logs/a.csv", "resolved"])
def test_seek_finds_a_file_however_its_path_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    path = write(
        tmp_path, "logs/a.csv", "ts,value\n" + "".join(f"{T0 + i},{i}\n" for i in range(5))
    )
    monkeypatch.chdir(path.parent)
    source = CsvSource(["./a.csv"])
    # snapshots key files by resolved path; older ones by the path as typed, from here
    source.seek({str(path.resolve()) if key == "resolved" else key: 4})
    out = drain(source)
    assert [row[3] for row in out.rows] == [5, 6]
    assert out.partitions == ["a.csv"] * 2  # messages keep the path as given


def test_close_ends_the_replay(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", f"ts,value\n{T0},1\n{T0 + 1},2\n")
    with CsvSource([path]) as source:
        assert source.poll(1, 0.0) is not None
    assert source.poll(1, 0.0) is None


# -- pacing --------------------------------------------------------------------------


def minutes_file(folder: Path) -> Path:
    return write(folder, "m.csv", "ts,value\n" + "".join(f"{T0 + 60 * i},{i}\n" for i in range(4)))


def test_speed_releases_readings_as_event_time_advances(tmp_path: Path) -> None:
    clock = FakeClock()
    source = CsvSource([minutes_file(tmp_path)], speed=60.0, clock=clock)  # 1 min per second
    first = source.poll(100, timeout=0.0)
    assert first is not None and first.value.tolist() == [0.0]
    waiting = source.poll(100, timeout=0.0)
    assert waiting is not None and len(waiting) == 0  # the next is a minute (1 s) away
    assert clock.monotonic() == 0.0
    partial = source.poll(100, timeout=0.25)
    assert partial is not None and len(partial) == 0 and clock.monotonic() == 0.25
    second = source.poll(100, timeout=5.0)  # sleeps only until it is due
    assert second is not None and second.value.tolist() == [1.0]
    assert clock.monotonic() == pytest.approx(1.0)
    clock.advance(10.0)
    rest = source.poll(100, timeout=0.0)
    assert rest is not None and rest.value.tolist() == [2.0, 3.0]
    assert source.poll(100, timeout=0.0) is None


def test_with_start_the_first_reading_in_range_starts_the_pacing(tmp_path: Path) -> None:
    clock = FakeClock()
    source = CsvSource([minutes_file(tmp_path)], speed=60.0, clock=clock, start=T0 + 60)
    values: list[float] = []
    while (batch := source.poll(100, timeout=5.0)) is not None:
        values += [v for v in batch.value.tolist()]
        if len(batch):
            assert clock.monotonic() == pytest.approx(len(values) - 1)  # one a second
    assert values == [1.0, 2.0, 3.0]


def test_without_speed_the_clock_is_never_used(tmp_path: Path) -> None:
    clock = FakeClock()
    out = drain(CsvSource([minutes_file(tmp_path)], clock=clock))
    assert len(out.rows) == 4 and clock.monotonic() == 0.0


# -- the real bundled-style logs -----------------------------------------------------


def test_nab_machine_temperature() -> None:
    path = shared("nab/data/realKnownCause/machine_temperature_system_failure.csv")
    out = replay(path)
    assert len(out.rows) == 22_695
    assert out.streams == {"machine_temperature_system_failure"}
    assert out.rows[0][1] == _utc("2013-12-02 21:15:00")
    assert out.rows[-1][1] == _utc("2014-02-19 15:25:00")
    assert (out.rows[0][3], out.rows[-1][3]) == (2, 22_696)


def test_ndbc_buoy_sentinels_become_missing() -> None:
    out = replay(shared("buoy/ndbc_44005/buoy_44005_2012.dat"))
    rows = 8_347
    counts = {stream.split("/")[1]: len(out.of(stream)) for stream in out.streams}
    assert counts["PRES"] == rows - 3
    assert counts["WDIR"] == rows - 377
    assert counts["DEWP"] == rows - 4
    assert "MWD" not in counts and "TIDE" not in counts  # all missing
    assert out.rejections == []
    assert out.rows[0][1] == _utc("2011-12-31 23:50")


def test_beijing_weather_station() -> None:
    path = shared("weather/beijing_prsa/PRSA_Data_Changping_20130301-20170228.csv")
    batch = CsvSource([path], timezone="Asia/Shanghai").poll(1_000, 0.0)
    assert batch is not None
    assert {"Changping/TEMP", "Changping/PRES", "Changping/WSPM"} <= set(batch.streams)
    assert not {"Changping/wd", "Changping/No", "Changping/year"} & set(batch.streams)
    assert len(batch.streams) == 11
    assert batch.timestamp[0] == _utc("2013-02-28 16:00")  # local midnight, UTC+8
    assert batch.seq[0] == 2


def test_uci_occupancy_detection() -> None:
    out = replay(shared("thermostat/uci_occupancy_detection/datatest.txt"))
    assert out.streams == {
        f"datatest/{c}"
        for c in ("Temperature", "Humidity", "Light", "CO2", "HumidityRatio", "Occupancy")
    }
    temperature = out.of("datatest/Temperature")
    assert len(temperature) == 2_665
    assert temperature[0] == ("datatest/Temperature", _utc("2015-02-02 14:19:00"), 23.7, 2)


def test_uci_room_occupancy_estimation_date_and_time_columns() -> None:
    path = shared("thermostat/uci_room_occupancy_estimation/Occupancy_Estimation.csv")
    batch = CsvSource([path]).poll(17, 0.0)
    assert batch is not None and len(batch) == 17 and len(batch.streams) == 17
    assert set(batch.seq.tolist()) == {2}
    assert batch.timestamp[0] == _utc("2017-12-22 10:49:41")
    assert batch.streams[0] == "Occupancy_Estimation/S1_Temp"


def test_irish_buoy_network_units_row_and_stations() -> None:
    out = replay(shared("buoy/irish_weather_buoy_network/buoy_data_raw.csv"))
    assert out.rejections == [] and out.missing == 0
    assert out.rows[0][3] == 3  # line 2 holds the units
    pressure = out.of("M4/AtmosphericPressure")
    assert len(pressure) == 2_155
    assert sum(row[2] == 900.0 for row in pressure) == 41  # the stuck sensor in the README
    assert {f"M{n}/WaveHeight" for n in range(2, 7)} <= out.streams
    assert math.isclose(pressure[0][2], 981.897)
    assert np.isfinite([row[1] for row in pressure]).all()


@pytest.mark.parametrize("sep", ["\t", ";"])
def test_tab_and_semicolon_separated_files_are_read_by_their_separator(tmp_path, sep) -> None:
    # a time cell holds a space: splitting on any whitespace would cut it in two
    rows = [f"2020-01-01 00:0{i}:00{sep}{i}.5" for i in range(3)]
    path = write(tmp_path, "x.csv", f"timestamp{sep}value\n" + "\n".join(rows) + "\n")
    out = drain(CsvSource([path]))
    assert [(t - T0, v) for _, t, v, _ in out.rows] == [(0.0, 0.5), (60.0, 1.5), (120.0, 2.5)]


def test_a_column_named_twice_is_refused(tmp_path) -> None:
    path = write(tmp_path, "x.csv", "timestamp,a,b,a\n2020-01-01,1,2,3\n")
    expected = f"{path}: column 'a' appears twice in the header (fields 2 and 4); rename one"
    with pytest.raises(InputFileError, match="^" + re.escape(expected)):
        CsvSource([path])


@pytest.mark.parametrize("extra", [",x", ",x,y"])
def test_a_first_row_with_too_many_fields_is_skipped_and_counted(tmp_path, extra) -> None:
    rows = [f"2020-01-01 00:0{i}:00,{i}" for i in range(4)]
    rows[0] += extra  # pandas would take the extra fields for an index and shift the rest
    path = write(tmp_path, "x.csv", "timestamp,value\n" + "\n".join(rows) + "\n")
    out = drain(CsvSource([path]))
    assert [(v, seq) for _, _, v, seq in out.rows] == [(1.0, 3), (2.0, 4), (3.0, 5)]
    fields = 3 if extra == ",x" else 4
    assert [(r.reason, r.seq, r.detail) for r in out.rejections] == [
        (Reason.DECODE_ERROR, 2,
         f"{path}: line 2: expected 2 fields, saw {fields}; the row is skipped")
    ]  # fmt: skip


def test_a_head_field_past_the_csv_modules_limit_is_an_input_error(tmp_path):
    log = tmp_path / "huge.csv"  # found by the fuzz tests: 131,073 characters in one cell
    log.write_text("x" * 131_073 + "1976-05-03T19:33:00Z,\n1976-05-03T19:34:00Z,1\n")
    with pytest.raises(InputFileError, match=r"huge.csv: its first lines are not CSV"):
        CsvSource([log])
