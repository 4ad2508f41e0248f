"""`sensorcast train` end to end, and the bad inputs it must refuse cleanly."""

from __future__ import annotations

import json
import os
import shutil
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
    out = earlier_checkpoint(tmp_path)
    log = make(tmp_path / "log.csv")
    assert main(["train", f"{log}{suffix}", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensorcast: error: ") and expected in err and err.count("\n") == 1
    assert (out / "model.json").read_text() == OLD_CHECKPOINT


OLD_CHECKPOINT = '{"format": "sensorcast-gru", "version": 1, "note": "an earlier training"}'


def earlier_checkpoint(tmp_path: Path) -> Path:
    """A folder holding an earlier training's model.json, which a failed run must keep."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text(OLD_CHECKPOINT)
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    assert err and err[-1].startswith("sensorcast: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        msg = f"{path}: {constant} is not JSON"
        raise AssertionError(msg)

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_constant_stream_is_refused_by_train_and_forecast_by_replay(tmp_path, capsys):
    # nothing to learn from a stream that never changes (the bad-input list)
    out = earlier_checkpoint(tmp_path)
    log = constant_log(tmp_path / "flat.csv")
    assert main(["train", str(log), "--out", str(out), *FAST]) == 2
    assert one_line_error(capsys) == (
        "sensorcast: error: flat: constant (every value is 21.5): nothing to learn from; "
        "leave that column out of the logs you train on"
    )
    assert (out / "model.json").read_text() == OLD_CHECKPOINT
    # forecast, it is its constant with a small interval, never a division by zero
    assert main(["replay", str(log), "--out", str(tmp_path / "o.csv"), "--no-progress"]) == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "o.csv")
    assert np.allclose(frame["forecast"].dropna(), 21.5, atol=1e-3)
    assert (frame["upper"] - frame["lower"]).dropna().max() < 0.01


def test_a_picked_column_without_readings_is_refused(tmp_path, capsys):
    out = earlier_checkpoint(tmp_path)
    log = nan_column_log(tmp_path / "log.csv")  # 'empty' has no value, 'other' 500
    assert main(["train", f"{log}:empty,other", "--out", str(out), *FAST]) == 2
    assert one_line_error(capsys) == (
        f"sensorcast: error: {log}: column 'empty' holds no readings (every cell is empty or "
        "a missing-value code); drop it from the columns you pick"
    )
    assert (out / "model.json").read_text() == OLD_CHECKPOINT


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


@pytest.mark.parametrize(
    "flag",
    [["--epochs", "0"], ["--hidden", "-1"], ["--lr", "0"], ["--lr", "inf"], ["--batch", "0"]],
)
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


@pytest.mark.parametrize(
    ("out", "weights", "metadata"),
    [
        ("my.ckpt", "my.ckpt/model.safetensors", "my.ckpt/model.json"),
        ("ck/v1.2/", "ck/v1.2/model.safetensors", "ck/v1.2/model.json"),
        ("v1.safetensors", "v1.safetensors", "v1.json"),
        ("v1.json", "v1.safetensors", "v1.json"),
    ],
)
def test_model_loads_what_out_wrote(tmp_path, capsys, out, weights, metadata):
    out = f"{tmp_path}/{out}"
    assert main(["train", f"{BUOY}:PRES", "--out", out, *FAST]) == 0
    assert f"wrote {tmp_path / metadata} (epoch" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.*") if p.is_file()) == [
        Path(metadata),
        Path(weights),
    ]
    assert main(["replay", f"{BUOY}:PRES", "--model", out, "--end", "2012-01-03"]) == 0


def test_a_second_training_replaces_the_first_checkpoint(tmp_path):
    out = tmp_path / "m"
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *FAST]) == 0
    first = strict_json(out / "model.json")["fingerprint"]
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *FAST, "--seed", "1"]) == 0
    assert strict_json(out / "model.json")["fingerprint"] != first


@pytest.mark.parametrize(
    ("existing", "out"),
    [
        ("notes.json", "notes.json"),  # someone's JSON where the metadata would go
        ("notes.json", "notes.safetensors"),
        ("w.safetensors", "w.json"),  # weights without metadata: not known to be ours
        ("m/model.json", "m"),
    ],
)
def test_files_that_are_not_checkpoints_are_never_overwritten(tmp_path, capsys, existing, out):
    (tmp_path / existing).parent.mkdir(exist_ok=True)
    (tmp_path / existing).write_text("precious")
    before = sorted(tmp_path.rglob("*"))
    assert main(["train", f"{BUOY}:PRES", "--out", str(tmp_path / out), *FAST]) == 2
    assert one_line_error(capsys) == (
        f"sensorcast: error: --out: {tmp_path / existing} exists and is not a sensorcast "
        "checkpoint; give another --out, or move that file away"
    )
    assert (tmp_path / existing).read_text() == "precious"
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("out", ["", "-", " "])
def test_out_must_name_files(tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"{BUOY}:PRES", "--out", out, *FAST]) == 2
    assert one_line_error(capsys).startswith(
        f"sensorcast: error: --out {out!r}: give a checkpoint directory or NAME.safetensors"
    )
    assert not any(tmp_path.iterdir())


def test_a_failed_run_leaves_no_new_folder(tmp_path, capsys):
    log = tiny_log(tmp_path / "log.csv")
    assert main(["train", str(log), "--out", str(tmp_path / "new/deeper/m"), *FAST]) == 2
    assert "training needs at least" in one_line_error(capsys)
    assert sorted(tmp_path.iterdir()) == [log]


@pytest.mark.parametrize("lr", ["1e30", "1e100", "1e308"])
@pytest.mark.parametrize("old", [True, False])
def test_a_diverging_run_names_lr_and_writes_nothing(tmp_path, capsys, lr, old):
    out = tmp_path / "m"
    if old:
        out.mkdir()
        (out / "model.json").write_text(OLD_CHECKPOINT)
        (out / "model.safetensors").write_text("old weights")
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *FAST, "--lr", lr]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"sensorcast: error: --lr {float(lr):g}: training diverged (")
    assert line.endswith("); give a smaller --lr, e.g. 0.003")
    if old:
        assert (out / "model.json").read_text() == OLD_CHECKPOINT
        assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    else:
        assert not out.exists()


def short_log(path: Path, rows: int = 300) -> Path:
    values = np.sin(np.arange(rows) / 7.0) * 5 + 20
    lines = [f"{1_700_000_000 + 60 * i},{v:.4f}" for i, v in enumerate(values)]
    return write(path, "timestamp,value\n" + "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--seq-len", "100000"],
            "--seq-len 100000: the data holds only 239 steps in the longest stream's training "
            "part; give at most 239",
        ),
        (
            ["--seq-len", "64", "--batch", "100000"],
            "--batch 100000: the data holds only 175 different 64-step windows (a shorter "
            "--seq-len makes more); give at most 175",
        ),
    ],
)
def test_windows_beyond_the_data_are_refused_at_once(tmp_path, capsys, flags, expected):
    log = short_log(tmp_path / "log.csv")
    args = ["--epochs", "1", "--hidden", "4", "--threads", "1", "--no-progress"]
    assert main(["train", str(log), "--out", str(tmp_path / "m"), *args, *flags]) == 2
    assert one_line_error(capsys) == f"sensorcast: error: {expected}"
    assert not (tmp_path / "m").exists()


def test_default_windows_are_cut_to_the_data_with_a_note(tmp_path, capsys):
    log = short_log(tmp_path / "log.csv")
    args = ["--epochs", "1", "--hidden", "4", "--threads", "1", "--no-progress"]
    assert main(["train", str(log), "--out", str(tmp_path / "m"), *args]) == 0
    err = capsys.readouterr().err
    assert "note: --seq-len 256 (the default) is cut to the 239 steps in the longest" in err
    assert "note: --batch 64 (the default) is cut to the 1 different 239-step windows" in err
    training = strict_json(tmp_path / "m/model.json")["training"]
    assert (training["seq_len"], training["batch"], training["burn_in"]) == (239, 1, 32)


def test_checkpoint_files_are_readable_by_a_service_user(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["train", f"{BUOY}:PRES", "--out", str(tmp_path / "m"), *FAST]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert modes == {"model.json": 0o644, "model.safetensors": 0o644}


def test_speed_is_no_training_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--speed" not in capsys.readouterr().out
    assert main(["train", f"{BUOY}:PRES", "--out", str(tmp_path / "m"), "--speed", "2"]) == 2
    err = capsys.readouterr().err
    assert "--speed 2: training reads the logs as fast as it can; drop --speed" in err
    assert not (tmp_path / "m").exists()


def test_a_missing_checkpoint_is_named_as_typed(tmp_path, capsys):
    typed = tmp_path / "nope.safetensors"
    assert main(["replay", f"{BUOY}:PRES", "--model", str(typed)]) == 2
    err = capsys.readouterr().err
    assert f"{typed}: no such checkpoint; give a checkpoint directory" in err
    assert "nope.json" not in err
    typed.write_bytes(b"weights whose metadata is missing")
    assert main(["replay", f"{BUOY}:PRES", "--model", str(typed)]) == 2
    err = capsys.readouterr().err  # the file is there: now its missing companion is named
    assert f"{tmp_path / 'nope.json'}: no such checkpoint metadata beside the weights" in err


def test_an_empty_checkpoint_folder_is_named(tmp_path, capsys):
    assert main(["replay", f"{BUOY}:PRES", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no checkpoint in it (no model.safetensors or model.json)" in err


def test_a_range_outside_the_log_names_the_range_not_the_columns(tmp_path, capsys):
    flags = ["--out", str(tmp_path / "m"), "--end", "2000-01-01", *FAST]
    assert main(["train", f"{BUOY}:PRES", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{BUOY}: no readings lie in the --start/--end range (--end 2000-01-01)" in err
    assert "column" not in err


def same_time_log(path: Path) -> Path:
    rows = [f"{1_700_000_000},{i}" for i in range(500)]  # one reading and 499 duplicates
    return write(path, "timestamp,value\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize(
    ("make", "flags", "expected"),
    [
        (
            tiny_log,
            [],
            "{log}: only 15 usable training steps in 1 stream; training needs at least 200 "
            "(longer logs, or more of them)",
        ),
        (
            same_time_log,
            [],
            "{log}: no stream has the 3 steps training needs (the longest has 1 step; readings "
            "dropped: 499 duplicate); give longer logs",
        ),
        (
            short_log,
            ["--window", "30d"],
            "{log}: no stream has the 3 steps training needs (the longest has 1 step); give "
            "longer logs, or a shorter --window",
        ),
    ],
)
def test_too_little_data_names_the_log_and_leaves_the_old_checkpoint(
    tmp_path, capsys, make, flags, expected
):
    out = earlier_checkpoint(tmp_path)
    log = make(tmp_path / "log.csv")
    assert main(["train", str(log), "--out", str(out), *FAST, *flags]) == 2
    assert one_line_error(capsys) == "sensorcast: error: " + expected.format(log=log)
    assert (out / "model.json").read_text() == OLD_CHECKPOINT
    assert [p.name for p in out.iterdir()] == ["model.json"]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (["--seed", "-1"], "--seed -1: must be a whole number from 0 to 2**64 - 1, e.g. 0"),
        (["--laplace-weight", "1.5"], "--laplace-weight 1.5: must be from 0 to 1, e.g. 0.5"),
        (["--laplace-weight", "nan"], "--laplace-weight nan: must be from 0 to 1, e.g. 0.5"),
        (
            ["--seed", str(2**64)],
            f"--seed {2**64}: must be a whole number from 0 to 2**64 - 1, e.g. 0",
        ),
        (
            ["--hidden", "10000"],
            "--hidden 10000: at most 1024 (a network that wide takes hours an epoch); give a "
            "smaller --hidden, e.g. 32",
        ),
        (
            ["--layers", "9"],
            "--layers 9: at most 8 (a network that deep takes hours an epoch); give a smaller "
            "--layers, e.g. 1",
        ),
        (
            ["--threads", "100000"],
            "--threads 100000: at most 256 (more threads than CPUs only slow training down); "
            "give a smaller --threads, e.g. 2",
        ),
        (["--window", "31d"], "--window: 31d is out of range; use 0 to 30d, e.g. 60s"),
        (["--epochs", "-1"], "--epochs: must be at least 1"),
        (["--seq-len", "0"], "--seq-len: must be at least 1"),
    ],
)
def test_out_of_range_flags_are_one_line_before_any_training(tmp_path, capsys, flag, expected):
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.json").write_text(OLD_CHECKPOINT)
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *flag]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"sensorcast: error: {expected}\n"
    assert "training on" not in captured.err + captured.out
    assert [p.name for p in out.iterdir()] == ["model.json"]
    assert (out / "model.json").read_text() == OLD_CHECKPOINT


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("architecture", "model.json: no architecture (an object with kind, hidden, layers"),
        ("fingerprint", "model.json: no sha256 fingerprint of the weights (found None)"),
        ("deep", "model.json: not a sensorcast checkpoint (maximum recursion depth exceeded"),
        ("empty", "model.json: not a sensorcast checkpoint (an empty file)"),
        ("wider", "model.safetensors: does not match the fingerprint in model.json; the pair "
         "is from two different trainings (they are 16 units in 1 layer, where model.json "
         "describes 8 units in 1 layer): copy a checkpoint's two files together"),
        ("truncate", "model.safetensors: does not match the fingerprint in model.json and is "
         "not whole safetensors"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["replay", "evaluate"])
def test_damaged_checkpoints_are_one_line_in_every_command(
    tmp_path, capsys, trained, damage, expected, command
):
    out = tmp_path / "m"
    shutil.copytree(trained, out)
    metadata, weights = out / "model.json", out / "model.safetensors"
    if damage == "architecture":
        meta = json.loads(metadata.read_text())
        metadata.write_text(json.dumps({**meta, "architecture": [8, 1]}))
    elif damage == "fingerprint":
        meta = json.loads(metadata.read_text())
        metadata.write_text(json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}))
    elif damage == "deep":
        metadata.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "empty":
        metadata.write_text("")
    elif damage == "wider":
        from models.checkpoint import save_checkpoint
        from models.features import N_FEATURES
        from models.gru import GaussianGRU

        save_checkpoint(GaussianGRU(N_FEATURES, hidden=16), tmp_path / "w", {"training": {}})
        shutil.copy(tmp_path / "w/model.safetensors", weights)
    else:
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    flag = "--model" if command == "replay" else "--models"
    assert main([command, f"{BUOY}:PRES", flag, str(out), "--end", "2012-01-03"]) == 2
    line = one_line_error(capsys)
    assert f"{out}/{expected}" in line
    assert line.startswith(f"sensorcast: error: {'--models: ' if command == 'evaluate' else ''}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small checkpoint, trained once for the tests that damage copies of it."""
    out = tmp_path_factory.mktemp("trained") / "m"
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("", "--model '': names no model; choose one of default, persistence"),
        ("{tmp}/log.csv", "--model: {tmp}/log.csv is a file, not a checkpoint"),
        ("{tmp}/nope/", "{tmp}/nope/: no such checkpoint; give a checkpoint directory"),
        ("{ck}/model.json/", "{ck}/model.json/: a file, not a checkpoint directory; drop the "),
    ],
)
def test_model_paths_that_are_no_checkpoint(
    tmp_path, capsys, monkeypatch, trained, model, expected
):
    monkeypatch.chdir(trained)  # "" is not the current folder, which holds a checkpoint
    log = short_log(tmp_path / "log.csv")
    spec = model.format(tmp=tmp_path, ck=trained)
    assert main(["replay", str(log), "--model", spec]) == 2
    assert one_line_error(capsys).startswith(
        "sensorcast: error: " + expected.format(tmp=tmp_path, ck=trained)
    )


def test_out_holding_unparsable_json_is_refused_not_a_crash(tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    before = (out / "model.json").read_text()
    assert main(["train", f"{BUOY}:PRES", "--out", str(out), *FAST]) == 2
    assert one_line_error(capsys) == (
        f"sensorcast: error: --out: {out / 'model.json'} exists and is not a sensorcast "
        "checkpoint; give another --out, or move that file away"
    )
    assert (out / "model.json").read_text() == before
