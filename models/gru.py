"""The recurrent network: a GRU over per-step features with a Gaussian head.

It takes and returns its hidden state explicitly, in two execution modes over
one set of weights:

* ``forward(x, h)``: sequence mode over ``(B, T)`` chunks (``nn.GRU``), for
  replay and training;
* ``step(x, h)``: one step for a batch of streams, built from the same
  weights with ``torch.gru_cell``, for the daemon's ticks.

The head predicts the next step's change, in units of the stream's change
scale: ``(mu, log_sigma)``. Zero is persistence; the last layer starts at
zero so an untrained model is persistence with a unit scale.
"""

from __future__ import annotations

import torch
from torch import nn


class GaussianGRU(nn.Module):
    def __init__(self, n_features: int, hidden: int = 32, layers: int = 1) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = hidden
        self.layers = layers
        self.gru = nn.GRU(n_features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def initial_hidden(self, batch: int) -> torch.Tensor:
        return torch.zeros(self.layers, batch, self.hidden)  # (L, B, H)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, F), h (L, B, H) -> y (B, T, 2), h (L, B, H).

        With ``lengths`` (B,), rows shorter than T stop there: their returned
        hidden state is the one after their own last step.
        """
        if lengths is None or bool((lengths == x.shape[1]).all()):
            out, h = self.gru(x, h)  # (B, T, H)
            return self.head(out), h
        if self.layers == 1:
            return self._forward_padded(x, h, lengths)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, h = self.gru(packed, h)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.head(out), h  # (B, T, 2), (L, B, H)

    def _forward_padded(
        self, x: torch.Tensor, h: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with ``lengths`` for one layer, without packing: every row runs
        all T steps (a step past a row's end cannot change its earlier outputs), and
        the state after a row's own last step is its output there. Packing cost
        about a tenth more, for chunks where a few rows are a step short."""
        out, _ = self.gru(x, h)  # (B, T, H)
        last = (lengths - 1).clamp(min=0).to(torch.long)  # (B,)
        h_last = out[torch.arange(len(last)), last]  # (B, H)
        h_last = torch.where((lengths > 0)[:, None], h_last, h[0])  # a row with no step keeps h
        return self.head(out), h_last[None]  # (B, T, 2), (1, B, H)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, F), h (L, B, H) -> y (B, 2), h (L, B, H): one step, cell by cell."""
        layer_input = x
        states = []
        for layer in range(self.layers):
            weights = [getattr(self.gru, f"{name}_l{layer}") for name in _CELL_WEIGHTS]
            layer_input = torch.gru_cell(layer_input, h[layer], *weights)  # (B, H)
            states.append(layer_input)
        return self.head(layer_input), torch.stack(states)  # (B, 2), (L, B, H)


_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
