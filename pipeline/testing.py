"""In-memory stand-ins for the world, for unit tests and examples.

``ListSource`` and ``ListSink`` implement the Source and Sink protocols;
``FakeClock`` is a clock that only moves when told to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from pipeline.types import Reading, ReadingBatch, StepChunk, StreamKey, Verdict, VerdictBatch


class FakeClock:
    """A clock for tests: ``sleep`` and ``advance`` move it, nothing else does."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.time = start
        self._monotonic = 0.0

    def now(self) -> float:
        return self.time

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.time += max(seconds, 0.0)
        self._monotonic += max(seconds, 0.0)


class ListSource:
    """Replays a list of readings in batches; the partition is ``name``, seq the list index."""

    def __init__(self, items: Iterable[Reading], name: str = "list") -> None:
        self.items = list(items)
        self.name = name
        self.committed = 0  # items the pipeline confirmed it applied
        self._next = 0

    def poll(self, max_items: int, timeout: float) -> ReadingBatch | None:
        if self._next >= len(self.items):
            return None
        start, stop = self._next, min(self._next + max_items, len(self.items))
        self._next = stop
        batch = ReadingBatch.from_readings(self.items[start:stop], self.name)
        return _with_seq(batch, np.arange(start, stop, dtype=np.int64))

    def seek(self, positions: Mapping[str, int]) -> None:
        self._next = max(self._next, positions.get(self.name, -1) + 1)

    def commit(self) -> None:
        self.committed = self._next

    def pause(self) -> None:
        self._next = len(self.items)

    def close(self) -> None:
        self._next = len(self.items)


class ListSink:
    """Keeps every verdict it is given; ``flushed`` counts confirmed ones."""

    def __init__(self) -> None:
        self.batches: list[VerdictBatch] = []
        self.flushed = 0
        self.closed = False

    def add(self, verdicts: VerdictBatch) -> None:
        if len(verdicts):
            self.batches.append(verdicts)

    def flush(self) -> None:
        self.flushed = sum(len(b) for b in self.batches)

    def close(self) -> None:
        self.closed = True

    @property
    def verdicts(self) -> list[Verdict]:
        return [v for batch in self.batches for v in batch.rows()]

    def combined(self) -> VerdictBatch:
        return VerdictBatch.concat(self.batches)


def readings(
    stream: str, points: Sequence[tuple[float, float]], start_seq: int = 0
) -> ReadingBatch:
    """A batch of one stream's ``(timestamp, value)`` points."""
    key = StreamKey(stream)
    batch = ReadingBatch.from_readings([Reading(key, float(t), float(v)) for t, v in points])
    return _with_seq(batch, np.arange(start_seq, start_seq + len(points), dtype=np.int64))


def _with_seq(batch: ReadingBatch, seq: np.ndarray) -> ReadingBatch:
    return ReadingBatch(
        batch.streams, batch.stream_index, batch.timestamp, batch.value, seq, batch.partition
    )


def chunk_of(
    values: Sequence[Sequence[float]], interval: float = 60.0, first_step: int = 0
) -> StepChunk:
    """A ``StepChunk`` of evenly spaced steps, one row per list (rows may differ in length).

    ``first_step`` numbers the first column, so consecutive chunks continue in time.
    """
    rows, width = len(values), max(len(v) for v in values)
    value = np.full((rows, width), math.nan)
    mask = np.zeros((rows, width), bool)
    for b, row in enumerate(values):
        value[b, : len(row)] = row
        mask[b, : len(row)] = True
    steps = first_step + np.arange(width)
    timestamp = np.where(mask, steps * interval, math.nan)
    dt = np.where(mask, interval, math.nan)
    if first_step == 0:
        dt[:, 0] = math.nan  # a stream's first step has no previous one
    return StepChunk(
        slots=np.arange(rows, dtype=np.int64),
        timestamp=timestamp,
        value=value,
        dt=dt,
        missing=np.zeros((rows, width), np.int32),
        next_timestamp=timestamp + interval,
        mask=mask,
        length=mask.sum(axis=1).astype(np.int64),
    )
