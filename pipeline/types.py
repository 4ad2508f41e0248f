"""The values that flow through the pipeline.

Single values (``Reading``, ``Step``, ``Forecast``, ``Verdict``) are what a user
sees and what tests build by hand. Between stages the engine moves the same
information as columns (``ReadingBatch``, ``StepChunk``, ``VerdictBatch``) so
that no stage touches one Python object per reading on the hot path.

Time is always event time in float seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

MAX_STREAM_KEY_LENGTH = 256
# Event times outside the years 1900..2100 are garbage, to the payload decoders and the
# engine alike (one rule: a reading a decoder takes is not dropped later as bad_timestamp)
MIN_TIME = -2_208_988_800.0  # 1900-01-01T00:00:00Z
MAX_TIME = 4_133_980_800.0  # 2101-01-01T00:00:00Z, exclusive


class Reason(enum.IntEnum):
    """Why a reading or message was dropped; the name is the metric label."""

    NON_FINITE = 1  # value is NaN or infinite
    OUT_OF_RANGE = 2  # value outside the configured valid range
    DUPLICATE = 3  # same stream, same timestamp as one already taken
    LATE = 4  # older than what the stream has already applied
    BAD_TIMESTAMP = 5  # missing, unparsable or absurd event time
    STREAM_LIMIT = 6  # a new stream while the table is at max_streams
    BAD_VALUE = 7  # a value that is not a number
    DECODE_ERROR = 8  # a payload no decoder understands
    BAD_STREAM = 9  # a stream key that is empty or malformed
    BAD_TOPIC = 10  # an MQTT topic the topic template does not match
    TOO_LARGE = 11  # a payload over the size limit

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class StreamKey:
    """One measurement of one device, ``site/device/measurement`` by convention.

    >>> StreamKey.of("office-3", "thermostat-12", "temperature")
    StreamKey(text='office-3/thermostat-12/temperature')
    >>> StreamKey("a//b")
    Traceback (most recent call last):
    ...
    ValueError: stream key 'a//b' has an empty level
    """

    text: str

    def __post_init__(self) -> None:
        problem = stream_key_problem(self.text)
        if problem:
            raise ValueError(problem)

    @classmethod
    def of(cls, *parts: str) -> StreamKey:
        return cls("/".join(parts))

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.text.split("/"))

    def __str__(self) -> str:
        return self.text


def stream_key_problem(text: str) -> str | None:
    """Why ``text`` cannot be a stream key, or None when it can."""
    if not text:
        return "stream key is empty"
    if len(text) > MAX_STREAM_KEY_LENGTH:
        return f"stream key is longer than {MAX_STREAM_KEY_LENGTH} characters"
    if "\x00" in text:
        return f"stream key {text!r} contains NUL"
    if not text.isascii() and _not_utf8(text):
        return f"stream key {text!r} is not valid UTF-8 (a lone surrogate, from a JSON escape)"
    if text[0] == "/" or text[-1] == "/" or "//" in text:  # an empty level; no list built
        return f"stream key {text!r} has an empty level"
    return None


def all_stream_keys_valid(texts: Sequence[str]) -> bool:
    """True when ``stream_key_problem`` finds nothing in any of ``texts``; False when
    it might (then ask it of each). One pass over their join instead of a call per key:
    a log of 10^5 devices brings 10^5 keys in every chunk. Every mark of a problem in a
    key is in the join too ("/" at a key's edge shows beside a separating newline), so
    a join without one has no bad key.

    >>> all_stream_keys_valid(["a/b", "c"]), all_stream_keys_valid(["a/b", "c/"])
    (True, False)
    """
    if not texts:
        return True
    if not all(texts) or max(map(len, texts)) > MAX_STREAM_KEY_LENGTH:
        return False
    joined = "\n".join(texts)
    edges = joined[0] == "/" or joined[-1] == "/" or "\n/" in joined or "/\n" in joined
    return joined.isascii() and "\x00" not in joined and not edges and "//" not in joined


def _not_utf8(text: str) -> bool:
    """A lone surrogate (``"\\ud800"`` in JSON) cannot be written as UTF-8: not to a topic,
    a payload or a snapshot."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


@dataclass(frozen=True, slots=True)
class Reading:
    """One observation of one stream at one event time."""

    stream: StreamKey
    timestamp: float
    value: float
    partition: str = ""
    seq: int = -1


@dataclass(frozen=True, slots=True)
class Rejection:
    """Input that did not become a reading (or a reading that was dropped).

    Identical rejections from one batch may be folded into one with ``count``;
    ``seq`` then points at the first of them.
    """

    reason: Reason
    detail: str
    partition: str = ""
    seq: int = -1
    stream: str | None = None
    count: int = 1
    raw: bytes | None = None
    topic: str | None = None  # the MQTT topic it came on, for the dead-letter message

    def __str__(self) -> str:
        if self.partition:
            where = f" at {self.partition}:{self.seq}"
        elif self.seq >= 0:
            where = f" at #{self.seq}"
        else:  # known only by its stream: dropped after leaving the lateness buffer
            where = f" in {self.stream}" if self.stream else ""
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.reason.label}{where}{times}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Readings from one source partition, as columns, in arrival order."""

    streams: tuple[str, ...]  # distinct stream keys in this batch
    stream_index: np.ndarray  # (n,) int32, index into ``streams``
    timestamp: np.ndarray  # (n,) float64, event time
    value: np.ndarray  # (n,) float64
    seq: np.ndarray  # (n,) int64, source position of each reading
    partition: str = ""
    rejections: tuple[Rejection, ...] = ()
    missing: int = 0  # empty cells and sentinel codes: neither readings nor errors
    received: np.ndarray | None = None  # (n,) float64 wall time each reading's message arrived
    # (packet id, receipt_digest, receive time) of each QoS 1 message whose readings took
    # its receive time as their time: journaled, so that a redelivery after a crash can be
    # given that time again (pipeline.journal, connectors.mqtt_source)
    receipts: tuple[tuple[int, int, float], ...] = ()

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def take(self, keep: np.ndarray) -> ReadingBatch:
        """The readings where ``keep`` is True (rejections and missing count stay)."""
        return dataclasses.replace(
            self,
            stream_index=self.stream_index[keep],
            timestamp=self.timestamp[keep],
            value=self.value[keep],
            seq=self.seq[keep],
            received=None if self.received is None else self.received[keep],
        )

    @classmethod
    def empty(cls, partition: str = "", rejections: Sequence[Rejection] = ()) -> ReadingBatch:
        return cls(
            streams=(),
            stream_index=np.empty(0, np.int32),
            timestamp=np.empty(0, np.float64),
            value=np.empty(0, np.float64),
            seq=np.empty(0, np.int64),
            partition=partition,
            rejections=tuple(rejections),
        )

    @classmethod
    def from_readings(cls, readings: Sequence[Reading], partition: str = "") -> ReadingBatch:
        index: dict[str, int] = {}
        codes = [index.setdefault(r.stream.text, len(index)) for r in readings]
        return cls(
            streams=tuple(index),
            stream_index=np.asarray(codes, np.int32),
            timestamp=np.asarray([r.timestamp for r in readings], np.float64),
            value=np.asarray([r.value for r in readings], np.float64),
            seq=np.asarray([r.seq for r in readings], np.int64),
            partition=partition,
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One model step of one stream: a reading, or a closed window's aggregate."""

    stream: str
    timestamp: float  # the reading's time, or the window's start
    value: float  # the reading, or the window mean
    count: int
    min: float
    max: float
    dt: float  # seconds since the stream's previous step; NaN at its first
    missing: int  # steps missing between the previous step and this one (gaps)


@dataclass(frozen=True, slots=True)
class Forecast:
    """A Gaussian forecast for one step, with its central interval."""

    timestamp: float
    mean: float
    scale: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything the pipeline says about one step."""

    step: Step
    forecast: Forecast | None  # made at the previous step; None at a stream's first
    anomaly_score: float
    is_anomaly: bool
    next: Forecast | None  # for the stream's next step
    model: str

    def as_record(self) -> dict[str, object]:
        """The output message: plain JSON-able values, None for unknown."""
        f, n = self.forecast, self.next
        return {
            "stream": self.step.stream,
            "timestamp": self.step.timestamp,
            "value": self.step.value,
            "forecast": f.mean if f else None,
            "lower": f.lower if f else None,
            "upper": f.upper if f else None,
            "anomaly_score": self.anomaly_score,
            "is_anomaly": self.is_anomaly,
            "next_timestamp": n.timestamp if n else None,
            "next_forecast": n.mean if n else None,
            "next_lower": n.lower if n else None,
            "next_upper": n.upper if n else None,
            "model": self.model,
        }


@dataclass(frozen=True, slots=True)
class StepChunk:
    """Steps of B streams padded to T, the unit forecasters and detectors work on.

    Row b holds ``length[b]`` steps of stream ``slots[b]`` in time order; cells
    past the length are padding (``mask`` False) and hold NaN.
    """

    slots: np.ndarray  # (B,) int64 state-table slot of each row
    timestamp: np.ndarray  # (B, T) float64
    value: np.ndarray  # (B, T) float64
    dt: np.ndarray  # (B, T) float64, NaN at a stream's first step
    missing: np.ndarray  # (B, T) int32, gap length before the step
    next_timestamp: np.ndarray  # (B, T) float64, expected time of the following step
    mask: np.ndarray  # (B, T) bool
    length: np.ndarray  # (B,) int64

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.value.shape[0]), int(self.value.shape[1]))


@dataclass(frozen=True, slots=True)
class ForecastChunk:
    """What a forecaster returns for a ``StepChunk``: per step, the next step's law."""

    mean: np.ndarray  # (B, T) float64
    scale: np.ndarray  # (B, T) float64, NaN while the scale is unknown
    state: np.ndarray  # (B, W) the rows' new state


@dataclass(frozen=True, slots=True)
class DetectionChunk:
    """What a detector returns for a ``StepChunk``."""

    score: np.ndarray  # (B, T) float64 in [0, 1]
    is_anomaly: np.ndarray  # (B, T) bool
    state: np.ndarray  # (B, W)


@dataclass(frozen=True, slots=True)
class StreamCodes:
    """A stream column factorised: ``names[codes]`` is the column."""

    codes: np.ndarray  # (n,) int64
    names: np.ndarray  # (k,) object, str keys, each once


@dataclass(frozen=True, slots=True)
class VerdictBatch:
    """Verdicts as columns, in the order the steps were made."""

    stream: np.ndarray  # (n,) object, str keys
    timestamp: np.ndarray  # (n,) float64
    value: np.ndarray
    count: np.ndarray  # (n,) int64
    min: np.ndarray
    max: np.ndarray
    forecast: np.ndarray  # NaN where the stream had no forecast yet
    scale: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    anomaly_score: np.ndarray
    is_anomaly: np.ndarray  # (n,) bool
    next_timestamp: np.ndarray
    next_forecast: np.ndarray
    next_scale: np.ndarray
    next_lower: np.ndarray
    next_upper: np.ndarray
    dt: np.ndarray  # seconds since the stream's previous step
    missing: np.ndarray  # (n,) int32, gap length before the step
    dropped: np.ndarray  # (n,) uint8: 0 for a step, else the Reason a reading was dropped
    model: str = ""
    # ``stream`` factorised, where the engine knows it for free (its chunk's rows): file
    # sinks write keys from it instead of hashing every row's key again
    coded: StreamCodes | None = None

    COLUMNS = (
        "stream",
        "timestamp",
        "value",
        "forecast",
        "lower",
        "upper",
        "anomaly_score",
        "is_anomaly",
        "next_timestamp",
        "next_forecast",
        "next_lower",
        "next_upper",
        "count",
        "min",
        "max",
    )

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    @classmethod
    def column_names(cls) -> list[str]:
        """The fields that are (n,) columns."""
        return [name for name in cls.__dataclass_fields__ if name not in ("model", "coded")]

    def stream_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, names) with ``names[codes]`` the stream column: the engine's own when
        it gave them, else found by hashing every key."""
        if self.coded is not None:
            return self.coded.codes, self.coded.names
        import pandas as pd

        codes, names = pd.factorize(self.stream)
        return codes.astype(np.int64, copy=False), np.asarray(names, object)

    @classmethod
    def blank(cls, n: int, model: str = "") -> VerdictBatch:
        """``n`` rows about which nothing is known yet: NaN numbers, no flags."""
        columns: dict[str, np.ndarray] = {name: np.full(n, np.nan) for name in cls.column_names()}
        columns.update(
            stream=np.full(n, "", object),
            count=np.zeros(n, np.int64),
            is_anomaly=np.zeros(n, bool),
            missing=np.zeros(n, np.int32),
            dropped=np.zeros(n, np.uint8),
        )
        return cls(**columns, model=model, coded=None)

    @classmethod
    def empty(cls, model: str = "") -> VerdictBatch:
        return cls.blank(0, model)

    @classmethod
    def of_dropped(
        cls,
        stream: np.ndarray,
        timestamp: np.ndarray,
        value: np.ndarray,
        reason: np.ndarray,
        model: str = "",
    ) -> VerdictBatch:
        """Rows for dropped readings: what arrived, why it was dropped, nothing predicted."""
        return dataclasses.replace(
            cls.blank(len(stream), model),
            stream=stream,
            timestamp=timestamp,
            value=value,
            count=np.ones(len(stream), np.int64),
            min=value,
            max=value,
            dropped=reason,
        )

    @classmethod
    def concat(cls, batches: Sequence[VerdictBatch]) -> VerdictBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        columns = {n: np.concatenate([getattr(b, n) for b in batches]) for n in cls.column_names()}
        return cls(**columns, model=batches[0].model, coded=None)

    def interleave(self, other: VerdictBatch, position: np.ndarray) -> VerdictBatch:
        """``self``'s rows and ``other``'s in one batch, ordered by ``position``
        (len(self) + len(other),), ties in that order: what ``concat`` then ``take`` of
        the sorted order gives, with one write per cell instead of two. Stream codes
        are kept when both sides index the same names (no key is hashed), else left to
        whoever needs them."""
        order = np.argsort(position, kind="stable")
        where = np.empty_like(order)
        where[order] = np.arange(len(order))  # the row each input row lands on
        mine, theirs = where[: len(self)], where[len(self) :]

        def merged(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            out = np.empty(len(order), np.result_type(a, b))
            out[mine], out[theirs] = a, b
            return out

        columns = {n: merged(getattr(self, n), getattr(other, n)) for n in self.column_names()}
        coded = None
        if self.coded and other.coded and self.coded.names is other.coded.names:
            coded = StreamCodes(merged(self.coded.codes, other.coded.codes), self.coded.names)
        return VerdictBatch(**columns, model=self.model or other.model, coded=coded)

    def take(self, index: np.ndarray) -> VerdictBatch:
        columns = {n: getattr(self, n)[index] for n in self.column_names()}
        coded = self.coded and StreamCodes(self.coded.codes[index], self.coded.names)
        return VerdictBatch(**columns, model=self.model, coded=coded)

    def rows(self) -> Iterator[Verdict]:
        """Verdicts of the steps (rows of dropped readings are skipped)."""
        for i in np.flatnonzero(self.dropped == 0).tolist():
            yield self.row(i)

    def row(self, i: int) -> Verdict:
        step = Step(
            stream=str(self.stream[i]),
            timestamp=float(self.timestamp[i]),
            value=float(self.value[i]),
            count=int(self.count[i]),
            min=float(self.min[i]),
            max=float(self.max[i]),
            dt=float(self.dt[i]),
            missing=int(self.missing[i]),
        )
        now = _forecast(self.timestamp, self.forecast, self.scale, self.lower, self.upper, i)
        nxt = _forecast(
            self.next_timestamp,
            self.next_forecast,
            self.next_scale,
            self.next_lower,
            self.next_upper,
            i,
        )
        return Verdict(
            step=step,
            forecast=now,
            anomaly_score=float(self.anomaly_score[i]),
            is_anomaly=bool(self.is_anomaly[i]),
            next=nxt,
            model=self.model,
        )


def _forecast(
    t: np.ndarray, mean: np.ndarray, scale: np.ndarray, lo: np.ndarray, hi: np.ndarray, i: int
) -> Forecast | None:
    if math.isnan(mean[i]):
        return None
    return Forecast(float(t[i]), float(mean[i]), float(scale[i]), float(lo[i]), float(hi[i]))
