"""The compiled CSV writer against Arrow's: the same text for readings, times, counts
and flags; the model's numbers to 12 significant digits; quotes only where needed."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as arrow_csv
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spelling import awkward_floats, spread_of_times

from connectors.csv_text import MODEL_DIGITS, CsvRows, key_table, quoted, text_table
from connectors.records import CSV_COLUMNS, LAST_ISO_SECOND, iso_times
from pipeline.types import VerdictBatch

EXACT = ("value", "min", "max")
MODEL = ("forecast", "lower", "upper", "anomaly_score", "next_forecast", "next_lower",
         "next_upper")  # fmt: skip


def arrow_text(x: np.ndarray) -> list[str]:
    """Arrow's CSV text of a float64 column (the writer used before)."""
    buffer = io.BytesIO()
    options = arrow_csv.WriteOptions(include_header=False)
    arrow_csv.write_csv(pa.table({"x": pa.array(x, from_pandas=True)}), buffer, options)
    return [line.strip('"') for line in buffer.getvalue().decode().splitlines()]


def cells(batch: VerdictBatch) -> pd.DataFrame:
    text = bytes(CsvRows().of(batch)).decode()
    frame = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    frame.columns = list(CSV_COLUMNS)
    return frame


def batch_of(x: np.ndarray, seconds: np.ndarray | None = None) -> VerdictBatch:
    batch = VerdictBatch.blank(len(x), model="gru")
    for name in (*EXACT, *MODEL):
        getattr(batch, name)[:] = x
    batch.stream[:] = "site/dev/temp"
    batch.timestamp[:] = 1.6e9 if seconds is None else seconds
    batch.count[:] = np.arange(len(x)) - 5
    batch.is_anomaly[::3] = True
    return batch


def test_a_min_or_max_unlike_its_value_gets_its_own_digits():
    x = awkward_floats(4_000)
    rng = np.random.default_rng(1)
    batch = batch_of(x)
    batch.min[:] = np.where(rng.random(len(x)) < 0.5, x, rng.permutation(x))  # some the same
    batch.max[:] = -x  # -0.0 against 0.0: the same number, its own sign
    frame = cells(batch)
    for name in EXACT:
        assert frame[name].tolist() == arrow_text(getattr(batch, name)), name


def test_readings_are_written_as_arrow_wrote_them_and_read_back_exactly():
    x = awkward_floats(20_000)
    frame = cells(batch_of(x))
    expected = arrow_text(x)
    for name in EXACT:
        assert frame[name].tolist() == expected
    finite = np.isfinite(x)
    assert (frame["value"][finite].astype(float).to_numpy() == x[finite]).all()
    assert frame["count"].tolist() == [str(c) for c in np.arange(len(x)) - 5]
    assert frame["is_anomaly"].tolist() == ["1" if i % 3 == 0 else "0" for i in range(len(x))]


def test_model_numbers_have_12_significant_digits_in_arrows_layout():
    x = awkward_floats(20_000, seed=1)
    frame = cells(batch_of(x))
    finite = np.isfinite(x) & (x != 0)
    normal = finite & (np.abs(x) >= np.finfo(float).tiny)  # subnormals have fewer digits
    for name in MODEL:
        text = frame[name].to_numpy(str)
        assert text[~finite].tolist() == np.array(arrow_text(x))[~finite].tolist()
        back = text[finite].astype(float)
        assert np.all(np.abs(back - x[finite]) <= 5.01e-12 * np.abs(x[finite]))
        # a decimal of at most 12 digits is its own shortest text: Arrow spells it alike
        assert text[normal].tolist() == arrow_text(text[normal].astype(float))
        mantissas = [t.lstrip("-").split("e")[0].replace(".", "").strip("0") for t in text[finite]]
        assert max(len(m) for m in mantissas) <= MODEL_DIGITS


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.0005, 0.9996])
def test_times_are_spelled_as_iso_times_spells_them(fraction):
    seconds = spread_of_times(fraction, seed=2)
    frame = cells(batch_of(np.zeros(len(seconds)), seconds))
    assert frame["timestamp"].tolist() == iso_times(seconds).tolist()


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_any_reading_reads_back_as_itself(values):
    x = np.array(values, np.float64)
    frame = cells(batch_of(x))
    assert frame["value"].tolist() == arrow_text(x)


def test_only_text_cells_that_need_quotes_are_quoted():
    keys = ["plain/dev/temp", 'odd,"key"/dev/temp', "line\nbreak/dev/t"]
    batch = batch_of(np.arange(3.0))
    batch.stream[:] = keys
    text = bytes(CsvRows().of(batch)).decode()
    assert text.startswith("plain/dev/temp,") and '\n"odd,""key""/dev/temp",' in text
    frame = pd.read_csv(io.StringIO(text), header=None, keep_default_na=False)
    assert frame[0].tolist() == keys


def test_16_and_17_digit_readings_get_reprs_digits_without_repr():
    from connectors.csv_text import HARD, exact_digits, fill_hard

    rng = np.random.default_rng(3)
    short = np.round(rng.uniform(-1e4, 1e4, 200_000), 8)
    noisy = short * (1 + rng.normal(0, 1e-15, len(short)))  # 74.93588199999998
    means = rng.integers(1, 10**6, len(short)) / 3.0  # 21.133333333333333
    x = np.concatenate([noisy, means, rng.uniform(1e-3, 2.0**52, len(short))])
    x = x[np.abs(x) >= 1e-3]  # the integer search's range
    digits, scale = np.empty(len(x), np.int64), np.empty(len(x), np.int32)
    assert exact_digits(x, digits, scale) < len(x) // 10_000  # ties only: repr's
    by_repr, by_repr_scale = digits.copy(), np.full(len(x), HARD, np.int32)
    fill_hard(x, by_repr, by_repr_scale)
    found = scale != HARD
    # the same decimal; a whole number's repr ends in ".0", so it may hold zeros more
    pairs = zip(digits[found].tolist(), scale[found].tolist(), by_repr[found].tolist(),
                by_repr_scale[found].tolist(), strict=True)  # fmt: skip
    assert all(r_scale >= s and d * 10 ** (r_scale - s) == r for d, s, r, r_scale in pairs)


@given(st.floats(min_value=1e-30, max_value=1e30, allow_nan=False, allow_infinity=False))
def test_a_numbers_power_of_ten_is_floor_log10(a):
    from decimal import Decimal

    from connectors.csv_text import _decimal_exponent

    exact = Decimal(a).adjusted()  # floor(log10(a)), from a's exact decimal expansion
    near_a_power = abs(a / 10.0**exact - 1) < 1e-14 or abs(a / 10.0 ** (exact + 1) - 1) < 1e-14
    if 1e-22 <= a < 1e22 and not near_a_power:  # where the table walk is exact
        assert _decimal_exponent(a) == exact
    else:  # a digit more or less, at worst
        assert abs(_decimal_exponent(a) - exact) <= 1


def test_a_forecast_made_the_row_before_is_spelled_as_it_was_there():
    # the writer copies a step's forecast and interval from its stream's previous
    # row's next_* text when the numbers are the same: the text must not change
    rng = np.random.default_rng(4)
    streams, steps = 7, 40
    n = streams * steps
    batch = batch_of(awkward_floats(n, seed=4)[:n])
    batch.stream[:] = np.array([f"s/{k}/t" for k in range(streams)], object)[np.arange(n) % streams]
    nxt = np.stack([batch.next_forecast, batch.next_lower, batch.next_upper])
    prev = np.arange(n) - streams  # time-major: a stream's previous row
    chained = prev >= 0
    chained[rng.random(n) < 0.2] = False  # some forecasts are not the last row's
    for c, name in enumerate(("forecast", "lower", "upper")):
        getattr(batch, name)[chained] = nxt[c, prev[chained]]
    signed = np.flatnonzero(chained)[::3]  # 0.0 == -0.0, but "0" is not "-0"
    batch.next_forecast[prev[signed]] = -0.0
    batch.forecast[signed] = 0.0
    rows = CsvRows()
    together = bytes(rows.of(batch))
    alone = b"".join(bytes(rows.of(batch.take(np.array([i])))) for i in range(n))
    assert together == alone


def test_a_time_spelled_before_is_copied_as_it_was_spelled():
    # the writer copies a time's text from the last row that spelled the same time in
    # either time column: draw both columns from a few times so that most repeat
    rng = np.random.default_rng(5)
    pool = np.array([1.6e9, 1.6e9 + 60, 1.6e9 + 0.0005, -0.0, 0.0, np.nan, np.inf,
                     -62167219200.5, -7e10, LAST_ISO_SECOND])  # fmt: skip
    n = 600
    batch = batch_of(np.zeros(n), pool[rng.integers(0, len(pool), n)])
    batch.next_timestamp[:] = pool[rng.integers(0, len(pool), n)]
    batch.next_timestamp[1::2] = batch.timestamp[::2][: n // 2] + 60  # a stream's next time
    frame = cells(batch)
    assert frame["timestamp"].tolist() == iso_times(batch.timestamp).tolist()
    assert frame["next_timestamp"].tolist() == iso_times(batch.next_timestamp).tolist()


@given(st.lists(st.text(alphabet='ab/,"\r\n\u00e9', max_size=6), max_size=8))
def test_keys_are_encoded_together_as_each_would_be_alone(keys):
    blob, offsets = key_table(keys)
    one_by_one, each_offsets = text_table([quoted(key) for key in keys])
    assert bytes(blob) == bytes(one_by_one)
    assert offsets.tolist() == each_offsets.tolist()
