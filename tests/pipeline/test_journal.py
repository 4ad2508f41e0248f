"""The journal: readings since the last snapshot, so a crash loses nothing applied."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import make_engine

from connectors.records import verdict_records
from pipeline import journal as journal_module
from pipeline.cli import main
from pipeline.engine import Engine
from pipeline.errors import SnapshotError
from pipeline.journal import Journal, Receipts, decode, encode, reapply, replay, summarize
from pipeline.runner import Runner, Schedule
from pipeline.testing import FakeClock, ListSink, ListSource
from pipeline.types import Reading, ReadingBatch, StreamKey, VerdictBatch

STREAMS = [f"site/dev-{i}/temp" for i in range(5)]


def all_readings(n: int = 40) -> list[Reading]:
    """``n`` readings a stream, a minute apart, interleaved, values that vary per stream."""
    rng = np.random.default_rng(7)
    return [
        Reading(StreamKey(stream), 1_700_000_000.0 + 60 * t, float(20 + s + rng.normal()))
        for t in range(n)
        for s, stream in enumerate(STREAMS)
    ]


def by_step(verdicts: VerdictBatch) -> dict[tuple[object, object], str]:
    # repr: NaN (no interval yet) equals NaN, and floats compare bit for bit
    """Forecast (and interval) of every step, by stream and time."""
    records = (v.as_record() for v in verdicts.rows())
    return {(r["stream"], r["timestamp"]): repr((r["forecast"], r["upper"])) for r in records}


def test_a_batch_survives_encoding_bit_for_bit():
    batch = ReadingBatch.from_readings(all_readings(3), "mqtt")
    again = decode(encode(batch)[8:], "mqtt")
    assert again.streams == batch.streams
    for column in ("stream_index", "timestamp", "value", "seq"):
        assert np.array_equal(getattr(again, column), getattr(batch, column)), column


def crashed_run(state: Path, items: list[Reading], ticks: int, snapshot_after: int) -> int:
    """Run ``ticks`` ticks of 7 readings with a snapshot after ``snapshot_after``, then stop
    dead (no final snapshot, as under kill -9); return how many readings were committed."""
    source = ListSource(items, "mqtt")
    journal = Journal(state / "journal.bin")
    journal.restart(0)
    engine = make_engine(clock=FakeClock())
    runner = Runner(engine, source, [ListSink()], max_items=7, snapshot_path=state / "s.snap",
                    journal=journal)  # fmt: skip
    for tick in range(ticks):
        assert runner._tick()
        if tick + 1 == snapshot_after:
            assert runner.write_snapshot()
    journal.close()
    return source.committed


def restarted(state: Path) -> tuple[Engine, VerdictBatch]:
    """A fresh engine from the snapshot plus the journal, as the daemon starts."""
    engine = make_engine(clock=FakeClock())
    if (state / "s.snap").exists():
        engine.restore(state / "s.snap")
    batches = replay(state / "journal.bin", engine.table.generation, "mqtt")
    parts = [reapply(engine, batch) for batch in batches]
    return engine, VerdictBatch.concat(parts) if parts else VerdictBatch.empty("persistence")


@pytest.mark.parametrize("snapshot_after", [0, 3])  # never, or mid-way
def test_snapshot_plus_journal_after_a_crash_equals_an_uninterrupted_run(tmp_path, snapshot_after):
    items = all_readings()
    reference = by_step(make_engine(clock=FakeClock()).process(
        ReadingBatch.from_readings(items, "mqtt")))  # fmt: skip
    committed = crashed_run(tmp_path, items, ticks=9, snapshot_after=snapshot_after)
    assert committed == 63
    engine, replayed = restarted(tmp_path)
    assert engine.table.generation == (1 if snapshot_after else 0)
    # The journal re-applied exactly the ticks after the snapshot ...
    assert len(replayed) == 63 - 7 * snapshot_after
    # ... and the broker redelivers from the last acknowledged reading on.
    rest = engine.process(ReadingBatch.from_readings(items[committed:], "mqtt"))
    got = {**by_step(replayed), **by_step(rest)}
    assert got.keys() <= reference.keys()
    assert {k: got[k] for k in got} == {k: reference[k] for k in got}
    assert len(got) + 7 * snapshot_after == len(items)


def rows(verdicts: VerdictBatch) -> dict[tuple[object, object], str]:
    """Every row, steps and dropped readings alike: what it says, by stream and time."""
    return {(r["stream"], r["timestamp"]): repr((r["value"], r["forecast"], r["count"],
            r["dropped"])) for r in verdict_records(verdicts)}  # fmt: skip


@pytest.mark.parametrize("config", [{"window": 60}, {"lateness": 30}])
def test_what_the_wall_clock_closed_or_evicted_is_replayed_where_it_happened(tmp_path, config):
    # a: silent long enough to be closed (window or held-back readings let out), then
    # evicted; a reading for it after that starts it cold; b fills the table meanwhile
    clock = FakeClock()
    engine = make_engine(clock, max_streams=2, idle_timeout=5, stream_ttl=20, **config)
    engine.table.generation = 7
    journal = Journal(tmp_path / "journal.bin")
    journal.restart(7)
    sink = ListSink()
    t0 = 1_700_000_000.0
    plan = [
        [Reading(StreamKey("a"), t0, 1.0), Reading(StreamKey("a"), t0 + 10, 2.0)],
        [Reading(StreamKey("b"), t0 + 20, 5.0)],
        [Reading(StreamKey("a"), t0 + 15, 9.0)],  # after a's close: late, or a new window
        [Reading(StreamKey("c"), t0 + 40, 7.0)],  # after a's eviction: room for c
        [Reading(StreamKey("a"), t0 + 100, 3.0)],  # a again, cold
    ]
    source = ListSource([r for tick in plan for r in tick], "mqtt")
    runner = Runner(engine, source, [sink], max_items=1, journal=journal,
                    schedule=Schedule(idle_check=1, eviction=1))  # fmt: skip
    for tick in plan:
        for _ in tick:
            assert runner._tick()
        clock.advance(12)  # a is idle after the first tick, and evicted after the third
        runner._housekeeping()
    journal.close()
    assert engine.stats.evicted >= 1
    before_crash = rows(VerdictBatch.concat(sink.batches))
    # kill -9 before any snapshot: a fresh engine replays the whole journal
    restarted_engine = make_engine(FakeClock(), max_streams=2, idle_timeout=5, stream_ttl=20,
                                   **config)  # fmt: skip
    restarted_engine.table.generation = 7
    items = list(replay(tmp_path / "journal.bin", 7, "mqtt"))
    again = rows(VerdictBatch.concat([reapply(restarted_engine, item) for item in items]))
    assert again == before_crash  # every row published again, and the same
    assert "stream_limit" not in restarted_engine.stats.dropped
    assert sorted(restarted_engine.table.index) == sorted(engine.table.index)


def test_redelivered_readings_already_in_the_journal_are_skipped_and_counted(tmp_path):
    items = all_readings()
    crashed_run(tmp_path, items, ticks=4, snapshot_after=2)
    engine, _ = restarted(tmp_path)
    steps = engine.stats.steps
    engine.process(ReadingBatch.from_readings(items[14:28], "mqtt"))  # acked just before: again
    assert engine.stats.steps == steps
    assert engine.stats.dropped["duplicate"] + engine.stats.dropped["late"] == 14


def test_a_journal_of_another_generation_is_stale_and_ignored(tmp_path):
    journal = Journal(tmp_path / "j")
    journal.restart(3)
    journal.append(ReadingBatch.from_readings(all_readings(2)))
    journal.close()
    assert len(list(replay(tmp_path / "j", 3, "mqtt"))) == 1
    assert list(replay(tmp_path / "j", 4, "mqtt")) == []  # the snapshot already holds these


def test_a_file_in_the_journals_place_that_is_no_journal_is_logged_and_ignored(tmp_path, caplog):
    path = tmp_path / "j"
    path.write_bytes(b"PK\x03\x04 not a journal")
    with caplog.at_level("ERROR", logger="pipeline.journal"):
        assert list(replay(path, 0, "mqtt")) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} is not a sensorcast journal; ignoring it"
    ]
    with pytest.raises(SnapshotError, match="is not a sensorcast journal"):
        summarize(path)


def test_a_torn_last_frame_is_ignored_and_cut_off_on_resume(tmp_path):
    path = tmp_path / "j"
    journal = Journal(path)
    journal.restart(1)
    for t in range(2):
        journal.append(ReadingBatch.from_readings(all_readings(2)[t * 5 : t * 5 + 5]))
    journal.close()
    os.truncate(path, path.stat().st_size - 5)  # died mid-write (that tick was never acked)
    assert [len(b) for b in replay(path, 1, "mqtt")] == [5]
    journal.resume(1)
    journal.append(ReadingBatch.from_readings(all_readings(1)))
    journal.close()
    assert [len(b) for b in replay(path, 1, "mqtt")] == [5, 5]


def framed(payload: bytes) -> bytes:
    """``payload`` as a frame whose checksum holds."""
    import struct
    import zlib

    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


@pytest.mark.parametrize(
    "payload",
    [
        b"\xe8\x03\x00\x00\x01\x00\x00\x00a",  # 1,000 readings said, none there
        b"\x00\x00\x00\x00\x02\x00\x00\x00\xff\xfe\x01",  # keys that are not UTF-8
        # one reading of stream 5 where the frame names one stream
        b"\x01\x00\x00\x00\x01\x00\x00\x00a" + np.array([5], "<i4").tobytes()
        + np.zeros(3).tobytes(),
    ],
)  # fmt: skip
def test_a_frame_whose_checksum_holds_but_content_does_not_ends_the_replay(
    tmp_path, caplog, capsys, payload
):
    """No writer of the journal makes one; read back, it is treated as a torn tail (the
    frames before it are applied), and `state inspect` says where it is in one line."""
    path = tmp_path / "j"
    journal = Journal(path)
    journal.restart(1)
    journal.append(ReadingBatch.from_readings(all_readings(1)))
    journal.close()
    with open(path, "ab") as f:
        f.write(framed(payload))
    with caplog.at_level("ERROR", logger="pipeline.journal"):
        assert [len(b) for b in replay(path, 1, "mqtt")] == [5]
    assert "a frame does not add up" in caplog.text or "belong to no stream" in caplog.text
    assert main(["state", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sensorcast: error: journal {path}: a frame")
    journal.resume(1)  # cut off there, so what is appended next is read back
    journal.append(ReadingBatch.from_readings(all_readings(1)))
    journal.close()
    assert [len(b) for b in replay(path, 1, "mqtt")] == [5, 5]


def with_receipts(readings: list[Reading], *receipts: tuple[int, int, float]) -> ReadingBatch:
    return dataclasses.replace(ReadingBatch.from_readings(readings, "mqtt"), receipts=receipts)


def receipts_in(path: Path, generation: int) -> list[tuple[int, int, float]]:
    return [r for item in replay(path, generation, "mqtt") if isinstance(item, Receipts)
            for r in item.items]  # fmt: skip


def test_receipts_come_back_before_their_readings_even_from_a_torn_frame(tmp_path):
    """A batch's receipts (messages whose readings took their receive time) are written
    before its readings: a crash mid-write may lose the readings, never leave them without
    their receipts (a redelivery would then be applied a second time)."""
    path = tmp_path / "j"
    journal = Journal(path)
    journal.restart(1)
    journal.append(with_receipts(all_readings(1), (5, 0xDEADBEEF, 1.7e9 + 0.25)))
    journal.append(with_receipts(all_readings(2)[5:], (6, 7, 1.7e9 + 1)))
    journal.close()
    kinds = [type(item).__name__ for item in replay(path, 1, "mqtt")]
    assert kinds == ["Receipts", "ReadingBatch", "Receipts", "ReadingBatch"]
    assert receipts_in(path, 1) == [(5, 0xDEADBEEF, 1.7e9 + 0.25), (6, 7, 1.7e9 + 1)]
    os.truncate(path, path.stat().st_size - 5)  # died writing the second batch's readings
    assert receipts_in(path, 1)[-1] == (6, 7, 1.7e9 + 1)
    assert sum(len(i) for i in replay(path, 1, "mqtt") if isinstance(i, ReadingBatch)) == 5
    assert summarize(path)["receipts"] == 2


def test_a_new_generation_carries_the_last_receipts_over(tmp_path, monkeypatch):
    """The messages applied just before a snapshot may not have had their
    acknowledgements reach the broker: the next generation keeps their receipts, the last
    CARRIED_RECEIPTS of them, those a resumed journal held among them."""
    monkeypatch.setattr(journal_module, "CARRIED_RECEIPTS", 3)
    path = tmp_path / "j"
    journal = Journal(path)
    journal.restart(1)
    journal.append(with_receipts(all_readings(1), (1, 11, 1.0), (2, 12, 2.0)))
    journal.close()
    resumed = Journal(path)  # a restarted daemon's
    resumed.resume(1)
    resumed.append(with_receipts(all_readings(1), (3, 13, 3.0), (4, 14, 4.0)))
    resumed.restart(2)  # a snapshot
    resumed.close()
    assert receipts_in(path, 2) == [(2, 12, 2.0), (3, 13, 3.0), (4, 14, 4.0)]
    assert list(replay(path, 2, "mqtt"))[1:] == []  # no readings: the snapshot has them


def test_zeros_a_crash_left_after_the_last_frame_are_a_torn_tail(tmp_path, capsys):
    """Some file systems leave zero-filled blocks after a power cut: a zero frame header
    (length 0, crc 0) passed the crc check of an empty payload, and decoding it raised."""
    path = tmp_path / "j"
    journal = Journal(path)
    journal.restart(1)
    journal.append(ReadingBatch.from_readings(all_readings(1)))
    journal.close()
    whole = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(4096))
    assert [len(b) for b in replay(path, 1, "mqtt")] == [5]
    assert main(["state", "inspect", str(path)]) == 0
    assert "torn_tail_bytes: 4096" in capsys.readouterr().out
    journal.resume(1)  # cut off, so what comes next can be read
    journal.close()
    assert path.stat().st_size == whole


def test_a_full_disk_is_an_error_counted_by_the_runner_which_goes_on(tmp_path):
    journal = Journal("/dev/full")  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(SnapshotError, match="No space left"):
        journal.restart(0)
    source, sink = ListSource(all_readings(4), "mqtt"), ListSink()
    runner = Runner(make_engine(clock=FakeClock()), source, [sink], max_items=7, journal=journal)
    runner.run()
    assert runner.engine.stats.journal_failures == 3  # one per tick
    assert source.committed == 20 and len(sink.verdicts) == 20  # served and acked all the same
    journal.close()


def test_a_journal_past_its_size_limit_stops_growing(tmp_path):
    journal = Journal(tmp_path / "j", max_bytes=400)  # room for one frame
    journal.restart(0)
    batch = ReadingBatch.from_readings(all_readings(1))
    assert journal.append(batch)
    assert not journal.append(batch) and journal.full
    assert journal.size == (tmp_path / "j").stat().st_size <= 400
    journal.restart(1)  # a snapshot succeeded: a fresh, empty journal
    assert journal.append(batch)


# ---------------------------------------------------------------- state inspect


def test_state_inspect_prints_a_snapshot_and_a_journal(tmp_path, capsys):
    crashed_run(tmp_path, all_readings(), ticks=5, snapshot_after=2)
    assert main(["state", "inspect", str(tmp_path / "s.snap"), "--json"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert (snapshot["kind"], snapshot["generation"], snapshot["streams"]) == ("snapshot", 1, 5)
    assert snapshot["fingerprints"]["model"] and snapshot["readable"] is True
    assert snapshot["sample"][0]["stream"] == STREAMS[0]
    assert main(["state", "inspect", str(tmp_path / "journal.bin"), "--json"]) == 0
    journal = json.loads(capsys.readouterr().out)
    assert (journal["kind"], journal["generation"], journal["frames"], journal["readings"]) == (
        "journal", 1, 3, 21,
    )  # fmt: skip
    assert main(["state", "inspect", str(tmp_path / "s.snap")]) == 0
    text = capsys.readouterr().out
    assert "generation: 1" in text and STREAMS[0] in text


@pytest.mark.parametrize("content", [None, b"not a snapshot at all"])
def test_state_inspect_of_a_missing_or_foreign_file_is_one_error_line(tmp_path, capsys, content):
    path = tmp_path / "state.snap"
    if content is not None:
        path.write_bytes(content)
    assert main(["state", "inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sensorcast: error:") and "\n" not in err and str(path) in err


def test_summarize_counts_readings_and_streams(tmp_path):
    journal = Journal(tmp_path / "j")
    journal.restart(2)
    journal.append(ReadingBatch.from_readings(all_readings(3)))
    journal.close()
    info = summarize(tmp_path / "j")
    assert (info["readings"], info["streams"], info["torn_tail_bytes"]) == (15, 5, 0)
