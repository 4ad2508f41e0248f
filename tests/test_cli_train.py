"""`sensorcast train` end to end, and the bad inputs it must refuse cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
BUOY = ROOT / "data/buoy/ndbc_44005/buoy_44005_2012.dat"
FAST = [
    "--epochs",
    "2",
    "--seq-len",
    "64",
    "--hidden",
    "8",
    "--batch",
    "8",
    "--threads",
    "1",
    "--no-progress",
]


def test_train_writes_a_checkpoint_replay_can_use(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", f"{BUOY}:PRES,ATMP", "--out", str(out), *FAST]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"]["hidden"] == 8
    assert meta["training"]["streams"] == ["buoy_44005_2012/ATMP", "buoy_44005_2012/PRES"]
    assert meta["training"]["files"][0]["sha256"] and "val_mase" in meta["metrics"]
    assert main(["replay", f"{BUOY}:PRES", "--model", str(out), "--end", "2012-02-01"]) == 0
    assert "steps 7" in capsys.readouterr().out  # 744 hourly steps in January, give or take


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_log(path: Path) -> Path:
    rows = [f"2024-01-01 00:{m:02d}:00,{20 + m % 3}" for m in range(20)]
    return write(path, "timestamp,value\n" + "\n".join(rows) + "\n")


def constant_log(path: Path) -> Path:
    rows = [f"{1_700_000_000 + 60 * i},{21.5}" for i in range(2000)]
    return write(path, "timestamp,value\n" + "\n".join(rows) + "\n")


def nan_column_log(path: Path) -> Path:
    rows = [f"{1_700_000_000 + 60 * i},,{i}" for i in range(500)]
    return write(path, "timestamp,empty,other\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize(
    ("make", "suffix", "expected"),
    [
        (tiny_log, "", "training needs at least"),
        (nan_column_log, ":empty", "no readings to train on (500 cells were empty"),
    ],
)
def test_bad_training_data_is_refused_and_nothing_is_overwritten(
    tmp_path, capsys, make, suffix, expected
):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text("the old checkpoint")
    log = make(tmp_path / "log.csv")
    assert main(["train", f"{log}{suffix}", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: ") and expected in err and err.count("\n") == 1
    assert (out / "model.json").read_text() == "the old checkpoint"


def test_a_constant_stream_trains_and_forecasts_without_dividing_by_zero(tmp_path, capsys):
    log = constant_log(tmp_path / "flat.csv")
    assert main(["train", str(log), "--out", str(tmp_path / "m"), *FAST]) == 0
    assert (
        main(["replay", str(log), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o.csv")])
        == 0
    )
    import pandas as pd

    frame = pd.read_csv(tmp_path / "o.csv")
    assert np.allclose(frame["forecast"].dropna(), 21.5)
    assert (frame["upper"] - frame["lower"]).dropna().max() < 0.01


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "does not match the fingerprint"),
        ("garbage", "not a sensorcast checkpoint"),
        ("missing", "no such checkpoint metadata"),
    ],
)
def test_unusable_checkpoints_are_refused_in_one_line(tmp_path, capsys, damage, expected):
    out = tmp_path / "m"
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *FAST]) == 0
    if damage == "truncate":
        weights = out / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:64])
    elif damage == "garbage":
        (out / "model.json").write_bytes(b"\x00\x01 not json")
    else:
        (out / "model.json").unlink()
    capsys.readouterr()
    assert main(["replay", f"{BUOY}:PRES", "--model", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: ") and expected in err and err.count("\n") == 1


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--hidden", "-1"], ["--lr", "0"]])
def test_bad_training_flags(tmp_path, capsys, flag):
    assert main(["train", str(BUOY), "--out", str(tmp_path / "m"), *flag]) == 2
    assert "sensorcast: error: --" in capsys.readouterr().err


def test_an_unwritable_destination_is_refused_before_training(tmp_path, capsys):
    blocker = write(tmp_path / "a-file", "not a folder")
    assert main(["train", f"{BUOY}:PRES", "--out", str(blocker / "model"), *FAST]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"sensorcast: error: --out: cannot write in {blocker}/model")
    assert captured.err.count("\n") == 1  # one line, no traceback, and no training first
    assert blocker.read_text() == "not a folder"


def test_a_checkpoint_that_cannot_be_written_leaves_what_was_there(tmp_path):
    from models.checkpoint import save_checkpoint
    from models.features import N_FEATURES
    from models.gru import GaussianGRU
    from pipeline.errors import SinkError

    out = tmp_path / "model"
    (out / "model.safetensors").mkdir(parents=True)  # a folder where the weights file goes
    (out / "model.json").write_text("the old checkpoint")
    with pytest.raises(SinkError, match="cannot write the checkpoint"):
        save_checkpoint(GaussianGRU(N_FEATURES, hidden=4), out, {"training": {}})
    assert (out / "model.json").read_text() == "the old checkpoint"
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
