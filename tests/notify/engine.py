"""Running the real delivery engine and notifier in threads for a test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from notify.engine import DeliveryEngine, EngineSettings


class Service(Protocol):
    def run(self, stop: threading.Event) -> None: ...


@contextmanager
def serving(*services: Service) -> Iterator[None]:
    """Run each service's loop in a thread until the block ends; fail if one crashed."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def guarded(service: Service) -> None:
        try:
            service.run(stop)
        except BaseException as exc:
            failures.append(exc)
            raise

    threads = [threading.Thread(target=guarded, args=(s,), daemon=True) for s in services]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures


@contextmanager
def running(settings: EngineSettings) -> Iterator[DeliveryEngine]:
    engine = DeliveryEngine(settings)
    with serving(engine):
        yield engine
