"""`sensorcast evaluate` end to end on the bundled logs (short spans: River is slow per step)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
BEIJING = ROOT / "data/weather/beijing_prsa/PRSA_Data_Changping_20130301-20170228.csv"
BUOY = ROOT / "data/buoy/ndbc_44005/buoy_44005_2012.dat"
MODELS = ["persistence", "river-holtwinters", "river-snarimax"]


def evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def beijing(tmp_path_factory):
    """One tuned run over six weeks of Beijing TEMP and PRES, with a report and a CSV."""
    folder = tmp_path_factory.mktemp("beijing")
    report, metrics = folder / "report.html", folder / "metrics.csv"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["evaluate", str(BEIJING), "--columns", "TEMP,PRES", "--end", "2013-04-15",
                     "--models", ",".join(MODELS), "--score-from", "0.2", "--tune",
                     "--report", str(report), "--csv", str(metrics)])  # fmt: skip
    return code, out.getvalue(), report, pd.read_csv(metrics)


def test_evaluate_prints_a_row_per_stream_and_model_then_overall_rows(beijing):
    code, out, _, _ = beijing
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    for stream in ("Changping/TEMP", "Changping/PRES"):
        assert {r[1] for r in rows if r and r[0] == stream} == set(MODELS)
    overall = {r[2]: r for r in rows if r[:2] == ["2", "streams"]}
    assert set(overall) == set(MODELS)
    assert overall["persistence"][5:7] == ["1.000", "1.000"]  # mean and median MASE
    assert "river-holtwinters: tuned on the first 20% of each stream's steps" in out


def test_persistence_scores_mase_one_exactly_on_the_same_points(beijing):
    _, _, _, metrics = beijing
    persistence = metrics[metrics["model"] == "persistence"]
    assert (persistence["mase"] == 1.0).all() and (persistence["mase_median"].dropna() == 1.0).all()
    streams = metrics[metrics["stream"] != "*"]
    assert streams["mase"].notna().all() and len(streams) == 2 * len(MODELS)
    # every model is scored on the same steps: the last 80% of each stream's
    assert streams.groupby("stream")["scored"].nunique().eq(1).all()
    steps = streams["steps"].iloc[0]
    assert (streams["scored"] == steps - int(steps * 0.2)).all()


def test_coverage_is_a_share_and_rates_are_positive(beijing):
    _, _, _, metrics = beijing
    assert metrics["coverage"].between(0, 1).all()
    assert metrics["coverage"].between(0.7, 1).all()  # 90% intervals, roughly calibrated
    assert (metrics.loc[metrics["stream"] == "*", "steps_per_s"] > 0).all()


def test_the_report_is_self_contained_html_with_plots_and_the_table(beijing):
    _, _, report, _ = beijing
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert page.count("<svg") == 4  # two streams, the best model and persistence
    assert "<polygon" in page and "<polyline" in page and "Changping/TEMP" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_evaluate_on_the_buoy_log(capsys, tmp_path):
    metrics = tmp_path / "m.csv"
    flags = ["--columns", "PRES", "--end", "2012-03-01", "--csv", str(metrics)]
    code, out, err = evaluate(capsys, str(BUOY), "--models", "persistence,river-snarimax", *flags)
    assert code == 0, err
    frame = pd.read_csv(metrics)
    assert frame.loc[frame["model"] == "persistence", "mase"].eq(1.0).all()
    assert frame["mase"].notna().all() and frame["coverage"].between(0, 1).all()
    assert "buoy_44005_2012/PRES" in out


@pytest.mark.skipif(
    not (ROOT / "models/weights/default.json").exists(), reason="no shipped default model yet"
)
def test_evaluate_runs_the_default_model_list(capsys):
    code, out, err = evaluate(capsys, str(BEIJING), "--columns", "TEMP", "--end", "2013-03-08")
    assert code == 0, err
    for model in ("default", "persistence", "river-holtwinters", "river-snarimax"):
        assert re.search(rf"^1 stream +{model} ", out, re.M), model


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--models", "nope"], "--models: unknown model 'nope'; choose one of"),
        (["--models", " , "], "--models: ' , ' names no model"),
        (["--score-from", "1.5"], "--score-from: 1.5 must be a fraction"),
        (["--season", "1"], "--season: 1 must be at least 2"),
        (["--window", "soon"], "--window: 'soon' is not a duration"),
        (["--report", "/dev/null/r.html"], "--report: /dev/null is a file, not a folder"),
        (["--columns", "NOPE", "--models", "persistence"], "NOPE"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(capsys, flags, expected):
    code, _, err = evaluate(capsys, str(BEIJING), "--end", "2013-03-02", *flags)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sensorcast: error: ")
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--report", "--csv"])
@pytest.mark.parametrize("target", ["folder", "/proc/x.out", "file/x.out"])
def test_an_unwritable_output_fails_before_any_model_runs(capsys, tmp_path, flag, target):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a file, not a folder")
    path = tmp_path / target  # an absolute target stays itself
    code, out, err = evaluate(capsys, str(BEIJING), "--models", "persistence", flag, str(path))
    assert code == 2
    assert out == ""  # the metric table, printed once every model ran, never came
    assert err.count("\n") == 1 and err.startswith(f"sensorcast: error: {flag}: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--report", "--csv"])
def test_a_failed_write_leaves_the_earlier_output_whole(capsys, tmp_path, monkeypatch, flag):
    path = tmp_path / "out"
    path.write_text("an earlier run's output")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pipeline.writable.os.replace", disk_full)
    code, _, err = evaluate(capsys, str(BEIJING), "--models", "persistence", flag, str(path))
    assert code == 2 and f"{flag}: cannot write {path}: No space left on device" in err
    assert path.read_text() == "an earlier run's output"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left


def test_the_report_and_the_csv_must_be_two_files(capsys, tmp_path):
    same = ["--report", str(tmp_path / "out"), "--csv", str(tmp_path / "." / "out")]
    code, out, err = evaluate(capsys, str(BEIJING), "--models", "persistence", *same)
    assert (code, out) == (2, "")
    assert "--csv: " in err and "is also the --report file" in err


def test_a_missing_output_folder_is_made(capsys, tmp_path):
    metrics = tmp_path / "new" / "folder" / "m.csv"
    flags = ["--columns", "TEMP", "--end", "2013-03-02", "--models", "persistence"]
    code, _, err = evaluate(capsys, str(BEIJING), *flags, "--csv", str(metrics))
    assert code == 0, err
    assert set(pd.read_csv(metrics)["model"]) == {"persistence"}


def test_a_run_that_fails_leaves_no_new_output_folder(capsys, tmp_path):
    log = tmp_path / "w.csv"
    log.write_text("time,EMPTY\n" + "".join(f"2024-01-01T00:0{i}:00Z,\n" for i in range(5)))
    report, metrics = tmp_path / "a" / "r.html", tmp_path / "b" / "c" / "m.csv"
    outputs = ["--report", str(report), "--csv", str(metrics)]
    code, _, err = evaluate(capsys, f"{log}:EMPTY", "--models", "persistence", *outputs)
    assert code == 2 and "no readings to evaluate" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.csv"]


def test_a_missing_log_exits_2(capsys, tmp_path):
    code, _, err = evaluate(capsys, str(tmp_path / "nope.csv"), "--models", "persistence")
    assert code == 2 and "nope.csv" in err


def test_tuning_without_persistence_in_the_list_takes_the_steps_from_its_own_pass(capsys):
    flags = ["--columns", "WVHT", "--end", "2012-02-01", "--tune", "--score-from", "0.2"]
    code, out, err = evaluate(capsys, str(BUOY), "--models", "river-holtwinters", *flags)
    assert code == 0, err
    assert "river-holtwinters: tuned on the first 20% of each stream's steps" in out
    assert "persistence" not in out.split("tuned")[0]  # the reference pass is not reported


def test_an_output_that_is_an_input_log_is_refused(capsys, tmp_path):
    log = tmp_path / "log.csv"
    shutil.copy(BEIJING, log)
    before = log.read_bytes()
    for flag in ("--csv", "--report"):
        code, out, err = evaluate(capsys, str(log), "--models", "persistence", flag, str(log))
        assert (code, out) == (2, "") and "is one of the logs being read" in err
    assert log.read_bytes() == before


def test_a_log_with_nothing_to_score_is_an_error_not_an_empty_table(capsys, tmp_path):
    log = tmp_path / "w.csv"
    rows = "".join(f"2024-01-01T00:0{i}:00Z,{i},\n" for i in range(5))
    log.write_text("time,TEMP,EMPTY\n" + rows)
    code, out, err = evaluate(capsys, f"{log}:EMPTY", "--models", "persistence")
    assert (code, out) == (2, "")
    assert f"{log}:EMPTY: no readings to evaluate (5 cells were empty" in err


def hourly_log(path: Path, steps: int) -> Path:
    """A wide log of one column, ``steps`` hours of one day (so at most 24)."""
    rows = "".join(f"2024-01-01T{i:02d}:00:00Z,{i % 7}\n" for i in range(steps))
    path.write_text("time,TEMP\n" + rows)
    return path


def test_a_season_longer_than_a_stream_is_named_in_a_note(capsys, tmp_path):
    log = hourly_log(tmp_path / "w.csv", 20)
    code, out, err = evaluate(capsys, str(log), "--models", "river-holtwinters", "--season", "48")
    assert code == 0, err
    assert re.search(r"^1 stream +river-holtwinters ", out, re.M)  # not "all 1 streams"
    assert (
        "river-holtwinters: --season 48 is longer than w/TEMP (20 steps): never past warm-up "
        "there, so its forecasts are the last value (persistence's); give a --season below 20"
    ) in out
    code, out, err = evaluate(capsys, str(log), "--models", "river-holtwinters", "--season", "4")
    assert code == 0 and "--season" not in out, err


def test_a_log_column_and_columns_together_are_refused_naming_both(capsys):
    code, out, err = evaluate(capsys, f"{BEIJING}:TEMP", "--columns", "PRES", "--end", "2013-03-02")
    assert (code, out) == (2, "")
    assert f"--columns PRES and {BEIJING}:TEMP both pick columns; pick them in one place" in err


def test_tune_without_a_river_model_is_refused(capsys):
    flags = ["--columns", "TEMP", "--end", "2013-03-02", "--tune", "--models", "persistence"]
    code, out, err = evaluate(capsys, str(BEIJING), *flags)
    assert (code, out) == (2, "")
    assert "--tune tunes the River baselines, and --models persistence has none" in err


@pytest.mark.parametrize(("flag", "when"), [("--end", "2000-01-01"), ("--start", "2030-01-01")])
def test_a_range_outside_the_log_names_the_range_not_the_columns(capsys, flag, when):
    code, out, err = evaluate(capsys, str(BEIJING), "--columns", "TEMP", flag, when)
    assert (code, out) == (2, "")
    assert f"{BEIJING}: no readings lie in the --start/--end range ({flag} {when})" in err
    assert "column" not in err


def test_a_missing_checkpoint_is_named_as_given(capsys, tmp_path):
    code, out, err = evaluate(capsys, str(BEIJING), "--models", str(tmp_path / "nope.safetensors"))
    assert (code, out) == (2, "")
    assert f"--models: {tmp_path / 'nope.safetensors'}: no such checkpoint" in err
    assert "nope.json" not in err


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("persistence,persistence", "names persistence twice; name each model once"),
        (
            "default,{weights}/default.json,{weights}/default.safetensors",
            "names one model twice, as {weights}/default.json and "
            "{weights}/default.safetensors; name each model once",
        ),
        (
            "{weights}/default.json,{weights}/../weights/default.json",
            "names one model twice, as {weights}/default.json and "
            "{weights}/../weights/default.json; name each model once",
        ),
    ],
)
def test_a_model_named_twice_is_refused_not_run_twice(capsys, models, expected):
    weights = ROOT / "models/weights"
    named = models.format(weights=weights)
    code, out, err = evaluate(capsys, str(BEIJING), "--end", "2013-03-02", "--models", named)
    assert (code, out) == (2, "")
    assert err == f"sensorcast: error: --models {named}: {expected.format(weights=weights)}\n"


@pytest.mark.parametrize(
    ("flag", "example"), [("--report", "report.html"), ("--csv", "metrics.csv")]
)
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_output_name_is_refused_not_ignored(capsys, flag, example, value):
    code, out, err = evaluate(capsys, str(BEIJING), "--models", "persistence", flag, value)
    assert (code, out) == (2, "")
    assert (
        err
        == f"sensorcast: error: {flag} {value!r}: names no file; give one, e.g. {flag} {example}\n"
    )


def test_steps_with_nothing_to_score_are_an_error_not_a_table_of_dashes(capsys, tmp_path):
    log = tmp_path / "same.csv"
    log.write_text("timestamp,value\n" + "".join(f"1700000000,{i}\n" for i in range(50)))
    code, out, err = evaluate(capsys, str(log), "--models", "persistence,default")
    assert (code, out) == (2, "")
    assert err == (
        f"sensorcast: error: {log}: no step to score (the longest stream has 1 step; readings "
        "dropped: 49 duplicate; a step is scored against the forecast made at the step before "
        "it); give longer logs\n"
    )


def test_a_constant_stream_is_scored_without_dividing_by_zero(capsys, tmp_path):
    log = tmp_path / "flat.csv"
    log.write_text(
        "timestamp,value\n" + "".join(f"{1_700_000_000 + 60 * i},21.5\n" for i in range(300))
    )
    metrics = tmp_path / "m.csv"
    with np.errstate(all="raise"):
        code, out, err = evaluate(
            capsys, str(log), "--models", "default,persistence", "--csv", str(metrics)
        )
    assert code == 0, err
    frame = pd.read_csv(metrics)
    assert frame["mase"].isna().all()  # persistence makes no error: MASE is undefined, not inf
    assert (frame["mae"].dropna() < 1e-3).all() and frame["coverage"].between(0.9, 1).all()
