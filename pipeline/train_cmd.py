"""``sensorcast train``: fit the recurrent forecaster to CSV logs, write a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, InputFileError
from pipeline.log_specs import column_list, empty_range, split_spec
from pipeline.replay import add_input_arguments, bounded_duration, csv_source
from pipeline.summary import counted
from pipeline.types import VerdictBatch
from pipeline.writable import writable_folder

if TYPE_CHECKING:  # torch stays out of the CLI's import until a command needs it
    from models.train import Corpus, TrainConfig
    from pipeline.engine import EngineStats

STEP_COLUMNS = ("timestamp", "value", "dt", "missing", "next_timestamp")
MAX_SEED = 2**64 - 1
# Beyond these a run takes hours an epoch or exhausts memory (--hidden 10000: 1.2 billion
# weights; --threads 100000: no memory left to map) instead of training: refused at once.
SIZE_LIMITS = (
    ("hidden", 1024, "a network that wide takes hours an epoch"),
    ("layers", 8, "a network that deep takes hours an epoch"),
    ("threads", 256, "more threads than CPUs only slow training down"),
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="train the recurrent forecaster on CSV logs",
        description="Train the GRU forecaster on CSV logs (the last 20% of every stream is "
        "held out for validation and early stopping) and write a checkpoint: "
        "NAME.safetensors (weights) and NAME.json (architecture, data manifest, metrics).",
    )
    parser.add_argument("paths", nargs="+", metavar="LOG", help="CSV logs or directories")
    parser.add_argument(
        "--out",
        required=True,
        help="NAME.safetensors or NAME.json: that pair of files; any other path (my-model, "
        "ck/v1.2/): a directory holding model.safetensors and model.json. An earlier "
        "checkpoint there is replaced; any other file is refused",
    )
    add_input_arguments(parser)
    _hide(parser, "--speed")  # shared with replay, where it paces; training reads at full speed
    parser.add_argument("--window", default="0", help="tumbling window, as for replay")
    parser.add_argument("--epochs", type=int, default=30, help="at most this many (30)")
    parser.add_argument(
        "--seq-len",
        type=int,
        help="steps per BPTT window (256, or the longest stream's training part if that is "
        "shorter; a longer value is refused)",
    )
    parser.add_argument("--hidden", type=int, default=32, help="GRU units (32)")
    parser.add_argument("--layers", type=int, default=1, help="GRU layers (1)")
    parser.add_argument(
        "--batch",
        type=int,
        help="windows per batch (64, or the number of different windows the training data "
        "holds if that is smaller; a bigger value is refused)",
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same weights (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument(
        "--laplace-weight",
        type=float,
        default=0.5,
        help="the Laplace likelihood's share of the loss, 0 (Gaussian) to 1 (0.5: the "
        "forecast leans to the median, which absolute errors reward)",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(run=run_train)


def _hide(parser: argparse.ArgumentParser, flag: str) -> None:
    """Keep ``flag`` out of the help (``run_train`` refuses it if given)."""
    for action in parser._actions:  # argparse offers no public way to drop an argument
        if flag in action.option_strings:
            action.help = argparse.SUPPRESS


def run_train(args: argparse.Namespace) -> int:
    from models.checkpoint import paths_of

    if args.speed != "max":
        msg = f"--speed {args.speed}: training reads the logs as fast as it can; drop --speed"
        raise ConfigError(msg)
    config = _train_config(args)
    _check_destination(args.out)
    folder = paths_of(args.out)[0].parent
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        writable_folder(folder, "--out")  # before training, not after
        return _train_and_save(args, config)
    except BaseException:  # a failed run leaves no new empty folder behind
        for path in made:
            try:
                path.rmdir()
            except OSError:  # not empty (someone else's now), or never made
                break
        raise


def _train_and_save(args: argparse.Namespace, config: TrainConfig) -> int:
    from models.checkpoint import save_checkpoint
    from models.train import build_corpus, manifest, require_enough, train

    source = csv_source(args, args.paths)
    windowing = PipelineConfig(window=bounded_duration(args.window, "--window"))
    steps = series_of(source, windowing, args)
    corpus = build_corpus(steps)
    require_enough(corpus, _logs_of(source))
    config = _fit_to_data(config, corpus, args)
    print(
        f"training on {counted(len(corpus.streams), 'stream')}, {corpus.train_steps} steps "
        f"({corpus.valid.sum() - corpus.train_steps} held out)",
        file=sys.stderr,
    )
    bar = _EpochBar(config.epochs, args.progress)
    network, history = train(corpus, config, bar.update)
    bar.close()
    meta = {
        "training": {
            **dataclasses.asdict(config),
            "window": args.window,
            "streams": corpus.streams,
            "files": manifest(source.files),
            "command": _command(),
        },
        "metrics": {"best_epoch": history.best_epoch, **history.epochs[history.best_epoch - 1]},
        "history": history.epochs,
    }
    _check_destination(args.out)  # again: a file may have appeared while training ran
    written = save_checkpoint(network, args.out, meta)
    best = history.epochs[history.best_epoch - 1]
    print(
        f"wrote {written} (epoch {history.best_epoch}: validation NLL "
        f"{_number(best['val_nll'], '.4f')}, network MASE {_number(best['val_mase'], '.3f')})"
    )
    return 0


def _check_destination(out: str) -> None:
    """ConfigError unless ``out`` names a checkpoint this run may write."""
    from models.checkpoint import foreign_file

    if out.strip() in ("", "-"):
        msg = f"--out {out!r}: give a checkpoint directory or NAME.safetensors (train writes "
        msg += "two files, not to stdout)"
        raise ConfigError(msg)
    if (foreign := foreign_file(out)) is not None:
        msg = f"--out: {foreign} exists and is not a sensorcast checkpoint; give another "
        msg += "--out, or move that file away"
        raise ConfigError(msg)


def _fit_to_data(config: TrainConfig, corpus: Corpus, args: argparse.Namespace) -> TrainConfig:
    """``config`` with windows no longer, and batches no bigger, than the data holds.

    Beyond that a window is padding and a batch repeats windows, and an epoch takes
    minutes for nothing: a value the user gave is refused at once (they asked for
    something the data cannot give), a default is cut down with a note.
    """
    from models.train import usable_steps, window_starts

    longest = int(usable_steps(corpus).max())
    what = "steps in the longest stream's training part"
    seq_len = _at_most("--seq-len", config.seq_len, longest, what, args.seq_len is None)
    windows = window_starts(corpus, seq_len)
    what = f"different {seq_len}-step windows (a shorter --seq-len makes more)"
    batch = _at_most("--batch", config.batch, windows, what, args.batch is None)
    burn_in = min(config.burn_in, seq_len // 4)
    return dataclasses.replace(config, seq_len=seq_len, batch=batch, burn_in=burn_in)


def _at_most(flag: str, value: int, most: int, what: str, default: bool) -> int:
    if value <= most:
        return value
    if not default:
        msg = f"{flag} {value}: the data holds only {most} {what}; give at most {most}"
        raise ConfigError(msg)
    print(f"note: {flag} {value} (the default) is cut to the {most} {what}", file=sys.stderr)
    return most


def _number(value: float | None, spec: str) -> str:
    """A metric for people; None is a metric that is undefined (MASE of a constant stream)."""
    return "n/a" if value is None else format(value, spec)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from models.train import TrainConfig

    defaults = TrainConfig()
    seq_len = defaults.seq_len if args.seq_len is None else args.seq_len  # None: not given
    batch = defaults.batch if args.batch is None else args.batch
    for flag in ("epochs", "seq_len", "hidden", "layers", "batch", "threads"):
        if (value := getattr(args, flag)) is not None and value < 1:
            msg = f"--{flag.replace('_', '-')}: must be at least 1"
            raise ConfigError(msg)
    for flag, most, why in SIZE_LIMITS:
        if (value := getattr(args, flag)) > most:
            usual = getattr(defaults, flag)
            msg = f"--{flag} {value}: at most {most} ({why}); give a smaller --{flag}, "
            msg += f"e.g. {usual}"
            raise ConfigError(msg)
    if not 0 <= args.seed <= MAX_SEED:  # numpy refuses a negative seed, torch a larger one
        msg = f"--seed {args.seed}: must be a whole number from 0 to 2**64 - 1, e.g. 0"
        raise ConfigError(msg)
    if not 0 < args.lr < math.inf:  # inf would reach the checkpoint as non-JSON Infinity
        msg = "--lr: must be a positive number, e.g. 3e-3"
        raise ConfigError(msg)
    if not 0 <= args.laplace_weight <= 1:  # False for NaN too
        msg = f"--laplace-weight {args.laplace_weight}: must be from 0 to 1, e.g. 0.5"
        raise ConfigError(msg)
    return TrainConfig(
        laplace_weight=args.laplace_weight,
        epochs=args.epochs,
        seq_len=seq_len,
        burn_in=min(defaults.burn_in, seq_len // 4),
        batch=batch,
        hidden=args.hidden,
        layers=args.layers,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
    )


def series_of(
    source: Any, config: PipelineConfig, args: argparse.Namespace
) -> dict[str, dict[str, np.ndarray]]:
    """Every stream's steps, exactly as replay makes them (the real windowing)."""
    from models.persistence import PersistenceForecaster
    from models.train import MIN_STREAM_STEPS
    from pipeline.detect import GaussianTailDetector
    from pipeline.engine import Engine

    engine = Engine(PersistenceForecaster(), GaussianTailDetector(), config)
    parts: list[VerdictBatch] = []
    while (batch := source.poll(65_536, 0.0)) is not None:
        parts.append(engine.process(batch))
    parts.append(engine.flush())
    steps = VerdictBatch.concat(parts)
    if not len(steps):
        names = _logs_of(source)
        if not engine.stats.readings and (empty := empty_range(names, args)):
            raise empty  # the --start/--end range, not the columns, left nothing
        msg = f"{names}: no readings to train on ({engine.stats.missing} cells were empty or "
        msg += "missing-value codes); pick columns that hold numbers"
        raise InputFileError(msg)
    by_stream: dict[str, list[int]] = defaultdict(list)
    for i, stream in enumerate(steps.stream.tolist()):
        by_stream[stream].append(i)
    longest = max(len(rows) for rows in by_stream.values())
    if longest < MIN_STREAM_STEPS:  # the fewest steps build_corpus can make a target of
        raise _too_few_steps(_logs_of(source), longest, engine.stats, config)
    _refuse_empty_picks(args, set(by_stream))
    series = {
        stream: {name: getattr(steps, name)[rows] for name in STEP_COLUMNS}
        for stream, rows in by_stream.items()
    }
    _refuse_constant(series)
    return series


def _refuse_empty_picks(args: argparse.Namespace, streams: set[str]) -> None:
    """A column picked by name (``LOG:COL`` or ``--columns``) that gave no stream: it holds
    no readings, and training without it would not be what was asked."""
    for spec in args.paths:
        path, columns = split_spec(str(spec))
        for column in columns or column_list(getattr(args, "columns", None) or "") or []:
            if not any(stream.endswith(f"/{column}") for stream in streams):
                msg = f"{path}: column {column!r} holds no readings (every cell is empty or a "
                msg += "missing-value code); drop it from the columns you pick"
                raise InputFileError(msg)


def _refuse_constant(series: dict[str, dict[str, np.ndarray]]) -> None:
    """A stream whose every value is the same has no change to learn, and its scale is
    zero; training on it would teach the network nothing and skew what it learns."""
    for stream, columns in series.items():
        values = columns["value"][np.isfinite(columns["value"])]
        if len(values) and values.min() == values.max():
            msg = f"{stream}: constant (every value is {values[0]:g}): nothing to learn from; "
            msg += "leave that column out of the logs you train on"
            raise InputFileError(msg)


def _logs_of(source: Any) -> str:
    """The logs a run read, for messages about their data."""
    return ", ".join(str(p) for p in source.files)


def _too_few_steps(
    logs: str, longest: int, stats: EngineStats, config: PipelineConfig
) -> InputFileError:
    """No stream has the steps a target needs: say how many it has and where readings went."""
    from models.train import MIN_STREAM_STEPS

    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.dropped.items()) if n)
    why = f"; readings dropped: {dropped}" if dropped else ""
    shorter = ", or a shorter --window" if config.window > 0 else ""
    msg = f"{logs}: no stream has the {MIN_STREAM_STEPS} steps training needs "
    msg += f"(the longest has {counted(longest, 'step')}{why}); give longer logs{shorter}"
    return InputFileError(msg)


def _command() -> str:
    return "sensorcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class _EpochBar:
    def __init__(self, epochs: int, enabled: bool | None) -> None:
        self._bar: Any = None
        if sys.stderr.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=epochs, unit="epoch", desc="train", file=sys.stderr)

    def update(self, record: dict[str, float | None]) -> None:
        train, val = _number(record["train_nll"], ".4f"), _number(record["val_nll"], ".4f")
        line = (
            f"epoch {record['epoch']}: train NLL {train}, validation NLL {val}, "
            f"MASE {_number(record['val_mase'], '.3f')}"
        )
        if self._bar is None:
            print(line, file=sys.stderr, flush=True)
            return
        self._bar.set_postfix(train=train, val=val)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
