"""Generated CSV logs: valid files with the readings they hold, and ways to corrupt them."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import strategies as st

from fuzz.hostile import encode

TIME_STYLES = ("iso-z", "iso-naive", "iso-offset", "epoch", "epoch-ms", "split", "pair")
# 1976..2096 in whole minutes: epoch ms stay above 1e11, where they are told from seconds
FIRST, LAST = 200_000_000, 4_000_000_000
STREAMS = ("office/t1/temp", "lab/probe 2", "é/🌡", "a,b/c", 'q"uote', "x" * 200)
COLUMNS = ("temp", "pres", "wind speed", "tëmp", "co2,ppm")
HOSTILE_CELLS = (
    "inf", "-inf", "nan", "NaN", "1e999", "-1e999", "1e-999", "abc", "", '"', '""', '"a,b"',
    "\x00", "\ufeff", "\r", "\t", "9" * 25, "9" * 400, ",", ",,", "now", "today", "0x1F",
    "1_000", "é", "\ud800", "-", "  ", "#", "1e300", "-1e300", "2020-13-45T99:00:00",
    "1970-01-01T00:00:00+99:00", "99999-01-01", "9999-12-31T23:59:59Z", "0001-01-01", "0",
    "/", "a//b", " a ", "\\",
)  # fmt: skip


@dataclass
class LogFile:
    """A generated log: its text, and what a reader must find in it."""

    format: str  # nab | long | wide
    text: str
    readings: list[tuple[str, float, float]] = field(default_factory=list)  # stream, t, value
    missing: int = 0


def time_header(style: str) -> list[str]:
    return {
        "split": ["year", "month", "day", "hour", "minute"],
        "pair": ["Date", "Time"],
    }.get(style, ["timestamp"])


def time_cells(style: str, seconds: int) -> list[str]:
    when = datetime.fromtimestamp(seconds, UTC)
    if style == "split":
        return [str(when.year), str(when.month), str(when.day), str(when.hour), str(when.minute)]
    if style == "pair":
        return [when.strftime("%Y/%m/%d"), when.strftime("%H:%M:%S")]
    if style == "epoch":
        return [str(seconds)]
    if style == "epoch-ms":
        return [str(seconds * 1000)]
    if style == "iso-offset":  # the same instant, written at +05:30
        local = datetime.fromtimestamp(seconds + 19_800, UTC).replace(tzinfo=None)
        return [local.isoformat() + "+05:30"]
    return [when.replace(tzinfo=None).isoformat() + ("Z" if style == "iso-z" else "")]


VALUES = st.floats(-1e12, 1e12, allow_nan=False).map(lambda x: round(x, 4))
CELL = st.none() | VALUES  # None: an empty cell, a missing value


@st.composite
def log_files(draw: st.DrawFn, stem: str) -> LogFile:
    """A valid nab, long or wide log (every row has a readable time and stream)."""
    fmt = draw(st.sampled_from(("nab", "long", "wide")))
    style = draw(st.sampled_from(TIME_STYLES if fmt == "wide" else TIME_STYLES[:5]))
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3, unique=True))
    rows = draw(st.lists(st.integers(FIRST // 60, LAST // 60), min_size=1, max_size=25))
    log = LogFile(fmt, "")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(("\n", "\r\n"))))
    if fmt == "nab":
        writer.writerow(["timestamp", "value"])
    elif fmt == "long":
        writer.writerow([*time_header(style), "stream", "value"])
    else:
        writer.writerow([*time_header(style), *columns])
    for minute in rows:
        seconds = minute * 60
        stream = draw(st.sampled_from(STREAMS))
        names = [stem] if fmt == "nab" else [stream] if fmt == "long" else columns
        cells = [draw(CELL) for _ in names]
        if fmt == "long":
            writer.writerow([*time_cells(style, seconds), stream, _cell(cells[0])])
        else:
            writer.writerow([*time_cells(style, seconds), *map(_cell, cells)])
        for name, cell in zip(names, cells, strict=True):
            if cell is None:
                log.missing += 1
            else:
                full = f"{stem}/{name}" if fmt == "wide" else name
                log.readings.append((full, float(seconds), cell))
    log.text = out.getvalue()
    return log


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def corrupt(rng: random.Random, text: str) -> bytes:
    """``text`` with hostile cells, broken quoting, cut or repeated lines, bad bytes."""
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 5)):
        at = rng.randrange(len(lines))
        action = rng.randrange(6)
        if action == 0:  # a hostile cell somewhere in a line
            line = lines[at]
            cut = rng.randrange(len(line) + 1)
            lines[at] = line[:cut] + rng.choice(HOSTILE_CELLS) + line[cut:]
        elif action == 1:  # a cell replaced
            cells = lines[at].rstrip("\r\n").split(",")
            cells[rng.randrange(len(cells))] = rng.choice(HOSTILE_CELLS)
            lines[at] = ",".join(cells) + "\n"
        elif action == 2:
            lines.insert(at, rng.choice(("\n", ",,,\n", "\ufeff\n", "#\n", "x" * 100_000 + "\n")))
        elif action == 3:
            lines[at] = lines[at][: rng.randrange(len(lines[at]) + 1)]
        elif action == 4:
            lines.insert(at, lines[rng.randrange(len(lines))])
        else:
            del lines[at]
            if not lines:
                lines = [""]
    raw = encode("".join(lines))
    if rng.random() < 0.1:
        at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + rng.choice((b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf")) + raw[at:]
    return raw
