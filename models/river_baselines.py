"""River's online time-series models as sensorcast forecasters: baselines for the GRU.

``RiverForecaster("holtwinters")`` wraps ``river.time_series.HoltWinters`` and
``RiverForecaster("snarimax")`` wraps ``river.time_series.SNARIMAX``, one River
model per stream. For every step, in order, the model learns the value and then
forecasts one step ahead (``model.forecast(horizon=1)[0]``); that forecast is the
one the engine judges the next step by.

**Seasonality is in steps.** ``seasonality`` (Holt-Winters) and ``m`` (SNARIMAX)
are the streams' period counted in steps, not seconds: 24 (the default) is a daily
cycle for hourly steps; use 144 for 10-minute steps, 8 for ``--window 3h``.

**Scale.** River forecasts a point; the interval comes from the exponentially
weighted RMS of the model's own one-step errors (bias-corrected, as in the
persistence forecaster: an error larger than ``clip`` scales is learned as
``clip`` scales, and the scale never drops below half the stream's resolution).
It is NaN until the first error is known. Steps after a gap (``missing > 0``)
are still learned (River models have no notion of gaps) but their error does
not update the scale: it spans more than one step.

**Warm-up and faults.** Until a fresh model has seen enough values to forecast
(Holt-Winters: one season; SNARIMAX: its differencing and lags) the forecast is
the last value. A model that raises, or forecasts a non-finite value or one
further from the last value than ``divergence`` typical one-step changes (the
EW RMS of the stream's changes: SNARIMAX's SGD and Holt-Winters with
``gamma > 1 - alpha`` can blow up, quickly or slowly), does not crash or poison
the stream: that step's forecast falls back to the last value, the model is
replaced by a fresh one, and ``fallbacks`` counts it. (A slow model caught by a
level shift of more than ``divergence`` typical changes is reset the same way.)

**State and snapshots.** River models are Python objects that cannot be stored
in the state table without pickle. The table holds one number per stream (an
id, NaN before the stream's first step) into a dict of models kept by this
forecaster object, so ``step`` is not pure in the model sense: it advances the
models of the ids it is given. For the same reason the ``fingerprint`` carries a
random token per forecaster object: a snapshot taken with a River baseline is
refused by any other process (or forecaster) rather than restored with ids that
point at nothing. Models of streams the state table evicts are not freed; these
baselines are meant for replay and evaluation, not for the long-running daemon.

>>> from pipeline.testing import chunk_of
>>> f = RiverForecaster("holtwinters", alpha=0.5, beta=None, gamma=None, seasonality=0)
>>> out = f.step(f.initial_state(1), chunk_of([[1.0, 2.0, 4.0, 4.0]]))
>>> out.mean.tolist(), out.state.tolist()
([[1.0, 1.5, 2.75, 3.375]], [[0.0]])
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import linear_model, optim, preprocessing, time_series

from pipeline.types import ForecastChunk, StepChunk

log = logging.getLogger(__name__)

KINDS = ("holtwinters", "snarimax")
DEFAULTS: dict[str, dict[str, Any]] = {
    "holtwinters": {
        "alpha": 0.9,
        "beta": 0.001,
        "gamma": 0.1,
        "seasonality": 24,
        "multiplicative": False,
    },
    "snarimax": {
        "p": 2,
        "d": 1,
        "q": 1,
        "m": 24,
        "sp": 1,
        "sd": 0,
        "sq": 0,
        "regressor": None,  # None: StandardScaler | LinearRegression(SGD(learning_rate))
        "learning_rate": 0.005,
    },
}
TUNE_FRACTION = 0.2  # tune() looks at this leading share of each series only


class RiverForecaster:
    """One River model per stream behind the ``Forecaster`` protocol (see the module doc).

    ``kind`` is ``"holtwinters"`` or ``"snarimax"``; ``params`` are that River
    model's parameters (missing ones take ``DEFAULTS[kind]``). For SNARIMAX,
    ``regressor=None`` means ``StandardScaler | LinearRegression`` trained by SGD
    at ``learning_rate`` with gradients clipped to 1 (the intercept is learned
    only when the series is not differenced). ``error_alpha`` is the weight of
    the error scale's moving average, ``clip`` the largest error it learns (in
    scales), ``divergence`` the distance from the last value (in typical one-step
    changes) beyond which a forecast counts as a failure.
    """

    state_width = 1  # the stream's model id (NaN: no model yet)
    state_dtype: type[np.floating] = np.float64

    def __init__(
        self,
        kind: str,
        *,
        error_alpha: float = 0.05,
        clip: float = 4.0,
        divergence: float = 50.0,
        **params: Any,
    ) -> None:
        if kind not in KINDS:
            msg = f"kind {kind!r} is not one of {', '.join(KINDS)}"
            raise ValueError(msg)
        unknown = set(params) - set(DEFAULTS[kind])
        if unknown:
            msg = (
                f"river-{kind}: unknown parameters {sorted(unknown)}; use {sorted(DEFAULTS[kind])}"
            )
            raise ValueError(msg)
        self.kind = kind
        self.error_alpha = error_alpha
        self.clip = clip
        self.divergence = divergence
        self.params = {**DEFAULTS[kind], **params}
        self.name = f"river-{kind}"
        self.fallbacks = 0  # forecasts replaced by the last value: the model raised or diverged
        self._token = secrets.token_hex(8)
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0
        self._warmup = _warmup(kind, self.params)
        self._new_model()  # invalid parameters fail here, not at a stream's first step

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (
            f"RiverForecaster({self.kind!r}, error_alpha={self.error_alpha!r}, "
            f"clip={self.clip!r}, divergence={self.divergence!r}, {extra})"
        )

    @property
    def fingerprint(self) -> str:
        """Unique to this object: River models live in memory, so no snapshot can carry them."""
        return f"{self!r} token={self._token}"

    def initial_state(self, n: int) -> np.ndarray:
        return np.full((n, self.state_width), math.nan, self.state_dtype)

    def step(self, state: np.ndarray, chunk: StepChunk) -> ForecastChunk:
        new_state = state.copy()
        mean = np.full(chunk.shape, math.nan)  # (B, T)
        scale = np.full(chunk.shape, math.nan)
        for b in range(chunk.shape[0]):
            new_state[b, 0], stream = self._stream_of(state[b, 0])
            n = int(chunk.length[b])
            values = chunk.value[b, :n].tolist()
            gaps = (chunk.missing[b, :n] > 0).tolist()
            for j, (x, gap) in enumerate(zip(values, gaps, strict=True)):
                mean[b, j], scale[b, j] = self._advance(stream, x, gap)
        return ForecastChunk(mean=mean, scale=scale, state=new_state)

    def forecast_series(self, values: Iterable[float]) -> np.ndarray:
        """One-step forecasts along a fresh stream (``out[t]`` is made after ``values[t]``).

        The stream is not kept: this is for tuning and tests.
        """
        stream = self._fresh_stream()
        return np.array([self._advance(stream, float(x), False)[0] for x in values])

    # -- one stream, one step ------------------------------------------------------------

    def _stream_of(self, key: float) -> tuple[int, _Stream]:
        if not math.isnan(key) and int(key) in self._streams:
            return int(key), self._streams[int(key)]
        ident, self._next_id = self._next_id, self._next_id + 1
        stream = self._fresh_stream()
        self._streams[ident] = stream
        return ident, stream

    def _fresh_stream(self) -> _Stream:
        def scale() -> _ErrorScale:
            return _ErrorScale(self.error_alpha, self.clip)

        return _Stream(self._new_model(), errors=scale(), changes=scale())

    def _advance(self, stream: _Stream, x: float, gap: bool) -> tuple[float, float]:
        """Judge the pending forecast by ``x``, learn ``x``, forecast the next step."""
        errors = stream.errors
        if not gap and not math.isnan(stream.forecast):
            errors.update(x - stream.forecast, x - stream.last)
            stream.changes.update(x - stream.last, x - stream.last)
        stream.forecast = self._learn_and_forecast(stream, x)
        stream.last = x
        return stream.forecast, errors.scale

    def _learn_and_forecast(self, stream: _Stream, x: float) -> float:
        try:
            stream.model.learn_one(x)
            stream.seen += 1
            if stream.seen < self._warmup:
                return x
            forecast = float(stream.model.forecast(horizon=1)[0])
        # Whatever a River model raises (IndexError, OverflowError, ZeroDivisionError, a
        # warning turned error...) concerns this stream only: count it and carry on.
        except Exception as exc:
            return self._fall_back(stream, x, f"{type(exc).__name__}: {exc}")
        limit = self.divergence * _known_scale(stream.changes)
        if not abs(forecast - x) <= limit:  # also catches NaN and infinities
            return self._fall_back(stream, x, f"forecast {forecast!r} after value {x!r}")
        return forecast

    def _fall_back(self, stream: _Stream, x: float, why: str) -> float:
        if not self.fallbacks:
            log.warning("%s: model failed (%s); forecasting the last value", self.name, why)
        self.fallbacks += 1
        stream.model = self._new_model()
        stream.seen = 0
        return x

    def _new_model(self) -> Any:
        params = self.params
        if self.kind == "holtwinters":
            if params["seasonality"] and not params["beta"]:
                msg = "river-holtwinters: a seasonal model needs beta > 0 (River's trend)"
                raise ValueError(msg)
            return _HoltWinters(**params)
        snarimax = {k: v for k, v in params.items() if k not in ("regressor", "learning_rate")}
        regressor = params["regressor"]
        if regressor is None:
            differenced = params["d"] or params["sd"]
            regressor = preprocessing.StandardScaler() | linear_model.LinearRegression(
                optimizer=optim.SGD(params["learning_rate"]),
                intercept_lr=0.0 if differenced else params["learning_rate"],
                clip_gradient=1.0,
            )
        return time_series.SNARIMAX(**snarimax, regressor=regressor.clone())


def _known_scale(tracker: _ErrorScale) -> float:
    """The scale where it is known and positive; infinity (no limit) otherwise."""
    scale = tracker.scale
    return scale if scale > 0 else math.inf


def _warmup(kind: str, params: Mapping[str, Any]) -> int:
    """Values a fresh model must learn before its forecasts are used."""
    if kind == "holtwinters":
        return max(2, int(params["seasonality"]))
    p, d, m, sp, sd = (int(params[k]) for k in ("p", "d", "m", "sp", "sd"))
    return d + m * sd + max(p, m * sp, 1)


class _HoltWinters(time_series.HoltWinters):
    """River's Holt-Winters, with additive seasonal indices initialised as ``y - level``.

    River 0.26 starts them at ``y / level`` (the multiplicative formula) in the
    additive model too, which for a series near zero (winter temperatures)
    starts the season at huge values.
    """

    def learn_one(self, y: float, x: dict | None = None) -> None:
        fresh = not self._initialized
        super().learn_one(y, x)
        if fresh and self._initialized and self.season is not None and not self.multiplicative:
            level = self.level[-1]
            self.season.clear()
            self.season.extend(v - level for v in self._first_values)


@dataclass(slots=True)
class _ErrorScale:
    """EW RMS of one-step errors, bias-corrected, floored at half the resolution."""

    alpha: float
    clip: float
    ew: float = 0.0  # EW mean of squared (clipped) errors
    weight: float = 0.0  # its bias-correction weight
    resolution: float = math.inf  # smallest non-zero change of the value seen

    @property
    def scale(self) -> float:
        if self.weight <= 0.0:
            return math.nan
        floor = 0.5 * self.resolution if self.resolution < math.inf else 0.0
        return max(math.sqrt(self.ew / self.weight), floor)

    def update(self, error: float, change: float) -> None:
        if change != 0.0 and math.isfinite(change):
            self.resolution = min(self.resolution, abs(change))
        limit = self.clip * self.scale
        if limit > 0.0:  # False while the scale is unknown (NaN)
            error = min(max(error, -limit), limit)
        self.ew = (1.0 - self.alpha) * self.ew + self.alpha * error * error
        self.weight = (1.0 - self.alpha) * self.weight + self.alpha


@dataclass(slots=True)
class _Stream:
    model: Any  # the River forecaster
    errors: _ErrorScale  # of the forecasts: the interval
    changes: _ErrorScale  # of the value from step to step: persistence's, the divergence yardstick
    seen: int = 0  # values the current model has learned
    forecast: float = math.nan  # made at the previous step, for the next one
    last: float = math.nan


# -- tuning ----------------------------------------------------------------------------------

GRIDS: dict[str, list[dict[str, Any]]] = {
    # seasonal candidates keep gamma <= 1 - alpha (outside it additive Holt-Winters is
    # unstable); the non-seasonal ones (Holt's linear trend, or simple exponential
    # smoothing) win on streams without a daily cycle
    "holtwinters": [
        {"alpha": a, "beta": b, "gamma": g}
        for a, b, g in itertools.product((0.5, 0.8, 0.9, 0.95), (0.001, 0.01), (0.01, 0.05, 0.1))
        if g <= 1.0 - a + 1e-9
    ]
    + [
        {"alpha": a, "beta": b, "gamma": None, "seasonality": 0}
        for a, b in itertools.product((0.8, 0.95, 1.0), (None, 0.1, 0.3))
    ],
    "snarimax": [
        {"p": p, "q": q, "learning_rate": lr}
        for p, q, lr in itertools.product((1, 2, 3), (0, 1), (0.005, 0.01))
    ],
}


def tune(
    kind: str,
    series_list: Sequence[Sequence[float] | np.ndarray],
    grid: Sequence[Mapping[str, Any]] | None = None,
    *,
    fraction: float = TUNE_FRACTION,
    **fixed: Any,
) -> dict[str, Any]:
    """The parameters in ``grid`` (default ``GRIDS[kind]``) with the lowest one-step MAE.

    Each candidate makes one strictly online pass (learn, then forecast the next
    value) over the first ``fraction`` of every series, nothing after it. Series
    in different units are made comparable by dividing each one's MAE by that
    of persistence on the same steps; the candidate with the lowest mean of
    these wins (the first one on ties). ``fixed`` parameters (e.g.
    ``seasonality=24``) go to every candidate and are part of the answer.

    >>> rng = np.random.default_rng(1)
    >>> walk = np.cumsum(rng.normal(size=400))
    >>> tune("holtwinters", [walk], [{"alpha": 0.1}, {"alpha": 0.9}], fraction=1.0,
    ...      beta=None, gamma=None, seasonality=0)
    {'beta': None, 'gamma': None, 'seasonality': 0, 'alpha': 0.9}
    """
    candidates = list(GRIDS[kind] if grid is None else grid)
    if not candidates:
        msg = "tune: the grid is empty"
        raise ValueError(msg)
    heads = [np.asarray(s, np.float64)[: int(len(s) * fraction)] for s in series_list]
    heads = [h for h in heads if len(h) >= 3]
    scores = [_relative_mae(RiverForecaster(kind, **{**fixed, **c}), heads) for c in candidates]
    finite = [s if math.isfinite(s) else math.inf for s in scores]
    best = candidates[int(np.argmin(finite))]
    return {**fixed, **best}


def _relative_mae(forecaster: RiverForecaster, heads: Sequence[np.ndarray]) -> float:
    """Mean over series of MAE / persistence MAE, on the steps that had a forecast."""
    ratios = []
    for head in heads:
        forecast = forecaster.forecast_series(head.tolist())[:-1]  # for head[1:]
        naive = np.mean(np.abs(np.diff(head)))
        if naive > 0:
            ratios.append(float(np.mean(np.abs(head[1:] - forecast))) / float(naive))
    return float(np.mean(ratios)) if ratios else math.nan
