"""Snapshots of the state table: atomic to write, all-or-nothing to read.

A snapshot is a zip of ``.npy`` arrays (numpy's ``.npz``) holding the live
streams' columns compacted to slots ``0..n-1``, the stream keys as one
NUL-separated byte string, and ``meta.json``: schema version, the fingerprints
of the model, the detector and the windowing settings, the last source
position per partition and the journal generation that follows this snapshot
(see ``pipeline.journal``). Nothing is unpickled on load (``allow_pickle=False``).

Writing goes to a temporary file in the same directory, is fsynced and then
renamed over the old snapshot, so a crash leaves either the old or the new one.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import SnapshotError
from pipeline.state import PendingReadings, StateTable
from pipeline.writable import replace_whole

SCHEMA_VERSION = 2  # 2: meta holds the journal generation
ZIP_MAGIC = b"PK\x03\x04"  # a snapshot is numpy's .npz: a zip of .npy arrays


def write_snapshot(table: StateTable, path: str | Path, fingerprints: Mapping[str, str]) -> int:
    """Write ``table`` to ``path`` atomically; return the bytes written."""
    path = Path(path)
    arrays = _arrays_of(table)
    meta = {
        "schema": SCHEMA_VERSION,
        "fingerprints": dict(fingerprints),
        "streams": len(table),
        "positions": table.positions,
        "generation": table.generation,
        "written_at": time.time(),
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    data = buffer.getvalue()
    _atomic_write(path, data)
    return len(data)


def read_snapshot(
    table: StateTable, path: str | Path, fingerprints: Mapping[str, str], now: float
) -> None:
    """Load ``path`` into the empty ``table``, or raise SnapshotError and change nothing.

    Restored streams count as seen at ``now`` (wall time): time the process was
    down does not count towards idle close or eviction.
    """
    path = Path(path)
    arrays, meta, keys = _load(path)
    _check_compatible(path, meta, fingerprints)
    _fill(table, path, arrays, keys, meta, now)


def inspect_snapshot(path: str | Path, streams: int = 0) -> dict[str, Any]:
    """What a snapshot holds, without a model: meta, array shapes and, for the first
    ``streams`` streams, the newest reading time and value each has applied."""
    arrays, meta, keys = _load(Path(path))
    meta["arrays"] = {name: list(a.shape) for name, a in arrays.items() if name != "keys"}
    last_t, last_value = arrays.get("col_last_t"), arrays.get("col_last_value")
    meta["sample"] = [
        {"stream": key, "last_t": _number(last_t, i), "last_value": _number(last_value, i)}
        for i, key in enumerate(keys[:streams])
    ]
    return meta


def _number(column: np.ndarray | None, i: int) -> float | None:
    if column is None or i >= len(column) or not np.isfinite(column[i]):
        return None
    return float(column[i])


# -- writing ---------------------------------------------------------------------------


def _arrays_of(table: StateTable) -> dict[str, np.ndarray]:
    slots = table.active_slots()
    arrays = {f"col_{name}": column[slots] for name, column in table.columns.items()}
    arrays["keys"] = np.frombuffer("\0".join(table.index).encode(), np.uint8)
    compact = np.full(table.capacity, -1, np.int64)
    compact[slots] = np.arange(len(slots))
    pending = table.pending
    arrays["pending_slot"] = compact[pending.slot]
    arrays["pending_timestamp"] = pending.timestamp
    arrays["pending_value"] = pending.value
    return arrays


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        replace_whole(path, data)
    except OSError as exc:
        msg = f"cannot write snapshot {path}: {exc.strerror or exc}"
        raise SnapshotError(msg) from exc
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


# -- reading ---------------------------------------------------------------------------


PENDING_MEMBERS = ("pending_slot", "pending_timestamp", "pending_value")
REQUIRED_MEMBERS = {"keys", *PENDING_MEMBERS}


def _load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """The arrays, the meta record and the stream keys of a snapshot, checked whole."""
    try:
        if _head(path) != ZIP_MAGIC:  # not an .npz: numpy would try it as a pickle
            msg = f"{path} is not a sensorcast snapshot; give a snapshot file, or a new name "
            msg += "to start cold"
            raise SnapshotError(msg)
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
    except FileNotFoundError as exc:
        msg = f"snapshot {path} does not exist"
        raise SnapshotError(msg) from exc
    except (PermissionError, IsADirectoryError) as exc:
        msg = f"cannot read snapshot {path} ({exc.strerror}); check its permissions (the "
        msg += "state in it is kept)"
        raise SnapshotError(msg) from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        msg = f"snapshot {path} is corrupt or truncated ({exc}); move it away to start cold"
        raise SnapshotError(msg) from exc
    if not isinstance(meta, dict):
        msg = f"snapshot {path} has no valid meta record; move it away to start cold"
        raise SnapshotError(msg)
    _check_meta(path, meta)
    keys = _stream_keys(path, arrays, meta)
    _check_pending(path, arrays, keys)
    return arrays, meta, keys


def _is_text(x: object) -> bool:
    return isinstance(x, str)


def _is_integer(x: object) -> bool:  # a position may be -1: nothing read yet
    return isinstance(x, int) and not isinstance(x, bool)


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """The meta record's fields have the types the writer gives them: a damaged or
    hand-edited one is refused whole, like any other damage, not found mid-restore."""
    fingerprints, positions = meta.get("fingerprints", {}), meta.get("positions", {})
    if not (isinstance(fingerprints, dict) and all(map(_is_text, fingerprints.values()))):
        raise _damaged(path, "its meta record's fingerprints are not texts")
    if not (isinstance(positions, dict) and all(map(_is_integer, positions.values()))):
        raise _damaged(path, "its meta record's positions are not integers")
    if not _is_integer(meta.get("generation", 0)):
        raise _damaged(path, "its meta record's generation is not an integer")


def _damaged(path: Path, why: str) -> SnapshotError:
    return SnapshotError(f"snapshot {path} is damaged ({why}); move it away to start cold")


def _stream_keys(path: Path, arrays: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """The snapshot's stream keys; SnapshotError when its members cannot give them: one
    that is not an array (numpy hands back the raw bytes), one that is missing, keys
    that are not text or not as many as the meta record says."""
    if bad := next((name for name, a in arrays.items() if not isinstance(a, np.ndarray)), None):
        raise _damaged(path, f"{bad} is not an array")
    if missing := sorted(REQUIRED_MEMBERS - set(arrays)):
        raise _damaged(path, f"no {', '.join(missing)}")
    if not isinstance(meta.get("streams"), int):
        raise _damaged(path, "its meta record has no stream count")
    try:
        keys = arrays["keys"].tobytes().decode().split("\0") if meta["streams"] else []
    except UnicodeDecodeError as exc:
        raise _damaged(path, "its stream keys are not UTF-8 text") from exc
    if len(keys) != meta["streams"]:
        raise _damaged(
            path, f"{len(keys)} stream keys where its meta record says {meta['streams']}"
        )
    return keys


def _check_pending(path: Path, arrays: dict[str, np.ndarray], keys: list[str]) -> None:
    """Pending readings must line up and belong to the snapshot's streams."""
    slot = arrays["pending_slot"]
    sizes = {len(arrays[name]) for name in PENDING_MEMBERS}
    if slot.ndim != 1 or slot.dtype.kind != "i" or len(sizes) != 1:
        raise _damaged(path, "its pending readings do not line up")
    if len(slot) and (slot.min() < 0 or slot.max() >= len(keys)):
        raise _damaged(path, "a pending reading belongs to no stream")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(ZIP_MAGIC))


def _check_compatible(path: Path, meta: dict[str, Any], fingerprints: Mapping[str, str]) -> None:
    schema = meta.get("schema")
    if schema != SCHEMA_VERSION:
        msg = (
            f"snapshot {path} has schema {schema!r}, this sensorcast reads schema "
            f"{SCHEMA_VERSION}; move it away to start cold"
        )
        raise SnapshotError(msg)
    theirs = meta.get("fingerprints", {})
    for part, ours in fingerprints.items():
        if theirs.get(part) != ours:
            msg = (
                f"snapshot {path} was made with {part} {theirs.get(part)!r}, this pipeline "
                f"runs {ours!r}; run with the same {part} or move the snapshot away to start cold"
            )
            raise SnapshotError(msg)


def _fill(
    table: StateTable,
    path: Path,
    arrays: dict[str, np.ndarray],
    keys: list[str],
    meta: dict,
    now: float,
) -> None:
    if len(table):
        msg = "can only restore a snapshot into an empty state table"
        raise SnapshotError(msg)
    columns = {name[4:]: a for name, a in arrays.items() if name.startswith("col_")}
    _check_shapes(table, path, keys, columns)
    if len(keys) > table.max_streams:
        msg = f"snapshot {path} holds {len(keys)} streams, more than max_streams "
        msg += f"{table.max_streams}; raise max_streams or move the snapshot away"
        raise SnapshotError(msg)
    while table.capacity < len(keys):
        table._grow(table.capacity * 2)
    slots = table.slots_for(keys, now=0.0)
    for name, column in columns.items():
        table.columns[name][slots] = column
    table.restored_at = now  # last_seen stays the arrival it was (a metric of its own)
    table.positions = {str(k): v for k, v in meta.get("positions", {}).items()}
    table.generation = meta.get("generation", 0)
    pending_slot = arrays["pending_slot"]
    table.pending = PendingReadings(
        slots[pending_slot], arrays["pending_timestamp"], arrays["pending_value"]
    )


def _check_shapes(
    table: StateTable, path: Path, keys: list[str], columns: dict[str, np.ndarray]
) -> None:
    expected = {name: column for name, column in table.columns.items()}
    if set(columns) != set(expected) or len(set(keys)) != len(keys):
        msg = f"snapshot {path} does not hold this table's columns; move it away to start cold"
        raise SnapshotError(msg)
    for name, column in columns.items():
        ours = expected[name]
        if (
            column.shape[1:] != ours.shape[1:]
            or column.dtype != ours.dtype
            or len(column) != len(keys)
        ):
            msg = f"snapshot {path}: column {name} has shape {column.shape}, expected rows of "
            msg += f"{ours.shape[1:]} {ours.dtype}; move it away to start cold"
            raise SnapshotError(msg)
