"""The GRU's time loop compiled, one set of weights: for a few streams, and live ticks.

``nn.GRU`` pays a fixed cost per time step (about 13 us on this machine for
one stream of 32 units), which a batch of many streams shares and one stream
pays alone: replaying a single sensor's log spent three quarters of its time
there. For chunks of at most ``SMALL_BATCH`` rows, and for every single step
(a live tick, ``LIVE_BATCH``), the forecaster runs this instead: the
whole time loop compiled, step by step, with the same weights and the same
equations as ``nn.GRU`` (gates in its order: reset, update, new), to float32
rounding (the exponentials to about 2 ulp: see ``_exp``).

The weights live here as numpy arrays (``GruWeights``), read from a checkpoint
without torch: a daemon that only steps never imports it (about a second of
its start-up); torch is built from the same arrays when a chunk needs it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

if TYPE_CHECKING:
    from models.gru import GaussianGRU

# Above this many rows, chunks of many steps run nn.GRU, whose fixed cost per time
# step (~13 us) a batch shares. Single steps always run here: torch.gru_cell wins
# only above ~500 rows, by under 0.5 us a row (0.82 against 0.35-0.59 us a row at
# 512-8,192 rows), and importing torch would cost a daemon a second of start-up.
SMALL_BATCH = 16
LIVE_BATCH = sys.maxsize


@dataclass(frozen=True, slots=True)
class GruWeights:
    """A ``GaussianGRU``'s state dict as float32 numpy arrays, with its sizes."""

    tensors: dict[str, np.ndarray]  # gru.weight_ih_l0 (3H, F), ..., head.weight (2, H)
    n_features: int
    hidden: int
    layers: int

    @classmethod
    def of(cls, network: GaussianGRU) -> GruWeights:
        tensors = {name: t.detach().numpy().astype(np.float32)
                   for name, t in network.state_dict().items()}  # fmt: skip
        return cls(tensors, network.n_features, network.hidden, network.layers)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """What each tensor's shape must be for these sizes."""
        h3 = 3 * self.hidden
        expected: dict[str, tuple[int, ...]] = {}
        for k in range(self.layers):
            inputs = self.n_features if k == 0 else self.hidden
            expected[f"gru.weight_ih_l{k}"] = (h3, inputs)
            expected[f"gru.weight_hh_l{k}"] = (h3, self.hidden)
            expected[f"gru.bias_ih_l{k}"] = (h3,)
            expected[f"gru.bias_hh_l{k}"] = (h3,)
        return {**expected, "head.weight": (2, self.hidden), "head.bias": (2,)}

    def network(self) -> GaussianGRU:
        """The torch module with these weights (imports torch)."""
        import torch

        from models.gru import GaussianGRU

        network = GaussianGRU(self.n_features, self.hidden, self.layers)
        network.load_state_dict({name: torch.from_numpy(t) for name, t in self.tensors.items()})
        return network.eval()


@dataclass(frozen=True, slots=True)
class CompiledGRU:
    """A GRU's weights as float32 arrays, laid out for the compiled loop."""

    w_ih: tuple[np.ndarray, ...]  # per layer (in, 3H): input weights, transposed
    b_ih: tuple[np.ndarray, ...]  # per layer (3H,)
    w_hh: tuple[np.ndarray, ...]  # per layer (H, 3H): recurrent weights, transposed
    b_hh: tuple[np.ndarray, ...]  # per layer (3H,)
    head_w: np.ndarray  # (H, 2), transposed
    head_b: np.ndarray  # (2,)

    @classmethod
    def of(cls, weights: GruWeights) -> CompiledGRU:
        def weight(name: str) -> np.ndarray:
            return weights.tensors[name]

        layers = range(weights.layers)
        return cls(
            w_ih=tuple(np.ascontiguousarray(weight(f"gru.weight_ih_l{k}").T) for k in layers),
            b_ih=tuple(weight(f"gru.bias_ih_l{k}") for k in layers),
            w_hh=tuple(np.ascontiguousarray(weight(f"gru.weight_hh_l{k}").T) for k in layers),
            b_hh=tuple(weight(f"gru.bias_hh_l{k}") for k in layers),
            head_w=np.ascontiguousarray(weight("head.weight").T),
            head_b=weight("head.bias"),
        )

    def forward(
        self, x: np.ndarray, h: np.ndarray, length: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """x (B, T, F) float32, h (L, B, H) float32 -> y (B, T, 2), h (L, B, H).

        Like ``GaussianGRU.forward`` with ``lengths``: a row stops after its own
        last step; its outputs past that are zero (the forecaster ignores them).
        Every step is computed alone, so a step's result does not depend on how
        the stream was cut into chunks (a replay resumed from state equals one run).
        """
        rows, steps, _ = x.shape
        layer_input = x
        states = []
        for k in range(len(self.w_ih)):
            out = np.zeros((rows, steps, self.w_hh[k].shape[0]), np.float32)  # (B, T, H)
            weights = (self.w_ih[k], self.b_ih[k], self.w_hh[k], self.b_hh[k])
            states.append(_layer(layer_input, h[k], *weights, length, out))
            layer_input = out
        y = np.zeros((rows, steps, 2), np.float32)
        _affine(layer_input, self.head_w, self.head_b, length, y)
        return y, np.stack(states)


# reassociation lets the sums vectorise; NaN and inf keep their meaning
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(cache=True, fastmath=_FAST)
def _affine(x, w, bias, length, out):
    """``out[b, t] = x[b, t] @ w + bias`` for each row's steps: w (in, out)."""
    for b in range(x.shape[0]):
        for t in range(length[b]):
            _gemv(x[b, t], w, bias, out[b, t])


@numba.njit(cache=True, fastmath=_FAST, inline="always")
def _gemv(v, w, bias, out):
    """``out = v @ w + bias``: v (in,), w (in, out), out (out,).

    Four inputs per pass over ``out``: the compiler cannot keep ``out`` in
    registers (it might alias ``w``), so every pass loads and stores it, and
    a quarter of the passes made the recurrent product ~1.3x faster
    (32 units: ~200 -> ~150 ns a step).
    """
    out[:] = bias
    inputs, i = w.shape[0], 0
    while i + 4 <= inputs:
        v0, v1, v2, v3 = v[i], v[i + 1], v[i + 2], v[i + 3]
        for k in range(w.shape[1]):
            out[k] += (w[i, k] * v0 + w[i + 1, k] * v1) + (w[i + 2, k] * v2 + w[i + 3, k] * v3)
        i += 4
    for j in range(i, inputs):
        vj = v[j]
        for k in range(w.shape[1]):
            out[k] += w[j, k] * vj


# float32 constants, so that the arithmetic below stays in float32 (8 lanes, not 4)
ONE, TWO, HALF = np.float32(1.0), np.float32(2.0), np.float32(0.5)
# the arguments are clipped to where 2^m is a normal float32 (exp(88) is near the
# largest); sigmoid and tanh are flat long before
EXP_LOW, EXP_HIGH = np.float32(-87.0), np.float32(88.0)
LOG2E = np.float32(1.4426950408889634)
LN2_HIGH, LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 in two parts
EXP_POLY = tuple(np.float32(c) for c in (  # Cephes expf: exp(r) on |r| <= ln(2)/2
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
    1.6666665459e-1, 5.0000001201e-1,
))  # fmt: skip
P0, P1, P2, P3, P4, P5 = EXP_POLY


@numba.njit(cache=True, fastmath=_FAST)
def _exp(v, bits):
    """``v[k] = exp(v[k])`` in place, to about 2 float32 ulp, arguments clipped to [-87, 88].

    ``math.exp`` is a library call per element, two thirds of a step's time;
    this is the same function as branch-free arithmetic (exp(a) = 2^m * exp(r),
    a = m ln 2 + r, a polynomial for exp(r), 2^m built from its exponent bits),
    which the compiler turns into vector instructions. ``bits`` is scratch.
    """
    for k in range(v.shape[0]):
        a = min(max(v[k], EXP_LOW), EXP_HIGH)
        m = math.floor(a * LOG2E + HALF)
        r = a - m * LN2_HIGH - m * LN2_LOW
        p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5
        v[k] = p * r * r + r + ONE
        bits[k] = (np.int32(m) + np.int32(127)) << np.int32(23)  # the float32 2^m
    powers = bits[: v.shape[0]].view(np.float32)
    for k in range(v.shape[0]):
        v[k] *= powers[k]


@numba.njit(cache=True, fastmath=_FAST)
def _layer(x, h0, w_ih, b_ih, w_hh, b_hh, length, out):
    """One layer's time loop: ``out[b, t]`` is the hidden state after step t; returns
    the state after each row's last step. Same equations as ``nn.GRU``:
    r = sigmoid(a_r), z = sigmoid(a_z), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h, with sigmoid(a) = 1 / (1 + exp(-a)) and
    tanh(a) = 1 - 2 / (1 + exp(2a)), the exponentials taken a gate vector at a time."""
    rows = x.shape[0]
    three_h = w_hh.shape[1]
    size = three_h // 3
    h = h0.copy()
    g_in = np.empty(three_h, np.float32)  # W_ih x + b_ih
    g_h = np.empty(three_h, np.float32)  # W_hh h + b_hh
    e = np.empty(three_h, np.float32)  # the exponentials of the gates
    bits = np.empty(three_h, np.int32)
    for b in range(rows):
        hb = h[b]
        for t in range(length[b]):
            _gemv(x[b, t], w_ih, b_ih, g_in)
            _gemv(hb, w_hh, b_hh, g_h)
            for k in range(2 * size):  # reset and update: exp(-a)
                e[k] = -(g_in[k] + g_h[k])
            _exp(e[: 2 * size], bits)
            for i in range(size):  # new: exp(2a)
                reset = ONE / (ONE + e[i])
                e[2 * size + i] = TWO * (g_in[2 * size + i] + reset * g_h[2 * size + i])
            _exp(e[2 * size :], bits)
            for i in range(size):
                update = ONE / (ONE + e[size + i])
                new = ONE - TWO / (ONE + e[2 * size + i])
                hb[i] = (ONE - update) * new + update * hb[i]
                out[b, t, i] = hb[i]
    return h
