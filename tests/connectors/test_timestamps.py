"""ISO time columns read by Arrow's parser give pandas' times, or go to pandas."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import timestamps

ISO = timestamps.TimeSpec("iso", ("time",))
# pandas' nanosecond range, a few months inside each end; naive, as hypothesis wants
# its bounds, and written as text with or without a zone by STYLES
EARLIEST, LATEST = dt.datetime(1678, 1, 1), dt.datetime(2262, 1, 1)  # noqa: DTZ001
TIMES = st.datetimes(EARLIEST, LATEST)
STYLES = (
    "%Y-%m-%d %H:%M:%S",  # NAB
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f+01:00",
    "%Y-%m-%dT%H:%M:%S-0530",
)


def by_pandas(cells: list[str | None]) -> np.ndarray:
    """The reading every ISO column had before Arrow's parser came first."""
    times = pd.to_datetime(pd.Series(cells, dtype=object), utc=True, format="ISO8601",
                           errors="coerce")  # fmt: skip
    return timestamps._seconds(times)


def parsed(cells: list[str | None]) -> np.ndarray:
    return timestamps.parse(pd.DataFrame({"time": pd.Series(cells, dtype=object)}), ISO)


@given(st.lists(TIMES, min_size=1, max_size=30), st.sampled_from(STYLES), st.data())
def test_arrow_reads_iso_columns_as_pandas_does(
    times: list[dt.datetime], style: str, data: st.DataObject
) -> None:
    cells: list[str | None] = [t.strftime(style) for t in times]
    if data.draw(st.booleans()):
        cells[data.draw(st.integers(0, len(cells) - 1))] = None  # an empty cell
    assert timestamps._iso_by_arrow(pd.Series(cells, dtype=object)) is not None
    expected, got = by_pandas(cells), parsed(cells)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    if "%f" in style:  # a fraction: the same time within a float's rounding
        assert np.allclose(got, expected, rtol=0, atol=1e-6, equal_nan=True)
    else:
        assert np.array_equal(got, expected, equal_nan=True)


@pytest.mark.parametrize(
    "odd",
    [
        "now",  # pandas would read the wall clock: no time
        " 2014-04-01 00:00:00",  # Arrow refuses spaces
        "2014-4-1 00:00:00",  # unpadded fields
        "9999-01-01 00:00:00",  # outside Arrow's nanoseconds
        "2014-04-01 24:00:00",  # no such time
        "2014-04-01T00:00:00Z",  # a zone among naive times
    ],
)
def test_a_column_arrow_refuses_is_read_by_pandas(odd: str) -> None:
    cells: list[str | None] = ["2014-04-01 00:00:00", odd, "2014-04-01 00:05:00"]
    assert timestamps._iso_by_arrow(pd.Series(cells, dtype=object)) is None
    got = parsed(cells)
    assert got[0] == 1396310400.0 and got[2] == 1396310700.0
    if odd == "now":
        assert np.isnan(got[1])
    else:
        assert np.array_equal(got, by_pandas(cells), equal_nan=True)


def test_iso_samples_settle_as_iso_and_numbers_as_epoch() -> None:
    iso = pd.DataFrame({"time": ["2014-04-01 00:00:00", "2014-04-01 00:05:00"]})
    epoch = pd.DataFrame({"time": ["1396310400", "1396310700"]})
    assert timestamps.settle(timestamps.TimeSpec("text", ("time",)), iso).kind == "iso"
    assert timestamps.settle(timestamps.TimeSpec("text", ("time",)), epoch).kind == "epoch"


CELLS = st.one_of(
    st.none(),
    TIMES.map(lambda t: t.strftime(STYLES[0])),
    st.sampled_from(["", " ", "now", "24:00", "2014-13-01", "1396310400", "x", "2014-04-01"]),
)


@given(st.lists(CELLS, min_size=1, max_size=8))
def test_a_sample_settled_by_reading_its_times_has_a_time(cells: list[str | None]) -> None:
    """Opening a log skips its "no sample row has a time" check where ``settled`` says it
    read every sample time: that must mean the check would have passed."""
    sample = pd.DataFrame({"time": pd.Series(cells, dtype=object)})
    spec, read = timestamps.settled(timestamps.TimeSpec("text", ("time",)), sample)
    assert spec == timestamps.settle(timestamps.TimeSpec("text", ("time",)), sample)
    if read:
        assert spec.kind == "iso"
        assert not np.isnan(timestamps.parse(sample, spec)).all()


def test_a_date_alone_among_times_is_its_midnight_either_way() -> None:
    cells: list[str | None] = ["2014-04-01 00:05:00", "2014-04-02"]
    assert timestamps._iso_by_arrow(pd.Series(cells, dtype=object)) is not None
    assert parsed(cells).tolist() == by_pandas(cells).tolist() == [1396310700.0, 1396396800.0]


def test_basic_dates_settle_as_dates_not_epoch_seconds() -> None:
    dates = pd.DataFrame({"time": ["20200101", "20200102"]})
    spec = timestamps.settle(timestamps.TimeSpec("text", ("time",)), dates)
    assert spec.kind == "iso"
    got = timestamps.parse(dates, spec)
    assert got.tolist() == [1577836800.0, 1577923200.0]
    not_dates = pd.DataFrame({"time": ["20201301", "20200102"]})  # no 13th month: seconds
    assert timestamps.settle(timestamps.TimeSpec("text", ("time",)), not_dates).kind == "epoch"


@pytest.mark.parametrize(
    ("cell", "utc"),
    [
        ("2020-06-01 12:00:00+01", "2020-06-01 11:00:00"),  # PostgreSQL's timestamptz
        ("2020-06-01 12:00:00+0100", "2020-06-01 11:00:00"),
        ("2020-06-01T12:00:00.5-01:00", "2020-06-01 13:00:00.5"),
        ("2020-06-01 12:00:00Z", "2020-06-01 12:00:00"),
        ("2020-06-01 12:00:00", "2020-06-01 11:00:00"),  # naive: London's summer time
        ("2020-06-01", "2020-05-31 23:00:00"),  # a date's -01 is no offset
    ],
)
def test_a_zone_in_the_text_wins_over_the_timezone_given(cell: str, utc: str) -> None:
    frame = pd.DataFrame({"time": pd.Series([cell, None], dtype=object)})
    got = timestamps.parse(frame, ISO, "Europe/London")
    assert got[0] == pd.Timestamp(utc, tz="UTC").timestamp()


def test_a_number_with_a_plus_reads_as_float_does_beside_a_cell_arrow_refuses() -> None:
    # Arrow refuses the whole column over "abc"; pandas' to_numeric, which then reads
    # it, rounds "+..." with more than 17 digits by another parser (an ulp off)
    long = "+73042220338117781919669.22"
    cells = pd.Series([long, " +.300311323704758968700002", "abc", "-1.5", None, 10**400])
    read = timestamps.numbers(cells).tolist()
    assert read[:2] == [float(long), float("0.300311323704758968700002")]
    assert read[3] == -1.5 and read[5] == math.inf
    assert all(math.isnan(x) for x in (read[2], read[4]))


def test_a_column_of_long_integers_alone_reads_as_infinities() -> None:
    # pandas makes Python ints of them: no text cell for the '+' to be stripped from
    cells = pd.Series([10**400, -(10**400)], dtype=object)
    assert timestamps.numbers(cells).tolist() == [math.inf, -math.inf]


@pytest.mark.parametrize("timezone", [None, "Europe/London"])
@pytest.mark.parametrize("far", ["0001-01-01T00:00:00", "2300-06-01 12:00:00", "9999-12-31"])
def test_a_time_reads_the_same_whatever_shares_its_column(far: str, timezone: str | None) -> None:
    # pandas gives a column nanoseconds when one cell has nine decimals, and a year out
    # of their range is then no time; alone it is one. A replay's chunks would decide.
    nano = "2020-01-01T00:00:00.123456789"
    frame = pd.DataFrame({"time": pd.Series([nano, far, "not a time", None], dtype=object)})
    together = timestamps.parse(frame, ISO, timezone)
    alone = [timestamps.parse(frame.iloc[[i]], ISO, timezone)[0] for i in range(4)]
    np.testing.assert_array_equal(together, alone)
    assert np.isfinite(together[:2]).all() and np.isnan(together[2:]).all()
