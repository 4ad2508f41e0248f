"""The micro-batch loop: poll a source, run the engine, hand verdicts to sinks.

Each tick drains up to ``max_items`` readings (waiting at most ``max_delay``
for them), runs them through the engine in one batch, adds the verdicts to
every sink, appends the readings to the journal (if there is one) and commits
the source (acknowledges what was applied). Between ticks, on its own
schedule, it closes idle windows, evicts silent streams, flushes sinks and
writes snapshots; each snapshot starts a new journal generation.

It ends when the source is exhausted (then every open window is flushed) or
when ``stop`` is set: then it stops taking input, drains what was already
received, flushes the sinks, writes a snapshot and commits; open windows stay
open, in the snapshot, for the next run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engine import Engine
from pipeline.errors import SinkError, SnapshotError
from pipeline.journal import CLOSE, EVICT, Journal
from pipeline.protocols import Sink, Source
from pipeline.types import ReadingBatch, VerdictBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Schedule:
    """How often (wall seconds) the loop does its housekeeping; 0 disables a job."""

    idle_check: float = 1.0
    eviction: float = 60.0
    snapshot: float = 0.0
    sink_flush: float = 1.0


@dataclass
class Runner:
    engine: Engine
    source: Source
    sinks: Sequence[Sink]
    max_items: int | None = None  # readings per tick; None = the engine's max_batch
    schedule: Schedule = field(default_factory=Schedule)
    snapshot_path: Path | None = None
    journal: Journal | None = None  # readings since the last snapshot, written before acks
    stop: threading.Event = field(default_factory=threading.Event)
    on_verdicts: Callable[[VerdictBatch], None] | None = None  # progress, live tables
    on_tick: Callable[[], None] | None = None  # liveness (watchdogs), once per tick
    on_applied: Callable[[ReadingBatch], None] | None = None  # after the sinks took a batch
    flush_at_end: bool = True  # close open windows when the source runs dry
    _last_run: dict[str, float] = field(default_factory=dict)
    _journal_failing: bool = False

    def run(self) -> None:
        """Loop until the source is exhausted or ``stop`` is set."""
        try:
            while not self.stop.is_set():
                if not self._tick():
                    if self.flush_at_end:
                        self._emit(self.engine.flush())
                    break
                self._housekeeping()
            else:
                self._drain()
        finally:
            self._finish()

    def _tick(self) -> bool:
        config = self.engine.config
        batch = self.source.poll(self.max_items or config.max_batch, config.max_delay)
        if self.on_tick is not None:
            self.on_tick()
        if batch is None:
            return False
        self._emit(self.engine.process(batch))
        if self.on_applied is not None:
            self.on_applied(batch)  # latency: arrival to forecasts handed to the sinks
        self._journal(batch)
        self.source.commit()
        return True

    def _journal(self, batch: ReadingBatch) -> None:
        """Make the batch survive a crash before it is acknowledged; never fatal."""
        self._journaled(lambda journal: journal.append(batch))

    def _journal_event(self, kind: int, streams: list[str]) -> None:
        self._journaled(lambda journal: journal.append_event(kind, streams))

    def _journaled(self, write: Callable[[Journal], bool]) -> None:
        if self.journal is None:
            return
        try:
            write(self.journal)
        except SnapshotError as exc:
            if not self._journal_failing:  # one log line per run of failures
                log.error("%s; going on without it until the next snapshot", exc)
            self._journal_failing = True
            self.engine.stats.journal_failures += 1

    def _drain(self) -> None:
        """Stopping: take no new input, but apply everything already received."""
        self.source.pause()
        while self._tick():
            pass

    def _finish(self) -> None:
        self._snapshot_if_published()
        self.source.commit()

    def _snapshot_if_published(self) -> None:
        """A snapshot once the sinks have every output out: a snapshot ends the journal,
        and the journal is what publishes again, after a restart, the forecasts a broker
        has not confirmed (an outage, a stop during one)."""
        if not self.flush_sinks():
            if self.snapshot_path is not None:
                log.warning("snapshot put off until the outputs are confirmed: the journal "
                            "keeps their readings, and a restart publishes them again")  # fmt: skip
            return
        if self.snapshot_path is not None:
            self.write_snapshot()

    def _emit(self, verdicts: VerdictBatch) -> None:
        if not len(verdicts):
            return
        for sink in self.sinks:
            sink.add(verdicts)
        if self.on_verdicts is not None:
            self.on_verdicts(verdicts)

    def _housekeeping(self) -> None:
        schedule = self.schedule
        # what the wall clock changes goes in the journal too, where it happened, so a
        # restart after a crash replays it between the same readings
        if self._due("idle", schedule.idle_check) and (idle := self.engine.idle_to_close()):
            self._emit(self.engine.close_streams(idle))
            self._journal_event(CLOSE, idle)
        if self._due("evict", schedule.eviction) and (silent := self.engine.idle_to_evict()):
            self._emit(self.engine.evict_streams(silent))
            self._journal_event(EVICT, silent)
        if self._due("flush", schedule.sink_flush):
            self.flush_sinks()
        if self.snapshot_path is not None and self._due("snapshot", schedule.snapshot):
            self._snapshot_if_published()

    def _due(self, job: str, every: float) -> bool:
        if every <= 0:
            return False
        now = self.engine.clock.monotonic()
        last = self._last_run.setdefault(job, now)
        if now - last < every:
            return False
        self._last_run[job] = now
        return True

    def flush_sinks(self) -> bool:
        """Flush every sink; a failure is logged and counted, and the loop goes on."""
        ok = True
        for sink in self.sinks:
            try:
                sink.flush()
            except SinkError as exc:
                log.error("%s", exc)
                self.engine.stats.sink_failures += 1
                ok = False
        return ok

    def write_snapshot(self) -> bool:
        """Snapshot the engine and restart the journal; a failure is logged and counted,
        never fatal: the old snapshot and the journal after it stay as they were."""
        if self.snapshot_path is None:
            return False
        table, stats = self.engine.table, self.engine.stats
        table.generation += 1
        try:
            self.engine.snapshot(self.snapshot_path)
        except SnapshotError as exc:
            table.generation -= 1
            log.error("%s", exc)
            stats.snapshot_failures += 1
            return False
        stats.last_snapshot = self.engine.clock.now()
        if self.journal is not None:
            try:
                self.journal.restart(table.generation)
                self._journal_failing = False
            except SnapshotError as exc:
                log.error("%s; going on without it until the next snapshot", exc)
                stats.journal_failures += 1
        return True
