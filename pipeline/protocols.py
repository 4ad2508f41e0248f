"""The seams of the pipeline: what a source, sink, forecaster and detector must do.

The engine only talks to these protocols, so a new connector or model plugs in
without touching it. ``pipeline/testing.py`` has in-memory implementations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from pipeline.types import DetectionChunk, ForecastChunk, ReadingBatch, StepChunk, VerdictBatch


@runtime_checkable
class Source(Protocol):
    """Where readings come from; every reading carries ``(partition, seq)``."""

    def poll(self, max_items: int, timeout: float) -> ReadingBatch | None:
        """Up to ``max_items`` readings, waiting at most ``timeout`` seconds.

        Returns an empty batch when nothing arrived in time and None once the
        source is exhausted (a live source never is).
        """
        ...

    def seek(self, positions: Mapping[str, int]) -> None:
        """Skip everything at or before ``positions[partition]`` (resume after a snapshot)."""
        ...

    def commit(self) -> None:
        """The pipeline has applied everything polled so far (e.g. acknowledge it)."""
        ...

    def pause(self) -> None:
        """Take no new input; ``poll`` returns what was already received, then None."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where verdicts go. ``add`` may buffer; ``flush`` confirms delivery or raises SinkError."""

    def add(self, verdicts: VerdictBatch) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class StatefulComponent(Protocol):
    """Per-stream state lives in the state table as ``state_width`` numbers per stream."""

    name: str
    state_width: int
    state_dtype: type[np.floating]

    @property
    def fingerprint(self) -> str:
        """Changes whenever a snapshot of this component's state would mean something else."""
        ...

    def initial_state(self, n: int) -> np.ndarray:
        """The state of ``n`` new streams, shape ``(n, state_width)``."""
        ...


class Forecaster(StatefulComponent, Protocol):
    """Predicts each stream's next step as a Gaussian (mean and scale, in the stream's units)."""

    def step(self, state: np.ndarray, chunk: StepChunk) -> ForecastChunk:
        """Consume every row's steps in order and forecast the step after each.

        ``state`` is ``(B, state_width)`` for the chunk's rows and is not modified;
        the new state comes back in the result. Predict-then-learn is the
        engine's job: the forecast for step t is the one returned at step t-1.
        """
        ...


class Detector(StatefulComponent, Protocol):
    """Turns each step's value and its forecast into an anomaly score and flag."""

    warmup: int  # scored steps of a stream before it may flag anything

    def step(
        self, state: np.ndarray, chunk: StepChunk, mean: np.ndarray, scale: np.ndarray
    ) -> DetectionChunk:
        """Score every step against its forecast ``(mean, scale)``, both ``(B, T)``.

        NaN ``mean`` means the stream had no forecast for that step yet. A step is
        scored before the detector learns from it; flagged steps are not learned.
        """
        ...
