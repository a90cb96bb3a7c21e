"""When to try a message again, when to give up, and how many a subscriber may get.

Pure functions over times and counts; the engine applies them to queue rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff, base * factor**(n-1) capped, with jitter, within a window.

    The window counts from when the message was queued (or last replayed); the last
    attempt falls on the window's end, after which the message is a dead letter."""

    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 3600.0
    window_s: float = 24 * 3600.0
    jitter: float = 0.2  # up to this fraction less, so retries of a burst spread out

    def delay_s(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1 = the first)."""
        raw = min(self.cap_s, self.base_s * self.factor ** max(0, attempts - 1))
        return raw * (1.0 - self.jitter * rng())

    def next_attempt(
        self,
        retry_from: datetime,
        now: datetime,
        attempts: int,
        rng: Callable[[], float] = random.random,
    ) -> datetime | None:
        """When to try again after a failure, or None: the window is over, a dead letter."""
        end = retry_from + timedelta(seconds=self.window_s)
        if now >= end:
            return None
        return min(now + timedelta(seconds=self.delay_s(attempts, rng)), end)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `per_window` attempts per subscriber in any `window_s` seconds."""

    per_window: int = 30
    window_s: float = 60.0


def admit(
    due: Iterable[T], subscriber: Callable[[T], str], used: Mapping[str, int], limit: RateLimit
) -> tuple[list[T], list[T]]:
    """Split due messages (oldest first) into those sent now and those deferred, so
    no subscriber goes over its limit counting the attempts it `used` in the window."""
    taken: dict[str, int] = {}
    send: list[T] = []
    defer: list[T] = []
    for item in due:
        who = subscriber(item)
        count = used.get(who, 0) + taken.get(who, 0)
        if count < limit.per_window:
            taken[who] = taken.get(who, 0) + 1
            send.append(item)
        else:
            defer.append(item)
    return send, defer
