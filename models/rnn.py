"""The recurrent forecaster behind the pipeline's ``Forecaster`` protocol.

Per chunk of steps: features from each stream's running statistics
(``models.features``), one batched GRU call over all rows (``nn.GRU`` for
chunks of many streams, a compiled loop for a few and for single-step ticks),
then a compiled pass that turns the network's output into forecasts in the
stream's units and keeps two safety nets per stream, both learned online from
the stream's own past:

* **never worse than persistence**: the network predicts the next change;
  the forecast is the last value plus that change times a per-stream weight.
  Seven candidate weights (0, 1/4, ..., 3/2) keep a discounted absolute error
  each, and the forecast follows them by an exponentially weighted average
  (softmin of those errors). A stream whose changes the network cannot
  predict drifts to weight 0: persistence; one it predicts well, to 1.
  The change is rounded to the smallest step the stream has moved by: a
  quantised sensor's forecast is one of the values it can read.
* **calibrated intervals**: the scale is multiplied by a factor nudged after
  every step towards the target coverage (adaptive conformal inference).

Per-stream state, float64: ``[stats (STATS) | post (POST) | hidden]``. The
network's hidden state (``layers * hidden`` values) is float32, as the GRU computes
it, packed two to a float64 column: half the bytes per stream, nothing lost.
"""

from __future__ import annotations

import math
import statistics
from functools import cached_property
from typing import TYPE_CHECKING

import numba
import numpy as np

from models.compiled_gru import CompiledGRU, GruWeights
from models.features import STATS, compute_features, initial_stats
from pipeline.types import ForecastChunk, StepChunk

if TYPE_CHECKING:
    from models.gru import GaussianGRU

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # candidate shares of the predicted change
POST = 7 + len(WEIGHTS)
GAP_PREV, MIX_PREV, ANCHOR_PREV, SCALE_PREV, UNIT_PREV, CALIB, LATTICE, LOSSES = range(8)
DISCOUNT = 0.999  # memory of the candidates' errors, ~1000 steps
SHARPNESS = 3.0  # how decisively the lowest error wins
CALIB_RATE = 0.02  # step of the coverage correction
CALIB_LIMIT = 3.0  # the scale factor stays within e^-3 .. e^3


class RnnForecaster:
    """A GRU with online normalisation, a persistence fallback and calibration.

    Built from the weights as numpy arrays (``GruWeights``, or a ``GaussianGRU``
    to take them from). Every chunk runs the compiled GRU, faster than torch at
    every size measured; ``torch_sequences`` and ``torch_steps`` run chunks of
    several steps through ``nn.GRU`` and single steps through ``torch.gru_cell``
    instead (the reference the tests compare the compiled loops with).
    """

    name = "gru"
    state_dtype: type[np.floating] = np.float64

    def __init__(
        self, weights: GruWeights | GaussianGRU, fingerprint: str, coverage: float = 0.9
    ) -> None:
        self.weights = weights if isinstance(weights, GruWeights) else GruWeights.of(weights)
        self._compiled = CompiledGRU.of(self.weights)
        self.torch_sequences = False
        self.torch_steps = False
        self._fingerprint = fingerprint
        self.coverage = coverage
        self._hidden_size = self.weights.layers * self.weights.hidden
        self.state_width = STATS + POST + packed_width(self._hidden_size)
        self._z = statistics.NormalDist().inv_cdf(0.5 + coverage / 2)

    def __repr__(self) -> str:
        w = self.weights
        return f"RnnForecaster(hidden={w.hidden}, layers={w.layers}, coverage={self.coverage!r})"

    @cached_property
    def network(self) -> GaussianGRU:
        """The torch module of the same weights, made on first use."""
        return self.weights.network()

    @property
    def fingerprint(self) -> str:
        """The weights, and every constant that gives the per-stream state its meaning."""
        mix = f"weights={WEIGHTS!r};discount={DISCOUNT!r};sharpness={SHARPNESS!r};lattice"
        state = f"features={STATS};hidden=float32"
        return f"{self._fingerprint};coverage={self.coverage!r};{mix};{state}"

    def initial_state(self, n: int) -> np.ndarray:
        state = np.zeros((n, self.state_width), self.state_dtype)
        state[:, :STATS] = initial_stats(n)
        state[:, STATS + GAP_PREV : STATS + UNIT_PREV + 1] = math.nan
        state[:, STATS + LATTICE] = math.inf
        return state

    def step(self, state: np.ndarray, chunk: StepChunk) -> ForecastChunk:
        rows, steps = chunk.shape
        stats = state[:, :STATS].copy()
        post = state[:, STATS : STATS + POST].copy()
        x, anchor, unit = compute_features(
            stats,
            chunk.timestamp,
            chunk.value,
            chunk.dt,
            chunk.missing,
            chunk.next_timestamp,
            chunk.length,
        )
        hidden = unpack_hidden(state[:, STATS + POST :], self._hidden_size)
        y, hidden = self._run(x, hidden, chunk.length)  # (B, T, 2), (B, L*H) float32
        mean = np.full((rows, steps), math.nan)
        scale = np.full((rows, steps), math.nan)
        _combine_kernel(
            post,
            chunk.value,
            chunk.missing,
            chunk.length,
            anchor,
            unit,
            y,
            self._z,
            self.coverage,
            mean,
            scale,
        )
        return ForecastChunk(
            mean=mean, scale=scale, state=np.hstack([stats, post, pack_hidden(hidden)])
        )

    def _run(
        self, x: np.ndarray, hidden: np.ndarray, length: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """x (B, T, F) float32, hidden (B, L*H) float32 -> y (B, T, 2) float64, (B, L*H)."""
        w = self.weights
        rows, steps = x.shape[:2]
        h = hidden.reshape(rows, w.layers, w.hidden).transpose(1, 0, 2)  # (L, B, H)
        h = np.ascontiguousarray(h)
        if self.torch_steps if steps == 1 else self.torch_sequences:
            y, h = self._torch(x, h, length)
        else:
            y, h = self._compiled.forward(x, h, length)
        return y.astype(np.float64), h.transpose(1, 0, 2).reshape(rows, -1)  # (B, L*H)

    def _torch(
        self, x: np.ndarray, h: np.ndarray, length: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The reference: ``nn.GRU`` over chunks, ``torch.gru_cell`` for one step."""
        import torch

        net = self.network
        with torch.inference_mode():
            if x.shape[1] == 1:
                y, h_out = net.step(torch.from_numpy(x[:, 0]), torch.from_numpy(h))  # (B, 2)
                y = y[:, None]  # (B, 1, 2)
            else:
                lengths = torch.from_numpy(length)
                y, h_out = net(torch.from_numpy(x), torch.from_numpy(h), lengths)  # (B, T, 2)
        return y.numpy(), h_out.numpy()


def packed_width(values: int) -> int:
    """float64 columns that hold ``values`` float32s."""
    return (values + 1) // 2


def pack_hidden(hidden: np.ndarray) -> np.ndarray:
    """(B, n) float32 -> (B, ceil(n / 2)) float64 holding the same bits (zero padded).

    Lossless, and safe to store as float64: hidden states lie in [-1, 1], whose
    float32 bits never form a float64 NaN, so no copy can canonicalise them.
    """
    rows, n = hidden.shape
    padded = np.zeros((rows, 2 * packed_width(n)), np.float32)
    padded[:, :n] = hidden
    return padded.view(np.float64)


def unpack_hidden(packed: np.ndarray, n: int) -> np.ndarray:
    """(B, ceil(n / 2)) float64 -> (B, n) float32: the inverse of ``pack_hidden``."""
    return np.ascontiguousarray(packed).view(np.float32)[:, :n]


_WEIGHTS = np.array(WEIGHTS)


@numba.njit(cache=True, error_model="numpy")
def _combine_kernel(post, value, missing, length, anchor, unit, y, z, coverage, mean, scale):
    for b in range(value.shape[0]):
        p = post[b]
        for j in range(length[b]):
            if missing[b, j] == 0:
                _learn(p, value[b, j], z, coverage)
            u = unit[b, j]
            gap = u * y[b, j, 0]  # the network's predicted change
            weight, spread = _weight(p)
            gru_scale = u * math.exp(min(max(y[b, j, 1], -10.0), 10.0))
            # the candidates' disagreement widens the interval: variance of a mixture
            mix_scale = math.sqrt(gru_scale * gru_scale + spread * gap * gap)
            mean[b, j] = anchor[b, j] + _on_lattice(weight * gap, p[LATTICE])
            scale[b, j] = mix_scale * math.exp(p[CALIB])
            p[GAP_PREV], p[MIX_PREV], p[ANCHOR_PREV] = gap, mean[b, j], anchor[b, j]
            p[SCALE_PREV], p[UNIT_PREV] = mix_scale, u


@numba.njit(cache=True, error_model="numpy")
def _weight(p):
    """Mean and variance of the candidate weights under a softmin of their errors.

    The variance is never negative (a Bernoulli ``w (1 - w)`` would be, for the
    weights above 1), so the interval exists at every step.
    """
    best = p[LOSSES]
    for k in range(1, len(_WEIGHTS)):
        best = min(best, p[LOSSES + k])
    total, weighted, squared = 0.0, 0.0, 0.0
    for k in range(len(_WEIGHTS)):
        share = math.exp(-SHARPNESS * (p[LOSSES + k] - best))
        total += share
        weighted += share * _WEIGHTS[k]
        squared += share * _WEIGHTS[k] * _WEIGHTS[k]
    mean = weighted / total
    return mean, max(squared / total - mean * mean, 0.0)


@numba.njit(cache=True, error_model="numpy")
def _on_lattice(change, lattice):
    """``change`` rounded to the stream's smallest step seen (``inf``: none yet).

    A quantised sensor only ever reads multiples of its step, and for such
    values the point that minimises the expected absolute error is one of
    them: a 0.1 degree sea temperature that mostly sits still is best forecast
    by its last value, not by the last value plus 0.02.
    """
    if lattice == math.inf:
        return change
    return lattice * round(change / lattice)


@numba.njit(cache=True, error_model="numpy")
def _learn(p, v, z, coverage):
    """Score the forecasts made at the previous step against ``v``."""
    if p[GAP_PREV] != p[GAP_PREV]:
        return  # nothing was forecast yet
    u, change = p[UNIT_PREV], v - p[ANCHOR_PREV]
    if change != 0.0:
        p[LATTICE] = min(p[LATTICE], abs(change))
    for k in range(len(_WEIGHTS)):
        error = abs(change - _on_lattice(_WEIGHTS[k] * p[GAP_PREV], p[LATTICE])) / u
        p[LOSSES + k] = DISCOUNT * p[LOSSES + k] + min(error, 50.0)
    outside = abs(v - p[MIX_PREV]) > z * p[SCALE_PREV] * math.exp(p[CALIB])
    p[CALIB] += CALIB_RATE * ((1.0 if outside else 0.0) - (1.0 - coverage))
    p[CALIB] = min(max(p[CALIB], -CALIB_LIMIT), CALIB_LIMIT)
