"""The per-stream scoreboard of ``replay --scores`` and the demo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.persistence import PersistenceForecaster
from pipeline.config import PipelineConfig
from pipeline.detect import GaussianTailDetector
from pipeline.engine import Engine
from pipeline.summary import Scoreboard
from pipeline.testing import FakeClock
from pipeline.types import Reading, ReadingBatch, StreamKey, VerdictBatch


def batch(streams: range, steps: range, repeat: int | None = None) -> ReadingBatch:
    """Streams ``s`` stepping each minute of ``steps``; ``repeat`` sends one time twice."""
    items = [
        Reading(StreamKey(f"site/dev-{s}/temp"), 60.0 * i, float((s * 7 + i * i) % 11))
        for i in steps
        for s in streams
    ]
    if repeat is not None:
        items.append(Reading(StreamKey(f"site/dev-{repeat}/temp"), 60.0 * steps[-1], 1.0))
    return ReadingBatch.from_readings(items)


def by_hand(batches: list[VerdictBatch]) -> dict[str, tuple[int, int, float, float, int]]:
    """(steps, forecasts, MAE, coverage, anomalies) per stream, row by row."""
    sums: dict[str, list[float]] = {}
    for verdicts in batches:
        for i, key in enumerate(verdicts.stream.tolist()):
            s = sums.setdefault(key, [0, 0, 0.0, 0, 0])
            s[0] += verdicts.dropped[i] == 0
            s[4] += bool(verdicts.is_anomaly[i])
            if math.isfinite(verdicts.lower[i]):
                s[1] += 1
                s[2] += abs(verdicts.value[i] - verdicts.forecast[i])
                s[3] += verdicts.lower[i] <= verdicts.value[i] <= verdicts.upper[i]
    return {k: (s[0], s[1], s[2] / s[1], s[3] / s[1], s[4]) for k, s in sums.items()}


def test_scores_are_the_per_row_sums_whatever_the_batches_hold():
    config = PipelineConfig(report_dropped=True)
    engine = Engine(PersistenceForecaster(), GaussianTailDetector(), config, clock=FakeClock())
    outs = [
        engine.process(batch(range(6), range(0, 40))),
        engine.process(batch(range(2, 9), range(40, 90), repeat=3)),  # new streams, a drop
        engine.process(batch(range(9), range(90, 130))),
    ]
    assert any((out.dropped != 0).any() for out in outs)
    # a subset keeps its batch's list of names: streams 9-11, with no row, must not appear
    outs.append(engine.process(batch(range(12), range(130, 140))).take(np.arange(5)))
    board = Scoreboard()
    for out in outs:
        board.add(out)
    expected = by_hand(outs)
    scores = board.scores()
    assert [s.stream for s in scores] == sorted(expected)
    for s in scores:
        steps, forecasts, mae, coverage, anomalies = expected[s.stream]
        assert (s.steps, s.forecasts, s.anomalies) == (steps, forecasts, anomalies)
        assert s.mae == pytest.approx(mae, rel=1e-12)
        assert s.coverage == pytest.approx(coverage, rel=1e-12)
    total = board.total()
    assert total.steps == sum(e[0] for e in expected.values())
    assert total.forecasts == sum(e[1] for e in expected.values())


def test_an_empty_board_scores_nothing():
    board = Scoreboard()
    board.add(VerdictBatch.blank(0))
    assert board.scores() == []
    assert board.total().steps == 0 and math.isnan(board.total().mae)
