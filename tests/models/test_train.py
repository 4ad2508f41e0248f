"""Training's edges: data with undefined metrics, learning rates that blow up, and how
many windows a corpus holds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from models.train import Corpus, TrainConfig, build_corpus, train, usable_steps, window_starts
from pipeline.errors import ConfigError

FAST = TrainConfig(epochs=2, seq_len=64, burn_in=8, batch=8, hidden=4, batches=3, threads=1)


def corpus_of(rows: list[np.ndarray]) -> Corpus:
    steps = {}
    for k, row in enumerate(rows):
        t = np.arange(len(row)) * 60.0
        dt = np.full(len(row), 60.0)
        dt[0] = math.nan
        steps[f"s/{k}"] = {
            "timestamp": t,
            "value": np.asarray(row, np.float64),
            "dt": dt,
            "missing": np.zeros(len(row), np.int32),
            "next_timestamp": t + 60,
        }
    return build_corpus(steps)


def wave(n: int) -> np.ndarray:
    return np.sin(np.arange(n) / 7.0) * 5 + 20


def test_a_constant_stream_has_no_mase_rather_than_nan():
    _, history = train(corpus_of([np.full(1000, 21.5)]), FAST)
    assert [record["val_mase"] for record in history.epochs] == [None, None]
    assert all(math.isfinite(record["val_nll"] or math.nan) for record in history.epochs)


@pytest.mark.parametrize(
    ("lr", "cause"),
    [(1e30, "training loss nan"), (1e100, "without overflow"), (1e308, "training loss nan")],
)  # 1e100: Adam's first step (10 lr) overflows float32 inside torch, a RuntimeError
def test_a_diverging_run_is_a_clear_error_naming_the_learning_rate(lr, cause):
    with pytest.raises(ConfigError, match=r"^--lr 1e\+\d+: training diverged .*smaller --lr") as e:
        train(corpus_of([wave(1000)]), dataclasses.replace(FAST, lr=lr))
    assert cause in str(e.value) and "e.g. 0.003" in str(e.value)


def test_windows_are_counted_over_the_training_parts():
    corpus = corpus_of([wave(1000), wave(300)])
    assert usable_steps(corpus).tolist() == [799, 239]  # 80% of each, less the last target
    assert window_starts(corpus, 64) == (799 - 64) + (239 - 64)
    assert window_starts(corpus, 500) == (799 - 500) + 1  # a short stream still gives one


@pytest.mark.parametrize(("laplace_weight", "best"), [(0.0, 2.5), (1.0, 0.0)])
def test_the_loss_is_least_at_the_mean_gaussian_or_the_median_laplace(laplace_weight, best):
    """Targets 0, 0, 0, 10 (mean 2.5, median 0): the Gaussian loss is least at the
    mean, the Laplace at the median."""
    import torch

    from models.train import nll

    target, mask = torch.tensor([0.0, 0.0, 0.0, 10.0]), torch.ones(4, dtype=torch.bool)
    means = torch.linspace(-1.0, 4.0, 501)
    losses = [float(nll(torch.tensor([[m, 1.0]] * 4), target, mask, laplace_weight)) for m in means]
    assert float(means[int(np.argmin(losses))]) == pytest.approx(best, abs=0.011)


def test_a_run_that_never_beats_the_untrained_network_is_refused():
    """Gradient clipping keeps the loss finite however large the rate: a run whose
    every epoch is worse on validation than where it started names --lr too."""
    with pytest.raises(ConfigError, match=r"^--lr 1e\+09: training diverged \(no epoch beat"):
        train(corpus_of([wave(1000)]), dataclasses.replace(FAST, lr=1e9))
