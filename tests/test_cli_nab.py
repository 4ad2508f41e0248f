"""`sensorcast nab` end to end: a small NAB-shaped corpus in, results files and scores out.

The small corpus is built in tmp_path: the real NAB file shipped in data/nab (it repeats
an hour, which the pipeline drops) with its real windows, plus two synthetic series in
NAB's format. One test runs the whole NAB corpus when it is present.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
MACHINE = ROOT / "data/nab/realKnownCause/machine_temperature_system_failure.csv"
MACHINE_KEY = "realKnownCause/machine_temperature_system_failure.csv"
MACHINE_WINDOWS = [  # labels/combined_windows.json of NAB v1.1 for this file
    ["2013-12-10 06:25:00.000000", "2013-12-12 05:35:00.000000"],
    ["2013-12-15 17:50:00.000000", "2013-12-17 17:00:00.000000"],
    ["2014-01-27 14:20:00.000000", "2014-01-29 13:30:00.000000"],
    ["2014-02-07 14:55:00.000000", "2014-02-09 14:05:00.000000"],
]
REPEATED_HOUR = list(range(10_149, 10_161))  # data rows (0-based) of lines 10151-10162
FULL_NAB = Path(os.environ.get("SENSORCAST_NAB_DIR", "/work/shared/data/nab"))


def _synthetic(path: Path, n: int, spike_at: int | None = None) -> list[str]:
    """A daily sine every 5 minutes, NAB-style text; optionally one spike."""
    times = pd.date_range("2014-04-01 00:00:00", periods=n, freq="5min")
    value = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 288)
    if spike_at is not None:
        value[spike_at] += 80
    text = [t.strftime("%Y-%m-%d %H:%M:%S") for t in times]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"timestamp": text, "value": value.round(6)}).to_csv(path, index=False)
    return text


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "nab"
    data = root / "data"
    (data / "realKnownCause").mkdir(parents=True)
    shutil.copy(MACHINE, data / MACHINE_KEY)
    _synthetic(data / "artificialNoAnomaly/art_daily_sine.csv", 4032)
    spike = _synthetic(data / "artificialWithAnomaly/art_daily_spike.csv", 4032, spike_at=3000)
    windows = {
        MACHINE_KEY: MACHINE_WINDOWS,
        "artificialNoAnomaly/art_daily_sine.csv": [],
        "artificialWithAnomaly/art_daily_spike.csv": [[f"{spike[2950]}.000000",
                                                       f"{spike[3149]}.000000"]],
    }  # fmt: skip
    (root / "labels").mkdir()
    (root / "labels/combined_windows.json").write_text(json.dumps(windows))
    return root


def _results(out: Path, name: str = "sensorcast") -> dict[str, pd.DataFrame]:
    return {
        key: pd.read_csv(out / Path(key).parent / f"{name}_{Path(key).name}", dtype=str)
        for key in (MACHINE_KEY, "artificialNoAnomaly/art_daily_sine.csv",
                    "artificialWithAnomaly/art_daily_spike.csv")
    }  # fmt: skip


def _check_one_row_per_data_row(data: Path, result: pd.DataFrame) -> None:
    source = pd.read_csv(data, dtype=str, keep_default_na=False)
    assert list(result.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(result) == len(source)
    assert result["timestamp"].tolist() == source["timestamp"].tolist()  # the text as written
    score = result["anomaly_score"].astype(float)
    assert score.between(0.0, 1.0).all()  # NaN fails too


def test_nab_writes_a_results_file_per_series_then_nab_score_scores_them(corpus, tmp_path,
                                                                         capsys):  # fmt: skip
    out = tmp_path / "results"
    assert main(["nab", "--data", str(corpus), "--out", str(out), "--no-progress"]) == 0
    assert "nab: 3 files, 30759 rows" in capsys.readouterr().out
    results = _results(out)
    for key, result in results.items():
        _check_one_row_per_data_row(corpus / "data" / key, result)
    machine = results[MACHINE_KEY]
    assert machine["value"].tolist() == pd.read_csv(MACHINE, dtype=str)["value"].tolist()
    # the repeated hour is dropped by the pipeline: its rows are there, scored 0
    assert (machine["anomaly_score"].astype(float).iloc[REPEATED_HOUR] == 0.0).all()
    # label: filled from the windows after detection, 1 exactly inside them
    spike = results["artificialWithAnomaly/art_daily_spike.csv"]
    assert np.flatnonzero(spike["label"].astype(int)).tolist() == list(range(2950, 3150))
    assert results["artificialNoAnomaly/art_daily_sine.csv"]["label"].astype(int).sum() == 0
    assert machine["label"].astype(int).sum() > 0

    assert main(["nab-score", "--data", str(corpus), "--results", str(out)]) == 0
    printed = capsys.readouterr().out
    numbers = re.findall(r"^(standard|reward_low_FP_rate|reward_low_FN_rate) +(-?[\d.]+|n/a) ",
                         printed, re.MULTILINE)  # fmt: skip
    assert [name for name, _ in numbers] == ["standard", "reward_low_FP_rate",
                                             "reward_low_FN_rate"]  # fmt: skip
    assert all(math.isfinite(float(value)) for _, value in numbers)


def test_detection_never_reads_the_labels_nor_looks_ahead(corpus, tmp_path, capsys):
    # the scores are the same without the labels, and a file cut short scores its rows
    # exactly as the whole file does (chunked sequence mode: float tolerance)
    full, blind = tmp_path / "full", tmp_path / "blind"
    assert main(["nab", "--data", str(corpus), "--out", str(full), "--no-progress"]) == 0
    (corpus / "labels/combined_windows.json").unlink()
    machine = corpus / "data" / MACHINE_KEY
    whole = machine.read_text().splitlines(keepends=True)
    machine.write_text("".join(whole[: 1 + 9000]))
    assert main(["nab", "--data", str(corpus), "--out", str(blind), "--no-progress"]) == 0
    before, after = _results(full), _results(blind)
    for key in before:
        a, b = before[key]["anomaly_score"].astype(float), after[key]["anomaly_score"].astype(float)
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy()[: len(b)], rtol=0, atol=1e-6)
        assert after[key]["label"].astype(int).sum() == 0  # no labels: all 0
    assert len(after[MACHINE_KEY]) == 9000


def test_detector_name_and_progress_bar(corpus, tmp_path, capsys):
    out = tmp_path / "results"
    command = ["nab", "--data", str(corpus), "--out", str(out), "--detector-name", "mine",
               "--progress"]  # fmt: skip
    assert main(command) == 0
    assert "nab" in capsys.readouterr().err  # tqdm's bar
    assert len(_results(out, "mine")) == 3
    assert not list(out.rglob("sensorcast_*.csv"))
    assert main(["nab-score", "--data", str(corpus), "--results", str(out)]) == 2
    assert "sensorcast_" in capsys.readouterr().err  # the default name's files are missing


@pytest.mark.parametrize("case", ["no_data_folder", "no_csv_files"])
def test_a_data_folder_without_data_exits_2_naming_it(tmp_path, capsys, case):
    root = tmp_path / "nab"
    root.mkdir()
    if case == "no_csv_files":
        (root / "data" / "realTweets").mkdir(parents=True)
    assert main(["nab", "--data", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(root) in err
    assert not (tmp_path / "out").exists()


def test_a_bad_detector_name_exits_2(corpus, tmp_path, capsys):
    command = ["nab", "--data", str(corpus), "--out", str(tmp_path), "--detector-name", "a/b"]
    assert main(command) == 2
    assert "--detector-name" in capsys.readouterr().err


@pytest.mark.skipif(
    not (FULL_NAB / "data").is_dir(),
    reason=f"the NAB corpus is not at {FULL_NAB} (set SENSORCAST_NAB_DIR to its root)",
)
def test_the_whole_nab_corpus_runs_in_well_under_a_minute(tmp_path, capsys):
    out = tmp_path / "results"
    started = time.perf_counter()
    assert main(["nab", "--data", str(FULL_NAB), "--out", str(out), "--no-progress"]) == 0
    seconds = time.perf_counter() - started
    print(capsys.readouterr().out)
    files = sorted((FULL_NAB / "data").rglob("*.csv"))
    assert len(files) == 58
    for path in files:
        key = path.relative_to(FULL_NAB / "data")
        result = pd.read_csv(out / key.parent / f"sensorcast_{key.name}", dtype=str)
        _check_one_row_per_data_row(path, result)
    assert seconds < 60, f"the whole corpus took {seconds:.1f} s"


def test_an_out_path_that_is_a_file_exits_2_before_the_pass(corpus, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    assert main(["nab", "--data", str(corpus), "--out", str(blocker)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"sensorcast: error: --out: {blocker} is a file")
    assert captured.err.count("\n") == 1 and "rows" not in captured.out  # nothing ran


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Two short series in NAB's layout, no labels: quick to run."""
    root = tmp_path / "small"
    _synthetic(root / "data/catA/s1.csv", 600, spike_at=400)
    _synthetic(root / "data/catA/s2.csv", 500)
    return root


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("sensorcast: error: ")
    return captured.err


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("where", ["data", "data/catA", "data/new", "data/../data", "link"])
def test_an_out_inside_the_data_folder_exits_2_and_touches_nothing(small, capsys, where):
    # results there would overwrite a data file named like one (catA/sensorcast_s2.csv) and
    # be read back as data by the next run
    clash = small / "data/catA/sensorcast_s2.csv"
    _synthetic(clash, 300)
    (small / "link").symlink_to(small / "data/catA")
    before = _tree(small / "data")
    assert main(["nab", "--data", str(small), "--out", str(small / where), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "--out" in err and "data" in err
    assert _tree(small / "data") == before  # nothing written, nothing overwritten
    assert not (small / "data/new").exists()


def test_an_out_at_the_nab_root_is_fine(small, capsys):
    assert main(["nab", "--data", str(small), "--out", str(small), "--no-progress"]) == 0
    assert (small / "catA/sensorcast_s1.csv").is_file()
    assert sorted(p.name for p in (small / "data/catA").iterdir()) == ["s1.csv", "s2.csv"]


def test_an_interrupted_run_leaves_every_results_file_whole(small, tmp_path, capsys,
                                                            monkeypatch):  # fmt: skip
    out = tmp_path / "results"
    assert main(["nab", "--data", str(small), "--out", str(out), "--no-progress"]) == 0
    before = _tree(out)
    assert len(before) == 2
    written = pd.DataFrame.to_csv
    calls = []

    def interrupted(frame, target, *args, **kwargs):  # the first file completes, then ^C
        calls.append(target)
        if len(calls) == 1:
            return written(frame, target, *args, **kwargs)
        partial = "timestamp,value,anomaly_score,label\n2014-04-01 00:00:00,50"
        if hasattr(target, "write"):
            target.write(partial)
        else:  # a path: written in place
            Path(target).write_text(partial)
        raise KeyboardInterrupt

    (small / "data/catA/s2.csv").write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    assert main(["nab", "--data", str(small), "--out", str(out), "--no-progress"]) == 130
    after = _tree(out)
    assert sorted(after) == sorted(before)  # no temporary file left behind
    assert after["catA/sensorcast_s2.csv"] == before["catA/sensorcast_s2.csv"]  # the old one
    # the first file was replaced whole by the new run's
    assert pd.read_csv(out / "catA/sensorcast_s1.csv")["anomaly_score"].between(0, 1).all()
    assert len(pd.read_csv(out / "catA/sensorcast_s1.csv")) == 600


def test_an_over_long_detector_name_exits_2_before_the_pass(small, tmp_path, capsys):
    out = tmp_path / "results"
    command = ["nab", "--data", str(small), "--out", str(out), "--detector-name", "a" * 300]
    assert main(command) == 2
    err = _one_line_error(capsys)
    assert "--detector-name" in err and "255" in err
    assert not out.exists()  # refused before anything was made
    # the longest name that fits: 255 bytes with "_s1.csv"
    command[-1] = "a" * (255 - len("_s1.csv"))
    assert main([*command, "--no-progress"]) == 0


def test_a_folder_where_a_results_file_goes_exits_2_before_the_pass(small, tmp_path, capsys):
    out = tmp_path / "results"
    (out / "catA/sensorcast_s2.csv").mkdir(parents=True)
    assert main(["nab", "--data", str(small), "--out", str(out), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert "sensorcast_s2.csv is a folder" in err and "rows" not in capsys.readouterr().out
    assert not (out / "catA/sensorcast_s1.csv").exists()


def test_an_os_error_while_writing_names_the_file(small, tmp_path, capsys, monkeypatch):
    # a results path that turns into a folder after the checks before the pass
    import pipeline.nab

    out = tmp_path / "results"
    (out / "catA/sensorcast_s2.csv").mkdir(parents=True)
    monkeypatch.setattr(pipeline.nab, "check_results_paths", lambda *args: None)
    assert main(["nab", "--data", str(small), "--out", str(out), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert f"cannot write {out / 'catA/sensorcast_s2.csv'}" in err
    assert sorted(_tree(out)) == ["catA/sensorcast_s1.csv"]  # no temporary file left


@pytest.mark.parametrize("command", ["replay", "evaluate", "train"])
def test_a_column_of_a_nab_file_is_named_with_the_columns_the_file_has(tmp_path, capsys, command):
    extra = ["--out", str(tmp_path / "m")] if command == "train" else []
    assert main([command, f"{MACHINE}:TEMP", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "columns=" not in err
    assert f"{MACHINE}:TEMP: TEMP picks columns of a wide log, but {MACHINE} is a nab file " in err
    assert "(columns timestamp, value)" in err and f"give {MACHINE} without :TEMP" in err
    assert main([command, str(MACHINE), "--columns", "TEMP", *extra]) == 2
    err = capsys.readouterr().err
    assert "--columns TEMP picks columns of a wide log" in err and "drop --columns" in err


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty file; expected a header with timestamp,value"),
    ("timestamp,value\n", "no rows below its header"),
])  # fmt: skip
def test_a_data_file_without_rows_exits_2_before_the_pass(small, tmp_path, capsys, text, says):
    out = tmp_path / "results"
    (small / "data/catA/s2.csv").write_text(text)
    assert main(["nab", "--data", str(small), "--out", str(out), "--no-progress"]) == 2
    assert f"{small / 'data/catA/s2.csv'}: {says}" in _one_line_error(capsys)
    assert not out.exists()


def edited_run(small: Path, out: Path, capsys, cells: dict[tuple[int, int], str]) -> str:
    """``nab`` over ``small`` once its ``catA/s1.csv`` has the given (line, field) cells
    changed (1-based lines of the file: data row 10 is line 12); the summary it printed."""
    s1 = small / "data/catA/s1.csv"
    lines = [line.split(",") for line in s1.read_text().splitlines()]
    for (line, field), text in cells.items():
        lines[line - 1][field] = text
    s1.write_text("\n".join(",".join(fields) for fields in lines) + "\n")
    assert main(["nab", "--data", str(small), "--out", str(out), "--no-progress"]) == 0
    return capsys.readouterr().out


def test_the_summary_names_the_first_dropped_reading_of_each_reason(small, tmp_path, capsys):
    s1 = small / "data/catA/s1.csv"
    out = tmp_path / "results"
    printed = edited_run(small, out, capsys, {(12, 0): "not-a-time", (22, 1): "nan",
                                              (32, 1): "nan"})  # fmt: skip
    assert "; 3 dropped by the pipeline, scored 0: " in printed
    assert f"bad_timestamp 1 (first at {s1}:12), non_finite 2 (first at {s1}:22);" in printed
    scores = pd.read_csv(out / "catA/sensorcast_s1.csv")["anomaly_score"]
    assert len(scores) == 600 and (scores.iloc[[10, 20, 30]] == 0.0).all()


def test_a_value_that_is_not_a_number_is_a_bad_value_and_a_blank_one_is_missing(
    small, tmp_path, capsys
):
    s1 = small / "data/catA/s1.csv"
    out = tmp_path / "results"
    values = {(12, 1): "abc", (22, 1): "", (32, 1): " ", (42, 1): "NaN"}
    printed = edited_run(small, out, capsys, values)
    assert "; 2 dropped by the pipeline, scored 0: " in printed
    assert f"bad_value 1 (first at {s1}:12), non_finite 1 (first at {s1}:42);" in printed
    assert "; 2 empty values, scored 0;" in printed
    result = pd.read_csv(out / "catA/sensorcast_s1.csv", dtype=str, keep_default_na=False)
    assert len(result) == 600 and result["value"].iloc[[10, 20, 30, 40]].tolist() == [
        "abc", "", " ", "NaN"
    ]  # fmt: skip
    assert (result["anomaly_score"].iloc[[10, 20, 30, 40]].astype(float) == 0.0).all()


def test_an_out_equal_to_the_data_folder_says_so(small, capsys):
    assert main(["nab", "--data", str(small), "--out", str(small / "data")]) == 2
    err = _one_line_error(capsys)
    assert f"--out: {small / 'data'} is the data folder {small / 'data'}, where" in err
