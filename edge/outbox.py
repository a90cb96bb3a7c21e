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

from parceltrack import wire
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
CREATE TABLE IF NOT EXISTS quarantine (
    row_id INTEGER PRIMARY KEY, created REAL NOT NULL, event TEXT NOT NULL, reason TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxBounds:
    """Past either bound the oldest events are dropped: counted and logged, never
    refusing a new read."""

    max_events: int = 5_000_000
    max_age_s: float = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class PendingText:
    """An event as it will go on the wire, without decoding it (the replay path)."""

    row_id: int
    device: str
    text: str


def _from_json(text: str) -> ScanEvent:
    """A row written by an older agent, which stored the full event instead of its
    wire form (see wire.event_json)."""
    d = json.loads(text)
    for key in ("ts", "first_seen", "last_seen"):
        if d[key] is not None:
            d[key] = datetime.fromisoformat(d[key])
    d["kind"] = EventKind(d["kind"])
    return ScanEvent(**d)


class Outbox:
    """Append-only queue of events on disk; thread-safe."""

    def __init__(self, path: Path, bounds: OutboxBounds | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.bounds = bounds or OutboxBounds()
        self._lock = threading.Lock()
        self.dropped = 0  # events dropped by the bounds since this process opened it
        self.quarantined = 0  # rows that could not be decoded, moved to `quarantine`
        self.corrupt_moved_to: Path | None = None
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            self.corrupt_moved_to = _move_aside(path)
            log.error(
                "outbox %s is corrupt (%s): moved aside to %s; starting a new one",
                path,
                exc,
                self.corrupt_moved_to,
            )
            self._db = self._open(path)
        self._count = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across a crash of the process (not of the OS) in WAL mode.
            db.execute("PRAGMA synchronous=NORMAL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.executescript(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
            if "site" not in columns:  # outboxes of older agents
                db.execute("ALTER TABLE outbox ADD COLUMN site TEXT")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

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
        rows = [(e.device, e.site, now, wire.event_json(e)) for e in events]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO outbox (device, site, created, event) VALUES (?, ?, ?, ?)", rows
            )
            self._count += len(rows)
            over = self._count - self.bounds.max_events
            dropped = self._drop_oldest(over) if over > 0 else 0
            self._db.execute("COMMIT")
        if dropped:
            log.warning(
                "outbox full (%d events): dropped the %d oldest (%d dropped so far)",
                self.bounds.max_events,
                dropped,
                self.dropped,
            )

    def _drop_oldest(self, n: int) -> int:
        cur = self._db.execute(
            "DELETE FROM outbox WHERE row_id IN "
            "(SELECT row_id FROM outbox ORDER BY row_id LIMIT ?)",
            (n,),
        )
        self._count -= cur.rowcount
        self.dropped += cur.rowcount
        return cur.rowcount

    def expire(self, now: float | None = None) -> int:
        """Drop events older than the age bound; returns how many (logged when any)."""
        limit = (now or time.time()) - self.bounds.max_age_s
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE created < ?", (limit,))
            self._count -= cur.rowcount
            self.dropped += cur.rowcount
        if cur.rowcount:
            log.warning(
                "outbox: dropped %d events older than %.0fs (%d dropped so far)",
                cur.rowcount,
                self.bounds.max_age_s,
                self.dropped,
            )
        return cur.rowcount

    def max_row_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(row_id) FROM outbox").fetchone()
        return int(row[0] or 0)

    def oldest_texts(
        self, after_row: int, limit: int, upto_row: int | None = None
    ) -> list[PendingText]:
        """Up to `limit` events after `after_row` (and not after `upto_row`), oldest
        first, each as its wire JSON text: what the publisher needs. Each text is still
        parsed (in C) so a damaged row is moved to the quarantine table instead of
        spoiling a whole batch at the ingest."""
        out: list[PendingText] = []
        for row_id, device, site, text in self._rows(after_row, limit, upto_row):
            try:
                if site is not None and text.startswith('{"id"'):
                    json.loads(text)
                else:
                    text = wire.event_json(_from_json(text))
                out.append(PendingText(row_id, device, text))
            except (ValueError, TypeError, KeyError) as exc:
                self._quarantine(row_id, f"{type(exc).__name__}: {exc}")
        return out

    def _rows(
        self, after_row: int, limit: int, upto_row: int | None
    ) -> list[tuple[int, str, str | None, str]]:
        with self._lock:
            rows: list[tuple[int, str, str | None, str]] = self._db.execute(
                "SELECT row_id, device, site, event FROM outbox WHERE row_id > ? "
                "AND row_id <= ? ORDER BY row_id LIMIT ?",
                (after_row, upto_row if upto_row is not None else 2**62, limit),
            ).fetchall()
        return rows

    def _quarantine(self, row_id: int, reason: str) -> None:
        log.error("outbox row %d cannot be decoded (%s): moved to quarantine", row_id, reason)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO quarantine SELECT row_id, created, event, ? "
                "FROM outbox WHERE row_id = ?",
                (reason, row_id),
            )
            cur = self._db.execute("DELETE FROM outbox WHERE row_id = ?", (row_id,))
            self._count -= cur.rowcount
            self._db.execute("COMMIT")
        self.quarantined += 1

    def remove(self, row_ids: Sequence[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            cur = self._db.executemany(
                "DELETE FROM outbox WHERE row_id = ?", [(r,) for r in row_ids]
            )
            self._count -= cur.rowcount
            self._db.execute("COMMIT")

    def depth(self) -> tuple[int, float | None]:
        """Events waiting, and the age in seconds of the oldest."""
        with self._lock:
            count, oldest = self._db.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        return int(count), (time.time() - oldest) if oldest is not None else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _move_aside(path: Path) -> Path:
    """Rename a corrupt outbox (and its WAL files) so it can be examined, not lost."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{time.time_ns() % 1_000_000}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(target.with_name(target.name + suffix))
    return target
