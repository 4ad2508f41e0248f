"""The stream state table: every stream's state as columns, indexed by slot.

One row (slot) per live stream. Columns are numpy arrays so that the window
kernel, the forecaster and the detector read and write many streams in one
call. ``key -> slot`` is a dict; slots of evicted streams are reused. The
table grows by doubling and never shrinks (eviction frees slots, not memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.protocols import StatefulComponent

NAN = math.nan

# name -> (dtype, value of an unused slot). Times are event time unless noted.
CORE_COLUMNS: dict[str, tuple[type[np.generic], float]] = {
    "last_t": (np.float64, NAN),  # newest reading applied to the stream's windows
    "last_step_t": (np.float64, NAN),  # time of the stream's last step
    "interval": (np.float64, NAN),  # typical time between steps
    "win_start": (np.float64, NAN),  # start of the open window; NaN when none is open
    "win_sum": (np.float64, 0.0),
    "win_count": (np.int64, 0),
    "win_min": (np.float64, NAN),
    "win_max": (np.float64, NAN),
    "pred_t": (np.float64, NAN),  # forecast made at the last step for the next one
    "pred_mean": (np.float64, NAN),
    "pred_scale": (np.float64, NAN),
    "arrival_t": (np.float64, NAN),  # newest reading arrived (lateness > 0 only)
    "last_seen": (np.float64, NAN),  # wall time of the last reading (idle close, TTL)
    # The last step as judged, for per-stream metrics read at scrape time:
    "last_value": (np.float64, NAN),
    "last_forecast": (np.float64, NAN),  # the forecast it was judged by (made a step before)
    "last_scale": (np.float64, NAN),
    "last_score": (np.float64, NAN),  # its anomaly score
    "anomalies": (np.int64, 0),  # steps flagged since the stream appeared
}


@dataclass(slots=True)
class PendingReadings:
    """Readings held back for lateness, not yet applied. Unordered."""

    slot: np.ndarray  # (p,) int64
    timestamp: np.ndarray  # (p,) float64
    value: np.ndarray  # (p,) float64

    @classmethod
    def empty(cls) -> PendingReadings:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    def take(self, keep: np.ndarray) -> PendingReadings:
        return PendingReadings(self.slot[keep], self.timestamp[keep], self.value[keep])


class StateTable:
    """Columns of per-stream state for a forecaster and a detector.

    >>> from models.persistence import PersistenceForecaster
    >>> from pipeline.detect import GaussianTailDetector
    >>> table = StateTable(PersistenceForecaster(), GaussianTailDetector(), capacity=2)
    >>> table.slots_for(["a/b/c", "a/b/d", "a/b/c"], now=0.0).tolist()
    [0, 1, 0]
    >>> table.slots_for(["x/y/z"], now=0.0).tolist(), table.capacity
    ([2], 4)
    """

    def __init__(
        self,
        forecaster: StatefulComponent,
        detector: StatefulComponent,
        capacity: int = 1024,
        max_streams: int = 1_000_000,
    ) -> None:
        self.forecaster = forecaster
        self.detector = detector
        self.max_streams = max_streams
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.positions: dict[str, int] = {}
        self.generation = 0  # of the last snapshot written or restored (pipeline.journal)
        # wall time of the restore: a stream is silent (idle close, TTL) only counting from
        # then, as its readings could not arrive while no process ran
        self.restored_at = -math.inf
        self.pending = PendingReadings.empty()
        self._free: list[int] = []
        self.columns: dict[str, np.ndarray] = {}
        self.capacity = 0
        self._grow(max(1, capacity))

    # -- columns -----------------------------------------------------------------

    def __getattr__(self, name: str) -> np.ndarray:
        # Only reached for names that are not real attributes: the columns.
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            msg = f"{type(self).__name__} has no column {name!r}"
            raise AttributeError(msg) from None

    @property
    def model_state(self) -> np.ndarray:
        return self.columns["model_state"]

    @property
    def detector_state(self) -> np.ndarray:
        return self.columns["detector_state"]

    def _fresh_columns(self, n: int) -> dict[str, np.ndarray]:
        cols = {name: np.full(n, fill, dtype) for name, (dtype, fill) in CORE_COLUMNS.items()}
        cols["model_state"] = self.forecaster.initial_state(n)
        cols["detector_state"] = self.detector.initial_state(n)
        return cols

    def _grow(self, capacity: int) -> None:
        fresh = self._fresh_columns(capacity)
        for name, old in self.columns.items():
            fresh[name][: self.capacity] = old
        self.columns = fresh
        self.keys.extend([None] * (capacity - self.capacity))
        self._free.extend(range(capacity - 1, self.capacity - 1, -1))
        self.capacity = capacity

    def _reset(self, slots: np.ndarray) -> None:
        for name, column in self._fresh_columns(len(slots)).items():
            self.columns[name][slots] = column

    # -- membership ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(self.index.items())

    def slots_for(self, keys: Sequence[str], now: float) -> np.ndarray:
        """Slot of every key, allocating new streams; -1 where max_streams is reached."""
        found: list[int | None] = list(map(self.index.get, keys))  # at C speed: most are known
        new: list[int] = []
        if None in found:
            for i, slot in enumerate(found):
                if slot is None:  # looked up again: a new key may come twice
                    known = self.index.get(keys[i])
                    if known is None:
                        known = self._allocate(keys[i])
                        if known >= 0:
                            new.append(known)
                    found[i] = known
        out = np.array(found, np.int64)  # (len(keys),)
        if new:
            self._reset(np.asarray(new, np.int64))
        seen = out[out >= 0]
        self.columns["last_seen"][seen] = now
        return out

    def _allocate(self, key: str) -> int:
        if len(self.index) >= self.max_streams:
            return -1
        if not self._free:  # doubling, but never past max_streams: at 10^6 streams the
            # slack of the next power of two would cost ~5% of the table
            self._grow(max(self.capacity + 1, min(self.capacity * 2, self.max_streams)))
        slot = self._free.pop()
        self.index[key] = slot
        self.keys[slot] = key
        return slot

    def key_array(self, slots: np.ndarray) -> np.ndarray:
        """Keys of ``slots`` as an object array (for output columns).

        A live tick holds a few of many streams: converting the whole key list
        cost 150 us a tick at 10^4 streams and grows with the table, so few
        slots are picked one by one; a replay's chunk (many rows, few streams)
        indexes the converted list instead.
        """
        if 8 * len(slots) < len(self.keys):
            keys = self.keys
            out = np.empty(len(slots), dtype=object)
            out[:] = [keys[slot] for slot in slots.tolist()]
            return out
        return np.asarray(self.keys, dtype=object)[slots]

    def active_slots(self) -> np.ndarray:
        return np.fromiter(self.index.values(), np.int64, len(self.index))

    def idle_slots(self, older_than: float) -> np.ndarray:
        """Live slots whose last reading arrived (wall time) before ``older_than``, and
        not restored since."""
        live = self.active_slots()
        if self.restored_at >= older_than:
            return live[:0]
        return live[self.columns["last_seen"][live] < older_than]

    def evict(self, slots: np.ndarray) -> None:
        """Forget these streams; their slots are reused by new streams."""
        if not len(slots):
            return
        for slot in slots.tolist():
            key = self.keys[slot]
            if key is not None:
                del self.index[key]
                self.keys[slot] = None
                self._free.append(slot)
        self._reset(slots)
        self.pending = self.pending.take(~np.isin(self.pending.slot, slots))

    # -- size ------------------------------------------------------------------------

    def nbytes(self) -> int:
        """Bytes held by the columns (not the key dict)."""
        return sum(column.nbytes for column in self.columns.values())

    def bytes_per_stream(self) -> int:
        """Column bytes of one slot: the fixed part of a stream's footprint."""
        return sum(column[:1].nbytes for column in self.columns.values())
