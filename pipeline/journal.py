"""The journal: every reading applied since the last snapshot, appended before it is acked.

A snapshot alone cannot survive ``kill -9`` without loss: readings applied and
acknowledged after it would be gone from the state and never redelivered by the
broker. Holding acknowledgements until the next snapshot is no way out either:
the broker stops sending once a client has its in-flight window (20 messages by
default in mosquitto) unacknowledged. So the runner appends each tick's readings
here and acknowledges only then. A restart restores the snapshot and re-applies
the journal; the broker redelivers what was never acknowledged, and the engine
skips what it already applied (same stream, timestamp not newer: ``duplicate``
or ``late``).

Each snapshot starts a new journal generation: the snapshot records generation
``g`` and the journal file is truncated and restarted with header ``g``. A journal
whose generation is not the snapshot's is stale (the process died between the two
writes) and is ignored, since the snapshot already holds its readings.

File layout (little-endian): ``b"SCJ1"``, generation ``u64``; then frames of
``u32 length, u32 crc32, payload``; a payload is ``u32 n, u32 key_bytes``, the
batch's stream keys NUL-joined, then ``stream_index i32[n]``, ``timestamp f64[n]``,
``value f64[n]``, ``seq i64[n]``. A torn last frame (the process died mid-write,
before the ack) fails its length or checksum and ends the read.

The wall clock changes state too: a stream silent for ``idle_timeout`` has its
window closed, one silent for ``stream_ttl`` is evicted. Replaying the readings
alone would skip those (or do them later, with other readings between), so each
is journaled where it happened, as an event frame: ``n = 0``, the keys of the
streams it touched, and one more byte, its kind (``CLOSE`` or ``EVICT``). A
reader of the first version of this layout takes such a frame for an empty batch.

A reading without a time of its own (a bare number over MQTT) is stamped with its
receive time, so a redelivery of its message after a crash would be a new reading
to the engine, not a duplicate. Such a batch's frame is preceded by a receipts
frame: ``n = 0``, no keys, the kind ``RECEIPTS``, then per message ``packet_id
u32, digest u32, received f64``. A restart hands them to the source, which gives a
redelivered message (same packet id and digest) its first receive time again, and
the engine drops it. The receipts frame comes first, so that a torn frame never
leaves readings replayed without their receipts. A new generation starts with the
last ``CARRIED_RECEIPTS`` receipts of the one before: the acknowledgements of the
messages applied just before a snapshot may not have reached the broker yet.

A kill of the process loses nothing written, since the page cache outlives it; a
power cut may lose the unsynced tail, which is why ``fsync`` is a setting.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import SnapshotError
from pipeline.types import ReadingBatch, VerdictBatch

if TYPE_CHECKING:
    from pipeline.engine import Engine

log = logging.getLogger(__name__)

MAGIC = b"SCJ1"
_HEADER = struct.Struct("<4sQ")  # magic, generation
_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_COUNTS = struct.Struct("<II")  # readings, bytes of NUL-joined keys
MAX_BYTES = 256 * 2**20  # journaling stops past this (snapshots failing for long)
CLOSE, EVICT = 1, 2  # event kinds: idle streams' windows closed; silent streams evicted
RECEIPTS = 3  # frame kind: receipts of messages whose readings took their receive time
_RECEIPT = np.dtype([("packet_id", "<u4"), ("digest", "<u4"), ("received", "<f8")])
# Receipts a new generation carries over: the messages whose acknowledgement may still be on
# its way when a snapshot is written; a broker has at most its in-flight window of them
# unacknowledged (mosquitto: 20 by default)
CARRIED_RECEIPTS = 1_024
Receipt = tuple[int, int, float]  # packet id, digest of topic and payload, receive time


@dataclass(frozen=True, slots=True)
class Event:
    """Housekeeping that changed these streams' state, in journal order."""

    kind: int  # CLOSE or EVICT
    streams: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Receipts:
    """Messages whose readings took their receive time (see the module's docstring)."""

    items: tuple[Receipt, ...]


class Journal:
    """Append-only, one file, one writer. Write errors raise SnapshotError."""

    def __init__(self, path: str | Path, fsync: bool = False, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.size = 0
        self.full = False  # past max_bytes: appends are skipped until the next restart
        self._file: int | None = None
        self._recent: deque[Receipt] = deque(maxlen=CARRIED_RECEIPTS)  # for the next restart

    def restart(self, generation: int) -> None:
        """Truncate and begin ``generation``: the latest snapshot holds everything before."""
        self.close()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            msg = f"cannot open journal {self.path}: {exc.strerror}"
            raise SnapshotError(msg) from exc
        self._file = fd
        self.size = 0
        self.full = False
        carried = encode_receipts(self._recent) if self._recent else b""
        self._write(_HEADER.pack(MAGIC, generation) + carried)

    def resume(self, generation: int) -> None:
        """Go on appending to a journal of ``generation`` just replayed, or start it afresh."""
        try:
            same = header_generation(self.path) == generation
        except SnapshotError:
            same = False
        if not same:
            self.restart(generation)
            return
        try:
            self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self.size = os.fstat(self._file).st_size
        except OSError as exc:
            msg = f"cannot open journal {self.path}: {exc.strerror}"
            raise SnapshotError(msg) from exc
        self._truncate_torn_tail()

    def append(self, batch: ReadingBatch) -> bool:
        """Append ``batch``'s readings (after its receipts); False when the journal is
        full or not open."""
        if not (len(batch) and self._accepting()):
            return False
        receipts = encode_receipts(batch.receipts) if batch.receipts else b""
        if not self._append(receipts + encode(batch)):
            return False
        self._recent.extend(batch.receipts)
        return True

    def append_event(self, kind: int, streams: Sequence[str]) -> bool:
        """Append a housekeeping event of ``streams``; False when full or not open."""
        return bool(streams) and self._accepting() and self._append(encode_event(kind, streams))

    def _accepting(self) -> bool:
        return self._file is not None and not self.full

    def _append(self, frame: bytes) -> bool:
        if self.size + len(frame) > self.max_bytes:
            self.full = True
            log.error(
                "journal %s passed %d bytes: snapshots are failing; readings from now on are "
                "lost on a crash until a snapshot succeeds", self.path, self.max_bytes,
            )  # fmt: skip
            return False
        self._write(frame)
        return True

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        try:
            written = os.write(self._file, data)
            if written != len(data):  # a short write: the disk is full
                raise OSError(28, "No space left on device")
            if self.fsync:
                os.fsync(self._file)
        except OSError as exc:
            self._rewind()
            msg = f"cannot write journal {self.path}: {exc.strerror}"
            raise SnapshotError(msg) from exc
        self.size += len(data)

    def _rewind(self) -> None:
        """Cut a partial frame off, so later frames are not hidden behind it."""
        assert self._file is not None
        try:
            os.ftruncate(self._file, self.size)
            os.lseek(self._file, self.size, os.SEEK_SET)
        except OSError:
            pass  # the reader stops at the torn frame; the next restart truncates

    def _truncate_torn_tail(self) -> None:
        """Cut a torn last frame off (or one that does not add up, and what follows it:
        ``replay`` stops there too), and take up the receipts of the whole ones."""
        assert self._file is not None
        good = _HEADER.size
        for frame in _frames(self.path):
            try:
                item = decode(frame[_FRAME.size :], "")
            except SnapshotError:
                break  # frames appended from here on are read back after a restart
            good += len(frame)
            if isinstance(item, Receipts):
                self._recent.extend(item.items)
        if good < self.size:
            os.ftruncate(self._file, good)
            self.size = good


def encode(batch: ReadingBatch) -> bytes:
    keys = "\0".join(batch.streams).encode()
    n = len(batch)
    payload = b"".join(
        (
            _COUNTS.pack(n, len(keys)),
            keys,
            np.ascontiguousarray(batch.stream_index, "<i4").tobytes(),
            np.ascontiguousarray(batch.timestamp, "<f8").tobytes(),
            np.ascontiguousarray(batch.value, "<f8").tobytes(),
            np.ascontiguousarray(batch.seq, "<i8").tobytes(),
        )
    )
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_event(kind: int, streams: Sequence[str]) -> bytes:
    keys = "\0".join(streams).encode()
    payload = _COUNTS.pack(0, len(keys)) + keys + bytes([kind])
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_receipts(receipts: Iterable[Receipt]) -> bytes:
    rows = np.array(list(receipts), _RECEIPT)
    payload = _COUNTS.pack(0, 0) + bytes([RECEIPTS]) + rows.tobytes()
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes, partition: str) -> ReadingBatch | Event | Receipts:
    """A frame's payload as written by ``encode``; SnapshotError when its checksum holds
    but its content does not add up (no writer of this journal makes one)."""
    try:
        item = _decode(payload, partition)
    except (ValueError, struct.error) as exc:  # UnicodeDecodeError is a ValueError
        msg = f"a frame does not add up ({exc})"
        raise SnapshotError(msg) from exc
    if (
        isinstance(item, ReadingBatch)
        and len(item)
        and not (0 <= item.stream_index.min() and item.stream_index.max() < len(item.streams))
    ):
        msg = "a frame's readings belong to no stream in it"
        raise SnapshotError(msg)
    return item


def _decode(payload: bytes, partition: str) -> ReadingBatch | Event | Receipts:
    n, key_bytes = _COUNTS.unpack_from(payload)
    at = _COUNTS.size
    streams = tuple(payload[at : at + key_bytes].decode().split("\0")) if key_bytes else ()
    at += key_bytes
    if n == 0 and at < len(payload) and payload[at] == RECEIPTS:
        rows = np.frombuffer(payload, _RECEIPT, offset=at + 1)
        return Receipts(tuple((int(p), int(d), float(r)) for p, d, r in rows.tolist()))
    if n == 0 and at < len(payload):  # readings never make an empty frame: an event
        return Event(payload[at], streams)
    columns = []
    for dtype, width in (("<i4", 4), ("<f8", 8), ("<f8", 8), ("<i8", 8)):
        columns.append(np.frombuffer(payload, dtype, n, at))
        at += width * n
    index, timestamp, value, seq = columns
    return ReadingBatch(
        streams=streams,
        stream_index=index.astype(np.int32),
        timestamp=timestamp.astype(np.float64),
        value=value.astype(np.float64),
        seq=seq.astype(np.int64),
        partition=partition,
    )


def header_generation(path: str | Path) -> int:
    """The generation a journal file belongs to; SnapshotError if it is not a journal."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
    except OSError as exc:
        msg = f"cannot read journal {path}: {exc.strerror}"
        raise SnapshotError(msg) from exc
    if head[:4] != MAGIC:
        msg = f"{path} is not a sensorcast journal"
        raise SnapshotError(msg)
    if len(head) < _HEADER.size:
        msg = f"journal {path} is truncated inside its header ({len(head)} of {_HEADER.size} "
        msg += "bytes); move it away (the snapshot beside it is restored without it)"
        raise SnapshotError(msg)
    return int(_HEADER.unpack(head)[1])


def replay(
    path: str | Path, generation: int, partition: str
) -> Iterator[ReadingBatch | Event | Receipts]:
    """The batches, events and receipts of ``path`` if it belongs to ``generation``;
    nothing otherwise."""
    if not Path(path).exists():
        return
    try:
        theirs = header_generation(path)
    except SnapshotError as exc:
        log.error("%s; ignoring it", exc)
        return
    if theirs != generation:
        log.info("journal %s is of generation %d, the snapshot of %d: stale, ignored",
                 path, theirs, generation)  # fmt: skip
        return
    for frame in _frames(Path(path)):
        try:
            item = decode(frame[_FRAME.size :], partition)
        except SnapshotError as exc:  # as a torn tail: what follows it is not applied
            log.error("journal %s: %s; ignoring it and every frame after it", path, exc)
            return
        yield item


def reapply(engine: Engine, item: ReadingBatch | Event | Receipts) -> VerdictBatch:
    """Do again what a journal frame records: apply its readings, or close or evict its
    streams as the wall clock did then; the verdicts, to be published again. Receipts
    change no state (they are the source's: see ``Daemon``)."""
    if isinstance(item, ReadingBatch):
        return engine.process(item)
    if isinstance(item, Receipts):
        return VerdictBatch.empty()
    redo = engine.close_streams if item.kind == CLOSE else engine.evict_streams
    return redo(item.streams)


def _frames(path: Path) -> Iterator[bytes]:
    """Every whole frame after the header (length, crc and payload); stops at a torn one."""
    with open(path, "rb") as f:
        f.seek(_HEADER.size)
        while True:
            head = f.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            length, crc = _FRAME.unpack(head)
            if length < _COUNTS.size:  # no frame is that short: zeros a crash left behind
                return  # (an empty payload's crc is 0, so they would pass the check)
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            yield head + payload


def summarize(path: str | Path) -> dict[str, object]:
    """What a journal holds: generation, frames, housekeeping events, receipts, readings,
    streams, event-time range."""
    path = Path(path)
    generation = header_generation(path)
    frames = readings = whole = events = receipts = 0
    streams: set[str] = set()
    first, last = np.inf, -np.inf
    for frame in _frames(path):
        try:
            batch = decode(frame[_FRAME.size :], "")
        except SnapshotError as exc:
            msg = f"journal {path}: {exc} (at byte {_HEADER.size + whole})"
            raise SnapshotError(msg) from exc
        frames, whole = frames + 1, whole + len(frame)
        if isinstance(batch, Event):
            events += 1
            continue
        if isinstance(batch, Receipts):
            receipts += len(batch.items)
            continue
        readings += len(batch)
        streams.update(batch.streams)
        if len(batch):
            first = min(first, float(batch.timestamp.min()))
            last = max(last, float(batch.timestamp.max()))
    size = path.stat().st_size
    return {
        "generation": generation,
        "frames": frames,
        "events": events,
        "receipts": receipts,
        "readings": readings,
        "streams": len(streams),
        "first_timestamp": first if readings else None,
        "last_timestamp": last if readings else None,
        "bytes": size,
        "torn_tail_bytes": size - _HEADER.size - whole,
    }
