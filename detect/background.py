"""A worker thread that takes slow writes (ETA rows, checkpoints) off the tick thread.

The tick thread `submit`s and goes on; items submitted while the worker is busy are
merged (`merge`): ETA batches are kept in order, an older checkpoint is replaced by
the newer. A failed write is logged and tried again, merged before whatever came
since, after `retry_s`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Background(Generic[T]):
    def __init__(
        self,
        name: str,
        work: Callable[[T], None],
        merge: Callable[[T, T], T],
        retry_s: float = 1.0,
        retry: bool = True,
    ) -> None:
        self.name = name
        self._work, self._merge = work, merge
        self._retry_s, self._retry = retry_s, retry
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._busy = False
        self._closed = False
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        with self._cond:
            self._pending = item if self._pending is None else self._merge(self._pending, item)
            self._cond.notify_all()

    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._pending is not None

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._busy and self._pending is None, timeout=timeout
            )

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then end the thread."""
        self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._pending is not None)
                if self._pending is None:
                    return
                item, self._pending, self._busy = self._pending, None, True
            failed = False
            try:
                self._work(item)
            except Exception:
                failed = True
                self.failures += 1
                log.exception("%s: write failed%s", self.name, "; retrying" if self._retry else "")
            with self._cond:
                if failed and self._retry and not self._closed:
                    later = self._pending
                    self._pending = item if later is None else self._merge(item, later)
                self._busy = False
                self._cond.notify_all()
                if failed and self._retry:
                    self._cond.wait(self._retry_s)
