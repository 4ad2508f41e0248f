"""Flat steps grouped by stream into the padded ``(B, T)`` chunk the model steps, and
what the chunk's rows leave in the state table.

Each a compiled pass. The same work in numpy took about 25 calls to group (runs of
the sorted slots, row and cell indexes, six padded grids) and 15 to keep (states,
forecasts and last values, each a fancy-indexed copy): ~180 us a tick whatever its
size, so that a live tick of one reading paid more for them than for the GRU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipeline.state import StateTable
from pipeline.types import DetectionChunk, ForecastChunk, StepChunk
from pipeline.window import Steps


@dataclass(frozen=True, slots=True)
class Gathered:
    """Flat steps grouped by stream into a padded ``(B, T)`` chunk, and the way back."""

    chunk: StepChunk
    row: np.ndarray  # (n,) chunk row of each step, in the order the steps were made
    cell: np.ndarray  # (n,) index of each step's cell in the flattened (B, T) chunk

    @classmethod
    def of(cls, steps: Steps) -> Gathered:
        order = np.argsort(steps.slot, kind="stable")  # keeps each stream's time order
        slots, length, row, cell, timestamp, value, dt, missing, next_timestamp, mask = (
            _gather(order, steps.slot, steps.timestamp, steps.value, steps.dt, steps.missing,
                    steps.next_timestamp)
        )  # fmt: skip
        chunk = StepChunk(
            slots=slots,
            timestamp=timestamp,
            value=value,
            dt=dt,
            missing=missing,
            next_timestamp=next_timestamp,
            mask=mask,
            length=length,
        )
        return cls(chunk, row, cell)

    def flatten(self, grid: np.ndarray) -> np.ndarray:
        """``(B, T)`` back to ``(n,)`` in the order the steps were made."""
        return np.ascontiguousarray(grid).reshape(-1)[self.cell]


@numba.njit(cache=True)
def _gather(order, slot, timestamp, value, dt, missing, next_timestamp):
    """Row ``b`` of the chunk is the ``b``-th stream in slot order, its steps in the
    order ``order`` (a stable sort by slot) gives them; padding is NaN (0 for
    ``missing``, False in the mask). Returns the slots (B,) and lengths (B,), each
    step's row and flat cell (n,), then the grids (B, T)."""
    n = order.shape[0]
    first = np.empty(n + 1, np.int64)  # start of each run of equal slots, then n
    rows = 0
    for p in range(n):
        if p == 0 or slot[order[p]] != slot[order[p - 1]]:
            first[rows] = p
            rows += 1
    first[rows] = n
    slots = np.empty(rows, np.int64)
    length = np.empty(rows, np.int64)
    width = 0
    for b in range(rows):
        slots[b] = slot[order[first[b]]]
        length[b] = first[b + 1] - first[b]
        width = max(width, length[b])
    grid_t = np.full((rows, width), np.nan)
    grid_v = np.full((rows, width), np.nan)
    grid_dt = np.full((rows, width), np.nan)
    grid_next = np.full((rows, width), np.nan)
    grid_missing = np.zeros((rows, width), np.int32)
    mask = np.zeros((rows, width), np.bool_)
    row = np.empty(n, np.int64)
    cell = np.empty(n, np.int64)
    for b in range(rows):
        for j in range(length[b]):
            i = order[first[b] + j]
            row[i] = b
            cell[i] = b * width + j
            grid_t[b, j] = timestamp[i]
            grid_v[b, j] = value[i]
            grid_dt[b, j] = dt[i]
            grid_next[b, j] = next_timestamp[i]
            grid_missing[b, j] = missing[i]
            mask[b, j] = True
    return slots, length, row, cell, grid_t, grid_v, grid_dt, grid_missing, grid_next, mask


def keep_last(
    table: StateTable,
    chunk: StepChunk,
    forecast: ForecastChunk,
    detection: DetectionChunk,
    mean: np.ndarray,
    scale: np.ndarray,
) -> None:
    """Each row's new model and detector state, its forecast for the next step, and its
    last step as judged (``mean``, ``scale``: the forecast each step was judged by),
    for metrics read at scrape time, into the rows' slots of ``table``."""
    columns = table.columns
    _keep_last(
        chunk.slots, chunk.length, chunk.mask, chunk.value, chunk.next_timestamp,
        forecast.state, forecast.mean, forecast.scale, detection.state, detection.score,
        detection.is_anomaly, mean, scale,
        columns["model_state"], columns["detector_state"], columns["pred_mean"],
        columns["pred_scale"], columns["pred_t"], columns["last_value"],
        columns["last_forecast"], columns["last_scale"], columns["last_score"],
        columns["anomalies"],
    )  # fmt: skip


@numba.njit(cache=True)
def _keep_last(
    slots, length, mask, value, next_t, model, next_mean, next_scale, detector, score,
    flagged, mean, scale, model_state, detector_state, pred_mean, pred_scale, pred_t,
    last_value, last_forecast, last_scale, last_score, anomalies,
):  # fmt: skip
    for b in range(slots.shape[0]):
        s, j = slots[b], length[b] - 1
        model_state[s, :] = model[b, :]
        detector_state[s, :] = detector[b, :]
        pred_mean[s], pred_scale[s], pred_t[s] = next_mean[b, j], next_scale[b, j], next_t[b, j]
        last_value[s], last_forecast[s], last_scale[s] = value[b, j], mean[b, j], scale[b, j]
        last_score[s] = score[b, j]
        for k in range(flagged.shape[1]):
            if flagged[b, k] and mask[b, k]:
                anomalies[s] += 1
