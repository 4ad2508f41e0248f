"""Training the recurrent forecaster on CSV logs.

The logs go through the same windowing as replay (``pipeline.engine``), then
through the same feature code as the live model (``models.features``), so the
network trains on exactly what it will see. Truncated back-propagation through
time over random windows of many streams, a negative log-likelihood of the
next step's change (half Gaussian, half Laplace by default: see ``nll``),
validation on the last 20% of every stream (never trained on), the learning
rate halved on a plateau, early stopping on the validation loss.
The same seed gives the same weights. A loss that stops being finite, or a run
in which no epoch does better on validation than the untrained network, ends
with a ConfigError naming ``--lr`` (the cause, in practice), not a checkpoint of
NaN weights or of a network worse than none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.features import N_FEATURES, compute_features, initial_stats
from models.gru import GaussianGRU
from pipeline.errors import ConfigError, InputFileError
from pipeline.summary import counted

TARGET_LIMIT = 20.0  # targets (changes in change scales) are clipped to +-this
MIN_TRAIN_STEPS = 200  # fewer usable steps than this is not a training set
MIN_STREAM_STEPS = 3  # a stream needs a step, its next (the target) and a validation step
VALIDATION = 0.2  # the last fifth of every stream
DEFAULT_LR = 3e-3


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 30
    seq_len: int = 256
    burn_in: int = 32  # first steps of a window only warm the hidden state up
    batch: int = 64
    hidden: int = 32
    layers: int = 1
    lr: float = DEFAULT_LR  # the --lr flag
    patience: int = 6
    batches: int = 100  # per epoch
    seed: int = 0
    threads: int = 2
    laplace_weight: float = 0.5  # the Laplace likelihood's share of the loss (the rest Gaussian)


@dataclass
class Corpus:
    """Every stream's features and targets, padded to (B, T)."""

    streams: list[str]
    x: np.ndarray  # (B, T, F) float32
    target: np.ndarray  # (B, T) float32: next change in change scales
    anchor: np.ndarray  # (B, T) float64: this step's value
    unit: np.ndarray  # (B, T) float64: its change scale
    next_value: np.ndarray  # (B, T) float64
    valid: np.ndarray  # (B, T) bool: a target exists (no gap, not the last step)
    split: np.ndarray  # (B,) int64: first validation step of each row
    length: np.ndarray  # (B,) int64

    @property
    def train_steps(self) -> int:
        return int((self.valid & ~self.validation_mask()).sum())

    def validation_mask(self) -> np.ndarray:
        return np.arange(self.x.shape[1])[None, :] + 1 >= self.split[:, None]


# One epoch's metrics; val_mase is None when persistence makes no error (a constant
# stream), so the ratio is undefined: None, not NaN, so the checkpoint stays JSON.
Record = dict[str, float | None]


@dataclass
class History:
    epochs: list[Record] = field(default_factory=list)
    best_epoch: int = -1
    best_val_nll: float = math.inf


def build_corpus(steps: dict[str, dict[str, np.ndarray]]) -> Corpus:
    """Features and next-step targets of each stream's steps (from ``series_of``)."""
    streams = sorted(name for name, s in steps.items() if len(s["value"]) >= MIN_STREAM_STEPS)
    if not streams:
        msg = f"no stream has the {MIN_STREAM_STEPS} steps training needs; give "
        msg += "longer logs"
        raise InputFileError(msg)
    length = np.array([len(steps[name]["value"]) for name in streams], np.int64)
    grids = {k: _pad([steps[n][k] for n in streams]) for k in ("timestamp", "value", "dt")}
    missing = _pad([steps[n]["missing"] for n in streams], 0).astype(np.int32)
    next_t = _pad([steps[n]["next_timestamp"] for n in streams])
    x, anchor, unit = compute_features(
        initial_stats(len(streams)),
        grids["timestamp"],
        grids["value"],
        grids["dt"],
        missing,
        next_t,
        length,
    )
    next_value = np.full_like(anchor, math.nan)
    next_value[:, :-1] = grids["value"][:, 1:]
    next_ok = np.zeros_like(missing, bool)
    next_ok[:, :-1] = missing[:, 1:] == 0
    valid = next_ok & np.isfinite(next_value) & (unit > 0)
    target = np.where(valid, (next_value - anchor) / np.where(unit > 0, unit, 1.0), 0.0)
    split = np.floor(length * (1 - VALIDATION)).astype(np.int64)
    return Corpus(
        streams,
        x,
        np.clip(target, -TARGET_LIMIT, TARGET_LIMIT).astype(np.float32),
        anchor,
        unit,
        next_value,
        valid,
        split,
        length,
    )


def _pad(rows: Sequence[np.ndarray], fill: float = math.nan) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), fill)
    for b, row in enumerate(rows):
        out[b, : len(row)] = row
    return out


def require_enough(corpus: Corpus, logs: str = "the logs") -> None:
    """InputFileError naming ``logs`` when the corpus is too small to be a training set."""
    if (steps := corpus.train_steps) < MIN_TRAIN_STEPS:
        usable = counted(steps, "usable training step")
        msg = f"{logs}: only {usable} in {counted(len(corpus.streams), 'stream')}; "
        msg += "training needs at least "
        msg += f"{MIN_TRAIN_STEPS} (longer logs, or more of them)"
        raise InputFileError(msg)


def usable_steps(corpus: Corpus) -> np.ndarray:
    """(B,) steps of each stream with a target inside its training part."""
    return np.maximum(corpus.split - 1, 1)


def window_starts(corpus: Corpus, seq_len: int) -> int:
    """How many different windows of ``seq_len`` steps the training parts hold."""
    return int(np.maximum(usable_steps(corpus) - seq_len, 1).sum())


def nll(
    y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, laplace_weight: float = 0.0
) -> torch.Tensor:
    """Mean negative log-likelihood of ``target`` with mean y[..., 0] and standard
    deviation exp(y[..., 1]): Gaussian, blended with a Laplace of the same mean and
    spread by ``laplace_weight`` (constants left out).

    The Gaussian's mean is the mean; a Laplace's is the median, the forecast with the
    least expected absolute error, which is what MASE scores. Over three seeds the
    blend at 0.5 had a lower MASE than the Gaussian (docs/accuracy.md); the head is
    still read as a mean and a standard deviation, by the interval and the detector.
    """
    mu, log_sigma = y[..., 0], y[..., 1].clamp(-7.0, 7.0)
    gaussian = 0.5 * ((target - mu) * torch.exp(-log_sigma)) ** 2
    laplace = math.sqrt(2.0) * (target - mu).abs() * torch.exp(-log_sigma)
    loss = (1 - laplace_weight) * gaussian + laplace_weight * laplace + log_sigma
    weight = mask.to(loss.dtype)
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


def train(
    corpus: Corpus, config: TrainConfig, progress: Callable[[Record], None] | None = None
) -> tuple[GaussianGRU, History]:
    """Fit a network to ``corpus``; return the weights of the best validation epoch."""
    require_enough(corpus)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    network = GaussianGRU(N_FEATURES, config.hidden, config.layers)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    history, best = History(), network.state_dict()
    # the untrained head forecasts persistence with a unit scale: a run that never
    # beats it learned nothing (gradient clipping keeps a far too large --lr finite)
    untrained_nll, _ = validate(network, corpus, config.laplace_weight)
    for epoch in range(config.epochs):
        started = time.perf_counter()
        train_nll = _epoch(network, optimizer, corpus, config, rng)
        val_nll, val_mase = validate(network, corpus, config.laplace_weight)
        if not math.isfinite(val_nll):
            raise _diverged(config, f"validation loss {val_nll}")
        record: Record = {
            "epoch": epoch + 1,
            "train_nll": train_nll,
            "val_nll": val_nll,
            "val_mase": val_mase,
            "seconds": time.perf_counter() - started,
        }
        history.epochs.append(record)
        if progress is not None:
            progress(record)
        if val_nll < history.best_val_nll:
            history.best_val_nll, history.best_epoch = val_nll, epoch + 1
            best = {k: v.clone() for k, v in network.state_dict().items()}
        elif epoch + 1 - history.best_epoch >= config.patience:
            break
        elif epoch + 1 - history.best_epoch >= 2:  # a plateau: smaller steps
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
    if not history.best_val_nll < untrained_nll:
        what = "no epoch beat the untrained network on validation: best loss "
        what += f"{history.best_val_nll:.4g} against {untrained_nll:.4g}"
        raise _diverged(config, what)
    network.load_state_dict(best)
    return network.eval(), history


def _epoch(
    network: GaussianGRU,
    optimizer: torch.optim.Optimizer,
    corpus: Corpus,
    config: TrainConfig,
    rng: np.random.Generator,
) -> float:
    network.train()
    windows = _windows(corpus, config, rng)
    losses = []
    for start in range(0, len(windows), config.batch):
        x, target, mask = _batch(corpus, windows[start : start + config.batch], config)
        y, _ = network(x, network.initial_hidden(x.shape[0]))  # (B, L, 2)
        loss = nll(y, target, mask, config.laplace_weight)
        value = loss.item()
        if not math.isfinite(value):  # NaN weights never recover: stop now
            raise _diverged(config, f"training loss {value}")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        try:
            optimizer.step()
        except RuntimeError as exc:  # Adam's step (about 10 * lr) overflows float32
            raise _diverged(config, str(exc)) from exc
        losses.append(value)
    return float(np.mean(losses))


def _diverged(config: TrainConfig, what: str) -> ConfigError:
    smaller = min(config.lr / 10, DEFAULT_LR)
    msg = f"--lr {config.lr:g}: training diverged ({what}); give a smaller --lr, "
    msg += f"e.g. {smaller:g}"
    return ConfigError(msg)


def _windows(corpus: Corpus, config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """(row, start) of this epoch's windows, rows drawn in proportion to their training steps."""
    usable = usable_steps(corpus)
    count = config.batches * config.batch
    rows = rng.choice(len(usable), size=count, p=usable / usable.sum())
    starts = (rng.random(count) * np.maximum(usable[rows] - config.seq_len, 0)).astype(np.int64)
    return np.stack([rows, starts], axis=1)


def _batch(
    corpus: Corpus, windows: np.ndarray, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    span = config.seq_len
    position = windows[:, 1:2] + np.arange(span)[None, :]  # (W, L)
    rows = np.repeat(windows[:, :1], span, axis=1)
    inside = position < corpus.split[rows] - 1  # the target (next step) is still training data
    position = np.minimum(position, corpus.x.shape[1] - 1)
    mask = inside & corpus.valid[rows, position] & (np.arange(span) >= config.burn_in)[None, :]
    x = torch.from_numpy(corpus.x[rows, position])  # (W, L, F)
    target = torch.from_numpy(corpus.target[rows, position])  # (W, L)
    return x, target, torch.from_numpy(mask)


def validate(
    network: GaussianGRU, corpus: Corpus, laplace_weight: float = 0.0
) -> tuple[float, float | None]:
    """The loss and MASE (network mean vs persistence) on every stream's last fifth;
    MASE is None when persistence makes no error there (a constant stream)."""
    network.eval()
    with torch.inference_mode():
        x = torch.from_numpy(corpus.x)
        y, _ = network(x, network.initial_hidden(x.shape[0]), torch.from_numpy(corpus.length))
    mask = corpus.valid & corpus.validation_mask()
    loss = float(nll(y, torch.from_numpy(corpus.target), torch.from_numpy(mask), laplace_weight))
    mean = corpus.anchor + corpus.unit * y[..., 0].numpy()
    model_error = np.abs(corpus.next_value - mean)[mask].sum()
    naive_error = np.abs(corpus.next_value - corpus.anchor)[mask].sum()
    return loss, float(model_error / naive_error) if naive_error > 0 else None


def manifest(paths: Sequence[Path]) -> list[dict[str, Any]]:
    from models.checkpoint import sha256_of

    return [{"path": str(p), "sha256": sha256_of(p), "bytes": p.stat().st_size} for p in paths]
