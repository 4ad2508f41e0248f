"""``sensorcast evaluate``: several models over the same logs, strictly online, scored alike.

Each model replays the logs through the real engine (windowing, the model, the
detector), one pass, predict then learn: step t is judged by the forecast made
at step t-1, which never saw it. Every step's value, forecast, interval and
flag is kept and scored per stream:

* MAE and RMSE of the forecasts;
* MASE: the model's MAE over persistence's (the previous step's value) on the
  same steps, the ones with a forecast from the model and a previous value;
  below 1 beats persistence, and persistence itself scores exactly 1;
* coverage: the share of those steps inside the interval (90% by default; a
  step without an interval yet counts as not covered);
* steps/s: steps over the wall seconds of that model's replay (reading included).

``--score-from 0.2`` leaves each stream's first 20% of steps out of the scores
(the models still learn from them), and ``--tune`` fits the River baselines'
parameters on exactly that leading 20%, so a tuned baseline is scored on steps
it was not tuned on.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.detect import default_detector
from pipeline.engine import Engine, EngineStats
from pipeline.errors import ConfigError, InputFileError, ModelLoadError
from pipeline.log_specs import check_columns, empty_range
from pipeline.protocols import Forecaster
from pipeline.replay import (
    add_input_arguments,
    csv_source,
    input_files,
    pipeline_config,
    run_to_end,
)
from pipeline.report import Panel, Table, html_page
from pipeline.summary import counted, run_summary
from pipeline.types import Reading, ReadingBatch, StreamKey, VerdictBatch
from pipeline.writable import not_an_input, probe_file, replace_whole

DEFAULT_MODELS = "default,persistence,river-holtwinters,river-snarimax"
PLOT_STREAMS = 6  # streams plotted in the report


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score models on CSV logs (MAE, RMSE, MASE, interval coverage)",
        description="Replay CSV logs through the pipeline once per model, strictly online "
        "(predict, then learn), and score every model on the same steps.",
    )
    parser.add_argument("paths", nargs="+", metavar="LOG", help="CSV files or directories")
    add_input_arguments(parser)
    parser.add_argument("--window", default="0", help="tumbling window, e.g. 60s; 0 = per reading")
    parser.add_argument("--lateness", default="0", help="allowed out-of-order lateness, e.g. 30s")
    parser.add_argument("--interval", type=float, default=0.9, help="interval coverage (0.9)")
    parser.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"comma-separated models ({DEFAULT_MODELS})"
    )
    parser.add_argument(
        "--score-from",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="leave each stream's first FRACTION of steps out of the scores (0)",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="tune the River baselines on the first 20%% of each stream's steps "
        "(pair with --score-from 0.2)",
    )
    parser.add_argument(
        "--season",
        type=int,
        default=24,
        metavar="STEPS",
        help="the River baselines' seasonal period in steps (24: a day of hourly steps)",
    )
    parser.add_argument("--report", metavar="FILE.html", help="write an HTML report with plots")
    parser.add_argument("--csv", metavar="FILE.csv", help="write the metrics table as CSV")
    parser.add_argument(
        "--plot-steps", type=int, default=500, metavar="N", help="steps per plot (last N, 500)"
    )
    parser.set_defaults(run=run_evaluate)


# -- collecting every step ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamTrace:
    """Every step of one stream under one model, in time order (arrays ``(n,)``)."""

    timestamp: np.ndarray
    value: np.ndarray
    forecast: np.ndarray  # made at the previous step; NaN at the first
    lower: np.ndarray
    upper: np.ndarray
    is_anomaly: np.ndarray


_TRACED = ("timestamp", "value", "forecast", "lower", "upper", "is_anomaly")


class Trace:
    """A sink that keeps each step's value, forecast, interval and flag."""

    def __init__(self) -> None:
        self._batches: list[VerdictBatch] = []

    def add(self, verdicts: VerdictBatch) -> None:
        steps = verdicts.dropped == 0  # rows of dropped readings are not steps
        if steps.any():
            self._batches.append(verdicts if steps.all() else verdicts.take(steps))

    def flush(self) -> None:
        """Nothing to deliver: the trace lives in memory."""

    def close(self) -> None:
        """Nothing to release."""

    def streams(self) -> dict[str, StreamTrace]:
        """Per stream, its steps in the order they were made (which is time order)."""
        every = VerdictBatch.concat(self._batches)
        keys = every.stream.astype(str)
        order = np.argsort(keys, kind="stable")
        names, first = np.unique(keys[order], return_index=True)
        bounds = [*first.tolist(), len(order)]
        traces = {}
        for i, name in enumerate(names.tolist()):
            rows = order[bounds[i] : bounds[i + 1]]
            traces[name] = StreamTrace(*(getattr(every, c)[rows] for c in _TRACED))
        return traces


@dataclass(frozen=True, slots=True)
class ModelRun:
    model: str  # as named in --models
    traces: dict[str, StreamTrace]
    steps: int
    seconds: float
    stats: EngineStats
    notes: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.nan


def replay_model(args: argparse.Namespace, model: str, forecaster: Forecaster) -> ModelRun:
    """The logs through an engine on ``forecaster``, one strictly online pass."""
    config = pipeline_config(args)
    warm_up(forecaster, config)
    engine = Engine(forecaster, default_detector(), config)
    trace = Trace()
    seconds = run_to_end(engine, csv_source(args, args.paths), [trace], None, flush_at_end=True)
    notes = []
    fallbacks = getattr(forecaster, "fallbacks", 0)
    if fallbacks:
        notes.append(
            f"{fallbacks} forecasts fell back to the last value (model raised or diverged)"
        )
    return ModelRun(model, trace.streams(), engine.stats.steps, seconds, engine.stats, tuple(notes))


def warm_up(forecaster: Forecaster, config: PipelineConfig) -> None:
    """Pay one-time costs (loading compiled kernels, a model's first call) before timing."""
    key = StreamKey("warm-up/stream/value")
    batch = ReadingBatch.from_readings([Reading(key, 60.0 * i, float(i % 5)) for i in range(64)])
    engine = Engine(forecaster, default_detector(), config)
    engine.process(batch)
    engine.flush()


# -- models ----------------------------------------------------------------------------------


def parse_models(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        msg = f"--models: {text!r} names no model; e.g. --models {DEFAULT_MODELS}"
        raise ConfigError(msg)
    seen: dict[str, str] = {}
    for name in names:
        if (first := seen.get(key := _identity(name))) is not None:
            same = f"{name} twice" if first == name else f"one model twice, as {first} and {name}"
            msg = f"--models {text}: names {same}; name each model once"
            raise ConfigError(msg)
        seen[key] = name
    return names


def _identity(name: str) -> str:
    """What ``name`` runs: a built-in's name, or a checkpoint's metadata file however it is
    spelt (``ck``, ``ck/``, ``ck/model.json`` and ``ck/model.safetensors`` are one)."""
    from models import BUILTIN

    if name in BUILTIN:
        return name
    from models.checkpoint import paths_of

    return str(paths_of(name)[1].resolve())


def load_model(name: str, coverage: float) -> Forecaster:
    from models import load_forecaster

    try:
        return load_forecaster(name, coverage)
    except ModelLoadError as exc:
        text = str(exc).removeprefix("--model: ")
        msg = f"--models: {text}"
        raise ModelLoadError(msg) from exc


def river_variant(
    forecaster: Forecaster, season: int, series: list[np.ndarray] | None
) -> tuple[Forecaster, tuple[str, ...]]:
    """A River baseline with the stream's season, tuned on ``series`` when given."""
    from models.river_baselines import TUNE_FRACTION, RiverForecaster, tune

    if not isinstance(forecaster, RiverForecaster):
        return forecaster, ()
    fixed = {"seasonality" if forecaster.kind == "holtwinters" else "m": season}
    if series is None:
        return RiverForecaster(forecaster.kind, **{**forecaster.params, **fixed}), ()
    params = tune(forecaster.kind, series, None, **fixed)
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    note = f"tuned on the first {TUNE_FRACTION:.0%} of each stream's steps: {shown}"
    return RiverForecaster(forecaster.kind, **{**forecaster.params, **params}), (note,)


def run_models(args: argparse.Namespace, names: Sequence[str]) -> list[ModelRun]:
    """Every model's run, in ``names`` order (River baselines run last, to be tuned)."""
    forecasters = {name: load_model(name, args.interval) for name in names}  # bad names first
    runs: dict[str, ModelRun] = {}
    series: list[np.ndarray] | None = None  # each stream's step values, for tuning
    for name in sorted(names, key=_is_river):
        forecaster = forecasters[name]
        notes: tuple[str, ...] = ()
        if _is_river(name):
            if args.tune and series is None:  # no other model ran: take the steps from a pass
                reference = load_model("persistence", args.interval)
                series = _values(replay_model(args, "persistence", reference))
            tuning = series if args.tune else None
            forecaster, notes = river_variant(forecaster, args.season, tuning)
        run = replay_model(args, name, forecaster)
        if not run.steps:  # the first pass says so: the logs, not the model
            raise _nothing_to_score(args, run.stats)
        notes += _short_streams_note(forecaster, run) if _is_river(name) else ()
        runs[name] = dataclasses.replace(run, notes=notes + run.notes)
        series = series if series is not None else _values(run)
    return [runs[name] for name in names]


def _nothing_to_score(args: argparse.Namespace, stats: EngineStats) -> InputFileError:
    names = ", ".join(args.paths)
    dropped = sum(stats.dropped.values())
    if not (stats.readings or dropped) and (empty := empty_range(names, args)):
        return empty  # the range, not the columns, left nothing
    msg = f"{names}: no readings to evaluate ({stats.missing} cells were empty or "
    msg += f"missing-value codes, {dropped} readings dropped); pick columns that hold numbers"
    return InputFileError(msg)


def _nothing_scored(args: argparse.Namespace, run: ModelRun) -> InputFileError:
    """Steps, but none with a forecast from the step before in the scored span: say why."""
    longest = max(len(trace.value) for trace in run.traces.values())
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(run.stats.dropped.items()) if n)
    why = f"; readings dropped: {dropped}" if dropped else ""
    fixes = ["give longer logs"]
    if pipeline_config(args).window > 0:
        fixes.append("a shorter --window")
    if args.score_from > 0:
        fixes.append("a smaller --score-from")
    msg = f"{', '.join(args.paths)}: no step to score (the longest stream has "
    msg += f"{counted(longest, 'step')}{why}; a step is scored against the forecast made at "
    msg += f"the step before it); {', or '.join(fixes)}"
    return InputFileError(msg)


def _short_streams_note(forecaster: Forecaster, run: ModelRun) -> tuple[str, ...]:
    """Name the streams a River baseline never got past its warm-up on (a season of steps).

    River warms up quietly, so a stream no longer than the season gets the last value
    as every forecast, and its row would pass for the model's score unremarked.
    """
    season = _season_in_use(getattr(forecaster, "params", {}))
    short = [(s, len(t.value)) for s, t in sorted(run.traces.items()) if len(t.value) <= season]
    if not short:
        return ()
    shown = ", ".join(f"{s} ({n} steps)" for s, n in short[:3])
    more = f" and {len(short) - 3} more" if len(short) > 3 else ""
    note = f"--season {season} is longer than {shown}{more}: never past warm-up there, so "
    note += "its forecasts are the last value (persistence's); give a --season below "
    return (note + f"{min(n for _, n in short)} to fit them",)


def _season_in_use(params: dict[str, Any]) -> int:
    """The period a River baseline waits a whole of before forecasting; 0 if not seasonal."""
    if "seasonality" in params:  # Holt-Winters (0 or None: tuned to a non-seasonal model)
        return int(params["seasonality"] or 0)
    seasonal = params.get("sp") or params.get("sd")  # SNARIMAX uses m only then
    return int(params.get("m") or 0) if seasonal else 0


def _is_river(name: str) -> bool:
    return name.startswith("river-")


def _values(run: ModelRun) -> list[np.ndarray]:
    return [trace.value for trace in run.traces.values()]


# -- scores ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamScore:
    stream: str
    model: str
    steps: int
    scored: int  # steps in the scored span with a forecast and a previous value
    mae: float
    rmse: float
    mase: float  # mae over persistence's MAE on the same steps
    covered: int  # scored steps inside the interval
    anomalies: int  # flagged steps in the scored span

    @property
    def coverage(self) -> float:
        return self.covered / self.scored if self.scored else math.nan


@dataclass(frozen=True, slots=True)
class ModelScore:
    model: str
    streams: int
    steps: int
    scored: int
    mase_mean: float
    mase_median: float
    coverage: float  # pooled over every scored step
    anomalies: int
    rate: float  # steps per wall second


def score_stream(stream: str, model: str, trace: StreamTrace, score_from: float) -> StreamScore:
    """Scores of the steps from ``score_from`` (a fraction of the stream's steps) on.

    >>> t = StreamTrace(*map(np.array, ([0, 1, 2, 3], [1.0, 2.0, 4.0, 4.0],
    ...     [np.nan, 1.5, 2.5, 4.5], [np.nan, 1, 2, 4], [np.nan, 2, 3, 5], [False] * 4)))
    >>> s = score_stream("a", "m", t, 0.0)
    >>> s.scored, s.mae, s.mase, s.coverage
    (3, 0.8333333333333334, 0.8333333333333334, 0.6666666666666666)
    """
    value, forecast = trace.value, trace.forecast
    n = len(value)
    previous = np.concatenate([[math.nan], value[:-1]])
    in_span = np.arange(n) >= int(n * score_from)
    scored = in_span & np.isfinite(forecast) & np.isfinite(previous)
    v = value[scored]
    error = v - forecast[scored]
    naive = float(np.mean(np.abs(v - previous[scored]))) if scored.any() else math.nan
    mae = float(np.mean(np.abs(error))) if scored.any() else math.nan
    rmse = math.sqrt(float(np.mean(error * error))) if scored.any() else math.nan
    inside = (trace.lower[scored] <= v) & (v <= trace.upper[scored])
    return StreamScore(
        stream=stream,
        model=model,
        steps=n,
        scored=int(scored.sum()),
        mae=mae,
        rmse=rmse,
        mase=mae / naive if naive > 0 else math.nan,
        covered=int(inside.sum()),
        anomalies=int(trace.is_anomaly[in_span].sum()),
    )


def score_run(run: ModelRun, score_from: float) -> tuple[list[StreamScore], ModelScore]:
    scores = [score_stream(s, run.model, t, score_from) for s, t in sorted(run.traces.items())]
    mase = np.array([s.mase for s in scores if math.isfinite(s.mase)])
    scored = sum(s.scored for s in scores)
    overall = ModelScore(
        model=run.model,
        streams=len(scores),
        steps=sum(s.steps for s in scores),
        scored=scored,
        mase_mean=float(mase.mean()) if len(mase) else math.nan,
        mase_median=float(np.median(mase)) if len(mase) else math.nan,
        coverage=sum(s.covered for s in scores) / scored if scored else math.nan,
        anomalies=sum(s.anomalies for s in scores),
        rate=run.rate,
    )
    return scores, overall


# -- output ----------------------------------------------------------------------------------


def table_header(interval: float) -> list[str]:
    return ["stream", "model", "steps", "scored", "MAE", "RMSE", "MASE", "median",
            f"{coverage_label(interval)} cover", "anomalies", "steps/s"]  # fmt: skip


def coverage_label(interval: float) -> str:
    """``90%``, ``99.9%``, ``92.5%``: the interval's coverage as given, never rounded off.

    >>> coverage_label(0.9), coverage_label(0.999), coverage_label(0.925)
    ('90%', '99.9%', '92.5%')
    """
    return f"{100 * interval:.6g}%"


def table_rows(
    scores: Sequence[StreamScore], overall: Sequence[ModelScore]
) -> list[tuple[list[str], bool]]:
    """Rows of the metric table (stream x model, then a row per model) and which are overall."""
    order = {m.model: i for i, m in enumerate(overall)}
    rows = []
    for s in sorted(scores, key=lambda s: (s.stream, order[s.model])):
        cells = [s.stream, s.model, f"{s.steps}", f"{s.scored}", _num(s.mae), _num(s.rmse),
                 _fixed(s.mase), "", _percent(s.coverage), f"{s.anomalies}", ""]  # fmt: skip
        rows.append((cells, False))
    for m in overall:
        cells = [counted(m.streams, "stream"), m.model, f"{m.steps}", f"{m.scored}", "", "",
                 _fixed(m.mase_mean), _fixed(m.mase_median), _percent(m.coverage),
                 f"{m.anomalies}", f"{m.rate:,.0f}"]  # fmt: skip
        rows.append((cells, True))
    return rows


def _num(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "-"


def _fixed(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "-"


def _percent(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "-"


STREAM_WIDTH = 44  # characters of a stream name in the text table


def shortened(name: str, width: int) -> str:
    """``name`` in ``width`` characters: the middle gives way to ``...``, so the first level
    (the file, the site) and the last (the column) both stay readable.

    >>> shortened("longnames/kitchen_temperature_sensor_ground_floor", 24)
    'longnames/k...ound_floor'
    """
    if len(name) <= width:
        return name
    tail = (width - 3) // 2
    return f"{name[: width - 3 - tail]}...{name[-tail:]}"


def text_table(rows: Sequence[tuple[list[str], bool]], interval: float) -> str:
    header = table_header(interval)
    widths = [max(len(h), *(len(r[i]) for r, _ in rows)) for i, h in enumerate(header)]
    widths[0] = min(widths[0], STREAM_WIDTH)

    def line(cells: Sequence[str]) -> str:
        first = f"{shortened(cells[0], widths[0]):<{widths[0]}}  {cells[1]:<{widths[1]}}"
        rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[2:], widths[2:], strict=True))
        return f"{first}  {rest}"

    lines = [line(header), "-" * len(line(header))]
    for i, (cells, overall) in enumerate(rows):
        if overall and not rows[i - 1][1]:
            lines.append("-" * len(line(header)))
        lines.append(line(cells))
    return "\n".join(lines)


def write_csv(path: str, scores: Sequence[StreamScore], overall: Sequence[ModelScore]) -> None:
    """The metric table at full precision; overall rows have stream ``*``, MASE their mean."""
    import pandas as pd

    nan = math.nan
    records = [
        (s.stream, s.model, s.steps, s.scored, s.mae, s.rmse, s.mase, nan, s.coverage,
         s.anomalies, nan)
        for s in scores
    ] + [
        ("*", m.model, m.steps, m.scored, nan, nan, m.mase_mean, m.mase_median, m.coverage,
         m.anomalies, m.rate)
        for m in overall
    ]  # fmt: skip
    columns = ["stream", "model", "steps", "scored", "mae", "rmse", "mase", "mase_median",
               "coverage", "anomalies", "steps_per_s"]  # fmt: skip
    text = pd.DataFrame.from_records(records, columns=columns).to_csv(index=False)
    write_whole("--csv", path, text.encode())


def write_whole(flag: str, path: str, data: bytes) -> None:
    """``data`` at ``path``, its folder made now (checked, not made, before the run);
    an earlier file there stays whole if this fails."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        replace_whole(Path(path), data)
    except OSError as exc:
        msg = f"{flag}: cannot write {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc


def write_report(
    args: argparse.Namespace,
    runs: Sequence[ModelRun],
    scores: Sequence[StreamScore],
    overall: Sequence[ModelScore],
) -> None:
    rows = table_rows(scores, overall)
    table = Table(table_header(args.interval), [r for r, _ in rows], [o for _, o in rows])
    shown = plotted_models(overall)
    by_run = {run.model: run for run in runs}
    figures = []
    for stream in plotted_streams(scores, shown[0]):
        panels = [_panel(stream, by_run[m], scores, args) for m in shown]
        figures.append((stream, panels))
    notes = [
        "Logs: " + ", ".join(str(p) for p in args.paths),
        f"Models: {', '.join(r.model for r in runs)}. Strictly online, one pass, predict then "
        f"learn. Scored from {args.score_from:.0%} of each stream's steps on; MASE is MAE over "
        "persistence's MAE on the same steps (below 1 beats persistence).",
        *(f"{r.model}: {note}" for r in runs for note in r.notes),
    ]
    figure_note = (
        f"The last {args.plot_steps} steps of up to {PLOT_STREAMS} streams (most anomalies, "
        f"then highest MASE, under {shown[0]}), for {' and '.join(shown)}."
    )
    page = html_page("sensorcast evaluate", notes, table, figures, figure_note)
    write_whole("--report", args.report, page.encode())


def plotted_models(overall: Sequence[ModelScore]) -> list[str]:
    """The model with the lowest mean MASE other than persistence, then persistence."""
    names = [m.model for m in overall]
    others = [m for m in overall if m.model != "persistence" and math.isfinite(m.mase_mean)]
    best = min(others, key=lambda m: m.mase_mean).model if others else names[0]
    return [best, "persistence"] if "persistence" in names and best != "persistence" else [best]


def plotted_streams(scores: Sequence[StreamScore], model: str) -> list[str]:
    mine = [s for s in scores if s.model == model]
    ranked = sorted(mine, key=lambda s: (-s.anomalies, -np.nan_to_num(s.mase, nan=-1.0)))
    return [s.stream for s in ranked[:PLOT_STREAMS]]


def _panel(
    stream: str, run: ModelRun, scores: Sequence[StreamScore], args: argparse.Namespace
) -> Panel:
    trace = run.traces[stream]
    last = slice(max(0, len(trace.value) - args.plot_steps), None)
    score = next(s for s in scores if s.stream == stream and s.model == run.model)
    title = f"{run.model}: MASE {_fixed(score.mase)}, cover {_percent(score.coverage)}"
    return Panel(
        title=title,
        timestamp=trace.timestamp[last],
        value=trace.value[last],
        forecast=trace.forecast[last],
        lower=trace.lower[last],
        upper=trace.upper[last],
        is_anomaly=trace.is_anomaly[last],
        interval=args.interval,
    )


# -- the command -----------------------------------------------------------------------------


def check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.score_from < 1.0:
        msg = f"--score-from: {args.score_from} must be a fraction in [0, 1), e.g. 0.2"
        raise ConfigError(msg)
    if args.season < 2:
        msg = f"--season: {args.season} must be at least 2 steps (24 for a day of hourly steps)"
        raise ConfigError(msg)
    if args.plot_steps < 2:
        msg = f"--plot-steps: {args.plot_steps} must be at least 2"
        raise ConfigError(msg)
    # now, not after every model has run: a folder or an unwritable place is a mistake
    given = (("--report", args.report, "report.html"), ("--csv", args.csv, "metrics.csv"))
    for flag, path, example in given:
        if path is not None and not path.strip():  # not "no report": a file was asked for
            msg = f"{flag} {path!r}: names no file; give one, e.g. {flag} {example}"
            raise ConfigError(msg)
    outputs = [(flag, path) for flag, path, _ in given if path]
    inputs = input_files(args.paths) if outputs else []
    for flag, path in outputs:
        probe_file(path, flag)  # made at the end: a failed run leaves no new folder
        not_an_input(path, inputs, flag)
    if args.report and args.csv and Path(args.report).resolve() == Path(args.csv).resolve():
        msg = f"--csv: {args.csv} is also the --report file; give two different files"
        raise ConfigError(msg)


def check_tune(args: argparse.Namespace, names: Sequence[str]) -> None:
    if args.tune and not any(_is_river(name) for name in names):
        msg = f"--tune tunes the River baselines, and --models {args.models} has none; add "
        msg += "river-holtwinters or river-snarimax to --models, or drop --tune"
        raise ConfigError(msg)


def run_evaluate(args: argparse.Namespace) -> int:
    check_args(args)
    check_columns(args, args.paths)  # before the first model runs
    names = parse_models(args.models)
    check_tune(args, names)
    pipeline_config(args)  # bad --window/--lateness fail before any model runs
    runs = run_models(args, names)
    scores, overall = [], []
    for run in runs:
        per_stream, total = score_run(run, args.score_from)
        scores += per_stream
        overall.append(total)
    if not any(m.scored for m in overall):  # a table of dashes would pass for a result
        raise _nothing_scored(args, runs[0])
    print(text_table(table_rows(scores, overall), args.interval))
    for line in run_summary(runs[0].stats, len(runs[0].traces), runs[0].seconds).splitlines()[1:]:
        print(line)
    for run in runs:
        for note in run.notes:
            print(f"{run.model}: {note}")
    if args.tune:
        from models.river_baselines import TUNE_FRACTION

        if args.score_from < TUNE_FRACTION:
            print(
                f"note: --tune fits on each stream's first {TUNE_FRACTION:.0%} of steps; "
                f"score with --score-from {TUNE_FRACTION} to keep them out of the scores"
            )
    if args.csv:
        write_csv(args.csv, scores, overall)
    if args.report:
        write_report(args, runs, scores, overall)
    return 0
