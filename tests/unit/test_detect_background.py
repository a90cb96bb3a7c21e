"""The writer thread of detect/background.py: merges what waits, retries a failed
write before what came since, and writes what is pending when closed."""

from __future__ import annotations

import threading

from detect.background import Background


def test_a_failed_write_is_retried_before_the_items_submitted_since() -> None:
    """The first write fails; it is written again, merged ahead of the later items."""
    written: list[list[int]] = []
    gate = threading.Event()

    def work(items: list[int]) -> None:
        if not written and not gate.is_set():
            gate.set()
            raise OSError("the database went away")
        written.append(items)

    writer: Background[list[int]] = Background("test", work, lambda a, b: a + b, retry_s=0.05)
    writer.submit([1])
    assert gate.wait(5)
    writer.submit([2])
    writer.submit([3])
    assert writer.drain(5)
    writer.close()
    assert [i for batch in written for i in batch] == [1, 2, 3]
    assert writer.failures == 1


def test_latest_only_writes_the_newest_of_what_waited_and_finishes_on_close() -> None:
    """While a write runs, newer items replace each other; close writes the last one."""
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def work(item: int) -> None:
        started.set()
        release.wait(5)
        written.append(item)

    writer: Background[int] = Background("test", work, lambda _old, new: new, retry=False)
    writer.submit(1)
    assert started.wait(5)
    writer.submit(2)
    writer.submit(3)
    assert writer.busy()
    release.set()
    writer.close(5)
    assert written == [1, 3]
    assert not writer.busy()
