"""Parcel arrivals: a Poisson process whose rate follows a daily profile (one
multiplier per hour of the site's day) with extra peaks, generated vectorised by
mapping a unit-rate process through the inverse of the cumulative intensity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Multipliers per hour of day (0-23): quiet at night, a morning collection peak and the
# evening e-commerce peak. Normalised to a mean of 1, so the configured rate per hour
# is the day's average.
DAILY_PROFILE: tuple[float, ...] = (
    0.30, 0.25, 0.20, 0.20, 0.30, 0.50, 0.80, 1.10, 1.40, 1.60, 1.50, 1.30,
    1.20, 1.20, 1.30, 1.40, 1.60, 1.80, 1.60, 1.20, 0.90, 0.70, 0.50, 0.40,
)  # fmt: skip
FLAT_PROFILE: tuple[float, ...] = (1.0,) * 24


@dataclass(frozen=True, slots=True)
class Peak:
    """A burst on top of the daily profile: the rate times `factor` for a while."""

    start_s: float
    duration_s: float
    factor: float


def rate_knots(
    rate_per_hour: float,
    profile: tuple[float, ...],
    peaks: tuple[Peak, ...],
    start_hour: float,
    horizon_s: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Knot times and the rate (parcels/s) on each segment between consecutive knots."""
    if len(profile) != 24 or min(profile) < 0 or sum(profile) <= 0:
        raise ValueError("a daily profile has 24 non-negative multipliers, not all zero")
    weights = np.asarray(profile, dtype=np.float64)
    weights = weights / weights.mean()
    first_hour = 3600.0 * (1.0 - (start_hour % 1.0)) if start_hour % 1.0 else 3600.0
    hours = np.arange(first_hour, horizon_s, 3600.0)
    edges = [0.0, horizon_s, *hours.tolist()]
    for p in peaks:
        edges += [p.start_s, p.start_s + p.duration_s]
    knots = np.unique(np.clip(np.asarray(edges, dtype=np.float64), 0.0, horizon_s))
    mids = (knots[:-1] + knots[1:]) / 2
    hour_of_day = ((start_hour + mids / 3600.0) // 1 % 24).astype(np.int64)
    rate = rate_per_hour / 3600.0 * weights[hour_of_day]
    for p in peaks:
        inside = (mids >= p.start_s) & (mids < p.start_s + p.duration_s)
        rate = np.where(inside, rate * p.factor, rate)
    return knots, rate


def expected_count(
    knots: npt.NDArray[np.float64], rate: npt.NDArray[np.float64], a: float, b: float
) -> float:
    """Expected arrivals in [a, b) under the piecewise-constant rate."""
    lo = np.clip(knots[:-1], a, b)
    hi = np.clip(knots[1:], a, b)
    return float(np.sum(rate * (hi - lo)))


def arrival_times(
    rng: np.random.Generator,
    rate_per_hour: float,
    profile: tuple[float, ...],
    peaks: tuple[Peak, ...],
    start_hour: float,
    *,
    parcels: int | None = None,
    duration_s: float | None = None,
) -> npt.NDArray[np.float64]:
    """Arrival times in seconds from the start: the first `parcels` arrivals, or all
    arrivals before `duration_s`."""
    if rate_per_hour <= 0:
        raise ValueError("the arrival rate must be positive")
    if parcels is None and duration_s is None:
        raise ValueError("give a number of parcels or a duration")
    horizon = duration_s if duration_s is not None else 0.0
    if duration_s is None:
        assert parcels is not None
        horizon = max(3600.0, 2.0 * parcels / (rate_per_hour / 3600.0))
    n_draw = parcels if parcels is not None else int(rate_per_hour / 3600.0 * horizon * 3 + 100)
    units = np.cumsum(rng.exponential(1.0, size=n_draw))
    while True:
        knots, rate = rate_knots(rate_per_hour, profile, peaks, start_hour, horizon)
        cumulative = np.concatenate(([0.0], np.cumsum(rate * np.diff(knots))))
        if duration_s is not None or cumulative[-1] >= units[-1]:
            break
        horizon *= 2  # a quiet profile: look further ahead
    if duration_s is not None:
        while units[-1] < cumulative[-1]:  # rare: draw more until past the horizon
            more = units[-1] + np.cumsum(rng.exponential(1.0, size=n_draw))
            units = np.concatenate((units, more))
        units = units[units < cumulative[-1]]
    times: npt.NDArray[np.float64] = np.interp(units, cumulative, knots)
    return times
