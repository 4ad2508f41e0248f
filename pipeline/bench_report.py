"""Rows of ``sensorcast bench``: one measured metric, sensorcast beside its baseline.

Every scenario hands back ``Row``s; this module turns them into the table on
stdout and the JSON file. A row keeps every run, and reports their median:
machines are noisy, and the ratio of two medians taken in the same run says
more than either number alone.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    """What the issue asks of a metric: ``value`` for sensorcast alone (``at_least``
    or at most), or a ``ratio`` against the baseline (sensorcast / baseline)."""

    value: float | None = None
    ratio: float | None = None
    at_least: bool = True  # False: lower is better (latency, memory, start-up)

    def met(self, sensorcast: float, ratio: float) -> bool:
        checks = [(self.value, sensorcast), (self.ratio, ratio)]
        return all(self._ok(x, want) for want, x in checks if want is not None)

    def _ok(self, x: float, want: float) -> bool:
        return x >= want if self.at_least else x <= want

    def text(self, unit: str) -> str:
        sign = ">=" if self.at_least else "<="
        parts = [f"{sign} {_number(self.value)} {unit}"] if self.value is not None else []
        if self.ratio is not None:
            parts.append(f"{sign} {self.ratio:g}x baseline")
        return ", ".join(parts) or "-"


@dataclass(frozen=True, slots=True)
class Row:
    """One metric: every run of sensorcast and of its baseline, and the medians."""

    scenario: str
    metric: str
    unit: str
    sensorcast_runs: list[float]
    baseline_runs: list[float]
    baseline: str  # what the baseline is
    target: Target | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sensorcast(self) -> float:
        return median(self.sensorcast_runs)

    @property
    def baseline_value(self) -> float:
        return median(self.baseline_runs)

    @property
    def ratio(self) -> float:
        """sensorcast / baseline, of the medians; NaN when the baseline is 0."""
        base = self.baseline_value
        return self.sensorcast / base if base else math.nan

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.sensorcast, self.ratio)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = self.target.text(self.unit) if self.target else None
        out.update(sensorcast=self.sensorcast, baseline_value=self.baseline_value)
        out.update(ratio=self.ratio, met=self.met)
        return out


def median(runs: Sequence[float]) -> float:
    return float(statistics.median(runs)) if runs else math.nan


def repeat(runs: int, once: Callable[[], tuple[float, float]]) -> tuple[list[float], list[float]]:
    """``once()`` -> (sensorcast, baseline) measured back to back, ``runs`` times."""
    pairs = [once() for _ in range(runs)]
    return [a for a, _ in pairs], [b for _, b in pairs]


# -- output -------------------------------------------------------------------------------

HEADER = ("scenario", "metric", "sensorcast", "baseline", "ratio", "target", "met?")


def table(rows: Sequence[Row]) -> str:
    """A plain-text table, one line per row, notes underneath."""
    lines = [HEADER] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    text.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {row.scenario}/{row.metric}: baseline = {row.baseline}. {row.note}".rstrip()
             for row in rows]  # fmt: skip
    return "\n".join([*text, "", "notes:", *notes])


def _cells(row: Row) -> tuple[str, ...]:
    met = {None: "-", True: "yes", False: "NO"}[row.met]
    target = row.target.text(row.unit) if row.target else "-"
    return (
        row.scenario,
        f"{row.metric} ({row.unit})",
        _number(row.sensorcast),
        _number(row.baseline_value),
        f"{row.ratio:.3g}x",
        target,
        met,
    )


def _number(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def machine() -> dict[str, Any]:
    """Enough about the machine to read the numbers by."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in ("torch", "numpy", "river", "paho-mqtt")},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: str | Path, rows: Sequence[Row], arguments: dict[str, Any]) -> None:
    document = {
        "arguments": arguments,
        "machine": machine(),
        "rows": [row.as_json() for row in rows],
    }
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
