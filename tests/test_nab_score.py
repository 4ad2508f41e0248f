"""NAB scoring: hand-computed cases, a brute-force oracle for the sweep, and bad input.

Arithmetic used below. sigma(x) = 2 / (1 + exp(5x)) - 1 = tanh(-5x / 2), so
sigma(-1) = tanh(2.5) = 0.986614. A detection at row i of window [s, e] (width W)
is worth A_TP * sigma(-(e - i + 1) / W) / sigma(-1); a detection outside windows costs
A_FP * sigma((i - e') / (W' - 1)) after a window [s', e'], or -A_FP before any.
Probation: 15% of the rows, at most 750 (20 rows -> 3, 200 rows -> 30).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.nab_score import (
    PROFILES,
    STANDARD,
    ScoredSeries,
    probation_length,
    score_corpus,
    score_file,
    sigma,
    sweep,
)

LOW_FP, LOW_FN = PROFILES[1], PROFILES[2]


def series(n: int, windows: list[tuple[int, int]], hits: dict[int, float] | None = None,
           name: str = "cat/file.csv") -> ScoredSeries:  # fmt: skip
    scores = np.zeros(n)
    for i, value in (hits or {}).items():
        scores[i] = value
    return ScoredSeries(name, scores, np.array(windows, np.int64).reshape(-1, 2))


def standard(s: ScoredSeries, threshold: float = 1.0) -> float:
    return score_file(s, threshold, STANDARD).score


# -- the rules, one by one ------------------------------------------------------------------


def test_sigma_and_probation():
    assert float(sigma(-1.0)) == pytest.approx(math.tanh(2.5))
    assert float(sigma(0.0)) == 0.0
    assert float(sigma(1e6)) == -1.0  # no overflow warning: the -1 limit
    # 15% of the rows, at most 750: 19 -> 2 (2.85 floored), 5000 -> 750, 6000 -> 750
    assert [probation_length(n) for n in (0, 19, 20, 200, 5000, 6000)] == [0, 2, 3, 30, 750, 750]


def test_detection_at_a_windows_first_row_is_worth_a_tp():
    # window [10, 13], W = 4; i = 10: x = -(13 - 10 + 1) / 4 = -1 -> sigma(-1) / sigma(-1) = 1
    result = score_file(series(20, [(10, 13)], {10: 1.0}), 1.0, STANDARD)
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    assert result.score == pytest.approx(1.0)


def test_detection_at_a_windows_last_row_is_worth_less():
    # i = 13: x = -(13 - 13 + 1) / 4 = -0.25; sigma(-0.25) = tanh(0.625) = 0.554600
    # worth 0.554600 / 0.986614 = 0.562124
    assert standard(series(20, [(10, 13)], {13: 1.0})) == pytest.approx(0.5621241486)
    # W = 50, i = e: x = -1/50, sigma = tanh(0.05) = 0.049958 -> 0.049958 / 0.986614 = 0.050636
    assert standard(series(200, [(100, 149)], {149: 1.0})) == pytest.approx(0.0506361757)


def test_only_the_earliest_detection_in_a_window_counts():
    # i = 11 and 12 in [10, 13]: only i = 11 counts, x = -(13 - 11 + 1) / 4 = -0.75
    # sigma(-0.75) = tanh(1.875) = 0.954045 -> 0.954045 / 0.986614 = 0.966989; i = 12 is ignored
    result = score_file(series(20, [(10, 13)], {11: 1.0, 12: 1.0}), 1.0, STANDARD)
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    assert result.score == pytest.approx(0.9669890878)


def test_a_missed_window_costs_a_fn():
    result = score_file(series(20, [(10, 13)]), 1.0, STANDARD)
    assert (result.tp, result.fp, result.fn, result.score) == (0, 0, 1, -1.0)
    assert score_file(series(20, [(10, 13)]), 1.0, LOW_FN).score == -2.0  # A_FN = 2


def test_false_positive_costs_grow_with_the_distance_after_a_window():
    # window [100, 149], W' = 50, e' = 149; hit at its first row: +1
    # i = 150: x = (150 - 149) / 49, sigma = tanh(-5/98) = -0.050976 -> 0.11 * that = -0.005607
    assert standard(series(200, [(100, 149)], {100: 1, 150: 1})) == pytest.approx(1 - 0.0056073803)
    # i = 199: x = 50 / 49, sigma = tanh(-2.551) = -0.987905 -> 0.11 * that = -0.108670 ~ -A_FP
    assert standard(series(200, [(100, 149)], {100: 1, 199: 1})) == pytest.approx(1 - 0.1086695452)
    # the low-FP profile doubles it: 0.22 * -0.987905 = -0.217339
    far = score_file(series(200, [(100, 149)], {100: 1, 199: 1}), 1.0, LOW_FP)
    assert far.score == pytest.approx(1 - 0.2173390904)


def test_false_positive_before_any_window_costs_a_fp():
    # i = 50 precedes the window [100, 149]: -0.11, and the missed window -1
    result = score_file(series(200, [(100, 149)], {50: 1.0}), 1.0, STANDARD)
    assert (result.tp, result.fp, result.fn) == (0, 1, 1)
    assert result.score == pytest.approx(-1.11)
    # a file without windows: every detection costs -A_FP; 3 of them -> -0.33
    assert standard(series(200, [], {40: 1, 90: 1, 150: 1})) == pytest.approx(-0.33)


def test_probation_rows_are_ignored_but_windows_are_not():
    # 200 rows -> rows 0..29 probationary: a detection at 5 costs nothing
    assert standard(series(200, [], {5: 1.0})) == 0.0
    # window [20, 40] starts inside probation: a detection at 25 does not count (missed, -1);
    # one at 35 does: x = -(40 - 35 + 1) / 21, sigma = tanh(5/7) = 0.613357 -> 0.621679
    assert standard(series(200, [(20, 40)], {25: 1.0})) == -1.0
    assert standard(series(200, [(20, 40)], {25: 1.0, 35: 1.0})) == pytest.approx(0.6216788684)


# -- the threshold sweep ----------------------------------------------------------------------


def test_sweep_picks_the_best_threshold_and_ties_go_to_the_higher_one():
    # window [100, 149]; scores: 0.9 at row 60 (FP before the window), 0.8 at row 100 (the
    # window's first row), 0.7 at row 120 (later in the window), 0.5 at row 170 (FP after)
    s = series(200, [(100, 149)], {60: 0.9, 100: 0.8, 120: 0.7, 170: 0.5})
    # above 0.9: nothing, -1 | 0.9: -1 - 0.11 = -1.11 | 0.8: 1 - 0.11 = 0.89
    # 0.7: 0.89 as well (row 120 comes after row 100) -> a tie, the higher 0.8 wins
    # 0.5: 0.89 + 0.11 * sigma(21/49) = 0.89 - 0.086900 = 0.803100 | 0: 170 rows more FPs
    threshold, total = sweep([s], STANDARD)
    assert threshold == 0.8
    assert total == pytest.approx(0.89)
    assert standard(s, 0.5) == pytest.approx(0.89 - 0.0868998713)


def test_sweep_detects_nothing_when_every_detection_costs():
    s = series(200, [], {40: 0.3, 90: 0.6})  # no windows: anything detected only costs
    threshold, total = sweep([s], STANDARD)
    assert threshold > 0.6 and total == 0.0


def _brute_force(files: list[ScoredSeries], profile) -> tuple[float, float]:
    pooled = np.concatenate([f.scores[f.probation :] for f in files])
    candidates = [np.nextafter(pooled.max(), np.inf), *sorted(set(pooled.tolist()), reverse=True)]
    totals = [sum(score_file(f, t, profile).score for f in files) for t in candidates]
    best = max(totals)
    i = next(i for i, total in enumerate(totals) if total >= best - 1e-9)
    return float(candidates[i]), totals[i]


@pytest.mark.parametrize("seed", range(12))
def test_sweep_equals_brute_force_on_random_corpora(seed):
    rng = np.random.default_rng(seed)
    files = []
    for k in range(3):
        n = int(rng.integers(40, 120))
        cuts = np.sort(rng.choice(np.arange(5, n), size=4, replace=False))
        windows = [(int(cuts[0]), int(cuts[1])), (int(cuts[2]), int(cuts[3]))][: k % 3]
        # coarse scores make ties and repeated values common
        scores = np.round(rng.random(n) ** 4, 1)
        files.append(
            ScoredSeries(f"c{k}/f.csv", scores, np.array(windows, np.int64).reshape(-1, 2))
        )
    for profile in PROFILES:
        threshold, total = sweep(files, profile)
        expected_threshold, expected_total = _brute_force(files, profile)
        assert threshold == expected_threshold
        assert total == pytest.approx(expected_total)


# -- normalisation and profiles -----------------------------------------------------------------


def test_perfect_detector_scores_100_and_null_scores_0():
    windows = [(40, 59), (120, 149)]
    perfect = [series(200, windows, {40: 1.0, 120: 1.0}, "a/x.csv"), series(300, [], {}, "b/y.csv")]
    null = [series(200, windows, {}, "a/x.csv"), series(300, [], {}, "b/y.csv")]
    for result in score_corpus(perfect):
        assert result.normalized() == pytest.approx(100.0)  # S = A_TP * 2 = S_perfect
        assert result.threshold == 1.0
    for result in score_corpus(null):
        assert result.normalized() == 0.0  # S = -A_FN * 2 = S_null
        assert result.detects_nothing


def test_the_three_profiles_weigh_the_same_detections_differently():
    # a/x.csv: window [100, 149] hit at its first row (+A_TP), one FP at row 60 (-A_FP);
    # b/y.csv: window [100, 149] missed (-A_FN). Best threshold 1.0 under every profile.
    files = [series(200, [(100, 149)], {60: 1.0, 100: 1.0}, "a/x.csv"),
             series(200, [(100, 149)], {}, "b/y.csv")]  # fmt: skip
    scores = {r.profile.name: r.normalized() for r in score_corpus(files)}
    # standard:  S = 1 - 0.11 - 1 = -0.11; null -2, perfect 2 -> 100 * 1.89 / 4 = 47.25
    # low FP:    S = 1 - 0.22 - 1 = -0.22 -> 100 * 1.78 / 4 = 44.5
    # low FN:    S = 1 - 0.11 - 2 = -1.11; null -4, perfect 2 -> 100 * 2.89 / 6 = 48.1667
    assert scores == pytest.approx(
        {"standard": 47.25, "reward_low_FP_rate": 44.5, "reward_low_FN_rate": 48.1666666667}
    )
    standard_result = score_corpus(files)[0]
    # per category, at the corpus-wide threshold: a -> 100 * (1 - 0.11 + 1) / 2 = 94.5; b -> 0
    assert standard_result.normalized("a") == pytest.approx(94.5)
    assert standard_result.normalized("b") == 0.0


# -- the command on files -------------------------------------------------------------------------


def stamps(n: int) -> list[str]:
    times = pd.date_range("2014-03-01 00:00:00", periods=n, freq="5min")
    return [t.strftime("%Y-%m-%d %H:%M:%S") for t in times]


def make_corpus(root: Path, files: dict[str, tuple[int, list[tuple[int, int]]]]) -> Path:
    """data/<key> with n rows of timestamp,value and labels with the given row windows."""
    labels = {}
    for key, (n, windows) in files.items():
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": stamps(n), "value": np.arange(n, dtype=float)}).to_csv(
            path, index=False
        )
        text = stamps(n)
        labels[key] = [[f"{text[s]}.000000", f"{text[e]}.000000"] for s, e in windows]
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    return root


def write_results(results: Path, key: str, scores: np.ndarray, name: str = "sensorcast") -> Path:
    category, file = key.split("/")
    path = results / category / f"{name}_{file}"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"timestamp": stamps(len(scores)), "value": 0.0,
                          "anomaly_score": scores, "label": 0})  # fmt: skip
    frame.to_csv(path, index=False)
    return path


CORPUS = {"realA/x.csv": (200, [(100, 149)]), "realB/y.csv": (200, [(100, 149)]),
          "clean/z.csv": (100, [])}  # fmt: skip


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, Path]:
    root = make_corpus(tmp_path / "nab", CORPUS)
    results = tmp_path / "results"
    x = np.zeros(200)
    x[[60, 100]] = 1.0
    write_results(results, "realA/x.csv", x)
    write_results(results, "realB/y.csv", np.zeros(200))
    write_results(results, "clean/z.csv", np.zeros(100))
    return root, results


def test_nab_score_prints_three_profiles_and_categories(scored, capsys):
    root, results = scored
    assert main(["nab-score", "--data", str(root), "--results", str(results), "--verbose"]) == 0
    out = capsys.readouterr().out
    # the same detections as the profiles test above: 47.25, 44.50, 48.17
    for profile, score in [("standard", "47.25"), ("reward_low_FP_rate", "44.50"),
                           ("reward_low_FN_rate", "48.17")]:  # fmt: skip
        assert re.search(rf"^{profile} +{score} +1$", out, re.MULTILINE), out
    assert "realA" in out and "n/a" in out  # clean/ has no windows: no normalised score
    assert "realA/x.csv" in out and "realB/y.csv" in out  # the per-file table


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing", "sensorcast_y.csv"),
        ("fewer", "sensorcast_y.csv"),
        ("more", "sensorcast_y.csv"),
        ("timestamps", "sensorcast_y.csv"),
        ("above_one", "sensorcast_y.csv"),
        ("nan", "sensorcast_y.csv"),
        ("no_labels", "combined_windows.json"),
    ],
)
def test_bad_input_exits_2_naming_the_file(scored, capsys, case, named):
    root, results = scored
    y = results / "realB" / "sensorcast_y.csv"
    frame = pd.read_csv(y, dtype=str)
    if case == "missing":
        y.unlink()
    elif case == "fewer":
        frame.iloc[:-1].to_csv(y, index=False)
    elif case == "more":
        pd.concat([frame, frame.iloc[-1:]]).to_csv(y, index=False)
    elif case == "timestamps":
        frame.loc[7, "timestamp"] = "2014-03-01 00:36:00"
        frame.to_csv(y, index=False)
    elif case == "above_one":
        frame.loc[50, "anomaly_score"] = "1.5"
        frame.to_csv(y, index=False)
    elif case == "nan":
        frame.loc[50, "anomaly_score"] = "nan"
        frame.to_csv(y, index=False)
    else:
        (root / "labels" / "combined_windows.json").unlink()
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    assert named in _error(capsys)


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        (b'{"realA/x.csv": [', "cannot read it as JSON"),
        (b"\xff\xfe not text", "cannot read it as JSON"),
        (b'[["2014-01-01", "2014-01-02"]]', 'expected {"<category>/<file>.csv": [[start, end]'),
        (b'{"realA/x.csv": [["2014-01-01"]]}', 'expected {"<category>/<file>.csv": [[start, end]'),
        (b'{"realA/x.csv": [], "clean/z.csv": []}', "no entry for realB/y.csv (give it []"),
    ],
)
def test_a_labels_file_that_cannot_be_used_names_itself_and_what_is_wrong(
    scored, capsys, labels, says
):
    root, results = scored
    path = root / "labels" / "combined_windows.json"
    path.write_bytes(labels)
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"{path}: " in err and says in err, err


def test_timestamps_in_another_iso_spelling_still_match(scored, capsys):
    root, results = scored
    y = results / "realB" / "sensorcast_y.csv"
    frame = pd.read_csv(y, dtype=str)
    frame["timestamp"] = frame["timestamp"].str.replace(" ", "T") + "Z"
    frame.to_csv(y, index=False)
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 0


def test_a_window_that_matches_no_row_names_the_labels_file(scored, capsys):
    root, results = scored
    labels = root / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    windows["realB/y.csv"] = [["2014-03-01 00:01:00.000000", "2014-03-01 00:10:00.000000"]]
    labels.write_text(json.dumps(windows))
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert "combined_windows.json" in err and "realB/y.csv" in err


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a" * 300])
def test_a_bad_detector_name_exits_2_naming_the_flag(scored, capsys, name):
    root, results = scored
    command = ["nab-score", "--data", str(root), "--results", str(results), "--detector-name"]
    assert main([*command, name]) == 2
    err = _error(capsys)
    assert err.startswith("sensorcast: error: --detector-name") and "no such" not in err


def test_results_rows_with_an_extra_field_name_the_file_and_line(scored, capsys):
    root, results = scored
    y = results / "realB" / "sensorcast_y.csv"
    header, *rows = y.read_text().splitlines()
    y.write_text("\n".join([header, *(row + ",extra" for row in rows)]) + "\n")
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"{y}: line 2: its rows have more fields than its header" in err
    assert "does not match" not in err


def test_a_labels_path_that_is_a_folder_says_so(scored, capsys):
    root, results = scored
    labels = root / "labels" / "combined_windows.json"
    labels.unlink()
    labels.mkdir()
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"{labels} is a folder" in err and "no such file" not in err


def test_a_results_path_that_is_a_folder_says_so(scored, capsys):
    root, results = scored
    y = results / "realB" / "sensorcast_y.csv"
    y.unlink()
    y.mkdir()
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    assert f"{y} is a folder" in _error(capsys)


@pytest.mark.parametrize("case", ["missing", "file"])
def test_a_results_folder_that_is_missing_or_a_file_names_the_flag(scored, capsys, case):
    root, results = scored
    shutil.rmtree(results)
    if case == "file":
        results.write_text("not a folder")
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    expected = " is a file, not a folder" if case == "file" else ": no such folder"
    assert err.startswith(f"sensorcast: error: --results: {results}{expected}")
    assert "no such results file" not in err


def test_a_missing_results_file_says_how_to_write_it(scored, capsys):
    root, results = scored
    (results / "realB" / "sensorcast_y.csv").unlink()
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"{results / 'realB' / 'sensorcast_y.csv'}: no such results file" in err
    assert err.endswith(f"write it with `sensorcast nab --data {root} --out {results}`")


@pytest.mark.parametrize(
    ("names", "hint"),
    [(["mine"], "named mine; give --detector-name mine"),
     (["a", "b"], "named a, b; give one of them as --detector-name")],
)  # fmt: skip
def test_results_of_another_detector_name_say_which_names_are_there(tmp_path, capsys, names,
                                                                    hint):  # fmt: skip
    root = make_corpus(tmp_path / "nab", CORPUS)
    results = tmp_path / "results"
    for name in names:  # as `sensorcast nab --detector-name NAME` would write them
        for key, (n, _) in CORPUS.items():
            write_results(results, key, np.zeros(n), name)
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert "sensorcast_" in err and "no such results file" in err
    assert err.endswith(f"{results} has results {hint}")


def test_labels_naming_a_file_not_in_data_exit_2(scored, capsys):
    # scoring the files that are there would pass part of the corpus off as all of it
    root, results = scored
    labels = root / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    windows["realC/gone.csv"] = []
    labels.write_text(json.dumps(windows))
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"{labels}: realC/gone.csv not in {root / 'data'}; put the file there" in err
    assert "remove its entry" in err


@pytest.mark.parametrize(
    ("window", "says"),
    [
        (["yesterday", "2014-03-01 10:00:00"], "'yesterday' is not a timestamp; give ISO 8601"),
        (["2014-03-01 10:00:00", "2014-03-01 09:00:00"], "it starts after it ends"),
        # 200 rows every 5 minutes from 00:00: the last is 199 * 5 min = 16:35
        (["2014-03-01 10:00:00", "2014-03-02 10:00:00"],
         "'2014-03-02 10:00:00' is not a timestamp of {data} (its rows run from "
         "'2014-03-01 00:00:00' to '2014-03-01 16:35:00')"),
        (["2014-03-01 10:00:30", "2014-03-01 11:00:00"],  # between two rows
         "'2014-03-01 10:00:30' is not a timestamp of"),
    ],
)  # fmt: skip
def test_a_bad_window_says_what_is_wrong_with_it(scored, capsys, window, says):
    root, results = scored
    labels = root / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    windows["realB/y.csv"] = [window]
    labels.write_text(json.dumps(windows))
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"{labels}: window {window} of realB/y.csv: " in err
    assert says.format(data=root / "data" / "realB" / "y.csv") in err


def test_overlapping_windows_are_named(scored, capsys):
    root, results = scored
    labels = root / "labels" / "combined_windows.json"
    windows = json.loads(labels.read_text())
    late = ["2014-03-01 10:00:00", "2014-03-01 12:00:00"]
    early = ["2014-03-01 09:00:00", "2014-03-01 10:00:00"]  # shares the row at 10:00
    windows["realB/y.csv"] = [late, early]
    labels.write_text(json.dumps(windows))
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    err = _error(capsys)
    assert f"windows {early} and {late} of realB/y.csv overlap; merge them" in err  # in time order


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("data_header_only", "data/realB/y.csv: no rows below its header"),
        ("data_empty", "data/realB/y.csv: empty file; expected a header with timestamp,value"),
        ("results_header_only", "sensorcast_y.csv: 0 rows, but"),
        ("results_empty", "sensorcast_y.csv: empty file; expected a header with "
                          "timestamp,anomaly_score"),
    ],
)  # fmt: skip
def test_a_file_without_rows_exits_2_naming_it(scored, capsys, case, says):
    root, results = scored
    path = (
        root / "data/realB/y.csv" if case.startswith("data") else results / "realB/sensorcast_y.csv"
    )
    path.write_text("" if case.endswith("empty") else path.read_text().splitlines()[0] + "\n")
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    assert says in _error(capsys)


@pytest.mark.parametrize("score", ["-0.1", "1.5", "abc", "", "NaN", "inf"])
def test_every_score_outside_0_1_names_its_line(scored, capsys, score):
    root, results = scored
    y = results / "realB" / "sensorcast_y.csv"
    frame = pd.read_csv(y, dtype=str)
    frame.loc[50, "anomaly_score"] = score
    frame.to_csv(y, index=False)
    assert main(["nab-score", "--data", str(root), "--results", str(results)]) == 2
    assert f"{y}: line 52: anomaly_score {score!r} is not a number in [0, 1]" in _error(capsys)
