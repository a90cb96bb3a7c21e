"""The durable outbox: every event is on disk before it is published, and leaves only
when a commit receipt of the ingest covers it (parceltrack/receipts.py). The broker's
PUBACK only marks it acknowledged; acknowledged events that no receipt covers within
a while are due to be published again (the ingest deduplicates by event id). SQLite
in WAL mode survives a kill -9 of the agent."""

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
from parceltrack.receipts import SeqRange, ranges_of

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    device  TEXT NOT NULL,
    created REAL NOT NULL,
    event   TEXT NOT NULL,
    site    TEXT,
    boot    INTEGER,
    seq     INTEGER,
    acked   REAL,  -- time of the PUBACK of its latest publication; NULL: not acknowledged
    tries   INTEGER NOT NULL DEFAULT 0
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
            if "acked" not in columns:  # outboxes from before commit receipts
                _add_receipt_columns(db)
            # A receipt names a device's boot and sequence numbers.
            db.execute("CREATE INDEX IF NOT EXISTS outbox_event ON outbox (device, boot, seq)")
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
        rows = [(e.device, e.site, e.boot, e.seq, now, wire.event_json(e)) for e in events]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO outbox (device, site, boot, seq, created, event) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
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
        """Up to `limit` events after `after_row` (and not after `upto_row`) that the
        broker has not acknowledged, oldest first, each as its wire JSON text: what the
        publisher needs (acknowledged ones wait for their receipt, see due_for_resend).
        Each text is still parsed (in C) so a damaged row is moved to the quarantine
        table instead of spoiling a whole batch at the ingest."""
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
                "AND row_id <= ? AND acked IS NULL ORDER BY row_id LIMIT ?",
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

    def mark_acked(self, row_ids: Sequence[int], now: float | None = None) -> None:
        """The broker acknowledged these events: they wait for a receipt now."""
        runs = ranges_of(row_ids)
        acked = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE outbox SET acked = ?, tries = tries + 1 WHERE row_id BETWEEN ? AND ?",
                [(acked, first, last) for first, last in runs],
            )
            self._db.execute("COMMIT")

    def apply_receipt(self, device: str, boot: int, ranges: Sequence[SeqRange]) -> int:
        """Delete the device's events of this boot that the receipt's ranges cover:
        the database has committed them. Returns how many left the outbox."""
        with self._lock:
            self._db.execute("BEGIN")
            cur = self._db.executemany(
                "DELETE FROM outbox WHERE device = ? AND boot = ? AND seq BETWEEN ? AND ?",
                [(device, boot, first, last) for first, last in ranges],
            )
            self._count -= cur.rowcount
            self._db.execute("COMMIT")
        return cur.rowcount

    def due_for_resend(
        self, limit: int, after_s: float, max_s: float, now: float | None = None
    ) -> list[PendingText]:
        """Acknowledged events that no receipt covered in time, oldest first, taken
        back in flight (no longer acknowledged) so they are published again.

        The wait doubles with each publication of an event (`after_s`, 2x, 4x, up to
        `max_s`): a database outage of minutes is not answered by resending the
        whole backlog every `after_s`.
        """
        now = time.time() if now is None else now
        with self._lock:
            rows: list[tuple[int, str, str | None, str]] = self._db.execute(
                "SELECT row_id, device, site, event FROM outbox WHERE acked IS NOT NULL "
                "AND acked + min(?, ? * (1 << min(max(tries - 1, 0), 20))) <= ? "
                "ORDER BY row_id LIMIT ?",
                (max_s, after_s, now, limit),
            ).fetchall()
            self._db.executemany(
                "UPDATE outbox SET acked = NULL WHERE row_id BETWEEN ? AND ?",
                ranges_of(r[0] for r in rows),
            )
        return [PendingText(row_id, device, text) for row_id, device, _site, text in rows]

    def unreceipted(self) -> tuple[int, float | None]:
        """Events the broker acknowledged that no receipt covers yet, and the age in
        seconds of the oldest (created at the read): the receipt lag."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT count(*), min(created) FROM outbox WHERE acked IS NOT NULL"
            ).fetchone()
        return int(count), (time.time() - oldest) if oldest is not None else None

    def depth(self) -> tuple[int, float | None]:
        """Events waiting, and the age in seconds of the oldest."""
        with self._lock:
            count, oldest = self._db.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        return int(count), (time.time() - oldest) if oldest is not None else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _add_receipt_columns(db: sqlite3.Connection) -> None:
    """Columns for receipts: the event's boot and sequence (read from the stored text
    of rows written before them) and the acknowledgement state."""
    db.execute("ALTER TABLE outbox ADD COLUMN boot INTEGER")
    db.execute("ALTER TABLE outbox ADD COLUMN seq INTEGER")
    db.execute("ALTER TABLE outbox ADD COLUMN acked REAL")
    db.execute("ALTER TABLE outbox ADD COLUMN tries INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE outbox SET boot = json_extract(event, '$.boot'), "
        "seq = json_extract(event, '$.seq') WHERE json_valid(event)"
    )


def _move_aside(path: Path) -> Path:
    """Rename a corrupt outbox (and its WAL files) so it can be examined, not lost."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{time.time_ns() % 1_000_000}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(target.with_name(target.name + suffix))
    return target
