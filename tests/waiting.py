"""The one way the tests wait for something to happen: poll its real signal (a row, a
health message, a SUBACK, a port) until it shows, and fail saying what never came."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    alive: Callable[[], object] | None = None,
    interval: float = 0.05,
) -> T:
    """Poll `condition` until it returns something truthy, and return that. After
    `timeout` seconds fail with an AssertionError naming `what` and the last value seen.
    `alive` runs before each poll and should raise when something the wait depends on
    (a process, a thread) has died, so a crash is reported as itself, not as a timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last seen: {value!r})"
            )
        time.sleep(interval)


def holds(pid: int, port: Path) -> bool:
    """Whether process `pid` has the pty behind `port` open (the agent holds the line)."""
    target = os.path.realpath(port)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False
