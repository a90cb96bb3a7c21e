"""The rollups of storage/rollup.py: histogram buckets, percentiles, whole hours."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from storage import figures, rollup


@pytest.mark.parametrize(
    ("wait", "bucket"),
    [(0.0, 0), (0.99, 0), (1.0, 1), (1.12, 1), (1.13, 2), (10.0, 21), (3600.0, 72)],
    ids=["zero", "under-1s", "1s", "top-of-first", "second", "10s", "1h"],
)
def test_a_wait_falls_in_its_log_spaced_bucket(wait: float, bucket: int) -> None:
    """Bucket 0 holds waits under a second; then 20 buckets per decade."""
    assert rollup.bucket_of(wait) == bucket


def test_every_wait_is_within_the_bucket_error_of_its_bucket_value() -> None:
    """A wait and its bucket's value differ by at most 5.9 %, or 0.5 s under a second."""
    waits = np.concatenate([np.linspace(0, 1, 101), np.geomspace(1, 200_000, 5_000)])
    for wait in waits:
        value = rollup.bucket_value(rollup.bucket_of(float(wait)))
        assert abs(value - wait) <= max(0.0594 * wait, 0.5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_from_the_histogram_are_within_the_bucket_error(seed: int) -> None:
    """p50 and p95 from the histogram are within 5.9 % + 0.5 s of percentile_cont
    (numpy's linear quantile) over the waits themselves, few waits or many."""
    rng = np.random.default_rng(seed)
    for size in (1, 2, 7, 1000):
        waits = rng.lognormal(mean=4, sigma=1.5, size=size)
        counts: dict[int, int] = {}
        for wait in waits:
            counts[rollup.bucket_of(float(wait))] = counts.get(rollup.bucket_of(float(wait)), 0) + 1
        got = rollup.percentiles(list(counts.items()), (0.5, 0.95))
        for q, value in zip((0.5, 0.95), got, strict=True):
            true = float(np.quantile(waits, q))
            assert abs(value - true) <= 0.0594 * true + 0.5


def test_an_empty_histogram_has_no_percentiles() -> None:
    """No waits (or only cancelled ones): no percentile, not zero."""
    assert all(math.isnan(v) for v in rollup.percentiles([(3, 0)], (0.5, 0.95)))


@pytest.mark.parametrize(
    ("since", "until", "hours"),
    [
        ("2026-11-28T10:00:00+00:00", "2026-11-28T12:00:00+00:00", (10, 12)),
        ("2026-11-28T10:20:00+00:00", "2026-11-28T11:05:00+00:00", (10, 12)),
        ("2026-11-28T15:50:00+05:30", "2026-11-28T17:30:00+05:30", (10, 12)),
    ],
    ids=["whole", "inside", "half-hour-offset"],
)
def test_a_period_is_answered_over_the_whole_utc_hours_that_hold_it(
    since: str, until: str, hours: tuple[int, int]
) -> None:
    """The rollups' rows are UTC hours: a period widens to the whole UTC hours around it."""
    held = figures.Period(datetime.fromisoformat(since), datetime.fromisoformat(until)).hours()
    assert (held.since, held.until) == (
        datetime(2026, 11, 28, hours[0], tzinfo=UTC),
        datetime(2026, 11, 28, hours[1], tzinfo=UTC),
    )
