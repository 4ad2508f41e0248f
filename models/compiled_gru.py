"""The sequence mode for a few streams: the GRU's time loop compiled, one set of weights.

``nn.GRU`` pays a fixed cost per time step (about 13 us on this machine for
one stream of 32 units), which a batch of many streams shares and one stream
pays alone: replaying a single sensor's log spent three quarters of its time
there. For batches of at most ``SMALL_BATCH`` rows the forecaster runs this
instead: the whole time loop compiled, step by step, with the same weights and
the same equations as ``nn.GRU`` (gates in its order: reset, update, new), to
float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from models.gru import GaussianGRU

SMALL_BATCH = 16  # above this many rows nn.GRU's batched matrix products win


@dataclass(frozen=True, slots=True)
class CompiledGRU:
    """A ``GaussianGRU``'s weights as float32 arrays, laid out for the compiled loop."""

    w_ih: tuple[np.ndarray, ...]  # per layer (in, 3H): input weights, transposed
    b_ih: tuple[np.ndarray, ...]  # per layer (3H,)
    w_hh: tuple[np.ndarray, ...]  # per layer (H, 3H): recurrent weights, transposed
    b_hh: tuple[np.ndarray, ...]  # per layer (3H,)
    head_w: np.ndarray  # (H, 2), transposed
    head_b: np.ndarray  # (2,)

    @classmethod
    def of(cls, network: GaussianGRU) -> CompiledGRU:
        def weight(name: str) -> np.ndarray:
            return network.get_parameter(name).detach().numpy().astype(np.float32)

        layers = range(network.layers)
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
            o = out[b, t]
            o[:] = bias
            for i in range(w.shape[0]):
                xi = x[b, t, i]
                for k in range(w.shape[1]):
                    o[k] += w[i, k] * xi


@numba.njit(cache=True, fastmath=_FAST)
def _layer(x, h0, w_ih, b_ih, w_hh, b_hh, length, out):
    """One layer's time loop: ``out[b, t]`` is the hidden state after step t; returns
    the state after each row's last step. Same equations as ``nn.GRU``."""
    rows, steps, _ = x.shape
    three_h = w_hh.shape[1]
    size = three_h // 3
    h = h0.copy()
    gates_in = np.empty((1, 1, three_h), np.float32)
    gates_h = np.empty((1, 1, three_h), np.float32)
    one = np.ones(1, np.int64)
    for b in range(rows):
        hb = h[b]
        for t in range(length[b]):
            _affine(x[b : b + 1, t : t + 1], w_ih, b_ih, one, gates_in)  # W_ih x + b_ih
            _affine(h[b : b + 1, None], w_hh, b_hh, one, gates_h)  # W_hh h + b_hh
            g, gh = gates_in[0, 0], gates_h[0, 0]
            for i in range(size):
                reset = 1.0 / (1.0 + math.exp(-(g[i] + gh[i])))
                update = 1.0 / (1.0 + math.exp(-(g[size + i] + gh[size + i])))
                new = math.tanh(g[2 * size + i] + reset * gh[2 * size + i])
                hb[i] = (1.0 - update) * new + update * hb[i]
                out[b, t, i] = hb[i]
    return h
