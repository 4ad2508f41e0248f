"""``sensorcast train``: fit the recurrent forecaster to CSV logs, write a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig, parse_duration
from pipeline.errors import ConfigError, InputFileError
from pipeline.replay import add_input_arguments, csv_source
from pipeline.types import VerdictBatch
from pipeline.writable import writable_folder

STEP_COLUMNS = ("timestamp", "value", "dt", "missing", "next_timestamp")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="train the recurrent forecaster on CSV logs",
        description="Train the GRU forecaster on CSV logs (the last 20%% of every stream is "
        "held out for validation and early stopping) and write a checkpoint: "
        "NAME.safetensors (weights) and NAME.json (architecture, data manifest, metrics).",
    )
    parser.add_argument("paths", nargs="+", metavar="LOG", help="CSV logs or directories")
    parser.add_argument("--out", required=True, help="checkpoint directory or NAME.safetensors")
    add_input_arguments(parser)
    parser.add_argument("--window", default="0", help="tumbling window, as for replay")
    parser.add_argument("--epochs", type=int, default=30, help="at most this many (30)")
    parser.add_argument("--seq-len", type=int, default=256, help="steps per BPTT window (256)")
    parser.add_argument("--hidden", type=int, default=32, help="GRU units (32)")
    parser.add_argument("--layers", type=int, default=1, help="GRU layers (1)")
    parser.add_argument("--batch", type=int, default=64, help="windows per batch (64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same weights (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from models.checkpoint import save_checkpoint
    from models.train import build_corpus, manifest, require_enough, train

    config = _train_config(args)
    _check_destination(args.out)  # before training, not after
    source = csv_source(args, args.paths)
    steps = series_of(source, PipelineConfig(window=parse_duration(args.window, "--window")))
    corpus = build_corpus(steps)
    require_enough(corpus)
    print(
        f"training on {len(corpus.streams)} streams, {corpus.train_steps} steps "
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
    written = save_checkpoint(network, args.out, meta)
    best = history.epochs[history.best_epoch - 1]
    print(
        f"wrote {written} (epoch {history.best_epoch}: validation NLL {best['val_nll']:.4f}, "
        f"network MASE {best['val_mase']:.3f})"
    )
    return 0


def _check_destination(out: str) -> None:
    from models.checkpoint import paths_of

    writable_folder(paths_of(out)[0].parent, "--out")


def _train_config(args: argparse.Namespace) -> Any:
    from models.train import TrainConfig

    for flag in ("epochs", "seq_len", "hidden", "layers", "batch", "threads"):
        if getattr(args, flag) < 1:
            msg = f"--{flag.replace('_', '-')}: must be at least 1"
            raise ConfigError(msg)
    if not args.lr > 0:
        msg = "--lr: must be positive, e.g. 3e-3"
        raise ConfigError(msg)
    return TrainConfig(
        epochs=args.epochs,
        seq_len=args.seq_len,
        burn_in=min(32, args.seq_len // 4),
        batch=args.batch,
        hidden=args.hidden,
        layers=args.layers,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
    )


def series_of(source: Any, config: PipelineConfig) -> dict[str, dict[str, np.ndarray]]:
    """Every stream's steps, exactly as replay makes them (the real windowing)."""
    from models.persistence import PersistenceForecaster
    from pipeline.detect import GaussianTailDetector
    from pipeline.engine import Engine

    engine = Engine(PersistenceForecaster(), GaussianTailDetector(), config)
    parts: list[VerdictBatch] = []
    while (batch := source.poll(65_536, 0.0)) is not None:
        parts.append(engine.process(batch))
    parts.append(engine.flush())
    steps = VerdictBatch.concat(parts)
    if not len(steps):
        names = ", ".join(str(p) for p in source.files)
        msg = f"{names}: no readings to train on ({engine.stats.missing} cells were empty or "
        msg += "missing-value codes); pick columns that hold numbers"
        raise InputFileError(msg)
    by_stream: dict[str, list[int]] = defaultdict(list)
    for i, stream in enumerate(steps.stream.tolist()):
        by_stream[stream].append(i)
    return {
        stream: {name: getattr(steps, name)[rows] for name in STEP_COLUMNS}
        for stream, rows in by_stream.items()
    }


def _command() -> str:
    return "sensorcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class _EpochBar:
    def __init__(self, epochs: int, enabled: bool | None) -> None:
        self._bar: Any = None
        if sys.stderr.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=epochs, unit="epoch", desc="train", file=sys.stderr)

    def update(self, record: dict[str, float]) -> None:
        line = (
            f"epoch {record['epoch']:.0f}: train NLL {record['train_nll']:.4f}, validation "
            f"NLL {record['val_nll']:.4f}, MASE {record['val_mase']:.3f}"
        )
        if self._bar is None:
            print(line, file=sys.stderr, flush=True)
            return
        self._bar.set_postfix(train=f"{record['train_nll']:.4f}", val=f"{record['val_nll']:.4f}")
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
