"""Settings of the streaming core, validated once, frozen afterwards."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")


DAY = 86_400.0  # seconds
LONGEST_WINDOW = 30 * DAY  # a typo (a unit too big) is refused, in flags and settings alike
LONGEST_LATENESS = 7 * DAY


def parse_duration(text: str | float | int, key: str) -> float:
    """Seconds from ``"250ms"``, ``"60s"``, ``"5m"``, ``"1h"``, ``"1d"`` or a bare number.

    >>> parse_duration("5m", "window"), parse_duration("0", "window"), parse_duration(1.5, "x")
    (300.0, 0.0, 1.5)
    >>> parse_duration("soon", "window")
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: window: 'soon' is not a duration; write e.g. 0, 500ms, 60s, 5m, 1h
    >>> parse_duration("-5s", "--window")
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: --window: -5s is negative; give a duration like 60s
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        if str(text).strip().startswith("-") and _is_duration(str(text).strip()[1:]):
            msg = f"{key}: {text} is negative; give a duration like 60s"
            raise ConfigError(msg)
        match = _DURATION.match(str(text).lower())
        if not match or not _is_duration(str(text)):
            msg = f"{key}: {text!r} is not a duration; write e.g. 0, 500ms, 60s, 5m, 1h"
            raise ConfigError(msg)
        seconds = float(match.group(1)) * _UNITS.get(match.group(2), 1.0)
    if not math.isfinite(seconds) or seconds < 0:
        msg = f"{key}: {text!r} must be a finite, non-negative duration"
        raise ConfigError(msg)
    return seconds


def _is_duration(text: str) -> bool:
    match = _DURATION.match(text.lower())
    return match is not None and match.group(2) in {"", *_UNITS}


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """How readings become steps and verdicts. Durations are in seconds.

    window:        tumbling window length; 0 makes every reading a step
    lateness:      how far (event time) a reading may arrive out of order and
                   still be used; readings are held back this long and re-sorted
    idle_timeout:  an open window of a stream that has been silent this long
                   (wall time) is closed without waiting for a later reading, and
                   the readings it holds back for lateness let out; never less than
                   the window (``idle_after``), or a window would be closed before
                   its own readings had all come
    value_min/max: readings outside are dropped as out_of_range
    max_streams:   streams tracked at once; new streams beyond are dropped
    stream_ttl:    a stream silent this long (wall time) is evicted, its slot reused
    interval:      coverage of the central forecast interval (0.9 = 90%)
    max_batch:     readings drained from a source per engine tick
    max_delay:     how long a tick waits for readings before running anyway
    reorder_capacity: readings held back for lateness before the oldest are forced out
    report_dropped: also return a row for every dropped reading, so the output accounts
                   for every input (replay writes it, the daemon publishes it)
    """

    window: float = 0.0
    lateness: float = 0.0
    idle_timeout: float = 120.0
    value_min: float = -1e12
    value_max: float = 1e12
    max_streams: int = 1_000_000
    stream_ttl: float = 86_400.0
    interval: float = 0.9
    max_batch: int = 8192
    max_delay: float = 0.05
    reorder_capacity: int = 1_000_000
    report_dropped: bool = False

    @property
    def idle_after(self) -> float:
        """Wall-clock silence after which a stream's open window is closed: a window
        closed before a later reading of its own came would refuse that reading as late.
        (Held-back readings go out after idle_timeout itself: lateness waits for
        stragglers while a stream talks, not for an hour after it stopped.)"""
        return max(self.idle_timeout, self.window)

    def __post_init__(self) -> None:
        for key in ("window", "lateness", "idle_timeout", "stream_ttl", "max_delay"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                msg = f"{key}: {value!r} must be a finite, non-negative number of seconds"
                raise ConfigError(msg)
        if not self.value_min < self.value_max:
            msg = f"value_min/value_max: {self.value_min} must be below {self.value_max}"
            raise ConfigError(msg)
        if not 0.0 < self.interval < 1.0:
            msg = f"interval: {self.interval!r} must be a coverage between 0 and 1, e.g. 0.9"
            raise ConfigError(msg)
        for key in ("max_streams", "max_batch", "reorder_capacity"):
            if getattr(self, key) < 1:
                msg = f"{key}: {getattr(self, key)!r} must be a positive whole number"
                raise ConfigError(msg)

    @property
    def fingerprint(self) -> str:
        """The settings a snapshot's state depends on."""
        return f"window={self.window!r};lateness={self.lateness!r}"


def positive_finite(value: float, flag: str, unit: str, example: str) -> float:
    """``value``, or ConfigError naming ``flag`` when it is not a positive finite number
    (NaN and infinity pass a plain ``> 0``).

    >>> positive_finite(2.5, "--speed", "times real time", "3600")
    2.5
    """
    if not (math.isfinite(value) and value > 0):
        msg = f"{flag}: {value:g} must be a positive finite number ({unit}), e.g. {example}"
        raise ConfigError(msg)
    return value
