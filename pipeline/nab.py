"""``sensorcast nab``: the NAB corpus through the real pipeline, one results file per series.

Every ``NAB_DIR/data/**/*.csv`` (``timestamp,value``) is its own stream, named by its
path under ``data/`` (``realKnownCause/machine_temperature_system_failure``), and all of
them go through ONE engine (``window=0``, ``report_dropped=True``): each tick feeds the
next ``chunk`` rows of every series at once, so the model runs batched across series
(``(B, T)`` with B series and T <= chunk steps) instead of once per file. One pass,
predict then learn, one parameter set for every file; the labels are not read while
detecting.

The engine returns a row for every reading in reading order, steps and dropped
readings alike (NAB files repeat timestamps: such rows are dropped by the pipeline and
score 0). ``RESULTS_DIR/<category>/<NAME>_<file>.csv`` then has the columns
``timestamp,value,anomaly_score,label``: timestamp and value exactly as in the data
file, one row per data row in the data's order, scores in [0, 1] (NaN -> 0). ``label``
is filled from ``labels/combined_windows.json`` (1 inside a window) only after every
score is final, for the reader's convenience; it is 0 when there are no labels.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.detect import default_detector
from pipeline.engine import Engine
from pipeline.errors import ConfigError, InputFileError
from pipeline.protocols import Detector
from pipeline.types import ReadingBatch, Reason, Rejection, stream_key_problem
from pipeline.writable import writable_folder

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NAB_CHUNK = 4096  # rows of every series per engine tick: T of the (B, T) model call
DEFAULT_NAME = "sensorcast"
MAX_FILE_NAME_BYTES = 255  # NAME_MAX of Linux file systems: one path component


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "nab",
        help="run the NAB corpus through the pipeline and write NAB results files",
        description="Run every NAB_DIR/data/**/*.csv through the streaming pipeline (one pass, "
        "no look-ahead, one engine for all series) and write "
        "RESULTS_DIR/<category>/<NAME>_<file>.csv with timestamp,value,anomaly_score,label.",
    )
    parser.add_argument("--data", required=True, metavar="NAB_DIR", help="the NAB root folder")
    parser.add_argument("--out", required=True, metavar="RESULTS_DIR", help="results folder")
    parser.add_argument(
        "--detector-name", default=DEFAULT_NAME, metavar="NAME", help="results file prefix"
    )
    parser.add_argument("--model", default="default", help="default, persistence or a checkpoint")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.set_defaults(run=run_nab)


# -- the corpus -----------------------------------------------------------------------------


BLANK, NOT_A_NUMBER = 1, 2  # DataFile.problem: what is wrong with a row's value cell
NAN_SPELLINGS = {"nan", "+nan", "-nan"}  # numbers, though not finite: the pipeline drops them


@dataclass(frozen=True, slots=True)
class DataFile:
    """One NAB series as written: a row per data row, in the file's order."""

    path: Path
    key: str  # path under data/, e.g. "realKnownCause/machine_temperature_system_failure.csv"
    timestamp: np.ndarray  # (n,) object: the text as written
    time: np.ndarray  # (n,) datetime64[ns], NaT where unreadable
    value_text: np.ndarray  # (n,) object: the text as written
    value: np.ndarray  # (n,) float64, NaN where unreadable
    problem: np.ndarray  # (n,) int8: 0, BLANK or NOT_A_NUMBER (text that is not a number)

    @property
    def stream(self) -> str:
        return self.key.removesuffix(".csv")

    @property
    def seconds(self) -> np.ndarray:
        """(n,) float64 epoch seconds (naive times are UTC), NaN where unreadable."""
        ns = self.time.astype(np.int64).astype(np.float64)
        return np.where(np.isnat(self.time), np.nan, ns / 1e9)

    def __len__(self) -> int:
        return len(self.timestamp)


def data_files(nab_dir: str | Path) -> list[Path]:
    """Every ``NAB_DIR/data/**/*.csv``, sorted; InputFileError naming the folder if none."""
    data = Path(nab_dir) / "data"
    if not data.is_dir():
        msg = f"{nab_dir}: no data/ folder; give the NAB root (with data/<category>/<file>.csv)"
        raise InputFileError(msg)
    found = sorted(p for p in data.rglob("*.csv") if p.is_file())
    if not found:
        msg = f"{data}: no *.csv files; expected data/<category>/<file>.csv"
        raise InputFileError(msg)
    return found


def read_data(path: Path, data_dir: Path) -> DataFile:
    """A ``timestamp,value`` file, every cell kept as text beside its parsed form;
    InputFileError naming the file when it has no rows."""
    import pandas as pd  # here, not at the top: every other command starts without it

    frame = read_text_csv(path, ("timestamp", "value"))
    if frame.empty:
        msg = f"{path}: no rows below its header; give it a timestamp,value row per reading "
        msg += "or remove it from data/"
        raise InputFileError(msg)
    text = frame["timestamp"].to_numpy(object)
    value_text = frame["value"].to_numpy(object)
    value = pd.to_numeric(frame["value"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    spelled = frame["value"].str.strip().str.lower().to_numpy(object)
    blank = spelled == ""
    unreadable = np.isnan(value) & ~blank & ~np.isin(spelled, list(NAN_SPELLINGS))
    problem = np.select([blank, unreadable], [BLANK, NOT_A_NUMBER], 0).astype(np.int8)
    return DataFile(
        path=path,
        key=path.relative_to(data_dir).as_posix(),
        timestamp=text,
        time=parse_times(frame["timestamp"]),
        value_text=value_text,
        value=value,
        problem=problem,
    )


def read_text_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` of a CSV as text (no NA guessing); InputFileError naming the file."""
    import pandas as pd

    from connectors.csv_formats import read_error

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        msg = f"{path}: empty file; expected a header with {','.join(columns)}, then its rows"
        raise InputFileError(msg) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise read_error(path, exc) from exc
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the first column as index
        msg = f"{path}: line {_first_long_row(path, len(frame.columns))}: its rows have more "
        msg += f"fields than its header ({','.join(map(str, frame.columns))}); remove the extra "
        msg += "fields or name them in the header"
        raise InputFileError(msg)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        msg = f"{path}: no {', '.join(missing)} column; expected a header with "
        msg += f"{','.join(columns)} (found {','.join(frame.columns)})"
        raise InputFileError(msg)
    return frame


def _first_long_row(path: Path, width: int) -> int:
    """The physical line of the first row with more than ``width`` fields."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            if len(row) > width:
                return reader.line_num
    return 2


def parse_times(text: pd.Series) -> np.ndarray:
    """(n,) datetime64[ns] of ISO 8601 text (naive = UTC), NaT where unreadable."""
    import pandas as pd

    stamp = pd.to_datetime(text.str.strip(), format="ISO8601", errors="coerce", utc=True)
    return stamp.dt.tz_convert(None).to_numpy("datetime64[ns]")


# -- detection ------------------------------------------------------------------------------


def build_detector() -> Detector:
    """The detector every series is scored with."""
    return default_detector()


@dataclass
class NabRun:
    """What a run scored: a score per data row of every file, and the engine's counters."""

    files: list[DataFile]
    scores: list[np.ndarray]  # (n,) float64 in [0, 1] per file, in the data's order
    seconds: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    first_dropped: dict[str, str] = field(default_factory=dict)  # reason -> "file:line"
    blank: int = 0  # value cells left empty: missing values, not readings


def detect(
    files: Sequence[DataFile], engine: Engine, chunk: int = NAB_CHUNK, progress: bool = False
) -> NabRun:
    """Score every row of every file with one engine, the files' next ``chunk`` rows per tick.

    ``engine`` must have ``window=0`` and ``report_dropped=True`` so that every reading
    comes back as exactly one row, in reading order.
    """
    if engine.config.window != 0 or engine.config.lateness != 0 or not engine.config.report_dropped:
        msg = "nab needs an engine with window=0, lateness=0 and report_dropped=True"
        raise ConfigError(msg)
    streams = tuple(_stream_name(f) for f in files)
    seconds = [f.seconds for f in files]
    flat = np.zeros(sum(len(f) for f in files))  # every file's rows, end to end
    bar = _bar(progress, len(flat))
    started = time.perf_counter()
    try:
        for batch, positions in _ticks(files, streams, seconds, chunk):
            verdicts = engine.process(batch)
            _check_rows(batch, verdicts.stream, verdicts.timestamp)
            flat[positions] = np.clip(np.nan_to_num(verdicts.anomaly_score, nan=0.0), 0.0, 1.0)
            if bar is not None:
                bar.update(len(batch) + batch.missing + len(batch.rejections))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    first = _first_dropped(files, engine.stats.first_rejection)
    scores = np.split(flat, np.cumsum([len(f) for f in files])[:-1])
    return NabRun(
        list(files), scores, elapsed, dict(engine.stats.dropped), first, engine.stats.missing
    )


def _first_dropped(files: Sequence[DataFile], first: Mapping[str, Rejection]) -> dict[str, str]:
    """``reason -> "<data file>:<line>"`` of the first reading dropped for each reason."""
    paths = {f.stream: f.path for f in files}
    where = {}
    for reason, rejection in first.items():
        path = paths.get(rejection.stream or "")
        where[reason] = f"{path}:{rejection.seq}" if path is not None else str(rejection)
    return where


def _stream_name(file: DataFile) -> str:
    problem = stream_key_problem(file.stream)
    if problem:
        msg = f"{file.path}: its path under data/ cannot name a stream ({problem})"
        raise InputFileError(msg)
    return file.stream


def _ticks(
    files: Sequence[DataFile], streams: tuple[str, ...], seconds: list[np.ndarray], chunk: int
) -> Iterator[tuple[ReadingBatch, np.ndarray]]:
    """Batches holding rows [k * chunk, (k + 1) * chunk) of every file still running, with
    each reading's position in the files' rows laid end to end. A value cell that is
    blank is a missing value and one that is not a number a rejection, as in a replay:
    neither becomes a reading (their rows keep a score of 0)."""
    offsets = np.cumsum([0] + [len(f) for f in files])
    longest = max((len(f) for f in files), default=0)
    for lo in range(0, longest, chunk):
        spans = [(i, lo, min(lo + chunk, len(f))) for i, f in enumerate(files) if len(f) > lo]
        index = np.concatenate([np.full(hi - lo, i, np.int32) for i, lo, hi in spans])
        rows = np.concatenate([np.arange(lo, hi) for _, lo, hi in spans])
        problem = np.concatenate([files[i].problem[lo:hi] for i, lo, hi in spans])
        keep = problem == 0
        bad = np.flatnonzero(problem == NOT_A_NUMBER)
        rejections = tuple(_not_a_number(files[index[k]], int(rows[k])) for k in bad)
        yield (
            ReadingBatch(
                streams=streams,
                stream_index=index[keep],
                timestamp=np.concatenate([seconds[i][lo:hi] for i, lo, hi in spans])[keep],
                value=np.concatenate([files[i].value[lo:hi] for i, lo, hi in spans])[keep],
                seq=rows[keep] + 2,  # the physical line: the header is line 1
                partition="nab",
                rejections=rejections,
                missing=int(np.count_nonzero(problem == BLANK)),
            ),
            offsets[index[keep]] + rows[keep],
        )


def _not_a_number(file: DataFile, row: int) -> Rejection:
    detail = f"value {file.value_text[row]!r} is not a number"
    return Rejection(Reason.BAD_VALUE, detail, "nab", row + 2, file.stream)


def _check_rows(batch: ReadingBatch, stream: np.ndarray, timestamp: np.ndarray) -> None:
    """The engine's promise this command relies on: one row per reading, in reading order."""
    expected = np.asarray(batch.streams, dtype=object)[batch.stream_index]
    if not (
        len(stream) == len(batch)
        and np.array_equal(stream, expected)
        and np.array_equal(timestamp, batch.timestamp, equal_nan=True)
    ):
        msg = "the engine did not return one row per reading in reading order"
        raise RuntimeError(msg)


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=" rows", unit_scale=True, desc="nab", file=sys.stderr)


# -- results files --------------------------------------------------------------------------


def results_path(results_dir: str | Path, key: str, name: str) -> Path:
    """``RESULTS_DIR/<category>/<NAME>_<file>.csv`` for the data file ``key``.

    >>> results_path("out", "realTweets/Twitter_volume_AAPL.csv", "sensorcast").as_posix()
    'out/realTweets/sensorcast_Twitter_volume_AAPL.csv'
    """
    relative = Path(key)
    return Path(results_dir) / relative.parent / f"{name}_{relative.name}"


def check_name(name: str) -> str:
    """``--detector-name`` as a results file prefix: non-empty, no slashes, no NUL."""
    if not name or any(c in name for c in "/\\\x00") or name in (".", ".."):
        msg = f"--detector-name: {name!r} must be a non-empty file-name prefix without slashes"
        raise ConfigError(msg)
    return name


def check_file_names(name: str, keys: Sequence[str]) -> None:
    """ConfigError when ``<NAME>_<file>.csv`` of some data file is too long for a file name."""
    longest = max(keys, key=lambda k: len(os.fsencode(Path(k).name)), default=None)
    if longest is None:
        return
    file = results_path(".", longest, name).name
    size = len(os.fsencode(file))
    if size > MAX_FILE_NAME_BYTES:
        spare = MAX_FILE_NAME_BYTES - len(os.fsencode(f"_{Path(longest).name}"))
        msg = f"--detector-name: results file names would be {size} bytes long ({file[:40]}...), "
        msg += f"over the {MAX_FILE_NAME_BYTES}-byte limit; give a name of at most "
        msg += f"{max(spare, 0)} bytes"
        raise ConfigError(msg)


def check_out(out: str | Path, nab_dir: str | Path) -> None:
    """ConfigError when ``--out`` is ``NAB_DIR/data`` or inside it: results would overwrite
    data files whose names clash, and the next run would read them as data."""
    data = (Path(nab_dir) / "data").resolve()
    target = Path(out).resolve()
    if target == data or data in target.parents:
        where = "is the data folder" if target == data else "is inside the data folder"
        msg = f"--out: {out} {where} {Path(nab_dir) / 'data'}, where results would overwrite "
        msg += "data files and be read as data next time; give a folder outside it"
        raise ConfigError(msg)


def check_results_paths(run_files: Sequence[DataFile], results_dir: Path, name: str) -> None:
    """Before the pass: every results file's folder is writable and no results path is a
    folder."""
    for file in run_files:
        path = results_path(results_dir, file.key, name)
        writable_folder(path.parent, "--out")
        if path.is_dir():
            msg = f"--out: {path} is a folder, where the results of {file.path} go; "
            msg += "move it away or give another --out"
            raise ConfigError(msg)


def write_results(run: NabRun, labels: list[np.ndarray], results_dir: Path, name: str) -> None:
    """Every results file, each replaced whole: an interrupted run leaves each file either
    as it was or complete."""
    import pandas as pd

    for file, score, label in zip(run.files, run.scores, labels, strict=True):
        path = results_path(results_dir, file.key, name)
        frame = pd.DataFrame(
            {
                "timestamp": file.timestamp,
                "value": file.value_text,
                "anomaly_score": score,
                "label": label,
            }
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_whole(path, frame)
        except OSError as exc:
            msg = f"--out: cannot write {path} ({exc.strerror or exc}); "
            msg += "give a folder you can write to"
            raise ConfigError(msg) from exc


def replace_whole(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as CSV at ``path``: written to a temporary file beside it, then renamed over
    it, so ``path`` is never half-written; the temporary file is removed on any failure.
    Not ``writable.replace_whole``: its temporary name holds the file's, and a results
    file's name may already be the 255 bytes a name can have."""
    tmp = path.with_name(f".sensorcast-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as handle:
            frame.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: no temporary file is left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# -- labels: read only after detection has finished ------------------------------------------


def window_labels(nab_dir: Path, files: Sequence[DataFile]) -> list[np.ndarray]:
    """(n,) int8 per file: 1 inside a labelled window, else 0 (all 0 without usable labels).

    Called only once every score is final: the labels never reach the detector.
    """
    from pipeline.nab_score import load_windows, window_rows

    labels = [np.zeros(len(f), np.int8) for f in files]
    try:
        windows = load_windows(nab_dir)
        for file, label in zip(files, labels, strict=True):
            for start, end in window_rows(file, windows.get(file.key, []), windows.source):
                label[start : end + 1] = 1
    except InputFileError as exc:
        log.warning("label column left at 0: %s", exc)
        return [np.zeros(len(f), np.int8) for f in files]
    return labels


# -- the command ----------------------------------------------------------------------------


def run_nab(args: argparse.Namespace) -> int:
    from models import load_forecaster

    name = check_name(args.detector_name)
    nab_dir = Path(args.data)
    check_out(args.out, nab_dir)
    paths = data_files(nab_dir)
    files = [read_data(path, nab_dir / "data") for path in paths]
    check_file_names(name, [f.key for f in files])
    config = PipelineConfig(window=0, report_dropped=True)
    engine = Engine(load_forecaster(args.model, config.interval), build_detector(), config)
    out = writable_folder(args.out, "--out")  # before the pass, not after
    check_results_paths(files, out, name)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    run = detect(files, engine, progress=progress)
    # detection is over: only now are the labels read, to fill the label column
    labels = window_labels(nab_dir, files)
    write_results(run, labels, out, name)
    print(summary(run, out))
    return 0


def summary(run: NabRun, out: Path) -> str:
    rows = sum(len(f) for f in run.files)
    rate = rows / run.seconds if run.seconds > 0 else 0.0
    dropped = sum(run.dropped.values())
    reasons = ", ".join(_dropped(run, label) for label in sorted(run.dropped))
    text = f"nab: {len(run.files)} files, {rows} rows in {run.seconds:.2f} s ({rate:,.0f} rows/s)"
    text += f"; {dropped} dropped by the pipeline, scored 0" + (f": {reasons}" if dropped else "")
    text += f"; {run.blank} empty values, scored 0" if run.blank else ""
    return text + f"; results in {out}"


def _dropped(run: NabRun, label: str) -> str:
    """``late 11 (first at data/x.csv:10151)``: a reason's count and its first reading."""
    first = run.first_dropped.get(label)
    return f"{label} {run.dropped[label]}" + (f" (first at {first})" if first else "")
