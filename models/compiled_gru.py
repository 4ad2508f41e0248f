"""The GRU's time loop compiled, one set of weights: every chunk, every live tick.

The forecaster runs the GRU here, never through torch: the same weights and the
same equations as ``nn.GRU`` (gates in its order: reset, update, new), to
float32 rounding (the exponentials to about an ulp: see ``_exp``). Two loops:

* row by row, for a few rows (``ROW_BY_ROW``): each step a compiled
  matrix-vector product. ``nn.GRU`` pays a fixed ~13 us per time step, which one
  stream pays alone: replaying a single sensor's log spent three quarters of its
  time there.
* batched, for more: each step's products for every row at once (BLAS), then the
  gates over every row, laid out gate by gate so that their loops vectorise.
  Faster than ``nn.GRU`` and ``torch.gru_cell`` at every size measured (1.5x for a
  tick of 10,000 streams, 2.5-3.7x for chunks of 50-500 steps of 1,000 streams);
  torch's gates are a kernel per operation, and its ``tanh`` alone cost as much
  as the product.

The weights live here as numpy arrays (``GruWeights``), read from a checkpoint
without torch: replaying or serving never imports it (about a second of
start-up); training builds the torch module from the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from pipeline.pointers import data_pointer

if TYPE_CHECKING:
    from models.gru import GaussianGRU

# Up to this many rows run row by row; above, batched: the batched loop's fixed
# ~3.5 us a step (two BLAS calls and the gates' call) beats the per-row ~270 ns
# from 16-32 rows on for chunks of 500 steps, and from 64-96 for single steps
# (Intel Xeon, 2026-12-08: the cost per row and step of each loop, at 8 to 256 rows).
ROW_BY_ROW = 24
ROW_BY_ROW_TICK = 64
# The batched loop takes at most this many rows at a time: its gate arrays, (3H, rows)
# float32 each, then stay in the core's cache. A tick of 65,536 streams in one piece
# (25 MB a gate array) ran at half the speed of 64 pieces.
BATCH_ROWS = 1024


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
        if rows > BATCH_ROWS:
            return self._forward_in_pieces(x, h, length)
        if rows > (ROW_BY_ROW_TICK if steps == 1 else ROW_BY_ROW):
            return self._forward_batched(x, h, length)
        layer_input = x.reshape(rows * steps, -1)  # (B*T, F): row b's step t at b*T + t
        states = []
        for k in range(len(self.w_ih)):
            out = np.zeros((rows * steps, self.w_hh[k].shape[0]), np.float32)  # (B*T, H)
            weights = (self.w_ih[k], self.b_ih[k], self.w_hh[k], self.b_hh[k])
            size = self.w_hh[k].shape[0]
            scratch = (np.empty(3 * size, np.float32), np.empty(2 * size, np.int32))
            states.append(_layer(layer_input, h[k], *weights, length, steps, out, *scratch))
            layer_input = out
        y = np.zeros((rows * steps, 2), np.float32)
        _affine(layer_input, self.head_w, self.head_b, length, steps, y)
        return y.reshape(rows, steps, 2), np.stack(states)

    def _forward_in_pieces(
        self, x: np.ndarray, h: np.ndarray, length: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``forward`` over pieces of at most ``BATCH_ROWS`` rows, of equal size (each
        over ``ROW_BY_ROW_TICK``: every piece takes the batched loop)."""
        rows = x.shape[0]
        pieces = -(-rows // BATCH_ROWS)
        bounds = np.linspace(0, rows, pieces + 1).round().astype(np.int64)
        ys, hs = [], []
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            y, h_out = self._forward_batched(x[start:end], h[:, start:end], length[start:end])
            ys.append(y)  # (rows of the piece, T, 2)
            hs.append(h_out)  # (L, rows of the piece, H)
        return np.concatenate(ys), np.concatenate(hs, axis=1)

    def _forward_batched(
        self, x: np.ndarray, h: np.ndarray, length: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``forward`` for many rows: each step's products for all rows at once (BLAS),
        the gates compiled. Time-major and transposed, so that a gate's values for every
        row lie side by side and its loops vectorise."""
        steps = x.shape[1]
        active = np.arange(steps)[:, None] < length[None, :]  # (T, B) bool
        layer_input = np.ascontiguousarray(x.transpose(1, 2, 0))  # (T, F, B)
        states = []
        for k in range(len(self.w_ih)):
            weights = (self.w_ih[k].T, self.b_ih[k], self.w_hh[k].T, self.b_hh[k])
            layer_input, h_k = _batched_layer(layer_input, h[k].T, *weights, active)
            states.append(h_k.T)
        y = np.matmul(self.head_w.T, layer_input)  # (2, H) @ (T, H, B) -> (T, 2, B)
        y += self.head_b[:, None]
        y *= active[:, None, :]  # past a row's last step: zero, as row by row
        return np.ascontiguousarray(y.transpose(2, 0, 1)), np.stack(states)  # (B, T, 2)


# reassociation lets the sums vectorise; NaN and inf keep their meaning
_FAST = {"reassoc", "contract", "nsz", "arcp"}
# for the exponential: reassociating would merge the two halves of ln 2 (2.5 ulp)
_NO_REASSOC = {"contract", "nsz", "arcp"}


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _affine(x, w, bias, length, steps, out):
    """``out[r] = x[r] @ w + bias`` for each row's steps: x (B*T, in), w (in, out), out
    (B*T, out), row b's step t at ``r = b*steps + t``."""
    for b in range(length.shape[0]):
        for t in range(length[b]):
            _gemv(x, b * steps + t, w, bias, out, b * steps + t)


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST, inline="always")
def _gemv(v, row, w, bias, out, out_row):
    """``out[out_row] = v[row] @ w + bias``: v (rows, in), w (in, out), out (rows', out).

    Rows by index, not as views: a view made in the time loop costs two atomic
    reference counts, and those were a quarter of a single stream's replay.
    Four inputs per pass over ``out``: the compiler cannot keep ``out`` in
    registers (it might alias ``w``), so every pass loads and stores it, and
    a quarter of the passes made the recurrent product ~1.3x faster
    (32 units: ~200 -> ~150 ns a step).
    """
    width = w.shape[1]
    for k in range(width):
        out[out_row, k] = bias[k]
    inputs, i = w.shape[0], 0
    while i + 4 <= inputs:
        v0, v1, v2, v3 = v[row, i], v[row, i + 1], v[row, i + 2], v[row, i + 3]
        for k in range(width):
            out[out_row, k] += (w[i, k] * v0 + w[i + 1, k] * v1) + (
                w[i + 2, k] * v2 + w[i + 3, k] * v3
            )
        i += 4
    for j in range(i, inputs):
        vj = v[row, j]
        for k in range(width):
            out[out_row, k] += w[j, k] * vj


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


@numba.njit(cache=True, error_model="numpy", fastmath=_NO_REASSOC)
def _exp(v, n, bits, powers):
    """``v[k] = exp(v[k])`` in place for k < n, to about a float32 ulp, arguments
    clipped to [-87, 88]. ``v`` is an array or a ``data_pointer``.

    ``math.exp`` is a library call per element, two thirds of a step's time;
    this is the same function as branch-free arithmetic (exp(a) = 2^m * exp(r),
    a = m ln 2 + r, a polynomial for exp(r), 2^m built from its exponent bits),
    which the compiler turns into vector instructions (it did not for loops from
    an offset: 7x slower). ``bits`` is int32 scratch of at least n, ``powers`` the
    same memory as float32 (``bits.view(np.float32)``), made once by the caller. The
    row-by-row loop passes ``data_pointer``s: arrays are reference-counted at every
    call, and it calls this twice a step.
    """
    for k in range(n):
        a = min(max(v[k], EXP_LOW), EXP_HIGH)
        m = np.floor(a * LOG2E + HALF)  # float32 (math.floor's int made it all float64)
        r = a - m * LN2_HIGH - m * LN2_LOW
        p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5
        v[k] = p * r * r + r + ONE
        bits[k] = (np.int32(m) + np.int32(127)) << np.int32(23)  # the float32 2^m
    for k in range(n):
        v[k] *= powers[k]


@numba.njit(cache=True, error_model="numpy", fastmath=_FAST)
def _layer(x, h0, w_ih, b_ih, w_hh, b_hh, length, steps, out, gates, bits):
    """One layer's time loop: x (B*T, F), out (B*T, H), row b's step t at b*steps + t;
    ``out`` gets the hidden state after each step; returns the state after each row's
    last step. ``gates`` (3H,) float32 and ``bits`` (2H,) int32 are scratch, from the
    caller: the exponentials get pointers into them, which must outlive the loop, and
    numba frees an array made here after its last use as an array. Same equations as
    ``nn.GRU``:
    r = sigmoid(a_r), z = sigmoid(a_z), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h, with sigmoid(a) = 1 / (1 + exp(-a)) and
    tanh(a) = 1 - 2 / (1 + exp(2a)), the exponentials taken a gate vector at a time."""
    three_h = w_hh.shape[1]
    size = three_h // 3
    h = h0.copy()  # (B, H)
    g_in = np.empty((1, three_h), np.float32)  # W_ih x + b_ih
    g_h = np.empty((1, three_h), np.float32)  # W_hh h + b_hh
    # the gates' exponentials: reset and update, then new, as two views made once
    # (slices made in the loop would be views made every step)
    e, e_new = gates[: 2 * size], gates[2 * size :]
    powers = bits.view(np.float32)
    e_p, e_new_p = data_pointer(e), data_pointer(e_new)
    bits_p, powers_p = data_pointer(bits), data_pointer(powers)
    for b in range(h.shape[0]):
        for t in range(length[b]):
            _gemv(x, b * steps + t, w_ih, b_ih, g_in, 0)
            _gemv(h, b, w_hh, b_hh, g_h, 0)
            for k in range(2 * size):  # reset and update: exp(-a)
                e[k] = -(g_in[0, k] + g_h[0, k])
            _exp(e_p, 2 * size, bits_p, powers_p)
            for i in range(size):  # new: exp(2a)
                reset = ONE / (ONE + e[i])
                e_new[i] = TWO * (g_in[0, 2 * size + i] + reset * g_h[0, 2 * size + i])
            _exp(e_new_p, size, bits_p, powers_p)
            for i in range(size):
                update = ONE / (ONE + e[size + i])
                new = ONE - TWO / (ONE + e_new[i])
                h[b, i] = (ONE - update) * new + update * h[b, i]
                out[b * steps + t, i] = h[b, i]
    return h


def _batched_layer(
    x: np.ndarray,
    h0: np.ndarray,
    w_ih: np.ndarray,
    b_ih: np.ndarray,
    w_hh: np.ndarray,
    b_hh: np.ndarray,
    active: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One layer over all rows: x (T, F, B), h0 (H, B), w_ih (3H, F), w_hh (3H, H),
    active (T, B) -> out (T, H, B), h (H, B). A row's state is frozen, and its output
    zero, at the steps it does not have."""
    steps, _, rows = x.shape
    three_h, size = w_hh.shape
    h = np.ascontiguousarray(h0, dtype=np.float32)
    out = np.empty((steps, size, rows), np.float32)
    g_in = np.empty((three_h, rows), np.float32)  # W_ih x, without its bias
    g_h = np.empty((three_h, rows), np.float32)  # W_hh h, without its bias
    e = np.empty((three_h, rows), np.float32)
    bits = np.empty(three_h * rows, np.int32)
    for t in range(steps):
        np.matmul(w_ih, x[t], out=g_in)
        np.matmul(w_hh, h, out=g_h)
        _batched_gates(g_in, b_ih, g_h, b_hh, active[t], h, out[t], e, bits)
    return out, h


@numba.njit(cache=True, fastmath=_FAST, error_model="numpy")
def _batched_gates(g_in, b_ih, g_h, b_hh, active, h, out, e, bits):
    """One step of ``_layer``'s equations for all rows, gate-major: g_in, g_h, e
    (3H, B), h and out (H, B), active (B,); the biases are added here."""
    size = h.shape[0]
    for i in range(2 * size):  # reset and update: exp(-a)
        bias = b_ih[i] + b_hh[i]
        for b in range(h.shape[1]):
            e[i, b] = -(g_in[i, b] + g_h[i, b] + bias)
    powers = bits.view(np.float32)
    _exp(e[: 2 * size].reshape(-1), 2 * size * h.shape[1], bits, powers)
    for i in range(size):  # new: exp(2a)
        j = 2 * size + i
        for b in range(h.shape[1]):
            reset = ONE / (ONE + e[i, b])
            e[j, b] = TWO * (g_in[j, b] + b_ih[j] + reset * (g_h[j, b] + b_hh[j]))
    _exp(e[2 * size :].reshape(-1), size * h.shape[1], bits, powers)
    for i in range(size):
        for b in range(h.shape[1]):
            update = ONE / (ONE + e[size + i, b])
            new = ONE - TWO / (ONE + e[2 * size + i, b])
            stepped = (ONE - update) * new + update * h[i, b]
            h[i, b] = stepped if active[b] else h[i, b]
            out[i, b] = stepped if active[b] else np.float32(0.0)
