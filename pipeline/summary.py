"""What a run did, for people: per-stream accuracy and the end-of-run summary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.engine import EngineStats
from pipeline.types import VerdictBatch

_SUMS = ("steps", "forecasts", "abs_error", "covered", "anomalies")


@dataclass(frozen=True, slots=True)
class StreamScore:
    stream: str
    steps: int
    forecasts: int  # steps that had a forecast with an interval
    mae: float
    coverage: float  # share of those steps inside the interval
    anomalies: int


class Scoreboard:
    """A sink that keeps per-stream error and interval coverage of the forecasts."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}  # stream -> its row of _sums, in order of arrival
        self._sums = np.zeros((0, len(_SUMS)))  # (streams, len(_SUMS))

    def add(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        codes, names = verdicts.stream_codes()  # names[codes] is the stream column
        judged = np.isfinite(verdicts.lower)
        error = np.where(judged, np.abs(verdicts.value - verdicts.forecast), 0.0)
        inside = judged & (verdicts.value >= verdicts.lower) & (verdicts.value <= verdicts.upper)
        columns = (verdicts.dropped == 0, judged, error, inside, verdicts.is_anomaly)
        k = len(names)
        per_name = np.stack(
            [np.bincount(codes, weights=column, minlength=k) for column in columns], axis=1
        )  # (k, len(_SUMS)): the batch's sums by stream
        present = np.flatnonzero(np.bincount(codes, minlength=k))  # names may list others
        rows = np.fromiter((self._row(str(names[i])) for i in present), np.int64, len(present))
        if len(self._rows) > len(self._sums):
            grown = np.zeros((2 * len(self._rows), len(_SUMS)))
            grown[: len(self._sums)] = self._sums
            self._sums = grown
        self._sums[rows] += per_name[present]  # each name once in ``names``: rows distinct

    def _row(self, stream: str) -> int:
        return self._rows.setdefault(stream, len(self._rows))

    def flush(self) -> None:
        """Nothing to deliver: the scores live in memory."""

    def close(self) -> None:
        """Nothing to release."""

    def scores(self) -> list[StreamScore]:
        return [_score(stream, self._sums[row]) for stream, row in sorted(self._rows.items())]

    def total(self) -> StreamScore:
        return _score("all streams", self._sums[: len(self._rows)].sum(axis=0))


def _score(stream: str, sums: np.ndarray) -> StreamScore:
    steps, forecasts, abs_error, covered, anomalies = sums.tolist()
    return StreamScore(
        stream=stream,
        steps=int(steps),
        forecasts=int(forecasts),
        mae=abs_error / forecasts if forecasts else math.nan,
        coverage=covered / forecasts if forecasts else math.nan,
        anomalies=int(anomalies),
    )


def score_table(scores: list[StreamScore], interval: float) -> str:
    """A plain-text table of per-stream scores."""
    head = f"{'stream':<44} {'steps':>8} {'MAE':>10} {f'{interval:.0%} cover':>10} {'anomalies':>9}"
    lines = [head, "-" * len(head)]
    for s in scores:
        lines.append(
            f"{s.stream[-44:]:<44} {s.steps:>8} {s.mae:>10.4g} {s.coverage:>10.1%} {s.anomalies:>9}"
        )
    return "\n".join(lines)


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless there is exactly one.

    >>> counted(1, "stream"), counted(2, "stream"), counted(0, "stream")
    ('1 stream', '2 streams', '0 streams')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run_summary(stats: EngineStats, streams: int, seconds: float) -> str:
    """Streams, steps, rate, drops by reason (with where the first one was)."""
    rate = stats.steps / seconds if seconds > 0 else math.nan
    lines = [
        f"streams {streams}  readings {stats.readings}  steps {stats.steps}  "
        f"anomalies {stats.anomalies}  {seconds:.2f} s  {rate:,.0f} steps/s",
    ]
    if stats.missing:
        lines.append(f"missing values (empty cells, sentinel codes) skipped: {stats.missing}")
    for reason, count in sorted(stats.dropped.items()):
        first = stats.first_rejection[reason]
        lines.append(f"dropped {reason}: {count} (first: {first})")
    return "\n".join(lines)


class TopAnomalies:
    """A sink that keeps the ``n`` flagged steps furthest outside their interval."""

    def __init__(self, n: int = 10) -> None:
        self.n = n
        self._rows: list[tuple[float, str, float, float, float, float]] = []

    def add(self, verdicts: VerdictBatch) -> None:
        flagged = np.flatnonzero(verdicts.is_anomaly)
        if not len(flagged):
            return
        z = np.abs(verdicts.value - verdicts.forecast)[flagged] / verdicts.scale[flagged]
        for i, zi in zip(flagged.tolist(), z.tolist(), strict=True):
            row = (
                zi,
                str(verdicts.stream[i]),
                float(verdicts.timestamp[i]),
                float(verdicts.value[i]),
                float(verdicts.lower[i]),
                float(verdicts.upper[i]),
            )
            self._rows.append(row)
        self._rows = sorted(self._rows, reverse=True)[: self.n]

    def flush(self) -> None:
        """Nothing to deliver."""

    def close(self) -> None:
        """Nothing to release."""

    def table(self) -> str:
        from connectors.records import iso_times

        head = f"{'stream':<44} {'time (UTC)':<20} {'value':>10}  {'interval':<23} {'z':>6}"
        lines = [head, "-" * len(head)]
        times = iso_times(np.array([r[2] for r in self._rows]))
        for (z, stream, _, value, lower, upper), when in zip(self._rows, times, strict=True):
            span = f"[{lower:.4g}, {upper:.4g}]"
            lines.append(f"{stream[-44:]:<44} {when[:19]:<20} {value:>10.4g}  {span:<23} {z:>6.1f}")
        return "\n".join(lines)
