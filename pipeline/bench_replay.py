"""``bench --scenario replay``: readings/s of ``sensorcast replay`` against per-stream River.

sensorcast runs exactly what ``sensorcast replay LOG --out FILE.csv`` runs: the CSV
source (opening the files and parsing are timed), the default model, the default
detector and a CSV file sink, one BLAS thread; and, over the synthetic streams,
the same with ``--out FILE.parquet`` and ``--out FILE.arrow``. The baseline is what a
River user would write: per stream a SNARIMAX forecaster (the parameters of
``river-snarimax``) and a ``MinMaxScaler | HalfSpaceTrees`` detector, predict then
learn, a CSV row per reading. River is far slower, so it gets a subsample of the same
parsed log: whole streams, the first ones, up to ``river_readings`` readings (at least one
stream); its rate is extrapolated as readings/s. Its CSV parsing is not timed,
which only flatters the baseline.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench_report import Row, Target, repeat

REPLAY_TARGET = Target(value=1_000_000, ratio=20)
SYNTHETIC_T0 = 1_600_000_000  # epoch seconds of the synthetic logs' first step
RIVER_WARMUP = 25  # values SNARIMAX(p=2, d=1, m=24, sp=1) needs before it forecasts


@dataclass(frozen=True, slots=True)
class ReplaySize:
    streams: int = 1_000
    steps: int = 500
    river_readings: int = 10_000  # River's budget: whole streams up to this many readings


def write_synthetic(path: Path, streams: int, steps: int, seed: int = 0) -> int:
    """A long-format log of ``streams`` smooth noisy signals, one step a minute; rows."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]  # (T, 1)
    phase = rng.uniform(0, 2 * np.pi, streams)[None, :]  # (1, S)
    values = 20 + 5 * np.sin(2 * np.pi * t / 1440 + phase) + rng.normal(0, 0.2, (steps, streams))
    frame = pd.DataFrame({
        "timestamp": np.repeat(SYNTHETIC_T0 + 60 * np.arange(steps), streams),
        "stream": np.tile([f"site-{s % 97}/dev-{s}/temp" for s in range(streams)], steps),
        "value": values.ravel().round(3),  # (T*S,) time-major: streams interleaved
    })  # fmt: skip
    frame.to_csv(path, index=False)
    return len(frame)


def nab_data(folder: Path) -> Path:
    """Where the series are: a NAB root's ``data/``, or any other folder itself."""
    return folder / "data" if (folder / "data").is_dir() else folder


def nab_files(folder: Path) -> list[Path]:
    """The CSV files of a NAB root (its ``data/``) or of any folder of ``timestamp,value``
    files (a folder whose name ends in ``.csv`` is not one)."""
    return sorted(path for path in nab_data(folder).rglob("*.csv") if path.is_file())


# -- sensorcast ---------------------------------------------------------------------------


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """The issue's budget: one core for the pipeline (OpenBLAS would take both); the
    caller's thread counts come back afterwards (the bench may run inside tests)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


STAGES = ("opening", "reading", "engine", "writing", "closing")


@dataclass(frozen=True, slots=True)
class Replayed:
    """One timed replay: its rate, and where its wall seconds went (``STAGES``, plus
    ``total``)."""

    rate: float
    readings: int
    seconds: dict[str, float]


class Clocked:
    """Forwards every attribute to ``inner``; the calls named in ``stages`` ({method:
    stage}) add their wall seconds to ``seconds[stage]``. A few clock readings a tick,
    so that a bench run says where its time went without a profiler's overhead."""

    def __init__(self, inner: Any, stages: dict[str, str], seconds: dict[str, float]) -> None:
        self._inner, self._stages, self._seconds = inner, stages, seconds

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        stage = self._stages.get(name)
        if stage is None:
            return attr

        def clocked(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._seconds[stage] += time.perf_counter() - started

        return clocked


def sensorcast_rate(paths: Sequence[Path], out: Path) -> Replayed:
    """The whole replay, timed: parse, window, model, detector, CSV out."""
    from connectors.csv_source import CsvSource
    from connectors.file_sink import open_file_sink
    from models import load_forecaster
    from pipeline.config import PipelineConfig
    from pipeline.detect import default_detector
    from pipeline.engine import Engine
    from pipeline.replay import run_to_end

    config = PipelineConfig(report_dropped=True)  # replay's defaults
    engine = Engine(load_forecaster("default", config.interval), default_detector(), config)
    seconds = dict.fromkeys(STAGES, 0.0)
    started = time.perf_counter()
    source = CsvSource(list(paths))  # timed too: it reads the head of every file
    seconds["opening"] = time.perf_counter() - started
    clocked_engine: Any = Clocked(engine, {"process": "engine", "flush": "engine"}, seconds)
    run_to_end(
        clocked_engine,  # stands in for the engine: every attribute forwarded
        Clocked(source, {"poll": "reading", "close": "closing"}, seconds),
        [Clocked(open_file_sink(out), {"add": "writing", "close": "closing"}, seconds)],
        False,
        flush_at_end=True,
    )
    seconds["total"] = time.perf_counter() - started
    readings = engine.stats.readings
    return Replayed(readings / seconds["total"], readings, seconds)


def stages_note(runs: Sequence[Replayed]) -> str:
    """Where the median run's time went, in shares of it."""
    middle = sorted(runs, key=lambda run: run.rate)[len(runs) // 2]
    total = middle.seconds["total"]
    shares = [f"{stage} {middle.seconds[stage] / total:.0%}" for stage in STAGES]
    other = 1 - sum(middle.seconds[stage] for stage in STAGES) / total
    return f"sensorcast's time in its median run: {', '.join(shares)}, the rest {other:.0%}."


# -- River --------------------------------------------------------------------------------


def river_sample(paths: Sequence[Path], budget: int) -> list[tuple[str, float, float]]:
    """(stream, time, value) in reading order, of whole streams: the first streams (in order
    of appearance) whose readings add up to ``budget``, at least one. Whole streams, so
    that each River model's construction is spread over as many readings as in the full
    log, and the extrapolated rate is fair to River."""
    from connectors.csv_source import CsvSource

    rows: list[tuple[str, float, float]] = []
    source = CsvSource(list(paths))
    while (batch := source.poll(65_536, 0.0)) is not None:
        keys = [batch.streams[i] for i in batch.stream_index.tolist()]
        rows += zip(keys, batch.timestamp.tolist(), batch.value.tolist(), strict=True)
    source.close()
    counts: dict[str, int] = {}
    for key, _, _ in rows:
        counts[key] = counts.get(key, 0) + 1
    chosen: set[str] = set()
    total = 0
    for key, n in counts.items():  # dicts keep the order of first appearance
        if chosen and total + n > budget:
            break
        chosen.add(key)
        total += n
    return [row for row in rows if row[0] in chosen]


class RiverStream:
    """One stream's River pipeline: SNARIMAX forecasts, HalfSpaceTrees scores."""

    def __init__(self) -> None:
        from river import anomaly, linear_model, optim, preprocessing, time_series

        from models.river_baselines import DEFAULTS

        p = DEFAULTS["snarimax"]
        regressor = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(p["learning_rate"]), intercept_lr=0.0, clip_gradient=1.0
        )
        orders = {k: p[k] for k in ("p", "d", "q", "m", "sp", "sd", "sq")}
        self.forecaster = time_series.SNARIMAX(**orders, regressor=regressor)
        self.detector = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
        self.seen = 0
        self.forecast = math.nan

    def step(self, x: float) -> tuple[float, float, float]:
        """(forecast made a step ago, anomaly score, forecast for the next step)."""
        judged_by = self.forecast
        features = {"x": x}
        score = float(self.detector.score_one(features))
        self.detector.learn_one(features)
        self.forecaster.learn_one(x)
        self.seen += 1
        ready = self.seen >= RIVER_WARMUP
        self.forecast = float(self.forecaster.forecast(horizon=1)[0]) if ready else x
        return judged_by, score, self.forecast


def river_rate(sample: Sequence[tuple[str, float, float]], out: Path) -> float:
    """Readings/s of fresh per-stream River pipelines over ``sample``, rows to ``out``."""
    streams: dict[str, RiverStream] = {}
    started = time.perf_counter()
    with open(out, "w", encoding="utf-8") as f:
        f.write("stream,timestamp,value,forecast,anomaly_score,next_forecast\n")
        for key, t, x in sample:
            stream = streams.get(key) or streams.setdefault(key, RiverStream())
            judged_by, score, forecast = stream.step(x)
            f.write(f"{key},{t},{x},{judged_by},{score},{forecast}\n")
    return len(sample) / (time.perf_counter() - started)


def warm_river(out: Path) -> None:
    """River's imports and a first pipeline's construction, before the timed runs, as
    sensorcast's warm-up run does for it: the first timed run used to pay them (up to half
    of its time at 10,000 readings), which dragged that run's River rate down."""
    river_rate([("warm-up", float(t), 20.0 + t % 7) for t in range(2 * RIVER_WARMUP)], out)


# -- the scenario -------------------------------------------------------------------------


def measure(
    name: str,
    paths: Sequence[Path],
    runs: int,
    size: ReplaySize,
    folder: Path,
    output: str = "csv",
) -> list[Row]:
    """One row: sensorcast writing ``output`` (csv, parquet or arrow) against River writing
    CSV."""
    sample = river_sample(paths, size.river_readings)
    streams = len({key for key, _, _ in sample})
    out = folder / f"sensorcast.{output}"
    readings = sensorcast_rate(paths, out).readings  # warm-up: imports, caches
    warm_river(folder / "river.csv")
    replays: list[Replayed] = []

    def once() -> tuple[float, float]:
        # each timed run writes a new file, as a replay to a new path does: replacing the
        # last run's output (60-100 MB) cost ~4% of a run in unlinking it
        out.unlink(missing_ok=True)
        (folder / "river.csv").unlink(missing_ok=True)
        replays.append(sensorcast_rate(paths, out))
        return replays[-1].rate, river_rate(sample, folder / "river.csv")

    ours, river = repeat(runs, once)
    note = (
        f"{name}: sensorcast over all {readings:,} readings; River over {len(sample):,} "
        f"readings of {streams} stream(s), extrapolated as readings/s. {stages_note(replays)}"
    )
    extra = {"readings": readings, "river_readings": len(sample),
             "stage_seconds": [run.seconds for run in replays]}  # fmt: skip
    return [
        Row("replay", f"{name} throughput", "readings/s", ours, river,
            "per-stream River SNARIMAX + HalfSpaceTrees, same data, same run",
            REPLAY_TARGET, note, extra),
    ]  # fmt: skip


def run(runs: int, size: ReplaySize, nab: Path | None) -> list[Row]:
    with one_core(), tempfile.TemporaryDirectory(prefix="sensorcast-bench-") as tmp:
        folder = Path(tmp)
        rows = []
        if nab is not None:
            rows += measure("NAB", nab_files(nab), runs, size, folder)
        log = folder / "synthetic.csv"
        write_synthetic(log, size.streams, size.steps)
        name = f"{size.streams:,} synthetic streams"
        rows += measure(name, [log], runs, size, folder)
        rows += measure(f"{name}, Parquet out", [log], runs, size, folder, "parquet")
        rows += measure(f"{name}, Arrow out", [log], runs, size, folder, "arrow")
        return rows
