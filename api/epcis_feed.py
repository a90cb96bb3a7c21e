"""EPCIS subscriptions: each new event of a subscribed named query goes to the
subscriber's webhook, through the outbound delivery engine (storage/outbound.py).

A round takes each subscription in a transaction of its own (row-locked with SKIP
LOCKED, so several API workers share the work without sending anything twice),
reads the query's events recorded after the subscription's cursor, queues one
EPCISQueryDocument of up to `BATCH` events as a webhook signed with the
subscription's `signatureToken`, and moves the cursor, all in that transaction: the
message exists exactly when the cursor has moved past its events.

Events are taken in record-time order (`scans.ingested_at`, then the scan id) up to
`SETTLE` before now: an ingest transaction stamps its rows when it starts and
commits a moment later, so rows younger than that may still be invisible. A
transaction that commits more than `SETTLE` after it started would be passed over
(the ingest commits batches within a second).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.epcis import epcis_time, event_of, query_document
from api.epcis_query import Feed, events_sql, from_definition
from storage.outbound import Outbound, Webhook, enqueue_async

log = logging.getLogger(__name__)

BATCH = 500  # events per delivery: a document stays well under a megabyte
SETTLE = timedelta(seconds=2)
KIND = "epcis.query"
# Where GS1's EPCIS 2.0 REST binding wants a subscription delivery's signature.
GS1_SIGNATURE_HEADER = "GS1-Signature"


SUBSCRIBER_PREFIX = "epcis-subscription:"


def subscriber(subscription_id: Any) -> str:
    """The name the delivery engine knows a subscription by (rate limit, dead letters)."""
    return f"{SUBSCRIBER_PREFIX}{subscription_id}"


async def _deliver_one(conn: AsyncConnection[Any], subscription_id: Any) -> int:
    """Queue the next batch of one subscription; the number of events queued."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT s.subscription_id, s.owner, s.query_name, s.dest, s.signature_token, "
            "s.cursor_ingested, s.cursor_event, q.query, now() AS now "
            "FROM epcis_subscriptions s JOIN epcis_queries q "
            "ON q.owner = s.owner AND q.name = s.query_name "
            "WHERE s.subscription_id = %s FOR UPDATE OF s SKIP LOCKED",
            (subscription_id,),
        )
        sub = await cur.fetchone()
        if sub is None:  # another worker has it, or it was deleted
            return 0
        feed = Feed(sub["cursor_ingested"], sub["cursor_event"], sub["now"] - SETTLE)
        account = sub["owner"] or None  # '' is the staff's: every parcel
        sql, params = events_sql(from_definition(sub["query"]), account, BATCH, feed=feed)
        await cur.execute(sql.encode(), params)
        rows = await cur.fetchall()
        if not rows:
            return 0
        last = rows[-1]
        sid = str(sub["subscription_id"])
        document = query_document(
            sub["query_name"], [event_of(r) for r in rows], datetime.now(UTC), sid
        )
        await enqueue_async(
            conn,
            Outbound(
                target=sub["dest"],
                subscriber=subscriber(sid),
                # The batch's last event names it: a replayed round queues nothing new.
                idempotency_key=f"{epcis_time(last['ingested_at'])}/{last['event_id']}",
                kind=KIND,
                content=Webhook(
                    body=document,
                    secret=sub["signature_token"],
                    signature_header=GS1_SIGNATURE_HEADER,
                ),
            ),
        )
        await cur.execute(
            "UPDATE epcis_subscriptions SET cursor_ingested = %s, cursor_event = %s "
            "WHERE subscription_id = %s",
            (last["ingested_at"], last["event_id"], sub["subscription_id"]),
        )
    return len(rows)


async def feed_round(pool: AsyncConnectionPool[Any]) -> int:
    """One pass over every subscription; the number of events queued."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT subscription_id FROM epcis_subscriptions ORDER BY 1")
        ids = [row[0] for row in await cur.fetchall()]
        queued = 0
        for subscription_id in ids:
            # A subscription with more than a batch waiting gets several in a row.
            while (sent := await _deliver_one(conn, subscription_id)) == BATCH:
                queued += sent
            queued += sent
    return queued


async def run(pool: AsyncConnectionPool[Any], every_s: float = 1.0) -> None:
    """Feed rounds until cancelled; a failed round is retried. The first failure of a
    run of them is a warning, the rest debug: an outage logs once, not every second."""
    failing = False
    while True:
        try:
            queued = await feed_round(pool)
            if queued:
                log.info("EPCIS subscriptions: %d events queued for delivery", queued)
            if failing:
                log.info("EPCIS subscription rounds work again")
            failing = False
        except Exception:  # the database may be away; the next round tries again
            log.log(
                logging.DEBUG if failing else logging.WARNING,
                "EPCIS subscription round failed",
                exc_info=True,
            )
            failing = True
        await asyncio.sleep(every_s)


def install(app: FastAPI) -> None:
    """Run the feed beside the API for as long as the app lives (its own lifespan wraps
    the app's, so the pool is open while the feed runs)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            task = asyncio.create_task(run(app.state.pool), name="epcis-feed")
            try:
                yield state
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    app.router.lifespan_context = lifespan
