"""`sensorcast replay` end to end: real files in, output files and exit codes out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
MACHINE = ROOT / "data/nab/realKnownCause/machine_temperature_system_failure.csv"
BEIJING = ROOT / "data/weather/beijing_prsa/PRSA_Data_Changping_20130301-20170228.csv"
LEADING = ["stream", "timestamp", "value", "forecast", "lower", "upper", "anomaly_score",
           "is_anomaly"]  # fmt: skip


def test_nab_file_replays_to_one_row_per_reading(tmp_path):
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "pipeline.cli", "replay", str(MACHINE), "--format", "nab",
               "--window", "0", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 22_695
    assert list(frame.columns[: len(LEADING)]) == LEADING
    assert frame["stream"].unique().tolist() == ["machine_temperature_system_failure"]
    assert frame["timestamp"].iloc[0] == "2013-12-02T21:15:00Z"
    assert frame["forecast"].isna().tolist()[:2] == [True, False]
    inside = (frame["value"] >= frame["lower"]) & (frame["value"] <= frame["upper"])
    assert 0.8 < inside[frame["lower"].notna()].mean() < 0.99
    # The log repeats an hour (lines 10151-10162): those readings are dropped, not fed
    # twice, and still get a row that says why.
    dropped = frame[frame["dropped"].notna()]
    assert dropped.index.tolist() == list(range(10_149, 10_161))
    assert dropped["dropped"].value_counts().to_dict() == {"late": 11, "duplicate": 1}
    assert dropped["anomaly_score"].isna().all()
    steps = frame[frame["dropped"].isna()]
    assert steps["anomaly_score"].between(0, 1).all()
    assert "streams 1  readings 22695  steps 22683" in done.stdout


def test_jsonl_output_is_the_output_message(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(MACHINE), "--window", "1h", "--out", str(out)]) == 0
    every = [json.loads(line) for line in out.read_text().splitlines()]
    records = [r for r in every if r["dropped"] is None]
    assert len(records) == len({r["timestamp"] for r in records}) == 1891  # a step per hour
    assert {r["dropped"] for r in every} == {None, "late", "duplicate"}
    first, second = records[0], records[1]
    assert first["forecast"] is None and isinstance(second["forecast"], float)
    assert second["forecast"] == first["next_forecast"]
    assert set(first) >= {"stream", "timestamp", "value", "forecast", "lower", "upper",
                          "anomaly_score", "is_anomaly", "next_timestamp", "next_forecast",
                          "next_lower", "next_upper", "model"}  # fmt: skip


def test_resuming_from_state_equals_one_run(tmp_path, capsys):
    rows = MACHINE.read_text().splitlines(keepends=True)
    log = tmp_path / "machine.csv"
    log.write_text("".join(rows))
    assert main(["replay", str(log), "--out", str(tmp_path / "whole.csv")]) == 0
    state = tmp_path / "state.snap"
    log.write_text("".join(rows[:10_001]))  # the log so far
    assert main(["replay", str(log), "--state", str(state), "--out", str(tmp_path / "a.csv")]) == 0
    log.write_text("".join(rows))  # the log grew
    assert main(["replay", str(log), "--state", str(state), "--out", str(tmp_path / "b.csv")]) == 0
    whole = pd.read_csv(tmp_path / "whole.csv")
    parts = pd.concat([pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")])
    # (check_dtype: a part whose "dropped" column is all empty reads back as floats)
    pd.testing.assert_frame_equal(parts.reset_index(drop=True), whole, check_dtype=False)


def test_resuming_on_a_rotated_log_reads_the_new_log_from_its_start(tmp_path, caplog):
    rows = MACHINE.read_text().splitlines(keepends=True)
    log, state, out = tmp_path / "machine.csv", tmp_path / "state.snap", tmp_path / "o.csv"
    log.write_text("".join(rows[:1_001]))
    assert main(["replay", str(log), "--state", str(state), "--out", str(out)]) == 0
    log.write_text(rows[0] + "".join(rows[1_001:1_101]))  # rotated: a new, shorter log
    assert main(["replay", str(log), "--state", str(state), "--out", str(out)]) == 0
    assert "truncated or replaced, so it is read from the start" in caplog.text
    assert len(pd.read_csv(out)) == 100
    assert main(["replay", str(log), "--state", str(state), "--out", str(out)]) == 0
    assert pd.read_csv(out).empty  # nothing new: a header, no rows, no drops


def test_row_level_problems_are_counted_and_reported(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text(
        "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,abc\n"
        "not a time,3\n2024-01-01 00:10:00,4\n2024-01-01 00:10:00,5\n2024-01-01 00:02:00,6\n"
    )
    assert main(["replay", str(log), "--out", str(tmp_path / "o.csv")]) == 0
    summary = capsys.readouterr().out
    assert "steps 2" in summary
    assert f"dropped bad_value: 1 (first: bad_value at {log}:3" in summary
    assert f"dropped bad_timestamp: 1 (first: bad_timestamp at {log}:4" in summary
    assert "dropped duplicate: 1" in summary and "dropped late: 1" in summary


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "flags", "expected"),
    [
        (lambda d: d / "nope.csv", [], "nope.csv"),
        (lambda d: write(d / "empty.csv", ""), [], "empty.csv"),
        (lambda d: write(d / "head.csv", "timestamp,value\n"), [], "no data rows"),
        (lambda d: write(d / "cols.csv", "when,value\n1,2\n"), ["--format", "nab"], "timestamp"),
        (lambda d: write(d / "t.csv", "timestamp,value\nxx,1\nyy,2\n"), [], "cannot read 'xx'"),
        (lambda d: write(d / "v.csv", "timestamp,value\n2024-01-01,a\n"), [], "holds no numbers"),
        (lambda d: MACHINE, ["--window", "soon"], "--window: 'soon' is not a duration"),
        (lambda d: f"{MACHINE}:", [], "no columns after ':'; give LOG:COLUMN,COLUMN"),
        (lambda d: MACHINE, ["--window", "31d"], "--window: 31d is out of range; use 0 to 30d"),
        (lambda d: MACHINE, ["--lateness", "8d"], "--lateness: 8d is out of range; use 0 to 7d"),
        (lambda d: MACHINE, ["--speed", "fast"], "--speed: 'fast'"),
        (lambda d: MACHINE, ["--model", "gpt"], "--model: unknown model 'gpt'"),
        (lambda d: MACHINE, ["--out", str(Path("/nonexistent/dir/o.csv"))], "cannot write"),
        (lambda d: MACHINE, ["--out", str(Path("/nonexistent/dir/o.parquet"))], "cannot write"),
        (lambda d: MACHINE, ["--out", "o.txt"], ".parquet, .arrow or .feather (or be -"),
        (lambda d: MACHINE, ["--state", "/dev/null"], "/dev/null is not a sensorcast snapshot"),
        (lambda d: MACHINE, ["--state", "/dev/null/s"], "--state: /dev/null is a file"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(tmp_path, capsys, make, flags, expected):
    path = make(tmp_path)
    assert main(["replay", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sensorcast: error: ")
    assert expected in err and "Traceback" not in err


def test_an_output_that_is_an_input_is_refused_and_left_alone(tmp_path, capsys):
    log = tmp_path / "logs" / "a.csv"
    log.parent.mkdir()
    shutil.copy(MACHINE, log)
    before = log.read_bytes()
    for flag, target in (("--out", log), ("--state", log), ("--out", tmp_path / "logs")):
        assert main(["replay", str(log.parent), flag, str(target)]) == 2
        assert log.read_bytes() == before
    assert "--out: " in capsys.readouterr().err
    out = log.parent / "out.csv"  # a first run may write beside its logs...
    assert main(["replay", str(log.parent), "--out", str(out), "--model", "persistence"]) == 0
    capsys.readouterr()
    # ...but the next run would read that output as a log: refused, not overwritten
    written = out.read_bytes()
    assert main(["replay", str(log.parent), "--out", str(out)]) == 2
    assert "is one of the logs being read" in capsys.readouterr().err
    assert out.read_bytes() == written


def test_a_directory_replays_every_file_as_its_own_stream(tmp_path, capsys):
    folder = tmp_path / "corpus" / "realKnownCause"
    folder.mkdir(parents=True)
    shutil.copy(MACHINE, folder / "a.csv")
    (folder / "b.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,2\n")
    assert main(["replay", str(tmp_path / "corpus"), "--out", str(tmp_path / "o.csv")]) == 0
    streams = pd.read_csv(tmp_path / "o.csv")["stream"].value_counts().to_dict()
    assert streams == {"realKnownCause/a": 22_695, "realKnownCause/b": 2}


@pytest.mark.parametrize(
    ("flags", "first"),
    [
        (["--start", "2024-01-01T00:10:00Z"], "2024-01-01T00:10:00Z"),
        (["--start", "1704067800"], "2024-01-01T00:10:00Z"),  # epoch seconds
        (["--start", "1704067800000"], "2024-01-01T00:10:00Z"),  # epoch ms, as in logs
        # a naive time is in --timezone, like the log's own naive times
        (["--start", "2024-01-01 01:10", "--timezone", "Europe/Berlin"], "2024-01-01T00:10:00Z"),
    ],
)
def test_start_reads_times_as_the_logs_are_read(tmp_path, capsys, flags, first):
    log = tmp_path / "a.csv"
    rows = "".join(f"2024-01-01 00:{m:02d}:00,{m}\n" for m in range(0, 30, 5))
    log.write_text("timestamp,value\n" + rows)
    out = tmp_path / "o.csv"
    if "--timezone" in flags:  # the log's naive times are then Berlin's too
        log.write_text("timestamp,value\n" + rows.replace(" 00:", " 01:"))
    assert main(["replay", str(log), "--out", str(out), "--model", "persistence", *flags]) == 0
    assert pd.read_csv(out)["timestamp"].iloc[0] == first


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--start", "2024-01-01", "--timezone", "Nowhere/X"], "--timezone: 'Nowhere/X' is not"),
        (
            ["--start", "2024-03-31 02:30", "--timezone", "Europe/Berlin"],
            "--start: '2024-03-31 02:30' does not exist or is ambiguous in Europe/Berlin",
        ),
        (["--end", "soon"], "--end: 'soon' is not a time"),
    ],
)
def test_bad_start_and_end_get_one_line(capsys, flags, expected):
    assert main(["replay", str(MACHINE), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["replay"], "the following arguments are required: PATH; see sensorcast replay --help"),
        (["bench", "--runs", "x"], "argument --runs: invalid int value: 'x'; see sensorcast bench"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_flag_mistakes_argparse_finds_are_one_line_too(capsys, argv, expected):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith("sensorcast: error: ") and expected in err


def test_out_and_state_must_be_two_files(tmp_path, capsys):
    same = tmp_path / "same.csv"
    assert main(["replay", str(MACHINE), "--out", str(same), "--state", str(same)]) == 2
    assert "--state: " in capsys.readouterr().err and not same.exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".arrow", ".snap"])
def test_an_output_that_is_a_folder_is_refused_before_the_replay(tmp_path, capsys, suffix):
    folder = tmp_path / f"out{suffix}"
    folder.mkdir()
    flag = "--state" if suffix == ".snap" else "--out"
    assert main(["replay", str(MACHINE), flag, str(folder)]) == 2
    err = capsys.readouterr().err
    assert err == f"sensorcast: error: {flag}: {folder} is a folder; give a file name\n"


@pytest.mark.parametrize("command", ["replay", "evaluate", "train"])
@pytest.mark.parametrize("pick", [["--columns", "TEMP,PRES,TEMP"], [":TEMP,PRES,TEMP"]])
def test_a_column_picked_twice_in_one_pick_is_refused(tmp_path, capsys, command, pick):
    log = tmp_path / "wide.csv"
    log.write_text("time,TEMP,PRES\n" + "".join(f"{60 * i},{i},{i}\n" for i in range(5)))
    spec = [str(log) + pick[0]] if pick[0].startswith(":") else [str(log), *pick]
    extra = ["--out", str(tmp_path / "m")] if command == "train" else []
    assert main([command, *spec, *extra]) == 2
    who = spec[0] if len(spec) == 1 else "--columns TEMP,PRES,TEMP"
    err = capsys.readouterr().err
    assert err == f"sensorcast: error: {who}: picks TEMP twice; name each column of a log once\n"


@pytest.mark.parametrize("model", ["river-holtwinters", "river-snarimax"])
def test_state_with_a_river_baseline_is_refused_before_the_replay(tmp_path, capsys, model):
    """Its snapshot could never be resumed: River's models are Python objects."""
    out, state = tmp_path / "o.csv", tmp_path / "s.snap"
    args = ["replay", str(MACHINE), "--model", model, "--out", str(out), "--state", str(state)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sensorcast: error: --state: {model} ")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("url", ["mqtt://127.0.0.1:notaport", "mqtt://127.0.0.1:99999"])
def test_a_bad_port_in_to_is_one_line(capsys, url):
    assert main(["replay", str(MACHINE), "--to", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--to: " in err and "ports 1-65535" in err


def test_jsonl_holds_no_infinity(tmp_path, capsys):
    log = tmp_path / "a.csv"
    log.write_text("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,inf\n")
    out = tmp_path / "o.jsonl"
    assert main(["replay", str(log), "--out", str(out), "--model", "persistence"]) == 0
    rows = [json.loads(line, parse_constant=pytest.fail) for line in out.read_text().splitlines()]
    assert rows[1]["dropped"] == "non_finite" and rows[1]["value"] is None


def minutes(first: int, last: int, value: str = "1") -> str:
    """A nab log's rows, one a minute from 00:first to 00:last (inclusive)."""
    return "".join(f"2024-01-01T00:{m:02d}:00Z,{value}\n" for m in range(first, last + 1))


def test_resume_finds_the_position_however_the_log_is_named(tmp_path, capsys, monkeypatch):
    log, state = tmp_path / "res" / "a.csv", tmp_path / "state.snap"
    log.parent.mkdir()
    log.write_text("timestamp,value\n" + minutes(0, 9))
    monkeypatch.chdir(log.parent)
    assert main(["replay", "a.csv", "--state", str(state), "--out", str(tmp_path / "1.csv")]) == 0
    log.write_text("timestamp,value\n" + minutes(0, 14))  # the log grew
    monkeypatch.chdir(tmp_path)
    assert main(["replay", "./res/a.csv", "--state", str(state), "--out", "2.csv"]) == 0
    second = pd.read_csv(tmp_path / "2.csv")
    assert second["timestamp"].tolist() == [f"2024-01-01T00:{m:02d}:00Z" for m in range(10, 15)]
    assert second["dropped"].isna().all()  # nothing read twice (late, duplicate)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--out", "o.csv"], "--out"),
        (["--state", "s.snap", "--scores"], "--state, --scores"),
        (["--no-dropped-rows", "--window", "1h"], "--window, --no-dropped-rows"),
    ],
)
def test_to_refuses_the_flags_of_a_pipeline_run(tmp_path, capsys, flags, named):
    log = write(tmp_path / "a.csv", "timestamp,value\n" + minutes(0, 2))
    # (nothing listens on port 1: a refused flag must fail before any connection)
    assert main(["replay", str(log), "--to", "mqtt://127.0.0.1:1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--to: publishes the readings without running the pipeline, so {named} " in err


def test_missing_values_outside_start_and_end_are_not_counted(tmp_path, capsys):
    rows = minutes(0, 1, "") + minutes(2, 3) + minutes(4, 4, "") + minutes(5, 6, "")
    log = write(tmp_path / "a.csv", "timestamp,value\n" + rows)
    flags = ["--start", "2024-01-01T00:02:00Z", "--end", "2024-01-01T00:04:00Z"]
    assert main(["replay", str(log), "--model", "persistence", *flags]) == 0
    summary = capsys.readouterr().out
    assert "readings 2 " in summary and "sentinel codes) skipped: 1\n" in summary


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--window", "-5s"], "--window: -5s is negative; give a duration like 60s"),
        (["--window", "-.5m"], "--window: -.5m is negative"),
        (["--lateness", "-1s"], "--lateness: -1s is negative; give a duration like 60s"),
        (["--lateness=-1s"], "--lateness: -1s is negative; give a duration like 60s"),
        (["--window", "-"], "--window: '-' is not a duration"),
    ],
)
def test_a_negative_duration_names_its_flag(capsys, flags, expected):
    assert main(["replay", str(MACHINE), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


@pytest.mark.parametrize("flag", ["--out", "--state", "--to"])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_path_is_refused(tmp_path, capsys, monkeypatch, flag, value):
    monkeypatch.chdir(tmp_path)
    assert main(["replay", str(MACHINE), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"sensorcast: error: {flag}: {value!r} is empty; give " in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--timezone", "Mars/Base"], "--timezone: 'Mars/Base' is not an IANA zone"),
        (
            ["--start", "2024-01-02", "--end", "2024-01-01T12:00"],
            "--start: 2024-01-02 is after --end 2024-01-01T12:00; give a --start before",
        ),
    ],
)
def test_time_flag_mistakes_name_the_flag_and_the_time_as_given(capsys, flags, expected):
    assert main(["replay", str(MACHINE), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--columns", " , "], "--columns ' , ' names no column; give COL,COL, or drop --columns"),
        ([f"{BEIJING}:TEMP", "--columns", "PRES"], "--columns PRES and "),
    ],
)
def test_column_picks_that_pick_nothing_or_twice_are_refused(tmp_path, capsys, argv, expected):
    out = tmp_path / "steps.csv"
    paths = [] if str(BEIJING) in argv[0] else [str(BEIJING)]
    assert main(["replay", *paths, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not out.exists()


def test_column_picks_of_same_named_logs_in_two_folders_stay_two_streams(tmp_path, capsys):
    text = "timestamp,TEMP,PRES\n2020-01-01T00:00:00Z,1,10\n2020-01-01T00:01:00Z,2,11\n"
    for folder in "ab":
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.csv").write_text(text)
    a, b, out = tmp_path / "a/x.csv", tmp_path / "b/x.csv", tmp_path / "steps.csv"
    argv = ["--model", "persistence", "--out", str(out)]
    assert main(["replay", f"{a}:TEMP", f"{b}:TEMP", f"{a}:PRES", *argv]) == 0
    assert pd.read_csv(out).groupby("stream").size().to_dict() == {
        "a/x/PRES": 2, "a/x/TEMP": 2, "b/x/TEMP": 2
    }  # fmt: skip
    capsys.readouterr()
    assert main(["replay", f"{a}:TEMP", f"{a}:PRES,TEMP", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{a}:PRES,TEMP: picks columns of {a} that {a}:TEMP " in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--interval", "-0.5"], "--interval: -0.5 must be a coverage between 0 and 1"),
        (["--interval", "nan"], "--interval: nan must be a coverage between 0 and 1"),
        (["--to", "mqtt://127.0.0.1:1", "--root", ""], "--root: the topic prefix is empty; "),
        (["--to", "mqtt://127.0.0.1:1", "--root", "a/#"], "--root: 'a/#': holds an MQTT wildcard"),
    ],
)
def test_interval_and_root_mistakes_name_their_flag(capsys, argv, expected):
    assert main(["replay", str(MACHINE), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".arrow"])
def test_a_replay_that_fails_midway_leaves_the_earlier_out_file(tmp_path, capsys, suffix):
    log = tmp_path / "log.csv"
    lines = MACHINE.read_bytes().splitlines(keepends=True)
    # a byte that is not UTF-8 far past the first chunk of rows: rows were written by then
    log.write_bytes(
        b"".join(lines[:3000]) + b"2014-01-01 00:00:00,7\xe9\n" + b"".join(lines[3000:4000])
    )
    out = tmp_path / f"keep{suffix}"
    out.write_bytes(b"an earlier run's rows\n")
    assert main(["replay", str(log), "--out", str(out), "--no-progress"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"{log}: not UTF-8 text (line 3001, byte 0xe9); save it as UTF-8")
    )
    assert out.read_bytes() == b"an earlier run's rows\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep" + suffix, "log.csv"]  # no temp


def test_a_range_with_no_readings_is_refused_and_leaves_the_out_file(tmp_path, capsys):
    out = tmp_path / "keep.csv"
    out.write_text("an earlier run's rows\n")
    argv = ["replay", str(MACHINE), "--out", str(out), "--start", "2020-01-01", "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"sensorcast: error: {MACHINE}: no readings lie in the --start/--end range (--start "
        "2020-01-01); give a range the logs cover, or drop the flags"
    )
    assert out.read_text() == "an earlier run's rows\n"


def test_an_infinite_speed_is_max_and_a_bad_one_names_the_flag():
    from pipeline.errors import ConfigError
    from pipeline.replay import parse_speed

    assert parse_speed("inf") is None and parse_speed("max") is None and parse_speed("60") == 60
    for text in ("0", "-1", "nan", "fast"):
        with pytest.raises(ConfigError, match=f"^--speed: '{text}' must be 'max' or a positive"):
            parse_speed(text)
