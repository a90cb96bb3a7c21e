"""Versioned schema migrations, idempotent, for plain PostgreSQL and TimescaleDB alike.

Each migration has SQL common to both, and a part per flavour: with the
`timescaledb` extension the scan table is a hypertable; without it, a table
partitioned by range on time with daily partitions made on demand.
Queries elsewhere use the same table and view names on both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# Any fixed number; it serialises concurrent `db migrate` runs.
_LOCK_KEY = 0x7061_7263_656C


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    common: str = ""
    postgres: str = ""  # plain PostgreSQL only
    timescale: str = ""  # TimescaleDB only


_SCAN_COLUMNS = """
    ts            timestamptz NOT NULL,
    event_id      text        NOT NULL,
    device_id     text        NOT NULL,
    site_id       text        NOT NULL,
    read_point_id text        NOT NULL,
    kind          text        NOT NULL,
    tracking_id   text,
    code          text,
    symbology     text,
    epc           text,
    rssi          real,
    antenna       smallint,
    read_count    integer     NOT NULL DEFAULT 1,
    first_seen    timestamptz,
    last_seen     timestamptz,
    direction     text,
    ingested_at   timestamptz NOT NULL DEFAULT now()
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "core tables",
        common="""
        CREATE TABLE sites (
            site_id  text PRIMARY KEY,
            name     text NOT NULL,
            timezone text NOT NULL DEFAULT 'UTC'
        );
        CREATE TABLE read_points (
            read_point_id      text PRIMARY KEY,
            site_id            text NOT NULL REFERENCES sites,
            zone               text NOT NULL,
            stage              text NOT NULL,
            description        text NOT NULL DEFAULT '',
            position           integer NOT NULL DEFAULT 0,
            next_read_point_id text REFERENCES read_points
        );
        CREATE TABLE devices (
            device_id     text PRIMARY KEY,
            site_id       text NOT NULL REFERENCES sites,
            read_point_id text REFERENCES read_points,
            kind          text NOT NULL,
            last_seen     timestamptz
        );
        CREATE TABLE parcels (
            tracking_id   text PRIMARY KEY,
            service_class text NOT NULL,
            destination   text NOT NULL,
            origin_site   text REFERENCES sites,
            epc           text UNIQUE,
            accepted_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE dead_letters (
            dead_letter_id bigserial PRIMARY KEY,
            received_at    timestamptz NOT NULL DEFAULT now(),
            topic          text NOT NULL,
            payload        bytea NOT NULL,
            reason         text NOT NULL
        );
        CREATE TABLE alerts (
            alert_id      bigserial PRIMARY KEY,
            fingerprint   text NOT NULL,
            kind          text NOT NULL,
            site_id       text,
            read_point_id text,
            device_id     text,
            tracking_id   text,
            state         text NOT NULL DEFAULT 'open'
                          CHECK (state IN ('open', 'acknowledged', 'resolved')),
            opened_at     timestamptz NOT NULL DEFAULT now(),
            detectable_at timestamptz,
            acked_at      timestamptz,
            acked_by      text,
            resolved_at   timestamptz,
            details       jsonb NOT NULL DEFAULT '{}'
        );
        -- At most one alert that is not resolved per fingerprint (parcel + kind).
        CREATE UNIQUE INDEX alerts_one_live ON alerts (fingerprint) WHERE state <> 'resolved';
        CREATE INDEX alerts_recent ON alerts (opened_at DESC);
        """,
        postgres=f"""
        CREATE TABLE scans ({_SCAN_COLUMNS}) PARTITION BY RANGE (ts);
        """,
        timescale=f"""
        CREATE TABLE scans ({_SCAN_COLUMNS});
        SELECT create_hypertable('scans', 'ts', chunk_time_interval => INTERVAL '1 day');
        """,
    ),
    Migration(
        2,
        "scan indexes",
        common="""
        -- Idempotence: an event id is unique; the time column is part of the key
        -- because partitions and hypertable chunks require it (ts is stable per event).
        CREATE UNIQUE INDEX scans_event ON scans (event_id, ts);
        CREATE INDEX scans_parcel ON scans (tracking_id, ts DESC) WHERE tracking_id IS NOT NULL;
        """,
    ),
    Migration(
        3,
        "standards and sort plans",
        common="""
        -- Standards set beforehand: delivery standard per service class (J+n working
        -- days), and per site, stage and class the longest a parcel may take from
        -- arriving at a stage to reaching the next one.
        CREATE TABLE service_classes (
            service_class text PRIMARY KEY,
            description   text NOT NULL DEFAULT '',
            delivery_days integer NOT NULL CHECK (delivery_days >= 0)
        );
        CREATE TABLE stage_standards (
            site_id       text NOT NULL REFERENCES sites,
            stage         text NOT NULL,
            service_class text NOT NULL REFERENCES service_classes,
            max_seconds   double precision NOT NULL CHECK (max_seconds > 0),
            PRIMARY KEY (site_id, stage, service_class)
        );
        -- Sort plans are versioned; the one in force at time t is the latest version
        -- of the site whose effective_from <= t.
        CREATE TABLE sort_plans (
            sort_plan_id   bigserial PRIMARY KEY,
            site_id        text NOT NULL REFERENCES sites,
            version        integer NOT NULL,
            effective_from timestamptz NOT NULL,
            UNIQUE (site_id, version)
        );
        CREATE TABLE sort_plan_entries (
            sort_plan_id        bigint NOT NULL REFERENCES sort_plans ON DELETE CASCADE,
            destination         text NOT NULL,
            chute_read_point_id text NOT NULL REFERENCES read_points,
            door_read_point_id  text REFERENCES read_points,
            PRIMARY KEY (sort_plan_id, destination)
        );
        ALTER TABLE parcels ADD COLUMN destination_site text;
        """,
    ),
    Migration(
        4,
        "alert event log and device health",
        common="""
        -- Every change of an alert, in order: the API's live stream replays from here
        -- (its SSE ids are event_id), so a client reconnecting with Last-Event-ID
        -- misses nothing. Written by a trigger, so no writer can forget it.
        CREATE TABLE alert_events (
            event_id bigserial PRIMARY KEY,
            alert_id bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
            at       timestamptz NOT NULL DEFAULT now(),
            change   text NOT NULL,
            alert    jsonb NOT NULL
        );
        CREATE FUNCTION alerts_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            what text;
            id   bigint;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                what := 'opened';
            ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
                what := NEW.state;
            ELSE
                what := 'updated';
            END IF;
            INSERT INTO alert_events (alert_id, change, alert)
            VALUES (NEW.alert_id, what, to_jsonb(NEW)) RETURNING event_id INTO id;
            PERFORM pg_notify('parceltrack_alerts', id::text);
            RETURN NEW;
        END $$;
        CREATE TRIGGER alerts_log AFTER INSERT OR UPDATE ON alerts
            FOR EACH ROW EXECUTE FUNCTION alerts_log_change();

        -- Latest health per device, from parceltrack/v1/{site}/{device}/health, and
        -- agent status from the retained .../agents/{agent}/status (Last Will).
        CREATE TABLE device_health (
            device_id  text PRIMARY KEY,
            site_id    text NOT NULL,
            agent_id   text,
            reported_at timestamptz NOT NULL,
            connected  boolean NOT NULL,
            health     jsonb NOT NULL
        );
        CREATE TABLE agent_status (
            agent_id text PRIMARY KEY,
            site_id  text NOT NULL,
            state    text NOT NULL,
            since    timestamptz NOT NULL
        );
        """,
    ),
    Migration(
        50,
        "api keys, customer feedback, api indexes",
        common="""
        -- API keys are stored as sha256 of a 256-bit random secret: the secret is
        -- shown once at creation and cannot be recovered from the table.
        CREATE TABLE api_keys (
            key_id     bigserial PRIMARY KEY,
            key_hash   text NOT NULL UNIQUE,
            prefix     text NOT NULL,
            name       text NOT NULL,
            role       text NOT NULL
                       CHECK (role IN ('customer', 'controller', 'manager', 'admin')),
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        );
        -- Customer complaints and praise, each with the parcel's telemetry as the
        -- customer saw it; the first controller to take one owns it until closed.
        CREATE TABLE feedback (
            feedback_id     bigserial PRIMARY KEY,
            tracking_id     text NOT NULL REFERENCES parcels,
            kind            text NOT NULL CHECK (kind IN ('complaint', 'praise')),
            message         text NOT NULL,
            contact         text,
            snapshot        jsonb NOT NULL,
            site_id         text,
            state           text NOT NULL DEFAULT 'open'
                            CHECK (state IN ('open', 'taken', 'closed')),
            owner           text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            taken_at        timestamptz,
            first_answer_at timestamptz,
            closed_at       timestamptz
        );
        CREATE INDEX feedback_recent ON feedback (feedback_id DESC);
        CREATE TABLE feedback_answers (
            answer_id   bigserial PRIMARY KEY,
            feedback_id bigint NOT NULL REFERENCES feedback ON DELETE CASCADE,
            author      text NOT NULL,
            at          timestamptz NOT NULL DEFAULT now(),
            message     text NOT NULL
        );
        CREATE INDEX alerts_parcel ON alerts (tracking_id) WHERE tracking_id IS NOT NULL;
        CREATE INDEX alerts_site_id ON alerts (site_id, alert_id DESC);
        ALTER TABLE devices ADD COLUMN IF NOT EXISTS description text NOT NULL DEFAULT '';
        -- J+n: n working days (Monday to Friday, UTC) after t; api/tracking.py has
        -- the same rule in Python and a test keeps the two equal.
        CREATE FUNCTION add_working_days(t timestamptz, n integer) RETURNS timestamptz
        LANGUAGE sql STABLE AS $$
            SELECT CASE WHEN n <= 0 THEN t ELSE t + (
                SELECT d FROM generate_series(1, n * 2 + 7) AS d
                WHERE extract(isodow FROM (t + d * interval '24 hours') AT TIME ZONE 'UTC') < 6
                ORDER BY d OFFSET n - 1 LIMIT 1) * interval '24 hours' END
        $$;
        -- Shifts for the scorecards, in the site's local time: early 06-14, late
        -- 14-22, night 22-06; a night shift belongs to the day it started on.
        CREATE FUNCTION shift_of(t timestamptz, tz text) RETURNS text
        LANGUAGE sql STABLE AS $$
            SELECT CASE WHEN extract(hour FROM t AT TIME ZONE tz) >= 6
                         AND extract(hour FROM t AT TIME ZONE tz) < 14 THEN 'early'
                        WHEN extract(hour FROM t AT TIME ZONE tz) >= 14
                         AND extract(hour FROM t AT TIME ZONE tz) < 22 THEN 'late'
                        ELSE 'night' END
        $$;
        CREATE FUNCTION shift_day(t timestamptz, tz text) RETURNS date
        LANGUAGE sql STABLE AS $$
            SELECT ((t AT TIME ZONE tz) - interval '6 hours')::date
        $$;
        """,
    ),
)


def has_timescale(conn: psycopg.Connection[Any]) -> bool:
    """True when the timescaledb extension is installed in this database."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def _enable_timescale(conn: psycopg.Connection[Any]) -> bool:
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if available:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return has_timescale(conn)


def applied_versions(conn: psycopg.Connection[Any]) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if not exists or exists[0] is None:
        return set()
    return {int(str(v)) for (v,) in conn.execute("SELECT version FROM schema_migrations")}


def migrate(dsn: str) -> list[int]:
    """Apply every pending migration; return the versions applied (none when up to date)."""
    applied: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            timescale = _enable_timescale(conn)
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       flavour    text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = applied_versions(conn)
            for step in MIGRATIONS:
                if step.version in done:
                    continue
                flavour = "timescale" if timescale else "postgres"
                with conn.transaction():
                    for sql in (step.common, step.timescale if timescale else step.postgres):
                        if sql.strip():
                            conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, flavour) "
                        "VALUES (%s, %s, %s)",
                        (step.version, step.name, flavour),
                    )
                log.info("applied migration %d (%s) on %s", step.version, step.name, flavour)
                applied.append(step.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
