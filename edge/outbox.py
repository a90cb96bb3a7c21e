"""The durable outbox: every event is on disk before it is published, and leaves only
after the broker's PUBACK. SQLite in WAL mode survives a kill -9 of the agent."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from parceltrack.events import EventKind, ScanEvent

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    device  TEXT NOT NULL,
    created REAL NOT NULL,
    event   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    row_id: int
    event: ScanEvent


def _to_json(e: ScanEvent) -> str:
    return json.dumps(
        {
            "device": e.device, "boot": e.boot, "seq": e.seq, "ts": e.ts.isoformat(),
            "site": e.site, "read_point": e.read_point, "kind": e.kind.value,
            "code": e.code, "symbology": e.symbology, "tracking_id": e.tracking_id,
            "epc": e.epc, "rssi": e.rssi, "antenna": e.antenna, "read_count": e.read_count,
            "first_seen": e.first_seen.isoformat() if e.first_seen else None,
            "last_seen": e.last_seen.isoformat() if e.last_seen else None,
            "direction": e.direction,
        }
    )  # fmt: skip


def _from_json(text: str) -> ScanEvent:
    d = json.loads(text)
    for key in ("ts", "first_seen", "last_seen"):
        if d[key] is not None:
            d[key] = datetime.fromisoformat(d[key])
    d["kind"] = EventKind(d["kind"])
    return ScanEvent(**d)


class Outbox:
    """Append-only queue of events on disk; thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across a crash of the process (not of the OS) in WAL mode.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def next_boot_epoch(self) -> int:
        """A boot epoch never used before by this outbox, so event ids stay unique even
        when the agent restarts twice within a second."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='boot'").fetchone()
            boot = max(int(time.time()), int(row[0]) + 1 if row else 0)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('boot', ?)", (str(boot),))
            return boot

    def append(self, events: Sequence[ScanEvent]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO outbox (device, created, event) VALUES (?, ?, ?)",
                [(e.device, now, _to_json(e)) for e in events],
            )
            self._db.execute("COMMIT")

    def oldest(self, after_row: int, limit: int) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT row_id, event FROM outbox WHERE row_id > ? ORDER BY row_id LIMIT ?",
                (after_row, limit),
            ).fetchall()
        return [Pending(r, _from_json(e)) for r, e in rows]

    def remove(self, row_ids: Sequence[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE row_id = ?", [(r,) for r in row_ids])
            self._db.execute("COMMIT")

    def depth(self) -> tuple[int, float | None]:
        """Events waiting, and the age in seconds of the oldest."""
        with self._lock:
            count, oldest = self._db.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        return int(count), (time.time() - oldest) if oldest is not None else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
