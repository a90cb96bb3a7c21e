"""`parceltrack quality`: the escalation scheduler and the daily report, one loop.

It runs as its own process (not inside the API, whose workers are many, nor inside
detection, whose tick must stay a few milliseconds): every `tick_s` it escalates
and reminds (quality/store.py), escalates overdue complaints, queues the daily
report when it is due (quality/report.py), and computes the manager page's figures
for its standard periods ahead (storage/figures.py, `figure_snapshots`). Before all
that it rolls up the scans committed since its last tick (storage/rollup.py, from
the scan feed), so the figures, sums of hourly rollups, are at most a tick old.
Everything it has done is in the database, written in the transaction that queues
the messages, so it survives restarts; several instances may run (an advisory lock
lets one plan at a time, and the idempotency keys keep any repeat out of the
queue). The delivery engine (`parceltrack notify`) sends what it queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time

import psycopg

from quality import report, store
from storage import figures, rollup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QualitySettings:
    dsn: str
    tick_s: float = 15.0
    digest_at: int = 10  # this many alerts due at once for one person and site: one digest
    report_at: time = time(6, 0)  # UTC; the report of the day before goes out after it
    lost_after_s: float = 3600.0
    snapshot_every_s: float = figures.SNAPSHOT_EVERY_S  # the manager page's figures ahead


def now() -> datetime:
    return datetime.now(UTC)


async def run_once(settings: QualitySettings, now: datetime) -> store.TickResult:
    # First: the report and the figures below are sums of the rollups.
    await asyncio.to_thread(rollup.catch_up, settings.dsn)
    async with await psycopg.AsyncConnection.connect(settings.dsn, autocommit=True) as conn:
        result = await store.tick(conn, now, settings.digest_at)
        await report.send_due(conn, now, settings.report_at, settings.lost_after_s)
        await figures.refresh_snapshots(conn, now, settings.snapshot_every_s)
    return result


async def run(
    settings: QualitySettings,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = now,
) -> None:
    """Tick until `stop` is set; a failed tick is logged and retried at the next one."""
    log.info("quality scheduler: tick %.1f s, digest at %d", settings.tick_s, settings.digest_at)
    while not stop.is_set():
        try:
            await run_once(settings, clock())
        except (psycopg.Error, OSError):
            log.warning("quality tick failed; retrying at the next tick", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.tick_s)
