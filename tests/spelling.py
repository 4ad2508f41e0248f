"""Numbers and times that are hard to spell, for the compiled writers' tests."""

from __future__ import annotations

import numpy as np

from connectors.records import LAST_ISO_SECOND


def awkward_floats(n: int, seed: int = 0) -> np.ndarray:
    """Every magnitude and kind: random bit patterns, short decimals, integers, powers
    of ten and their neighbours, zeros, infinities, NaN."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**63, n // 4, dtype=np.int64).view(np.float64)
    bits = bits[np.isfinite(bits)]
    places = 10.0 ** rng.integers(0, 7, n // 4)
    decimals = np.round(rng.uniform(-1e4, 1e4, n // 4) * places) / places
    powers = 10.0 ** np.arange(-30, 31)
    near = np.concatenate([np.nextafter(powers, 0), np.nextafter(powers, np.inf)])
    scaled = rng.normal(0, 1, n // 4) * 10.0 ** rng.integers(-12, 14, n // 4)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308, 0.1 + 0.2,
               1e-7, 1e-6, 9.5e-7, 1e9, 1e10, 999999999.5, 2.0**53, 123456789012.0]  # fmt: skip
    integers = rng.integers(-(10**12), 10**12, n // 8).astype(np.float64)
    values = [bits, decimals, powers, -powers, near, scaled, special, integers]
    return np.concatenate(values)


def spread_of_times(fraction: float, seed: int) -> np.ndarray:
    """5,000 times ending in ``fraction`` of a second: the years -7500 .. 11500, what ISO
    8601 cannot spell, a run of minutes, and the days around the year 0."""
    rng = np.random.default_rng(seed)
    seconds = np.round(rng.uniform(-3e11, 3e11, 5_000)) + fraction
    seconds[:6] = [np.nan, np.inf, -np.inf, LAST_ISO_SECOND, -LAST_ISO_SECOND, 0.0]
    seconds[6:1_000] = 1.6e9 + 60 * np.arange(994) + fraction
    seconds[1_000:1_100] = -62167219200.0 + 86_400 * np.arange(-50, 50) + fraction
    return seconds
