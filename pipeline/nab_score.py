"""NAB scoring: ``score_corpus`` and the ``sensorcast nab-score`` command.

Implemented from NAB's published rules (no NAB code):

* windows come from ``labels/combined_windows.json`` and are matched to data rows by
  timestamp; ``[s, e]`` are row indices (inclusive), ``W = e - s + 1`` rows wide;
* the first 15% of a file's rows, at most 750, are probationary: detections there count
  for nothing (windows still count whole);
* a detection is a scored row whose score is >= the threshold;
* inside a window only the earliest detection counts, worth
  ``A_TP * sigma(x) / sigma(-1)`` with ``x = -(e - i + 1) / W``: exactly ``A_TP`` at the
  window's first row, less the later it comes; a window without one costs ``-A_FN``;
* a detection outside every window costs ``A_FP * sigma((i - e') / (W' - 1))`` (<= 0),
  ``e'`` and ``W'`` the end and width of the nearest previous window (``W' - 1`` taken
  as 1 for a one-row window): little just after it, nearly ``-A_FP`` far after;
  ``-A_FP`` when no window came before;
* ``sigma(x) = 2 / (1 + exp(5 x)) - 1`` (1 at -inf, 0 at 0, -1 at +inf);
* one threshold per profile for the whole corpus, the best of an exhaustive sweep over
  every distinct scored value (plus one above the maximum: detect nothing), ties to
  the higher threshold;
* normalised: ``100 * (S - S_null) / (S_perfect - S_null)`` with ``S_null = -A_FN * windows``
  (detect nothing) and ``S_perfect = A_TP * windows`` (every window at its first row).

The sweep is O(n log n): as the threshold falls, a row outside the windows adds its
FP cost once its score is reached, and a window's value changes only at the rows
that set a new running maximum of the window's scores (each becomes its earliest
detection); so the total at every threshold is a cumulative sum over score-sorted
events.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError, InputFileError
from pipeline.nab import (
    DEFAULT_NAME,
    DataFile,
    check_file_names,
    check_name,
    data_files,
    parse_times,
    read_data,
    read_text_csv,
    results_path,
)

if TYPE_CHECKING:
    import pandas as pd

PROBATION_FRACTION_PERCENT = 15
PROBATION_MAX = 750
TIE_TOLERANCE = 1e-9  # totals this close count as equal (float sums in another order)


@dataclass(frozen=True, slots=True)
class Profile:
    """Weights of a NAB application profile."""

    name: str
    a_tp: float
    a_fp: float
    a_fn: float


STANDARD = Profile("standard", 1.0, 0.11, 1.0)
PROFILES = (
    STANDARD,
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def sigma(x: np.ndarray | float) -> np.ndarray:
    """NAB's scaled sigmoid ``2 / (1 + exp(5 x)) - 1``.

    >>> [round(float(v), 4) for v in sigma(np.array([-1.0, 0.0, 1.0]))]
    [0.9866, 0.0, -0.9866]
    """
    with np.errstate(over="ignore"):  # exp overflow is the -1 limit
        return np.asarray(2.0 / (1.0 + np.exp(5.0 * np.asarray(x, np.float64))) - 1.0)


def probation_length(rows: int) -> int:
    """Unscored leading rows: 15% of the file, at most 750.

    >>> probation_length(1000), probation_length(22695), probation_length(19)
    (150, 750, 2)
    """
    return min(rows * PROBATION_FRACTION_PERCENT // 100, PROBATION_MAX)


@dataclass(frozen=True, slots=True)
class ScoredSeries:
    """One file's detector scores and its windows as row indices."""

    name: str  # "category/file.csv", as in combined_windows.json
    scores: np.ndarray  # (n,) float64 in [0, 1]
    windows: np.ndarray  # (k, 2) int64 [start, end] rows, inclusive, ascending, disjoint

    @property
    def category(self) -> str:
        return self.name.rpartition("/")[0]

    @property
    def probation(self) -> int:
        return probation_length(len(self.scores))

    def weights(self, profile: Profile) -> Weights:
        return Weights.of(self, profile)


@dataclass(frozen=True, slots=True)
class Weights:
    """Per row of one file under one profile: its window (-1: none), what detecting it is
    worth as a window's earliest detection, and what it costs as a false positive."""

    window: np.ndarray  # (n,) int64
    tp: np.ndarray  # (n,) float64, set inside windows
    fp: np.ndarray  # (n,) float64 <= 0, set outside windows

    @classmethod
    def of(cls, series: ScoredSeries, profile: Profile) -> Weights:
        n = len(series.scores)
        rows = np.arange(n)
        start, end = series.windows[:, 0], series.windows[:, 1]
        width = end - start + 1
        window = np.full(n, -1, np.int64)
        for index, (s, e) in enumerate(series.windows.tolist()):
            window[s : e + 1] = index
        inside = window >= 0
        tp = np.zeros(n)
        k = window[inside]
        x = -(end[k] - rows[inside] + 1) / width[k]
        tp[inside] = profile.a_tp * sigma(x) / sigma(-1.0)
        previous = np.searchsorted(end, rows, "left") - 1  # last window ending before the row
        fp = np.full(n, -profile.a_fp)
        after = ~inside & (previous >= 0)
        p = previous[after]
        distance = (rows[after] - end[p]) / np.maximum(width[p] - 1, 1)
        fp[after] = profile.a_fp * sigma(distance)
        fp[inside] = 0.0
        return cls(window, tp, fp)


@dataclass(frozen=True, slots=True)
class FileResult:
    """One file at one threshold."""

    name: str
    windows: int
    tp: int
    fp: int
    fn: int
    score: float


def score_file(series: ScoredSeries, threshold: float, profile: Profile) -> FileResult:
    """TP, FP, FN and the raw score of one file at ``threshold``."""
    weights = series.weights(profile)
    detected = series.scores >= threshold
    detected[: series.probation] = False
    false = detected & (weights.window < 0)
    hits = np.flatnonzero(detected & (weights.window >= 0))
    _, first = np.unique(weights.window[hits], return_index=True)  # earliest per window
    earliest = hits[first]
    tp, windows = len(earliest), len(series.windows)
    score = float(weights.tp[earliest].sum() + weights.fp[false].sum())
    score -= profile.a_fn * (windows - tp)
    return FileResult(series.name, windows, tp, int(false.sum()), windows - tp, score)


def _events(series: ScoredSeries, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """(scores, deltas): the total changes by ``delta`` once the threshold reaches ``score``."""
    weights = series.weights(profile)
    scored = np.arange(len(series.scores)) >= series.probation
    outside = scored & (weights.window < 0)
    scores = [series.scores[outside]]
    deltas = [weights.fp[outside]]
    for s, e in series.windows.tolist():
        lo = max(s, series.probation)
        if lo > e:
            continue  # wholly probationary: never detected, always a miss
        window_scores = series.scores[lo : e + 1]
        before = np.concatenate([[-np.inf], np.maximum.accumulate(window_scores)[:-1]])
        # rows above every score before them: at a threshold t the window's earliest
        # detection is the earliest of these with score >= t, so as t falls it moves from
        # the last (highest score) back to the first: -A_FN -> tp[last] -> ... -> tp[first]
        record = np.flatnonzero(window_scores > before)[::-1]
        values = weights.tp[lo : e + 1][record]
        scores.append(window_scores[record])
        deltas.append(np.diff(values, prepend=-profile.a_fn))
    return np.concatenate(scores), np.concatenate(deltas)


def sweep(files: Sequence[ScoredSeries], profile: Profile) -> tuple[float, float]:
    """(threshold, total score) of the best threshold over the pooled scored rows.

    Candidates: every distinct scored value and one above the maximum (detect
    nothing); ties go to the higher threshold.
    """
    windows = sum(len(f.windows) for f in files)
    base = -profile.a_fn * windows
    pooled = [f.scores[f.probation :] for f in files]
    candidates = np.unique(np.concatenate([np.zeros(0), *pooled]))[::-1]  # descending
    top = float(candidates[0]) if len(candidates) else 1.0
    candidates = np.concatenate([[np.nextafter(top, np.inf)], candidates])
    parts = [_events(f, profile) for f in files]
    scores = np.concatenate([np.zeros(0)] + [s for s, _ in parts])
    deltas = np.concatenate([np.zeros(0)] + [d for _, d in parts])
    order = np.argsort(-scores, kind="stable")
    running = np.concatenate([[0.0], np.cumsum(deltas[order])])
    reached = np.searchsorted(-scores[order], -candidates, "right")  # events with score >= t
    totals = base + running[reached]
    best = np.flatnonzero(totals >= totals.max() - TIE_TOLERANCE)[0]  # highest threshold
    return float(candidates[best]), float(totals[best])


@dataclass(frozen=True, slots=True)
class ProfileScore:
    """A profile's corpus-wide threshold and the scores at it."""

    profile: Profile
    threshold: float
    files: tuple[FileResult, ...]

    @property
    def detects_nothing(self) -> bool:
        return all(f.tp == 0 and f.fp == 0 for f in self.files)

    def raw(self, category: str | None = None) -> float:
        return sum(f.score for f in self._of(category))

    def normalized(self, category: str | None = None) -> float:
        """``100 (S - S_null) / (S_perfect - S_null)``; NaN without windows."""
        windows = sum(f.windows for f in self._of(category))
        if windows == 0:
            return math.nan
        null = -self.profile.a_fn * windows
        perfect = self.profile.a_tp * windows
        return 100.0 * (self.raw(category) - null) / (perfect - null)

    def _of(self, category: str | None) -> list[FileResult]:
        if category is None:
            return list(self.files)
        return [f for f in self.files if f.name.rpartition("/")[0] == category]


def score_corpus(
    files: Sequence[ScoredSeries], profiles: Sequence[Profile] = PROFILES
) -> list[ProfileScore]:
    """Each profile's best corpus-wide threshold and every file's result at it."""
    results = []
    for profile in profiles:
        threshold, _ = sweep(files, profile)
        per_file = tuple(score_file(f, threshold, profile) for f in files)
        results.append(ProfileScore(profile, threshold, per_file))
    return results


# -- reading a corpus and a detector's results ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Windows:
    """``combined_windows.json``: file key -> [(start, end)] timestamp texts."""

    source: Path
    by_file: Mapping[str, list[tuple[str, str]]]

    def get(self, key: str, default: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return self.by_file.get(key, default)


def load_windows(nab_dir: str | Path) -> Windows:
    path = Path(nab_dir) / "labels" / "combined_windows.json"
    if path.is_dir():
        msg = f"{path} is a folder; the NAB root needs labels/combined_windows.json as a file"
        raise InputFileError(msg)
    if not path.is_file():
        msg = f"{path}: no such file; the NAB root needs labels/combined_windows.json"
        raise InputFileError(msg)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path}: cannot read it as JSON ({exc})"
        raise InputFileError(msg) from exc
    if not isinstance(raw, dict) or not all(_is_window_list(v) for v in raw.values()):
        msg = f'{path}: expected {{"<category>/<file>.csv": [[start, end], ...]}}'
        raise InputFileError(msg)
    return Windows(path, {str(k): [(str(s), str(e)) for s, e in v] for k, v in raw.items()})


def _is_window_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(w, list) and len(w) == 2 and all(isinstance(t, str) for t in w) for w in value
    )


def window_rows(file: DataFile, windows: Sequence[tuple[str, str]], source: Path) -> np.ndarray:
    """(k, 2) int64 [start, end] rows: the first row at the start time, the last at the end."""
    import pandas as pd  # here, not at the top: every other command starts without it

    rows = np.zeros((len(windows), 2), np.int64)
    stamps = parse_times(pd.Series([t for w in windows for t in w], dtype=str))
    for k, (start, end) in enumerate(stamps.reshape(-1, 2)):
        _check_window(file, windows[k], (start, end), source)
        at_start = np.flatnonzero(file.time == start)
        at_end = np.flatnonzero(file.time == end)
        if at_end[-1] < at_start[0]:
            msg = f"{source}: window {list(windows[k])} of {file.key} ends at a row of "
            msg += f"{file.path} before the row it starts at; sort the file by timestamp"
            raise InputFileError(msg)
        rows[k] = at_start[0], at_end[-1]
    order = np.argsort(rows[:, 0], kind="stable")
    rows = rows[order]
    overlaps = np.flatnonzero(rows[1:, 0] <= rows[:-1, 1])
    if len(overlaps):
        first, second = (list(windows[order[i]]) for i in (overlaps[0], overlaps[0] + 1))
        msg = f"{source}: windows {first} and {second} of {file.key} overlap; "
        msg += "merge them into one or make them disjoint"
        raise InputFileError(msg)
    return rows


def _check_window(
    file: DataFile,
    window: tuple[str, str],
    times: tuple[np.datetime64, np.datetime64],
    source: Path,
) -> None:
    """InputFileError naming the labels file when a window's start or end is unreadable,
    out of order, or not a timestamp of the data file."""
    where = f"{source}: window {list(window)} of {file.key}"
    for text, stamp in zip(window, times, strict=True):
        if np.isnat(stamp):
            msg = f"{where}: {text!r} is not a timestamp; give ISO 8601 times such as "
            msg += "'2014-04-10 16:15:00.000000'"
            raise InputFileError(msg)
    if times[0] > times[1]:
        msg = f"{where}: it starts after it ends; give [start, end] with start <= end"
        raise InputFileError(msg)
    for text, stamp in zip(window, times, strict=True):
        if not (file.time == stamp).any():
            msg = f"{where}: {text!r} is not a timestamp of {file.path} (its rows run from "
            msg += f"{file.timestamp[0]!r} to {file.timestamp[-1]!r}); start and end a window "
            msg += "at timestamps of the file"
            raise InputFileError(msg)


def load_corpus(
    nab_dir: str | Path, results_dir: str | Path, name: str = DEFAULT_NAME
) -> list[ScoredSeries]:
    """Every data file's results scores and windows; InputFileError naming the bad file."""
    nab_dir = Path(nab_dir)
    check_name(name)
    paths = data_files(nab_dir)
    keys = [path.relative_to(nab_dir / "data").as_posix() for path in paths]
    check_file_names(name, keys)
    check_results_folder(results_dir)
    windows = load_windows(nab_dir)
    check_labelled_files(windows, keys, nab_dir / "data")
    corpus = []
    for path in paths:
        data = read_data(path, nab_dir / "data")
        if data.key not in windows.by_file:
            msg = f"{windows.source}: no entry for {data.key} (give it [] if it has no windows)"
            raise InputFileError(msg)
        results = results_path(results_dir, data.key, name)
        if not results.exists():
            raise InputFileError(missing_results(results, data, nab_dir, results_dir, name, keys))
        scores = read_scores(results, data)
        rows = window_rows(data, windows.get(data.key, []), windows.source)
        corpus.append(ScoredSeries(data.key, scores, rows))
    return corpus


def check_results_folder(results_dir: str | Path) -> None:
    """ConfigError when ``--results`` is missing or not a folder."""
    folder = Path(results_dir)
    if folder.is_dir():
        return
    if folder.exists():
        msg = f"--results: {folder} is a file, not a folder; give the folder that "
        msg += "`sensorcast nab --out` wrote"
    else:
        msg = f"--results: {folder}: no such folder; give the folder that "
        msg += "`sensorcast nab --out` wrote"
    raise ConfigError(msg)


def check_labelled_files(windows: Windows, keys: Sequence[str], data_dir: Path) -> None:
    """InputFileError when the labels name a file that is not in ``data_dir``: scoring
    without it would score part of the corpus as if it were all of it."""
    unknown = sorted(set(windows.by_file) - set(keys))
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        msg = f"{windows.source}: {unknown[0]}{more} not in {data_dir}; put the file there "
        msg += "or remove its entry from the labels"
        raise InputFileError(msg)


def missing_results(
    path: Path,
    data: DataFile,
    nab_dir: Path,
    results_dir: str | Path,
    name: str,
    keys: Sequence[str],
) -> str:
    """The message for a results file that is not there: the detector names that are there
    when ``name`` is not one of them, else how to write it."""
    msg = f"{path}: no such results file (for {data.path}); "
    names = results_names(results_dir, keys)
    if names and name not in names:
        listed = ", ".join(sorted(names))
        give = f"--detector-name {listed}" if len(names) == 1 else "one of them as --detector-name"
        return msg + f"{results_dir} has results named {listed}; give {give}"
    flag = "" if name == DEFAULT_NAME else f" --detector-name {name}"
    return msg + f"write it with `sensorcast nab --data {nab_dir} --out {results_dir}{flag}`"


def results_names(results_dir: str | Path, keys: Sequence[str]) -> set[str]:
    """Every NAME with a ``<NAME>_<file>.csv`` results file for some data file ``key``."""
    names = set()
    for key in keys:
        relative = Path(key)
        folder = Path(results_dir) / relative.parent
        suffix = f"_{relative.name}"
        if folder.is_dir():
            names |= {
                p.name.removesuffix(suffix)
                for p in folder.iterdir()
                if p.name.endswith(suffix) and len(p.name) > len(suffix)
            }
    return names


def read_scores(path: Path, data: DataFile) -> np.ndarray:
    """A results file's anomaly scores, checked row by row against its data file."""
    import pandas as pd

    if path.is_dir():
        msg = f"{path} is a folder; the results of {data.path} must be a file there"
        raise InputFileError(msg)
    if not path.is_file():
        msg = f"{path}: no such results file (for {data.path})"
        raise InputFileError(msg)
    frame = read_text_csv(path, ("timestamp", "anomaly_score"))
    if len(frame) != len(data):
        msg = f"{path}: {len(frame)} rows, but {data.path} has {len(data)}; "
        msg += "a results file needs one row per data row"
        raise InputFileError(msg)
    _check_timestamps(path, frame["timestamp"], data)
    text = frame["anomaly_score"].str.strip()
    scores = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = np.flatnonzero(~((scores >= 0) & (scores <= 1)))  # also NaN and unreadable
    if len(bad):
        i = int(bad[0])
        msg = f"{path}: line {i + 2}: anomaly_score {text.iloc[i]!r} is not a number in [0, 1]"
        raise InputFileError(msg)
    return scores


def _check_timestamps(path: Path, text: pd.Series, data: DataFile) -> None:
    same = np.asarray(text.to_numpy(object) == data.timestamp, bool)
    if same.all():
        return
    parsed = parse_times(text)
    same |= (parsed == data.time) & ~np.isnat(parsed)
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        msg = f"{path}: line {i + 2}: timestamp {text.iloc[i]!r} does not match "
        msg += f"{data.timestamp[i]!r} in {data.path}"
        raise InputFileError(msg)


# -- the command ----------------------------------------------------------------------------


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "nab-score",
        help="score NAB results files (standard, low-FP and low-FN profiles)",
        description="Score a detector's NAB results against labels/combined_windows.json: "
        "one threshold per profile for the whole corpus, normalised so that detecting "
        "nothing scores 0 and every window at its first row scores 100.",
    )
    parser.add_argument("--data", required=True, metavar="NAB_DIR", help="the NAB root folder")
    parser.add_argument(
        "--results", required=True, metavar="RESULTS_DIR", help="the detector's results folder"
    )
    parser.add_argument(
        "--detector-name", default=DEFAULT_NAME, metavar="NAME", help="results file prefix"
    )
    parser.add_argument(
        "--verbose",
        dest="per_file",
        action="store_true",
        help="also print a per-file table (TP, FP, FN, score) for the standard profile",
    )
    parser.set_defaults(run=run_nab_score)


def run_nab_score(args: argparse.Namespace) -> int:
    corpus = load_corpus(args.data, args.results, args.detector_name)
    results = score_corpus(corpus)
    print(report(corpus, results, args.detector_name, per_file=args.per_file))
    return 0


def report(
    corpus: Sequence[ScoredSeries], results: Sequence[ProfileScore], name: str, per_file: bool
) -> str:
    rows = sum(len(f.scores) for f in corpus)
    windows = sum(len(f.windows) for f in corpus)
    lines = [f"NAB scores of {name}: {len(corpus)} files, {rows} rows, {windows} windows", ""]
    lines.append(f"{'profile':<20} {'score':>8}  threshold")
    for result in results:
        lines.append(
            f"{result.profile.name:<20} {_number(result.normalized()):>8}  {_threshold(result)}"
        )
    lines += ["", "per category (at the corpus-wide thresholds)"]
    lines.append(f"{'category':<24}{'files':>6}{'windows':>8}" + _columns(results, 20))
    for category in sorted({f.category for f in corpus}):
        files = [f for f in corpus if f.category == category]
        cells = "".join(f"{_number(r.normalized(category)):>20}" for r in results)
        count = sum(len(f.windows) for f in files)
        lines.append(f"{category or '.':<24}{len(files):>6}{count:>8}{cells}")
    if per_file:
        lines += ["", f"per file ({STANDARD.name} profile)", _file_table(results)]
    return "\n".join(lines)


def _columns(results: Sequence[ProfileScore], width: int) -> str:
    return "".join(f"{r.profile.name:>{width}}" for r in results)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _threshold(result: ProfileScore) -> str:
    if result.detects_nothing:
        return "above every score (detects nothing)"
    return f"{result.threshold:.10g}"


def _file_table(results: Sequence[ProfileScore]) -> str:
    standard = next(r for r in results if r.profile == STANDARD)
    width = max((len(f.name) for f in standard.files), default=4)
    lines = [f"{'file':<{width}} {'TP':>4} {'FP':>5} {'FN':>4} {'score':>9}"]
    for f in standard.files:
        lines.append(f"{f.name:<{width}} {f.tp:>4} {f.fp:>5} {f.fn:>4} {f.score:>9.4f}")
    return "\n".join(lines)
