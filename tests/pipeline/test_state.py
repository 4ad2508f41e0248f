"""The state table: slots, growth, eviction, the memory budget, snapshots."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile

import numpy as np
import pytest
from helpers import make_engine

from models.persistence import PersistenceForecaster
from pipeline.detect import GaussianTailDetector
from pipeline.errors import SnapshotError
from pipeline.snapshot import SCHEMA_VERSION, inspect_snapshot
from pipeline.state import StateTable
from pipeline.testing import FakeClock, readings
from pipeline.types import VerdictBatch


def new_table(capacity: int = 2, max_streams: int = 1_000) -> StateTable:
    return StateTable(PersistenceForecaster(), GaussianTailDetector(), capacity, max_streams)


def test_slots_are_stable_and_the_table_doubles():
    table = new_table(capacity=2)
    first = table.slots_for([f"s/{i}" for i in range(5)], now=0.0)
    assert first.tolist() == [0, 1, 2, 3, 4]
    assert table.capacity == 8
    assert table.slots_for(["s/3", "s/0"], now=1.0).tolist() == [3, 0]


def test_growth_keeps_every_column():
    table = new_table(capacity=1)
    table.slots_for(["a"], now=0.0)
    table.model_state[0] = [5.0, 6.0, 7.0, 8.0]
    table.last_t[0] = 123.0
    table.slots_for(["b", "c", "d"], now=0.0)
    assert table.model_state[0].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert table.last_t[0] == 123.0
    assert np.isnan(table.last_t[1:4]).all()


def test_evicted_slots_are_reused_with_fresh_state():
    table = new_table()
    table.slots_for(["a", "b"], now=0.0)
    table.last_t[:2] = [10.0, 20.0]
    table.evict(table.idle_slots(older_than=1.0))
    assert len(table) == 0
    slot = table.slots_for(["c"], now=2.0)[0]
    assert slot in (0, 1)
    assert np.isnan(table.last_t[slot]) and "a" not in table


def test_idle_slots_are_judged_by_last_seen():
    table = new_table()
    table.slots_for(["a", "b"], now=0.0)
    table.slots_for(["b"], now=100.0)
    assert table.key_array(table.idle_slots(older_than=50.0)).tolist() == ["a"]


def test_a_restore_keeps_last_seen_and_counts_silence_from_the_restore(tmp_path):
    clock = FakeClock(start=1_000.0)
    engine = make_engine(clock)
    engine.process(readings("a", [(0.0, 1.0)]))
    engine.snapshot(tmp_path / "s.snap")
    clock.advance(500.0)  # the daemon was down
    restored = make_engine(clock)
    restored.restore(tmp_path / "s.snap")
    table = restored.table
    assert table.columns["last_seen"][table.index["a"]] == 1_000.0
    assert len(table.idle_slots(older_than=1_200.0)) == 0  # silent only since the restore
    assert table.key_array(table.idle_slots(older_than=1_501.0)).tolist() == ["a"]


@pytest.mark.parametrize("picked", [[5], [7, 0, 7, 63], list(range(64))[::-1] * 2])
def test_key_array_gives_the_keys_of_few_slots_and_of_many_alike(picked):
    table = new_table(capacity=64)
    keys = [f"site/dev-{i}" for i in range(64)]
    table.slots_for(keys, now=0.0)
    slots = np.array(picked, np.int64)
    out = table.key_array(slots)
    assert out.dtype == object and out.tolist() == [keys[i] for i in picked]


def test_max_streams_refuses_new_streams_only():
    table = new_table(max_streams=2)
    assert table.slots_for(["a", "b", "c", "a"], now=0.0).tolist() == [0, 1, -1, 0]


def test_engine_counts_streams_beyond_the_limit():
    engine = make_engine(max_streams=1)
    engine.process(readings("a/b/c", [(0, 1.0)]))
    out = engine.process(readings("x/y/z", [(0, 1.0), (60, 2.0)]))
    assert len(out) == 0 and engine.stats.dropped["stream_limit"] == 2


def test_a_stream_costs_under_one_kib():
    table = new_table(capacity=1024)
    assert table.bytes_per_stream() < 1024
    # keys and the dict count too: measure 100k real streams
    before = table.nbytes()
    keys = [f"site-{i % 100}/device-{i}/temperature" for i in range(100_000)]
    import tracemalloc

    tracemalloc.start()
    table.slots_for(keys, now=0.0)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_stream = (current + before) / len(keys)
    assert per_stream < 1024, per_stream


# -- snapshots ---------------------------------------------------------------------------


def replay_points(n: int = 40) -> list[tuple[float, float]]:
    rng = np.random.default_rng(7)
    return [(60.0 * i + rng.integers(0, 30), float(rng.normal())) for i in range(n)]


def run_in_two_halves(tmp_path, **config) -> tuple[VerdictBatch, VerdictBatch]:
    """Uninterrupted vs. (first half, snapshot, restore in a new engine, second half)."""
    streams = ["a/b/c", "a/b/d", "x/y/z"]
    batches = [readings(s, replay_points()[i::2], start_seq=i) for i in (0, 1) for s in streams]
    whole = make_engine(**config)
    expected = VerdictBatch.concat([*map(whole.process, batches), whole.flush()])
    first = make_engine(**config)
    head = [first.process(b) for b in batches[:3]]
    first.snapshot(tmp_path / "state.snap")
    second = make_engine(**config)
    second.restore(tmp_path / "state.snap")
    tail = [*map(second.process, batches[3:]), second.flush()]
    return expected, VerdictBatch.concat(head + tail)


@pytest.mark.parametrize("config", [{}, {"window": 120}, {"window": 120, "lateness": 90}])
def test_snapshot_restore_continue_equals_uninterrupted(tmp_path, config):
    expected, resumed = run_in_two_halves(tmp_path, **config)
    assert len(resumed) == len(expected) > 0
    for name in ("stream", "timestamp", "value", "forecast", "lower", "anomaly_score"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(expected, name))


def test_snapshot_keeps_positions_and_is_inspectable(tmp_path):
    engine = make_engine()
    batch = readings("a/b/c", [(0, 1.0), (60, 2.0)], start_seq=10)
    engine.process(batch)
    engine.snapshot(tmp_path / "s.snap")
    meta = inspect_snapshot(tmp_path / "s.snap")
    assert meta["streams"] == 1 and meta["positions"] == {"": 11}
    assert meta["fingerprints"]["model"] == "PersistenceForecaster(alpha=0.05, clip=4.0)"
    assert meta["arrays"]["col_model_state"] == [1, 4]


def test_snapshot_from_another_model_is_refused_whole(tmp_path):
    engine = make_engine()
    engine.process(readings("a/b/c", [(0, 1.0)]))
    engine.snapshot(tmp_path / "s.snap")
    other = make_engine()
    other.forecaster = PersistenceForecaster(alpha=0.5)
    with pytest.raises(SnapshotError, match="made with model .*alpha=0.05.*move the snapshot"):
        other.restore(tmp_path / "s.snap")
    assert len(other.table) == 0


def test_snapshot_from_other_windowing_is_refused(tmp_path):
    engine = make_engine(window=60)
    engine.process(readings("a/b/c", [(0, 1.0)]))
    engine.snapshot(tmp_path / "s.snap")
    with pytest.raises(SnapshotError, match="windowing"):
        make_engine(window=30).restore(tmp_path / "s.snap")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
def test_corrupt_snapshot_is_refused_with_a_clear_message(tmp_path, damage):
    path = tmp_path / "s.snap"
    engine = make_engine()
    engine.process(readings("a/b/c", [(0, 1.0), (60, 2.0)]))
    engine.snapshot(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(data[:100] + b"\xff" * 64 + data[164:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    fresh = make_engine()
    with pytest.raises(SnapshotError, match=str(path)):
        fresh.restore(path)
    assert len(fresh.table) == 0


def test_snapshot_with_a_foreign_schema_is_refused(tmp_path):
    path = tmp_path / "s.snap"
    make_engine().snapshot(path)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = arrays["meta"].tobytes().replace(f'"schema": {SCHEMA_VERSION}'.encode(), b'"schema": 99')
    arrays["meta"] = np.frombuffer(meta, np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(SnapshotError, match="schema 99"):
        make_engine().restore(path)


def rewritten(path, change) -> None:
    """``path``'s members, passed through ``change`` (name -> bytes or None to drop)."""
    with zipfile.ZipFile(path) as old:
        members = {name: old.read(name) for name in old.namelist()}
    with zipfile.ZipFile(path, "w") as new:
        for name, data in members.items():
            if (kept := change(name, data)) is not None:
                new.writestr(name, kept)


def keys(text: bytes) -> np.ndarray:
    """A snapshot's ``keys`` member: the keys' UTF-8, NUL between them."""
    return np.frombuffer(text, np.uint8)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def replaced(member: str, array: np.ndarray):
    """A ``rewritten`` change that puts ``array`` in place of ``member``."""
    return lambda n, d: npy(array) if n == f"{member}.npy" else d


def modified(member: str, change_array):
    """A ``rewritten`` change that passes ``member``'s array through ``change_array``."""
    return lambda n, d: npy(change_array(np.load(io.BytesIO(d)))) if n == f"{member}.npy" else d


def meta_changed(key: str, value: object = None, drop: bool = False):
    """A ``rewritten`` change that sets ``key`` of the meta record to ``value``, or drops it."""

    def change(name: str, data: bytes) -> bytes:
        if name != "meta.npy":
            return data
        meta = json.loads(np.load(io.BytesIO(data)).tobytes())
        if drop:
            del meta[key]
        else:
            meta[key] = value
        return npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))

    return change


def meta_without(key: str):
    """A ``rewritten`` change that drops ``key`` from the meta record."""
    return meta_changed(key, drop=True)


NOT_TEXTS, NOT_INTEGERS = "its meta record's fingerprints are not texts", "are not integers"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda n, d: b"garbage" if n == "col_interval.npy" else d, "col_interval is not an array"),
        (lambda n, d: None if n == "keys.npy" else d, "no keys"),
        (lambda n, d: None if n == "pending_slot.npy" else d, "no pending_slot"),
        (meta_without("streams"), "its meta record has no stream count"),
        (replaced("keys", keys(b"a/b/\xff")), "its stream keys are not UTF-8 text"),
        (replaced("keys", keys(b"a/b/c")), "1 stream keys where its meta record says 2"),
        (replaced("pending_value", np.zeros(3)), "its pending readings do not line up"),
        (replaced("pending_slot", np.zeros(1, np.float64)), "its pending readings do not line up"),
        (modified("pending_slot", lambda a: a + 2), "a pending reading belongs to no stream"),
        (modified("pending_slot", lambda a: a - 5), "a pending reading belongs to no stream"),
        (meta_changed("fingerprints", None), NOT_TEXTS),
        (meta_changed("fingerprints", {"model": 3}), NOT_TEXTS),
        (meta_changed("positions", "x"), f"its meta record's positions {NOT_INTEGERS}"),
        (meta_changed("positions", {"f": "abc"}), f"its meta record's positions {NOT_INTEGERS}"),
        (meta_changed("positions", {"f": True}), f"its meta record's positions {NOT_INTEGERS}"),
        (meta_changed("generation", "x"), "its meta record's generation is not an integer"),
        (meta_changed("generation", 1.5), "its meta record's generation is not an integer"),
    ],
)  # fmt: skip
def test_a_snapshot_with_a_damaged_member_is_one_error(tmp_path, change, problem):
    # still a valid zip, so only its members tell
    path = tmp_path / "s.snap"
    engine = make_engine(window=60, lateness=30)
    engine.process(readings("a/b/c", [(0, 1.0), (60, 2.0)]))
    engine.process(readings("d/e/f", [(0, 5.0)]))  # two streams, one reading still pending
    engine.snapshot(path)
    rewritten(path, change)
    expected = f"snapshot {path} is damaged ({problem}); move it away to start cold"
    for load in (make_engine(window=60).restore, inspect_snapshot):
        with pytest.raises(SnapshotError) as caught:
            load(path)
        assert str(caught.value) == expected


def test_a_meta_record_that_is_not_an_object_is_refused(tmp_path):
    path = tmp_path / "s.snap"
    make_engine().snapshot(path)
    rewritten(path, replaced("meta", np.frombuffer(b"[1, 2]", np.uint8)))
    for load in (make_engine().restore, inspect_snapshot):
        with pytest.raises(SnapshotError, match="has no valid meta record; move it away"):
            load(path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda n, d: None if n == "col_last_value.npy" else d, "does not hold this table's"),
        (replaced("col_last_value", np.zeros(2, np.float32)), "column last_value has shape (2,)"),
        (replaced("col_last_value", np.zeros(3)), "column last_value has shape (3,)"),
        (replaced("keys", keys(b"a/b/c\0a/b/c")), "does not hold this table's columns"),
    ],
)  # fmt: skip
def test_a_snapshot_whose_columns_do_not_fit_the_table_is_refused_on_restore(
    tmp_path, change, problem
):
    path = tmp_path / "s.snap"
    engine = make_engine()
    engine.process(readings("a/b/c", [(0, 1.0)]))
    engine.process(readings("d/e/f", [(0, 1.0)]))
    engine.snapshot(path)
    rewritten(path, change)
    fresh = make_engine()
    with pytest.raises(SnapshotError, match=re.escape(problem)):
        fresh.restore(path)
    assert len(fresh.table) == 0


def test_a_snapshot_beyond_max_streams_or_into_a_used_table_is_refused(tmp_path):
    path = tmp_path / "s.snap"
    engine = make_engine()
    for key in ("a/b/c", "d/e/f", "g/h/i"):
        engine.process(readings(key, [(0, 1.0)]))
    engine.snapshot(path)
    small = make_engine(max_streams=2)
    with pytest.raises(SnapshotError, match="holds 3 streams, more than max_streams 2; raise"):
        small.restore(path)
    assert len(small.table) == 0
    used = make_engine()
    used.process(readings("x/y/z", [(0, 1.0)]))
    with pytest.raises(SnapshotError, match="only restore a snapshot into an empty state table"):
        used.restore(path)
    assert list(used.table.index) == ["x/y/z"]


def test_failed_write_leaves_the_old_snapshot_in_place(tmp_path):
    path = tmp_path / "s.snap"
    engine = make_engine()
    engine.process(readings("a/b/c", [(0, 1.0)]))
    engine.snapshot(path)
    old = path.read_bytes()
    engine.process(readings("a/b/c", [(60, 2.0)]))
    blocker = tmp_path / f".s.snap.{os.getpid()}.tmp"
    blocker.mkdir()  # the temp file cannot be created: works even for root
    with pytest.raises(SnapshotError, match="cannot write snapshot"):
        engine.snapshot(path)
    assert path.read_bytes() == old
    blocker.rmdir()
    engine.snapshot(path)
    assert path.read_bytes() != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.snap"]


def test_restore_marks_streams_as_just_seen(tmp_path):
    clock = FakeClock(start=1000.0)
    engine = make_engine(clock, stream_ttl=60)
    engine.process(readings("a/b/c", [(0, 1.0)]))
    engine.snapshot(tmp_path / "s.snap")
    clock.advance(3600)  # the process was down an hour
    restored = make_engine(clock, stream_ttl=60)
    restored.restore(tmp_path / "s.snap")
    assert not len(restored.evict_idle()) and restored.stats.evicted == 0


def test_growth_stops_at_max_streams_not_the_next_power_of_two():
    table = new_table(capacity=4, max_streams=5)
    slots = table.slots_for([f"s/{i}" for i in range(6)], now=0.0)
    assert slots.tolist() == [0, 1, 2, 3, 4, -1]
    assert table.capacity == 5
