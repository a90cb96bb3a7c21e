"""Running a real delivery engine in a thread for a test, with a shortened clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from notify.engine import DeliveryEngine, EngineSettings


@contextmanager
def running(settings: EngineSettings) -> Iterator[DeliveryEngine]:
    engine = DeliveryEngine(settings)
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            engine.run(stop)
        except BaseException as exc:
            failure.append(exc)
            raise

    thread = threading.Thread(target=target, name="engine", daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        stop.set()
        thread.join(30)
    assert not failure, failure
