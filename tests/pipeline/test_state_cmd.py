"""`sensorcast state inspect`: user mistakes are one line naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_engine

from pipeline.cli import main
from pipeline.types import Reading, ReadingBatch, StreamKey


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["state", "inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = inspect(capsys, *args)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.removeprefix("sensorcast: error: ").strip()


def snapshot(path: Path) -> Path:
    engine = make_engine()
    readings = [Reading(StreamKey(f"site/dev-{i}/temp"), 60.0 * t, 20.0 + t) for t in range(3)
                for i in range(2)]  # fmt: skip
    engine.process(ReadingBatch.from_readings(readings))
    engine.snapshot(path)
    return path


def test_a_directory_names_the_files_to_give(capsys, tmp_path):
    assert refused(capsys, str(tmp_path)) == (
        f"{tmp_path} is a directory, with no state.snap or journal.bin in it; give a snapshot "
        "(state.snap) or journal (journal.bin) from state.dir"
    )
    snap = snapshot(tmp_path / "state.snap")
    assert refused(capsys, str(tmp_path)) == f"{tmp_path} is a directory; give a file in it: {snap}"


@pytest.mark.parametrize(
    "content", [b"hello\n", b"\x80\x04K\x01.", b"", "npy"], ids=["text", "pickle", "empty", "npy"]
)
def test_a_file_that_is_no_snapshot_is_named_so_without_numpy_words(capsys, tmp_path, content):
    path = tmp_path / "state.snap"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    else:
        path.write_bytes(content)
    message = refused(capsys, str(path))
    empty = "is empty, " if content == b"" else ""
    assert message == (
        f"{path}: {empty}not a sensorcast snapshot or journal; give a snapshot (state.snap) or "
        "journal (journal.bin) from state.dir"
    )
    assert "pickle" not in message


def test_a_damaged_snapshot_is_still_called_damaged(capsys, tmp_path):
    path = snapshot(tmp_path / "state.snap")
    path.write_bytes(path.read_bytes()[:200])
    assert refused(capsys, str(path)).startswith(f"snapshot {path} is corrupt or truncated")


def test_negative_streams_are_refused(capsys, tmp_path):
    path = snapshot(tmp_path / "state.snap")
    assert refused(capsys, str(path), "--streams", "-1") == (
        "--streams: -1 is negative; give 0 or more, e.g. --streams 10"
    )
    code, out, err = inspect(capsys, str(path), "--streams", "0", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["kind"], info["streams"], info["sample"]) == ("snapshot", 2, [])
    code, out, _ = inspect(capsys, str(path), "--streams", "1", "--json")
    assert code == 0 and [row["stream"] for row in json.loads(out)["sample"]] == ["site/dev-0/temp"]


def test_the_help_says_what_a_journal_summary_holds(capsys):
    with pytest.raises(SystemExit):
        main(["state", "inspect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "its readings" not in text
    assert (
        "A journal: generation, how many frames, housekeeping events (idle closes, "
        "evictions), receipts of messages whose readings took their receive time, readings "
        "and streams it holds" in text
    )


def test_a_journal_cut_inside_its_header_is_called_truncated(capsys, tmp_path):
    from pipeline.journal import Journal

    path = tmp_path / "journal.bin"
    journal = Journal(path)
    journal.restart(3)
    journal.close()
    path.write_bytes(path.read_bytes()[:6])  # the magic, and part of the generation
    assert refused(capsys, str(path)).startswith(
        f"journal {path} is truncated inside its header (6 of "
    )
