"""Rows of ``sensorcast bench``: one measured metric, sensorcast beside its baseline.

Every scenario hands back ``Row``s; this module turns them into the table on
stdout and the JSON file. A row keeps every run (sensorcast and its baseline
measured side by side) and reports the median of each: machines are noisy, so
its ratio is the median of the runs' own ratios, each sensorcast / the baseline
of the same run, never a sensorcast median over a baseline median of other runs.
A median of an even number of runs is the mean of the middle two.
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

from pipeline.errors import ConfigError
from pipeline.writable import replace_whole


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
    """One metric: every run of sensorcast and of its baseline (run ``i`` of each measured
    side by side), the medians, and the median of the runs' ratios."""

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
    def ratio_runs(self) -> list[float]:
        """Each run's sensorcast / the baseline of the same run; NaN where that is 0."""
        pairs = zip(self.sensorcast_runs, self.baseline_runs, strict=True)
        return [ours / base if base else math.nan for ours, base in pairs]

    @property
    def ratio(self) -> float:
        """The median of ``ratio_runs``: the noise a run's pair shares cancels out."""
        return median(self.ratio_runs)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.sensorcast, self.ratio)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = self.target.text(self.unit) if self.target else None
        out.update(sensorcast=self.sensorcast, baseline_value=self.baseline_value)
        out.update(ratio_runs=self.ratio_runs, ratio=self.ratio, met=self.met)
        return out


def median(runs: Sequence[float]) -> float:
    """The median (of an even count, the mean of the middle two); NaN when there are no
    runs or one of them is NaN (a failed measurement is not sorted in among the others).

    >>> median([3.0, 1.0, 2.0]), median([4.0, 1.0, 2.0, 3.0]), median([1.0, math.nan])
    (2.0, 2.5, nan)
    """
    if not runs or any(math.isnan(x) for x in runs):
        return math.nan
    return float(statistics.median(runs))


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
    return "\n".join([*text, "", *runs_note(rows), "notes:", *notes])


def runs_note(rows: Sequence[Row]) -> list[str]:
    """What the columns are: medians of how many runs, and how the ratio is taken."""
    counts = sorted({len(row.sensorcast_runs) for row in rows})
    if not counts:
        return []
    runs = "/".join(str(n) for n in counts)
    lines = [f"sensorcast, baseline: medians of {runs} run(s); ratio: the median of each "
             "run's sensorcast / the baseline of the same run."]  # fmt: skip
    if counts[0] < 3:
        lines.append("fewer than 3 runs: a check that the bench works, not a result.")
    return [*lines, ""]


def _cells(row: Row) -> tuple[str, ...]:
    met = {None: "-", True: "yes", False: "NO"}[row.met]
    target = row.target.text(row.unit) if row.target else "-"
    return (
        row.scenario,
        f"{row.metric} ({row.unit})",
        _number(row.sensorcast),
        _number(row.baseline_value),
        f"{row.ratio:.3g}x" if math.isfinite(row.ratio) else "-",
        target,
        met,
    )


def _number(x: float) -> str:
    if not math.isfinite(x):  # a run that measured nothing (the JSON says null)
        return "-"
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


def write_json(
    path: str | Path, rows: Sequence[Row], arguments: dict[str, Any], settings: dict[str, Any]
) -> None:
    """The whole document at ``path``, or nothing: written beside it, then renamed over it.
    NaN and infinity (a run that measured nothing) are written as null: they are not JSON."""
    document = {
        "arguments": arguments,
        "settings": settings,  # the sizes, runs and NAB folder used, defaults filled in
        "machine": machine(),
        "rows": [row.as_json() for row in rows],
    }
    text = json.dumps(finite(document), indent=2, allow_nan=False) + "\n"
    path = Path(path)
    try:
        replace_whole(path, text.encode())
    except OSError as exc:
        msg = f"--json: cannot write {path} ({exc.strerror or exc}); give a file you can write"
        raise ConfigError(msg) from exc


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float, however deep, replaced by None.

    >>> finite({"a": [1.0, math.nan], "b": (math.inf, 2)})
    {'a': [1.0, None], 'b': [None, 2]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
