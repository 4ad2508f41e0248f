"""Verdict rows as CSV text, written by one compiled pass over the columns.

Arrow's writer (``pyarrow.csv.write_csv``) turned each column into a column of
strings and then joined them; over a replay it was most of the run (0.6 s of
float formatting per 500,000 rows, plus 0.2 s building the Arrow table with
its ISO times). Here every cell goes straight from the numpy columns into one
byte buffer.

The text is what Arrow's writer gave, cell for cell, but for the model's numbers
and quoting:

* ``value``, ``min`` and ``max`` (readings, and a window's aggregates of them) are
  the shortest decimal that reads back as the same float64, as before:
  ``16.226``, ``0.1``, ``1e+22``. The compiled pass finds it wherever a decimal
  of up to 15 significant digits is exact (the usual case: readings logged as
  short decimals), and in integer arithmetic for 16 and 17 digits between 0.001
  and 2**52 (a window mean such as ``21.133333333333333``, or a logged float
  such as NAB's ``74.93588199999998``); the few left (other magnitudes, ties)
  take their digits from Python's ``repr``, which is the same shortest decimal.
* ``forecast``, ``lower``, ``upper``, ``anomaly_score`` and ``next_forecast``,
  ``next_lower``, ``next_upper`` are rounded to ``MODEL_DIGITS`` (12) significant
  digits, trailing zeros dropped: ``16.2259981341`` where the shortest float64
  text was ``16.225998134110426``. The network computes in float32 (about 7
  significant digits), and no sensor resolves one part in 10^12 of its reading,
  so the digits left out carry nothing a reader can use; ``--out FILE.parquet``
  keeps every bit of the float64.

Numbers are laid out as Arrow (double-conversion) lays them out: positional when
the leading digit's power of ten is -6..9 (``0.0000012345``, ``1000000000``),
otherwise ``1.5e-7``, ``1e+10``; ``-0``, ``inf``, ``-inf``; NaN is an empty cell.
Times are ``iso_times``' text; the flag is 0 or 1; a text cell (stream key, model
name, reason) is quoted where it holds a comma, a quote or a line break, each by
itself (Arrow's writer quoted every text cell of a batch that had one such).
"""

from __future__ import annotations

import math
import re

import numba
import numpy as np

from connectors.byte_copy import copy_bytes, eight_digits, store8
from connectors.records import LAST_ISO_SECOND, iso_times
from pipeline.pointers import data_pointer
from pipeline.types import Reason, VerdictBatch

MODEL_DIGITS = 12  # significant digits of the model's numbers in CSV
EXACT_DIGITS = 15  # the compiled search's longest exact decimal
FIRST_YEAR_ONE = -62_135_596_800.0  # 0001-01-01T00:00:00Z
DAY_SECONDS = 86_400
NEEDS_QUOTES = (",", '"', "\n", "\r")  # what RFC 4180 quotes (and Arrow would not write bare)
_QUOTE_MARK = re.compile(f"[{re.escape(''.join(NEEDS_QUOTES))}]")  # one scan, not four

_POW10 = np.array([10.0**k for k in range(23)])  # exact in float64
_P10 = np.array([10**k for k in range(19)], np.int64)
_U10, _U100, _U10_8 = np.uint64(10), np.uint64(100), np.uint64(10**8)
_PAIRS = np.frombuffer("".join(f"{k:02d}" for k in range(100)).encode(), np.uint8).copy()
MAX_NUMBER = 24  # "-1.7976931348623157e+308"
MAX_TIME = 25  # "-1234-12-31T23:59:59.999Z" (a year past -999 takes one more)
HARD = np.int32(-(2**31))  # ``exact_digits``: no exact decimal of at most 15 digits


def quoted(text: str) -> str:
    """A text cell as written: in quotes (inner quotes doubled) where it holds a comma,
    a quote or a line break, else as it is.

    >>> quoted("site/dev/temp"), quoted("a,b"), quoted('a"b')
    ('site/dev/temp', '"a,b"', '"a""b"')
    """
    if _QUOTE_MARK.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


@numba.njit(cache=True, error_model="numpy", inline="always")
def _decimal_exponent(a):
    """floor(log10(a)) for a finite a > 0: the power of ten found by walking the table
    from 10**0 (a model's numbers are within a few powers of one; ``math.log10`` is a
    library call for each of them); from log10 outside 10**-22 .. 10**22, where a digit
    more or less is all a rounding across a power of ten costs."""
    if 1.0 <= a < _POW10[22]:
        e = 0
        while a >= _POW10[e + 1]:
            e += 1
        return e
    if a < 1.0 and a * _POW10[22] >= 1.0:
        e = -1
        while a * _POW10[-e] < 1.0:
            e -= 1
        return e
    return int(math.floor(math.log10(a)))


@numba.njit(cache=True, error_model="numpy")
def _shortest(a):
    """(digits, scale) of a's shortest decimal: the fewest digits that read back as a.
    Up to 15 digits a float64 division or product tells (digits * 10**-scale == a); 16
    and 17 need ``_nearest_decimal``. (0, HARD) where neither can tell."""
    e = _decimal_exponent(a)
    for p in range(1, EXACT_DIGITS + 1):
        s = p - 1 - e
        if s > 22 or s < -22:
            return 0, HARD
        if s >= 0:
            d = np.rint(a * _POW10[s])
            if d < 9007199254740992.0 and d / _POW10[s] == a:
                return np.int64(d), np.int32(s)
        else:
            d = np.rint(a / _POW10[-s])
            if d < 9007199254740992.0 and d * _POW10[-s] == a:
                return np.int64(d), np.int32(s)
    for p in range(EXACT_DIGITS + 1, 18):  # 17 digits always suffice
        d, s = _nearest_decimal(a, p - 1 - e)
        if s != LONGER:
            return d, s
    return 0, HARD


LONGER = np.int32(HARD + 1)  # ``_nearest_decimal``: no decimal of this length reads back
_LOW32 = np.uint64(0xFFFFFFFF)
_U32, _U1 = np.uint64(32), np.uint64(1)
_U10S = _P10.astype(np.uint64)
_MANTISSA = 2.0**53


@numba.njit(cache=True, error_model="numpy", inline="always")
def _mul128(a, b):
    """(high, low) 64-bit halves of the product of two uint64."""
    a_lo, a_hi, b_lo, b_hi = a & _LOW32, a >> _U32, b & _LOW32, b >> _U32
    low_low, low_high, high_low = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo
    middle = (low_low >> _U32) + (low_high & _LOW32) + (high_low & _LOW32)
    high = a_hi * b_hi + (low_high >> _U32) + (high_low >> _U32) + (middle >> _U32)
    return high, (low_low & _LOW32) | (middle << _U32)


@numba.njit(cache=True, error_model="numpy")
def _nearest_decimal(a, s):
    """(digits, s): the decimal with ``s`` places nearest to a, when it reads back as a;
    (0, LONGER) when it does not; (0, HARD) when this cannot tell (a or s outside what
    128 bits hold exactly, or two decimals as near that both read back).

    Past 15 digits several decimals of one length can read back as a, and a float64
    product no longer finds the nearest; so in integers: a = m * 2**-k exactly, and
    a * 10**s = m * 10**s / 2**k, rounded to the nearest integer d. The decimal reads back
    as a when it is within half of a's spacing 2**-k, that is when the remainder's
    distance ``dist / 2**k`` times ``10**-s`` is under ``2**-k / 2``: 2 dist < 10**s (at
    equality, a tie that reads back as the even neighbour)."""
    if s < 0 or s > 18 or not (2.0**-10 <= a < 2.0**52):
        return 0, HARD
    fraction, exponent = math.frexp(a)  # a = fraction * 2**exponent, fraction in [0.5, 1)
    m = np.uint64(fraction * _MANTISSA)  # exact: 53 bits
    if m == np.uint64(2**52):  # a power of two: the neighbour below is nearer
        return 0, HARD
    k = np.uint64(53 - exponent)  # 1..63 in the range above
    high, low = _mul128(m, _U10S[s])
    if high >> k:  # d would not fit 64 bits
        return 0, HARD
    d = (high << (np.uint64(64) - k)) | (low >> k)
    remainder = low & ((_U1 << k) - _U1)
    half = _U1 << (k - _U1)
    if remainder > half:
        d += _U1
        dist = (_U1 << k) - remainder
    else:
        dist = remainder
    twice, ten_s = dist << _U1, _U10S[s]
    if twice > ten_s or (twice == ten_s and m & _U1):
        return 0, LONGER
    if remainder == half:  # two decimals as near, both reading back: leave it to repr
        return 0, HARD
    return np.int64(d), np.int32(s)


@numba.njit(cache=True, error_model="numpy")
def exact_digits(x, digits, scale):
    """For each finite nonzero x: (digits, scale) of its shortest decimal, or scale
    HARD where the compiled search gives up (Python's ``repr`` fills those in)."""
    hard = 0
    for i in range(x.shape[0]):
        a = abs(x[i])
        if a == 0.0 or not math.isfinite(a):
            digits[i], scale[i] = 0, 0
            continue
        d, s = _shortest(a)
        digits[i], scale[i] = d, s
        hard += s == HARD
    return hard


def fill_hard(x: np.ndarray, digits: np.ndarray, scale: np.ndarray) -> None:
    """Digits for the cells ``exact_digits`` left: Python's shortest repr (David Gay's),
    which double-conversion's shortest agrees with."""
    for i in np.flatnonzero(scale == HARD).tolist():
        text = repr(abs(float(x[i])))
        mantissa, _, exponent = text.partition("e")
        whole, _, fraction = mantissa.partition(".")
        fraction = fraction.rstrip("0") if fraction != "0" else ""
        digits[i] = int(whole + fraction)
        scale[i] = len(fraction) - int(exponent or 0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _scaled(a, s):
    """a * 10**s for any s, as closely as a few roundings allow."""
    while s > 22:
        a *= _POW10[22]
        s -= 22
    while s < -22:
        a /= _POW10[22]
        s += 22
    return a * _POW10[s] if s >= 0 else a / _POW10[-s]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _rounded(a, figures):
    """(digits, scale): a rounded to ``figures`` significant digits, a finite a > 0."""
    s = figures - 1 - _decimal_exponent(a)
    d = np.rint(_scaled(a, s))
    if d >= _POW10[figures]:  # rounded up to the next power of ten
        d = np.rint(d / 10.0)
        s -= 1
    return np.int64(d), np.int32(s)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _digit_count(n):
    """Decimal digits of n >= 0 (1 for 0)."""
    count = 1
    while count < 19 and n >= _P10[count]:
        count += 1
    return count


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_backwards(buf, end, n, count):
    """The last ``count`` digits of n >= 0 ending before ``end``, two at a time; what
    is left of n (its leading digits). Unsigned: Python's floor division of signed
    integers costs twice the instructions."""
    m = np.uint64(n)
    while count >= 2:
        q = m // _U100
        r = np.intp(m - q * _U100) * 2
        buf[end - 2] = _PAIRS[r]
        buf[end - 1] = _PAIRS[r + 1]
        m = q
        end -= 2
        count -= 2
    if count:
        q = m // _U10
        buf[end - 1] = 48 + np.intp(m - q * _U10)
        m = q
    return np.int64(m)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put2(buf, pos, n):
    """0 <= n < 100 as two digits."""
    buf[pos] = _PAIRS[2 * n]
    buf[pos + 1] = _PAIRS[2 * n + 1]
    return pos + 2


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_uint(buf, pos, n, width):
    """n >= 0 in decimal, zero-padded to ``width``; the new position."""
    count = _digit_count(n)
    while count < width:
        buf[pos] = 48
        pos += 1
        width -= 1
    _put_backwards(buf, pos + count, n, count)
    return pos + count


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_figures(buf, pos, d, n, point):
    """The n digits of d with a decimal point after the first ``point`` (0 < point
    <= n; none when point == n); the new position."""
    frac = n - point
    if not frac:
        _put_backwards(buf, pos + n, d, n)
        return pos + n
    head = _put_backwards(buf, pos + n + 1, d, frac)
    buf[pos + point] = 46
    _put_backwards(buf, pos + point, head, point)
    return pos + n + 1


@numba.njit(cache=True, error_model="numpy", inline="always")
def _trim(buf, end):
    """``end`` moved back over a fraction's trailing zeros, and its point if no digit
    is left after it (the text before ``end`` has a decimal point)."""
    while buf[end - 1] == 48:
        end -= 1
    return end - 1 if buf[end - 1] == 46 else end


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_zero_point(buf, pos, zeros):
    """``0.`` and ``zeros`` zeros, the start of a number below 1; the new position."""
    buf[pos] = 48
    buf[pos + 1] = 46
    pos += 2
    for _ in range(zeros):
        buf[pos] = 48
        pos += 1
    return pos


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_digits(buf, pos, d, s, negative):
    """d * 10**-s (d > 0) laid out as double-conversion's shortest form lays it out:
    trailing zeros of a fraction left out (the layout does not depend on them)."""
    n = _digit_count(d)
    if negative:
        buf[pos] = 45
        pos += 1
    point = n - s  # digits before the decimal point
    exponent = point - 1
    if -6 <= exponent < 10:
        if point <= 0:
            pos = _put_zero_point(buf, pos, -point)
            return _trim(buf, _put_figures(buf, pos, d, n, n))
        if point >= n:
            pos = _put_figures(buf, pos, d, n, n)
            for _ in range(point - n):
                buf[pos] = 48
                pos += 1
            return pos
        return _trim(buf, _put_figures(buf, pos, d, n, point))
    pos = _put_figures(buf, pos, d, n, 1)
    if n > 1:
        pos = _trim(buf, pos)
    buf[pos] = 101
    buf[pos + 1] = 43 if exponent >= 0 else 45
    return _put_uint(buf, pos + 2, abs(exponent), 1)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_special(buf, pos, x):
    """NaN (nothing), zeros and infinities; -1 for any other number."""
    if x != x:
        return pos
    if x == 0.0:
        if math.copysign(1.0, x) < 0:
            buf[pos] = 45
            pos += 1
        buf[pos] = 48
        return pos + 1
    if math.isinf(x):
        if x < 0:
            buf[pos] = 45
            pos += 1
        buf[pos] = 105
        buf[pos + 1] = 110
        buf[pos + 2] = 102
        return pos + 3
    return -1


@numba.njit(cache=True, error_model="numpy", inline="always")
def put_exact(buf, pos, x, d, s):
    end = _put_special(buf, pos, x)
    return end if end >= 0 else _put_digits(buf, pos, d, s, x < 0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put12(buf, pos, d):
    """0 <= d < 10**12 as twelve digits, leading zeros kept, in two stores of eight
    bytes (the second overwrites the first's four zeros)."""
    m = np.uint64(d)
    high = m // _U10_8
    store8(buf, pos, eight_digits(high) >> np.uint64(32))  # its last four digits
    store8(buf, pos + 4, eight_digits(m - high * _U10_8))


@numba.njit(cache=True, error_model="numpy", inline="always")
def put_model(buf, pos, x):
    """x to ``MODEL_DIGITS`` significant digits, laid out as ``_put_digits`` lays them
    out. A model's numbers sit between 1e-5 and 1e10 as a rule: there the twelve
    digits are written in one go and the point put in, without counting digits."""
    end = _put_special(buf, pos, x)
    if end >= 0:
        return end
    d, s = _rounded(abs(x), MODEL_DIGITS)
    point = MODEL_DIGITS - s  # digits before the decimal point
    if d < _P10[MODEL_DIGITS - 1] or not (-5 <= point <= 10):
        return _put_digits(buf, pos, d, s, x < 0)  # a log10 estimate off by one; far out
    if x < 0:
        buf[pos] = 45
        pos += 1
    if point <= 0:  # 0.000ddd
        pos = _put_zero_point(buf, pos, -point)
        _put12(buf, pos, d)
        return _trim(buf, pos + MODEL_DIGITS)
    _put12(buf, pos + 1, d)
    for j in range(point):  # the whole part one to the left, for the point
        buf[pos + j] = buf[pos + 1 + j]
    buf[pos + point] = 46
    return _trim(buf, pos + MODEL_DIGITS + 1)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _civil(days):
    """(year, month, day) of a day count from 1970-01-01 (proleptic Gregorian)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


@numba.njit(cache=True, error_model="numpy", inline="always")
def put_time(buf, pos, seconds, early):
    """``iso_times``' text: to the second when whole, else to the millisecond; nothing
    for NaN and for times ISO 8601 cannot spell. Times before the year 1, where
    numpy's calendar parts from the proleptic Gregorian one, are looked up in
    ``early``: pointers to (sorted distinct times, their text, its offsets) and the
    count of times, see ``early_times``."""
    if not (math.isfinite(seconds) and abs(seconds) <= LAST_ISO_SECOND):
        return pos
    if seconds < FIRST_YEAR_ONE:
        times, text, offsets, count = early
        low, high = 0, count  # the first time >= seconds (it is there)
        while low < high:
            middle = (low + high) // 2
            if times[middle] < seconds:
                low = middle + 1
            else:
                high = middle
        return copy_bytes(buf, pos, text, offsets[low], offsets[low + 1])
    millis = np.int64(np.rint(seconds * 1000.0))
    whole = millis // 1000  # floor: before 1970 too
    ms = millis - whole * 1000
    days = whole // DAY_SECONDS
    clock = whole - days * DAY_SECONDS
    year, month, day = _civil(days)
    if year < 0:  # as numpy prints it: "%04d"
        buf[pos] = 45
        pos = _put_uint(buf, pos + 1, -year, 3)
    elif year < 10_000:
        pos = _put2(buf, pos, year // 100)
        pos = _put2(buf, pos, year % 100)
    else:
        pos = _put_uint(buf, pos, year, 4)
    buf[pos] = 45
    pos = _put2(buf, pos + 1, month)
    buf[pos] = 45
    pos = _put2(buf, pos + 1, day)
    buf[pos] = 84
    hour = clock // 3600
    pos = _put2(buf, pos + 1, hour)
    buf[pos] = 58
    minute = clock // 60 - hour * 60
    pos = _put2(buf, pos + 1, minute)
    buf[pos] = 58
    pos = _put2(buf, pos + 1, clock - (hour * 60 + minute) * 60)
    if ms:
        buf[pos] = 46
        buf[pos + 1] = 48 + ms // 100
        pos = _put2(buf, pos + 2, ms % 100)
    buf[pos] = 90
    return pos + 1


@numba.njit(cache=True, error_model="numpy", inline="always")
def _put_time_again(buf, pos, seconds, early, seen, seen_at, column):
    """``put_time``, or a copy of the text already written for the same time: the last
    time of either time column (``seen``, 2; its text ``buf[seen_at[2 c]:seen_at[2 c +
    1]]``). Streams that share a clock repeat their times row after row, and a regular
    stream's time is its previous row's next time: most times are copied, not spelled."""
    for c in range(2):
        if seen[c] == seconds:  # NaN, spelled by nothing, is never equal
            return copy_bytes(buf, pos, buf, seen_at[2 * c], seen_at[2 * c + 1])  # apart
    end = put_time(buf, pos, seconds, early)
    seen[column] = seconds
    seen_at[2 * column] = pos
    seen_at[2 * column + 1] = end
    return end


@numba.njit(cache=True, error_model="numpy", inline="always")
def _same_number(a, b):
    """Whether two numbers are spelled alike: equal, and zeros of the same sign (NaN,
    never equal, is spelled by nothing anyway)."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _same_numbers(model, i, numbers, k):
    """Whether ``model[:3, i]`` and ``numbers[k]`` are spelled alike, one by one.

    Indexes, not slices: a slice is a new array view a row, with an atomic add and
    subtract on its reference count (see ``data_pointer``); with indexes here and
    below, ``CsvRows.of`` over the synthetic replay took 61 ms against 68."""
    for j in range(3):
        if not _same_number(model[j, i], numbers[k, j]):
            return False
    return True


@numba.njit(cache=True, error_model="numpy", inline="always")
def put_text(buf, pos, blob, offsets, k):
    return copy_bytes(buf, pos, blob, offsets[k], offsets[k + 1])


@numba.njit(cache=True, error_model="numpy", inline="always")
def put_int(buf, pos, n):
    if n < 0:
        buf[pos] = 45
        pos += 1
        if n == -9223372036854775808:  # no positive twin
            for c in b"9223372036854775808":
                buf[pos] = c
                pos += 1
            return pos
        n = -n
    return _put_uint(buf, pos, n, 1)


@numba.njit(cache=True, error_model="numpy", inline="always")
def early_pointers(early):
    """``put_time``'s ``early``: pointers to ``early_times``' arrays, and its count of
    times. The caller holds the arrays."""
    times, text, offsets = early
    return data_pointer(times), data_pointer(text), data_pointer(offsets), times.shape[0]


@numba.njit(cache=True, error_model="numpy")
def write_rows(
    buffer,
    key_code,
    key_blob,
    key_offsets,
    columns,
    label_blob,
    label_offsets,
    model_name,
    seen_times,
    seen_spans,
):
    """Every row into ``buffer``, which must hold ``row_bound`` bytes a row; the bytes
    written. ``columns`` is ``column_args``'s tuple. ``seen_times`` (2,) float64 and
    ``seen_spans`` (4,) int64 are scratch."""
    timestamp, early, exact, exact_d, exact_s, model, flag, next_timestamp, count, reason = columns
    # The helpers get bare pointers, never arrays (see data_pointer); the caller holds
    # every array they point into.
    buf = data_pointer(buffer)
    early_at = early_pointers(early)
    pos = 0
    # A step's forecast and interval are what its stream's previous row forecast as
    # next: where the numbers are the same, their text is copied from that row (three
    # of a row's seven model numbers, never spelled twice).
    streams = key_offsets.shape[0] - 1
    next_start = np.full(streams, -1, np.int64)  # a stream's last ",next_forecast,..."
    next_end = np.zeros(streams, np.int64)
    next_numbers = np.empty((streams, 3))
    seen_times[:] = np.nan
    seen = data_pointer(seen_times)  # the last time spelled in each time column
    seen_at = data_pointer(seen_spans)  # where their text is in ``buf``: [start, end) each
    for i in range(timestamp.shape[0]):
        k = key_code[i]
        pos = put_text(buf, pos, key_blob, key_offsets, k)
        buf[pos] = 44
        pos = _put_time_again(buf, pos + 1, timestamp[i], early_at, seen, seen_at, 0)
        # Each helper has as few call sites as the row allows: numba copies an inlined
        # helper, with the helpers it inlines, into every site (compile time, not speed).
        value_at = value_end = pos + 1  # the value's text: a min or max equal to it copies it
        for e in range(3):  # value; then min and max
            if e == 1:
                buf[pos] = 44
                pos = put_int(buf, pos + 1, count[i])
            buf[pos] = 44
            if e > 0 and _same_number(exact[e, i], exact[0, i]):
                pos = copy_bytes(buf, pos + 1, buf, value_at, value_end)
                continue
            pos = put_exact(buf, pos + 1, exact[e, i], exact_d[e, i], exact_s[e, i])
            if e > 0:
                continue
            value_end = pos
            first = 0
            if next_start[k] >= 0 and _same_numbers(model, i, next_numbers, k):
                pos = copy_bytes(buf, pos, buf, next_start[k], next_end[k])
                first = 3
            for c in range(first, 7):  # forecast, lower, upper, anomaly_score; next_forecast, ...
                if c == 4:
                    buf[pos] = 44
                    buf[pos + 1] = 49 if flag[i] else 48
                    buf[pos + 2] = 44
                    pos = _put_time_again(
                        buf, pos + 3, next_timestamp[i], early_at, seen, seen_at, 1
                    )
                    next_start[k] = pos
                buf[pos] = 44
                pos = put_model(buf, pos + 1, model[c, i])
            next_end[k] = pos
            for j in range(3):
                next_numbers[k, j] = model[4 + j, i]
        buf[pos] = 44
        pos += 1
        for j in range(model_name.shape[0]):
            buf[pos] = model_name[j]
            pos += 1
        buf[pos] = 44
        pos = put_text(buf, pos + 1, label_blob, label_offsets, reason[i])
        buf[pos] = 10
        pos += 1
    return pos


def shortest_digits(exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(digits, scale) of every cell of ``exact`` (3, n): value, min, max. A min or max
    equal to its value (every unwindowed reading) copies the value's digits: the
    search, and Python's ``repr`` for the hard cells, run once per reading."""
    digits = np.empty(exact.shape, np.int64)
    scale = np.empty(exact.shape, np.int32)
    if exact_digits(exact[0], digits[0], scale[0]):
        fill_hard(exact[0], digits[0], scale[0])
    for c in (1, 2):
        same = exact[c] == exact[0]  # NaN is never the same: it has no digits to copy
        digits[c], scale[c] = digits[0], scale[0]
        if same.all():
            continue
        rest = np.flatnonzero(~same)
        x, d, s = exact[c, rest], digits[c, rest], scale[c, rest]
        if exact_digits(x, d, s):
            fill_hard(x, d, s)
        digits[c, rest], scale[c, rest] = d, s
    return digits, scale


def text_table(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 of ``texts`` end to end, and (len + 1,) offsets of each."""
    encoded = [text.encode() for text in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


def key_table(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``text_table`` of the keys as written (``quoted``). Keys that are plain ASCII
    with nothing to quote (the rule) are encoded as one string, not one by one: a
    batch of a log of 10^5 devices holds as many keys as rows."""
    joined = "".join(keys)
    if not joined.isascii() or _QUOTE_MARK.search(joined):
        return text_table([quoted(key) for key in keys])
    offsets = np.zeros(len(keys) + 1, np.int64)
    offsets[1:] = np.cumsum(np.fromiter(map(len, keys), np.int64, len(keys)))
    return np.frombuffer(joined.encode(), np.uint8), offsets


def early_times(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The times before the year 1 (a dropped reading's, as a rule none): sorted, and
    their ``iso_times`` text."""
    before = times < FIRST_YEAR_ONE
    if not before.any():
        return NONE_EARLY  # the rule, without numpy's unique and datetime text (~20 us)
    early = np.unique(times[before])
    return (early, *text_table(iso_times(early).tolist()))


# ``early_times`` of no times, typed as it types them (its text is read-only)
NONE_EARLY = (np.empty(0), np.frombuffer(b"", np.uint8), np.zeros(1, np.int64))


def row_bound(longest_key: int, longest_label: int, model_name: int) -> int:
    """Bytes a row can take at most."""
    cells = 2 * MAX_TIME + 10 * MAX_NUMBER + 20 + 1  # times, numbers, count, flag
    return longest_key + cells + model_name + longest_label + 17  # 16 commas, a newline


def column_args(verdicts: VerdictBatch) -> tuple[np.ndarray | tuple[np.ndarray, ...], ...]:
    """The columns the compiled writers take (``write_rows``, ``json_text.write_objects``):
    timestamp, ``early_times``, exact (3, n: value, min, max) with its ``exact_digits``
    digits and scale, model (7, n: ``MODEL_COLUMNS``), flag, next_timestamp, count and
    the dropped reason, each as the kernels type it."""
    exact = np.stack([verdicts.value, verdicts.min, verdicts.max]).astype(np.float64)
    exact_d, exact_s = shortest_digits(exact)
    model = np.stack([getattr(verdicts, name) for name in MODEL_COLUMNS])
    times = np.stack([verdicts.timestamp, verdicts.next_timestamp]).astype(np.float64)
    return (
        times[0],
        early_times(times),
        exact,
        exact_d,
        exact_s,
        model.astype(np.float64, copy=False),
        verdicts.is_anomaly.astype(np.bool_, copy=False),
        times[1],
        verdicts.count.astype(np.int64, copy=False),
        verdicts.dropped.astype(np.int64),
    )


def longest(offsets: np.ndarray) -> int:
    """The longest of the texts a ``text_table``'s offsets delimit (0 for none)."""
    return int(np.diff(offsets).max(initial=0))


def room(buffer: np.ndarray, size: int) -> np.ndarray:
    """``buffer`` if it holds ``size`` items, else a larger one: a writer keeps its buffer
    between batches (a fresh one would be paged in again for every batch)."""
    return buffer if len(buffer) >= size else np.empty(size, buffer.dtype)


class CsvRows:
    """Turns verdict batches into CSV rows, reusing one buffer between batches (a fresh
    one would be paged in again for every batch)."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.uint8)

    def of(self, verdicts: VerdictBatch) -> memoryview:
        """The rows' UTF-8, valid until the next call."""
        codes, keys = verdicts.stream_codes()
        key_blob, key_offsets = key_table(keys.tolist())
        label_blob, label_offsets = _LABEL_TABLE
        model_name = np.frombuffer(quoted(verdicts.model).encode(), np.uint8)
        bound = row_bound(longest(key_offsets), longest(label_offsets), len(model_name))
        self._buffer = room(self._buffer, len(verdicts) * bound)
        written = write_rows(
            self._buffer,
            codes,
            key_blob,
            key_offsets,
            column_args(verdicts),
            label_blob,
            label_offsets,
            model_name,
            np.empty(2),
            np.empty(4, np.int64),
        )
        return self._buffer.data[:written]


MODEL_COLUMNS = (
    "forecast",
    "lower",
    "upper",
    "anomaly_score",
    "next_forecast",
    "next_lower",
    "next_upper",
)
_LABEL_TABLE = text_table(["", *(quoted(Reason(c).label) for c in range(1, max(Reason) + 1))])
