"""The real edge publisher and outbox fed reads at a steady pace, for the receipt fault
tests: everything of the agent but its serial lines, with the ids it took counted."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from edge.agent import Publisher
from edge.config import AgentConfig
from edge.outbox import Outbox
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent


def feed_config(folder: Path, devices: tuple[str, ...], resend_after_s: float) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {
                "id": "agent-feed", "site": "LHR1", "outbox": str(folder / "outbox.sqlite"),
                "batch_max_events": 100, "resend_after_s": resend_after_s,
                "resend_max_s": 4 * resend_after_s,
            },
            "devices": [
                {"id": d, "protocol": "barcode", "port": "/dev/null", "read_point": "LHR1-TUN1"}
                for d in devices
            ],
        }
    )  # fmt: skip


class EdgeFeed:
    """Appends `per_tick` reads per device every 0.05 s until `total` reads, while the
    agent's Publisher pumps (on one thread, as run_agent does)."""

    def __init__(
        self,
        folder: Path,
        url: str,
        total: int = 6000,
        per_tick: int = 10,
        devices: tuple[str, ...] = ("scan-1", "scan-2"),
        resend_after_s: float = 2.0,
    ) -> None:
        self.config = feed_config(folder, devices, resend_after_s)
        self.outbox = Outbox(self.config.outbox_path)
        self.boot = self.outbox.next_boot_epoch()
        self.publisher = Publisher(self.config, BrokerAddress.from_url(url), self.outbox)
        self.total, self.per_tick, self.devices = total, per_tick, devices
        self.ids: list[str] = []  # every event id taken, in order
        self.fed = threading.Event()  # all `total` reads are in the outbox
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> EdgeFeed:
        self.publisher.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        seq, next_tick = 0, time.monotonic()
        while not self._stop.is_set():
            if len(self.ids) < self.total and time.monotonic() >= next_tick:
                now = datetime.now(UTC)
                events = [
                    ScanEvent(d, self.boot, seq + i, now, "LHR1", "LHR1-TUN1",
                              EventKind.READ, f"C{seq + i}")
                    for d in self.devices for i in range(self.per_tick)
                ]  # fmt: skip
                self.outbox.append(events)
                self.ids.extend(e.id for e in events)
                seq += self.per_tick
                next_tick += 0.05
                if len(self.ids) >= self.total:
                    self.fed.set()
            if self.publisher.pump() == 0:
                time.sleep(0.005)

    def waiting(self) -> int:
        """Events still in the outbox: not yet covered by a receipt."""
        return self.outbox.depth()[0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.publisher.close()
        self.outbox.close()


def stored_event_ids(dsn: str) -> Counter[str]:
    """How often each event id is in `scans`."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT event_id FROM scans").fetchall()
    return Counter(str(r[0]) for r in rows)
