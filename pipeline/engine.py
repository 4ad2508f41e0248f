"""The engine: readings in, verdicts out, one batched model call per tick.

``Engine.process`` takes a ``ReadingBatch`` (a CSV chunk, or whatever an MQTT
source drained in one tick) and runs it through every stage::

    screen -> [lateness buffer] -> window -> gather -> forecast -> detect -> scatter

All steps the batch produced, across all streams, are gathered into one
``(B, T)`` chunk and go through the forecaster and the detector in one call
each, then the new per-stream state is scattered back into the table. The
same code serves replay (big chunks, long T) and the daemon (small ticks).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import reorder
from pipeline.clock import Clock, SystemClock
from pipeline.config import PipelineConfig
from pipeline.errors import RejectedInput
from pipeline.gather import Gathered, keep_last
from pipeline.protocols import Detector, Forecaster
from pipeline.snapshot import read_snapshot, write_snapshot
from pipeline.state import StateTable
from pipeline.types import (
    DetectionChunk,
    ForecastChunk,
    ReadingBatch,
    Reason,
    Rejection,
    StepChunk,
    StreamCodes,
    VerdictBatch,
)
from pipeline.window import Steps, apply_readings, close_windows, screen

RejectionPolicy = Callable[[Rejection], None]


def continue_on_reject(rejection: Rejection) -> None:
    """The daemon's policy: the engine has counted it; carry on."""


def raise_on_reject(rejection: Rejection) -> None:
    """The tests' policy: any rejection is a failure."""
    raise RejectedInput(rejection)


@dataclass
class EngineStats:
    """Counters of every stage, ready for an exporter to read."""

    readings: int = 0  # readings offered to the engine
    missing: int = 0  # empty cells / sentinel codes seen by sources
    steps: int = 0
    anomalies: int = 0
    ticks: int = 0  # process() calls that made at least one step
    model_calls: int = 0
    evicted: int = 0
    snapshot_failures: int = 0
    journal_failures: int = 0  # journal appends and restarts that failed
    journal_replayed: int = 0  # readings re-applied from the journal at start
    sink_failures: int = 0
    last_snapshot: float = 0.0  # wall time of the last good snapshot
    dropped: Counter[str] = field(default_factory=Counter)  # reason label -> count
    first_rejection: dict[str, Rejection] = field(default_factory=dict)
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def count(self, rejection: Rejection) -> None:
        label = rejection.reason.label
        self.dropped[label] += rejection.count
        self.first_rejection.setdefault(label, rejection)


WARM_UP_STREAMS = 256  # a tick of many streams: the batched paths
# Streams stepped at a time: a chunk of more (a log of 10^5 devices brings 65,536 in
# one) goes through the model and the detector in blocks of this many rows, so that
# their arrays (~500 bytes a row each, state and features) stay a few MB: in cache,
# and reused by the allocator instead of mapped fresh (and faulted in) every chunk.
# A daemon's tick (at most max_batch readings, 8,192) is one block.
MODEL_ROWS = 8192
WARM_UP_T0 = 1_700_000_000.0


class Engine:
    """Runs readings through windowing, the forecaster and the detector.

    >>> from models.persistence import PersistenceForecaster
    >>> from pipeline.detect import GaussianTailDetector
    >>> from pipeline.testing import readings
    >>> engine = Engine(PersistenceForecaster(), GaussianTailDetector())
    >>> out = engine.process(readings("a/b/c", [(0, 1.0), (60, 2.0), (120, 4.0)]))
    >>> out.forecast.tolist(), out.value.tolist()
    ([nan, 1.0, 2.0], [1.0, 2.0, 4.0])
    """

    def __init__(
        self,
        forecaster: Forecaster,
        detector: Detector,
        config: PipelineConfig | None = None,
        *,
        clock: Clock | None = None,
        on_reject: RejectionPolicy = continue_on_reject,
        capacity: int = 1024,
    ) -> None:
        self.forecaster = forecaster
        self.detector = detector
        self.config = config or PipelineConfig()
        self.clock = clock or SystemClock()
        self.on_reject = on_reject
        self.table = StateTable(forecaster, detector, capacity, self.config.max_streams)
        self.stats = EngineStats()
        self._z = statistics.NormalDist().inv_cdf(0.5 + self.config.interval / 2)

    @property
    def fingerprints(self) -> dict[str, str]:
        return {
            "model": self.forecaster.fingerprint,
            "detector": self.detector.fingerprint,
            "windowing": self.config.fingerprint,
        }

    # -- the hot path ----------------------------------------------------------------

    def process(self, batch: ReadingBatch) -> VerdictBatch:
        """Apply one batch of readings; return the verdicts of every step it completed."""
        started = time.perf_counter()
        self.stats.readings += len(batch)
        self.stats.missing += batch.missing
        for rejection in batch.rejections:
            self._reject(rejection)
        if not len(batch):
            return VerdictBatch.empty(self.forecaster.name)
        # a reading of -0.0 is zero: logs spell it "-0" or "-0.0", and parsers differ on
        # the sign (pandas drops it in a column of integers, Arrow keeps it), so the same
        # log would replay differently by its size or how it was cut into chunks
        batch = dataclasses.replace(batch, value=batch.value + 0.0)
        slots = self.table.slots_for(batch.streams, self.clock.now())[batch.stream_index]
        reasons = screen(slots, batch.timestamp, batch.value, self.config)
        ok = reasons == 0
        if self.config.lateness > 0:
            reasons[ok] = reorder.hold(
                self.table, slots[ok], batch.timestamp[ok], batch.value[ok], self.config.lateness
            )
            steps, released_drops = self._release()
        else:
            reasons[ok], steps = apply_readings(
                self.table, slots[ok], batch.timestamp[ok], batch.value[ok], self.config.window
            )
        self._report(batch, slots, reasons)
        if len(batch.seq):
            # where the partition's latest batch ended: sources deliver a partition in
            # order, and one that starts over (a log truncated or rotated) goes back
            self.table.positions[batch.partition] = int(batch.seq.max())
        self.stats.stage_seconds["window"] += time.perf_counter() - started
        verdicts = self._predict(steps)
        if self.config.report_dropped and reasons.any():
            made_by = np.flatnonzero(ok)[steps.source] if self.config.lateness == 0 else None
            verdicts = self._with_dropped(batch, reasons, verdicts, made_by)
        if self.config.lateness > 0:
            verdicts = VerdictBatch.concat([verdicts, released_drops])
        return verdicts

    def _with_dropped(
        self,
        batch: ReadingBatch,
        reasons: np.ndarray,
        verdicts: VerdictBatch,
        made_by: np.ndarray | None,
    ) -> VerdictBatch:
        """Add a row per dropped reading, in reading order (steps at their reading)."""
        dropped = np.flatnonzero(reasons)
        names = np.asarray(batch.streams, dtype=object)
        rows = VerdictBatch.of_dropped(
            names[batch.stream_index[dropped]],
            batch.timestamp[dropped],
            batch.value[dropped],
            reasons[dropped],
            self.forecaster.name,
        )
        if made_by is None:  # steps released from the lateness buffer: after the batch
            position = np.concatenate([np.full(len(verdicts), len(batch)), dropped])
            return verdicts.interleave(rows, position)
        # every row is a reading of this batch: its stream code is the reading's, so a file
        # sink need not hash every row's key again
        steps = dataclasses.replace(verdicts, coded=by_reading(batch, made_by, names))
        rows = dataclasses.replace(rows, coded=by_reading(batch, dropped, names))
        return steps.interleave(rows, np.concatenate([made_by, dropped]))

    def _release(self, force: np.ndarray | None = None) -> tuple[Steps, VerdictBatch]:
        """Held-back readings that are due, as steps; and rows for those dropped on the
        way out (repeats, or behind a window already closed), when they are reported."""
        due, repeats = reorder.release(
            self.table, self.config.lateness, self.config.reorder_capacity, force
        )
        reasons, steps = apply_readings(
            self.table, due.slot, due.timestamp, due.value, self.config.window
        )
        refused = np.flatnonzero(reasons)
        slot = np.concatenate([repeats.slot, due.slot[refused]])
        t = np.concatenate([repeats.timestamp, due.timestamp[refused]])
        v = np.concatenate([repeats.value, due.value[refused]])
        codes = np.concatenate(
            [np.full(len(repeats), int(Reason.DUPLICATE), np.uint8), reasons[refused]]
        )
        if not len(slot):
            return steps, VerdictBatch.empty(self.forecaster.name)
        streams = self.table.key_array(slot)
        self._report_released(streams, t, v, codes)
        if not self.config.report_dropped:
            return steps, VerdictBatch.empty(self.forecaster.name)
        return steps, VerdictBatch.of_dropped(streams, t, v, codes, self.forecaster.name)

    def _report_released(
        self, streams: np.ndarray, t: np.ndarray, v: np.ndarray, codes: np.ndarray
    ) -> None:
        """One folded rejection per reason; the file position is gone once held back."""
        codes_found, first, counts = np.unique(codes, return_index=True, return_counts=True)
        for code, i, n in zip(codes_found.tolist(), first.tolist(), counts.tolist(), strict=True):
            detail = f"{streams[i]} at t={float(t[i])} value={float(v[i])} (after re-sorting)"
            self._reject(Rejection(Reason(code), detail, stream=str(streams[i]), count=n))

    def _report(self, batch: ReadingBatch, slots: np.ndarray, reasons: np.ndarray) -> None:
        """One folded rejection per reason, pointing at its first reading."""
        dropped = np.flatnonzero(reasons)
        if not len(dropped):
            return
        codes, first, counts = np.unique(reasons[dropped], return_index=True, return_counts=True)
        for code, i, n in zip(
            codes.tolist(), dropped[first].tolist(), counts.tolist(), strict=True
        ):
            stream = batch.streams[batch.stream_index[i]]
            detail = f"{stream} at t={float(batch.timestamp[i])} value={float(batch.value[i])}"
            self._reject(
                Rejection(Reason(code), detail, batch.partition, int(batch.seq[i]), stream, n)
            )

    def _reject(self, rejection: Rejection) -> None:
        self.stats.count(rejection)
        self.on_reject(rejection)

    def _predict(self, steps: Steps) -> VerdictBatch:
        if not len(steps):
            return VerdictBatch.empty(self.forecaster.name)
        started = time.perf_counter()
        gathered = Gathered.of(steps)
        rows = len(gathered.chunk.slots)
        blocks = [self._step_rows(_rows(gathered.chunk, start, start + MODEL_ROWS))
                  for start in range(0, rows, MODEL_ROWS)]  # fmt: skip
        mean, scale, forecast, detection = blocks[0] if len(blocks) == 1 else _joined(blocks)
        self.stats.model_calls += 1
        self.stats.ticks += 1
        self.stats.steps += len(steps)
        verdicts = self._verdicts(steps, gathered, mean, scale, forecast, detection)
        self.stats.anomalies += int(verdicts.is_anomaly.sum())
        self.stats.stage_seconds["model"] += time.perf_counter() - started
        return verdicts

    def _step_rows(self, chunk: StepChunk) -> _Stepped:
        """Forecast and judge the chunk's rows, and keep their new state."""
        table = self.table
        forecast = self.forecaster.step(table.model_state[chunk.slots], chunk)
        mean, scale = self._forecasts_for_steps(chunk, forecast.mean, forecast.scale)
        detection = self.detector.step(table.detector_state[chunk.slots], chunk, mean, scale)
        keep_last(table, chunk, forecast, detection, mean, scale)
        return mean, scale, forecast, detection

    def _forecasts_for_steps(
        self, chunk: StepChunk, next_mean: np.ndarray, next_scale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The forecast each step is judged by: the one made at the step before it."""
        mean = np.empty_like(next_mean)  # (B, T)
        scale = np.empty_like(next_scale)
        mean[:, 0] = self.table.pred_mean[chunk.slots]
        scale[:, 0] = self.table.pred_scale[chunk.slots]
        mean[:, 1:] = next_mean[:, :-1]
        scale[:, 1:] = next_scale[:, :-1]
        return mean, scale

    def _verdicts(
        self,
        steps: Steps,
        gathered: Gathered,
        mean: np.ndarray,
        scale: np.ndarray,
        forecast: ForecastChunk,
        detection: DetectionChunk,
    ) -> VerdictBatch:
        flat = gathered.flatten
        now_mean, now_scale = flat(mean), flat(scale)
        next_mean, next_scale = flat(forecast.mean), flat(forecast.scale)
        z = self._z
        codes = gathered.row
        names = self.table.key_array(gathered.chunk.slots)
        return VerdictBatch(
            stream=names[codes],
            timestamp=steps.timestamp,
            value=steps.value,
            count=steps.count,
            min=steps.min,
            max=steps.max,
            forecast=now_mean,
            scale=now_scale,
            lower=now_mean - z * now_scale,
            upper=now_mean + z * now_scale,
            anomaly_score=flat(detection.score),
            is_anomaly=flat(detection.is_anomaly),
            next_timestamp=steps.next_timestamp,
            next_forecast=next_mean,
            next_scale=next_scale,
            next_lower=next_mean - z * next_scale,
            next_upper=next_mean + z * next_scale,
            dt=steps.dt,
            missing=steps.missing,
            dropped=np.zeros(len(steps), np.uint8),
            model=self.forecaster.name,
            coded=StreamCodes(codes, names),
        )

    def warm_up(self) -> None:
        """Run the hot path once, on a scratch engine of the same parts, before serving.

        The first call of each compiled kernel loads it from numba's cache (tens of
        milliseconds; seconds to compile on a fresh install): a live daemon's first
        tick would pay for all of it, in its latency. A few steps of one stream (the
        small-batch paths), then one step of many (the batched paths), then a flush
        (open windows, held-back readings). Nothing stays: the scratch engine has its
        own table and stats.
        """
        scratch = Engine(self.forecaster, self.detector, self.config, capacity=WARM_UP_STREAMS)
        config = self.config
        spacing = 2.0 * (config.window + config.lateness) + 60.0  # each reading its own step
        many = tuple(f"warm-up/{i}" for i in range(WARM_UP_STREAMS))
        for k, streams in enumerate((many[:1], many[:1], many[:1], many)):
            n = len(streams)
            scratch.process(
                ReadingBatch(
                    streams=streams,
                    stream_index=np.arange(n, dtype=np.int32),
                    timestamp=np.full(n, WARM_UP_T0 + k * spacing),
                    value=np.full(n, 20.0 + k),
                    seq=np.arange(n, dtype=np.int64),
                )
            )
        scratch.flush()

    # -- time-driven work --------------------------------------------------------------

    def close_idle(self) -> VerdictBatch:
        """Close windows (and let out held-back readings) of streams silent for idle_timeout."""
        return self.close_streams(self.idle_to_close())

    def idle_to_close(self) -> list[str]:
        """Streams silent for idle_timeout (at least a window) that a close would
        change: a window open, or readings held back (the others are left alone, and
        out of the journal)."""
        idle = self.table.idle_slots(self.clock.now() - self.config.idle_after)
        open_ = np.zeros(len(idle), np.bool_)
        if self.config.lateness > 0:
            open_ |= np.isin(idle, self.table.pending.slot)
        if self.config.window > 0:
            open_ |= self.table.columns["win_count"][idle] > 0
        return self.table.key_array(idle[open_]).tolist()

    def close_streams(self, streams: Sequence[str]) -> VerdictBatch:
        """Close the windows and let out the held-back readings of ``streams`` (a journal
        replays what ``close_idle`` did with this)."""
        return self._close(self._slots_of(streams))

    def _slots_of(self, streams: Sequence[str]) -> np.ndarray:
        index = self.table.index
        return np.array([index[k] for k in streams if k in index], np.int64)

    def flush(self) -> VerdictBatch:
        """End of input: every held-back reading and every open window becomes a step."""
        return self._close(self.table.active_slots())

    def _close(self, slots: np.ndarray) -> VerdictBatch:
        if not len(slots):
            return VerdictBatch.empty(self.forecaster.name)
        parts = []
        if self.config.lateness > 0:
            steps, dropped = self._release(force=slots)
            parts += [self._predict(steps), dropped]
        if self.config.window > 0:
            parts.append(self._predict(close_windows(self.table, slots, self.config.window)))
        return VerdictBatch.concat(parts) if parts else VerdictBatch.empty(self.forecaster.name)

    def idle_to_evict(self) -> list[str]:
        """Streams silent for stream_ttl."""
        idle = self.table.idle_slots(self.clock.now() - self.config.stream_ttl)
        return self.table.key_array(idle).tolist()

    def evict_streams(self, streams: Sequence[str]) -> VerdictBatch:
        """Forget ``streams``; their open windows and held-back readings are closed first,
        and those steps are returned, to be published like any other."""
        slots = self._slots_of(streams)
        if not len(slots):
            return VerdictBatch.empty(self.forecaster.name)
        closed = self._close(slots)
        self.table.evict(slots)
        self.stats.evicted += len(slots)
        return closed

    def evict_idle(self) -> VerdictBatch:
        """``evict_streams`` of the streams silent for stream_ttl."""
        return self.evict_streams(self.idle_to_evict())

    # -- persistence -------------------------------------------------------------------

    def snapshot(self, path: str | Path) -> int:
        return write_snapshot(self.table, path, self.fingerprints)

    def restore(self, path: str | Path) -> None:
        read_snapshot(self.table, path, self.fingerprints, self.clock.now())


# a block of rows stepped: the forecasts each step is judged by (mean, scale; (B, T)),
# the forecaster's and the detector's outputs
_Stepped = tuple[np.ndarray, np.ndarray, ForecastChunk, DetectionChunk]


def _rows(chunk: StepChunk, start: int, stop: int) -> StepChunk:
    """Rows [start, stop) of ``chunk`` (views), padded to the chunk's width."""
    if start == 0 and stop >= len(chunk.slots):
        return chunk
    part = slice(start, stop)  # every field is (B,) or (B, T): rows come first
    return StepChunk(**{f.name: getattr(chunk, f.name)[part] for f in dataclasses.fields(chunk)})


def _joined(blocks: list[_Stepped]) -> _Stepped:
    """Blocks of rows as one: every (B, T) output stacked in row order (the states were
    scattered already, and are left out)."""
    mean, scale, forecasts, detections = zip(*blocks, strict=True)
    empty = np.empty((0, 0))
    forecast = ForecastChunk(
        mean=np.concatenate([f.mean for f in forecasts]),
        scale=np.concatenate([f.scale for f in forecasts]),
        state=empty,
    )
    detection = DetectionChunk(
        score=np.concatenate([d.score for d in detections]),
        is_anomaly=np.concatenate([d.is_anomaly for d in detections]),
        state=empty,
    )
    return np.concatenate(mean), np.concatenate(scale), forecast, detection


def by_reading(batch: ReadingBatch, readings: np.ndarray, names: np.ndarray) -> StreamCodes:
    """Stream codes of rows made by ``readings`` of ``batch``: each its reading's stream."""
    return StreamCodes(batch.stream_index[readings].astype(np.int64), names)
