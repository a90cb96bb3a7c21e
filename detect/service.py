"""The detection service: follows new scans, keeps the columnar state, opens and
resolves alerts in PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import stamina
from psycopg.types.json import Jsonb

from detect.core import ParcelState, overdue

log = logging.getLogger(__name__)

KIND_OVERDUE = "overdue"


@dataclass(frozen=True, slots=True)
class DetectSettings:
    dsn: str
    tick_s: float = 1.0
    # Slack over the read point's normal transit before a parcel counts as overdue.
    overdue_after_s: float = 30.0
    # Rows commit out of ingested_at order; re-reading this much overlap catches them.
    overlap_s: float = 5.0


class ReadPointIndex:
    """Read points as array indices, with whether a parcel there is expected further on."""

    def __init__(self, conn: psycopg.Connection[Any], overdue_after_s: float) -> None:
        rows = conn.execute(
            "SELECT read_point_id, stage, site_id FROM read_points ORDER BY read_point_id"
        ).fetchall()
        self.ids = [str(r[0]) for r in rows]
        self.site = [str(r[2]) for r in rows]
        self.index = {rp: i for i, rp in enumerate(self.ids)}
        # A parcel's journey through the centre ends at dispatch; anywhere else it is
        # expected at a further read point (the sorter's next one depends on the plan).
        self.has_next = np.array([r[1] != "dispatch" for r in rows] + [False], dtype=np.bool_)
        self.window = np.full(len(rows) + 1, overdue_after_s, dtype=np.float64)


class Detector:
    def __init__(self, settings: DetectSettings) -> None:
        self.settings = settings
        self.state = ParcelState()
        self._watermark = datetime.fromtimestamp(0, UTC)
        self.alerts_opened = 0
        self.alerts_resolved = 0

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def run(self, stop: threading.Event) -> None:
        with psycopg.connect(self.settings.dsn, autocommit=True) as conn:
            points = ReadPointIndex(conn, self.settings.overdue_after_s)
            while not stop.is_set():
                started = time.monotonic()
                self.tick(conn, points, datetime.now(UTC))
                stop.wait(max(0.0, self.settings.tick_s - (time.monotonic() - started)))

    def tick(self, conn: psycopg.Connection[Any], points: ReadPointIndex, now: datetime) -> None:
        since = self._watermark - timedelta(seconds=self.settings.overlap_s)
        rows = conn.execute(
            "SELECT tracking_id, read_point_id, ts, ingested_at FROM scans "
            "WHERE ingested_at > %s AND tracking_id IS NOT NULL",
            (since,),
        ).fetchall()
        if rows:
            self._watermark = max(r[3] for r in rows)
            ids = [str(r[0]) for r in rows]
            rp = np.array(
                [points.index.get(str(r[1]), len(points.ids)) for r in rows], dtype=np.int32
            )
            seen = np.array([r[2].timestamp() for r in rows], dtype=np.float64)
            self.state.update(ids, rp, seen)
            self._resolve(conn, sorted(set(ids)))
        late = overdue(self.state, points.has_next, points.window, now.timestamp())
        self._open(conn, points, np.flatnonzero(late))

    def _open(
        self, conn: psycopg.Connection[Any], points: ReadPointIndex, slots: npt.NDArray[np.intp]
    ) -> None:
        if len(slots) == 0:
            return
        rows = []
        for s in slots.tolist():
            tracking, rp = self.state.ids[s], int(self.state.read_point[s])
            last = datetime.fromtimestamp(float(self.state.last_seen[s]), UTC)
            rows.append(
                (
                    f"{KIND_OVERDUE}:{tracking}",
                    KIND_OVERDUE,
                    points.site[rp],
                    points.ids[rp],
                    tracking,
                    last + timedelta(seconds=float(points.window[rp])),
                    Jsonb({"last_seen": last.isoformat(), "read_point": points.ids[rp]}),
                )
            )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id, "
                "detectable_at, details) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (fingerprint) WHERE state <> 'resolved' DO NOTHING",
                rows,
            )
            opened = cur.rowcount
        if opened > 0:
            self.alerts_opened += opened
            log.info("opened %d overdue alerts", opened)

    def _resolve(self, conn: psycopg.Connection[Any], tracking_ids: list[str]) -> None:
        # A parcel seen again after its alert opened has moved on: resolve it.
        cur = conn.execute(
            "UPDATE alerts a SET state = 'resolved', resolved_at = now() "
            "WHERE a.kind = %s AND a.state <> 'resolved' AND a.tracking_id = ANY(%s) "
            "AND EXISTS (SELECT 1 FROM scans s WHERE s.tracking_id = a.tracking_id "
            "            AND s.ts > (a.details->>'last_seen')::timestamptz)",
            (KIND_OVERDUE, tracking_ids),
        )
        if cur.rowcount > 0:
            self.alerts_resolved += cur.rowcount
