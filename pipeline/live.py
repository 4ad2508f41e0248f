"""A live table of streams for the terminal: last value, forecast, interval, score.

``LiveTable.update`` is handed every verdict batch on the engine thread and
only keeps the newest row per stream (under a lock); ``render`` runs on the
display thread. Anomalies are marked, in red where the terminal has colour.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from pipeline.types import VerdictBatch

RED, BOLD, RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"
CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True, slots=True)
class Row:
    stream: str
    timestamp: float
    value: float
    forecast: float
    lower: float
    upper: float
    score: float
    anomaly: bool
    steps: int
    anomalies: int


class LiveTable:
    """The newest verdict of every stream, and how many steps and anomalies it had."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._lock = threading.Lock()

    def update(self, verdicts: VerdictBatch) -> None:
        steps = verdicts.dropped == 0
        with self._lock:
            for i in range(len(verdicts)):
                if steps[i]:
                    self._keep(verdicts, i)

    def _keep(self, v: VerdictBatch, i: int) -> None:
        stream = str(v.stream[i])
        old = self._rows.get(stream)
        flagged = bool(v.is_anomaly[i])
        self._rows[stream] = Row(
            stream,
            float(v.timestamp[i]),
            float(v.value[i]),
            float(v.forecast[i]),
            float(v.lower[i]),
            float(v.upper[i]),
            float(v.anomaly_score[i]),
            flagged,
            (old.steps if old else 0) + 1,
            (old.anomalies if old else 0) + flagged,
        )

    def rows(self) -> list[Row]:
        with self._lock:
            return sorted(self._rows.values(), key=lambda r: r.stream)

    def render(self, colour: bool = False) -> str:
        from connectors.records import iso_times

        head = (
            f"{'stream':<40} {'time (UTC)':<19} {'value':>9} {'forecast':>9} "
            f"{'interval':<21} {'score':>5} {'steps':>6} {'anom':>4}"
        )
        lines = [head, "-" * len(head)]
        rows = self.rows()
        times = iso_times(np.array([r.timestamp for r in rows], np.float64))
        for row, when in zip(rows, times, strict=True):
            line = _line(row, str(when)[:19])
            if row.anomaly:
                line = f"{RED}{BOLD}{line}  << anomaly{RESET}" if colour else f"{line}  << anomaly"
            lines.append(line)
        return "\n".join(lines)


def _line(r: Row, when: str) -> str:
    span = "" if math.isnan(r.lower) else f"[{r.lower:.4g}, {r.upper:.4g}]"
    forecast = "" if math.isnan(r.forecast) else f"{r.forecast:.4g}"
    return (
        f"{r.stream[-40:]:<40} {when:<19} {r.value:>9.4g} {forecast:>9} {span:<21} "
        f"{r.score:>5.2f} {r.steps:>6} {r.anomalies:>4}"
    )
