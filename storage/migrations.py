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

from parceltrack.errors import ParceltrackError

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

# Edge outboxes replay events hours old after an outage; 2 days covers a long
# outage with margin. Chunks are compressed only after it (TimescaleDB).
LATE_DATA_HORIZON = "2 days"
SCAN_RETENTION = "400 days"
# Aggregates a continuous aggregate accepts (no DISTINCT, no FILTER: conservative).
_THROUGHPUT_COLUMNS = """count(*) AS scans,
               sum(CASE WHEN kind = 'noread' THEN 1 ELSE 0 END) AS noreads"""
# Per site: a plain view over the per-read-point one, on both flavours.
_SITE_THROUGHPUT = """CREATE VIEW site_throughput_1m AS
        SELECT bucket, site_id, sum(scans)::bigint AS scans, sum(noreads)::bigint AS noreads
        FROM scan_throughput_1m
        GROUP BY bucket, site_id;"""

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
        -- Every change of an alert, in order: the API's live stream replays from here,
        -- so a client reconnecting with Last-Event-ID misses nothing (its ids are feed
        -- positions since migration 170/210). Written by a trigger, so no writer can
        -- forget it.
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
    # -- issue 5 (ingest): 30-39 ---------------------------------------------------
    Migration(
        30,
        "scan lifecycle and throughput per minute",
        common="""
        -- The manifest says which RFID tags a parcel should carry (EPC URIs or hex).
        ALTER TABLE parcels ADD COLUMN expected_tags text[] NOT NULL DEFAULT '{}';
        CREATE INDEX dead_letters_recent ON dead_letters (received_at DESC);
        """,
        postgres=f"""
        -- Same name and columns as the continuous aggregate on TimescaleDB.
        CREATE VIEW scan_throughput_1m AS
        SELECT date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')
                   AS bucket,
               site_id, read_point_id,
               {_THROUGHPUT_COLUMNS}
        FROM scans
        GROUP BY 1, site_id, read_point_id;
        {_SITE_THROUGHPUT}
        """,
        timescale=f"""
        -- Chunk sizing (Timescale's guidance: the indexes of the chunks being written
        -- should fit in 25% of main memory). Three indexes take about 150 bytes a row;
        -- a busy hub averages ~1,000 scans/s (86M rows a day, 13 GB of index a day),
        -- so 6-hour chunks keep the hot indexes near 3 GB: a 16 GB server's share.
        -- It applies to chunks made from now on.
        SELECT set_chunk_time_interval('scans', INTERVAL '6 hours');
        -- Compression: segments per read point (queries filter by site and read
        -- point; each holds thousands of rows per chunk), newest first. It starts
        -- after {LATE_DATA_HORIZON}: edge outboxes replay events hours old after an
        -- outage, and those must land in uncompressed chunks (TimescaleDB >= 2.11
        -- would still accept older ones into compressed chunks, checking the
        -- unique index by decompressing, but slowly).
        ALTER TABLE scans SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'site_id, read_point_id',
            timescaledb.compress_orderby = 'ts DESC'
        );
        SELECT add_compression_policy('scans', compress_after => INTERVAL '{LATE_DATA_HORIZON}');
        -- Service-quality reviews compare a year with the last: keep 400 days.
        SELECT add_retention_policy('scans', drop_after => INTERVAL '{SCAN_RETENTION}');
        -- Throughput per minute per site and read point. materialized_only = false is
        -- real-time aggregation (the default changed to true in 2.13); WITH NO DATA
        -- because a migration runs in a transaction.
        CREATE MATERIALIZED VIEW scan_throughput_1m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket,
               site_id, read_point_id,
               {_THROUGHPUT_COLUMNS}
        FROM scans
        GROUP BY time_bucket(INTERVAL '1 minute', ts), site_id, read_point_id
        WITH NO DATA;
        -- Refresh the last 3 days (beyond the late-data horizon, so replays are
        -- folded in) every minute, up to the current minute (real-time covers it).
        SELECT add_continuous_aggregate_policy('scan_throughput_1m',
            start_offset => INTERVAL '3 days',
            end_offset => INTERVAL '1 minute',
            schedule_interval => INTERVAL '1 minute');
        {_SITE_THROUGHPUT}
        """,
    ),
    Migration(
        40,
        "detection: alert episodes, windows, thresholds, transit statistics, ETA",
        common="""
        -- The condition episode an alert is about (the parcel's read point and the time
        -- it arrived there, or the device and when it fell silent). One alert per
        -- episode ever: a restart that sees the same condition again opens nothing.
        ALTER TABLE alerts ADD COLUMN episode text;
        CREATE UNIQUE INDEX alerts_one_per_episode ON alerts (fingerprint, episode)
            WHERE episode IS NOT NULL;
        CREATE INDEX alerts_live_kind ON alerts (kind) WHERE state <> 'resolved';
        -- A parcel back in the state after a long absence: are its alerts still live?
        CREATE INDEX alerts_live_parcel ON alerts (tracking_id) WHERE state <> 'resolved';
        -- The detector follows new scans by the time they were stored.
        CREATE INDEX scans_ingested ON scans (ingested_at);

        -- Missing: no read anywhere for this long after the parcel was expected at its
        -- next stage; per site, and per service class and stage where a row names them
        -- (more specific rows win).
        CREATE TABLE missing_windows (
            site_id       text NOT NULL REFERENCES sites,
            service_class text REFERENCES service_classes,
            stage         text,
            window_s      double precision NOT NULL CHECK (window_s > 0)
        );
        CREATE UNIQUE INDEX missing_windows_key
            ON missing_windows (site_id, coalesce(service_class, ''), coalesce(stage, ''));
        -- Device silence and no-read spikes, per site.
        CREATE TABLE device_thresholds (
            site_id     text PRIMARY KEY REFERENCES sites,
            silence_s   double precision NOT NULL DEFAULT 60 CHECK (silence_s > 0),
            bin_s       double precision NOT NULL DEFAULT 10 CHECK (bin_s > 0),
            window_bins integer NOT NULL DEFAULT 6 CHECK (window_bins > 0),
            bins        integer NOT NULL DEFAULT 60 CHECK (bins > window_bins),
            open_rate   double precision NOT NULL DEFAULT 0.2,
            close_rate  double precision NOT NULL DEFAULT 0.1,
            jump        double precision NOT NULL DEFAULT 3,
            min_reads   integer NOT NULL DEFAULT 20,
            min_noreads integer NOT NULL DEFAULT 8,
            CHECK (close_rate < open_rate)
        );
        -- Learned from history by the detector: time from arriving at a stage to
        -- arriving at the next, per site, stage and service class.
        CREATE TABLE stage_transit_stats (
            site_id       text NOT NULL,
            stage         text NOT NULL,
            service_class text NOT NULL,
            samples       integer NOT NULL,
            p50_s         double precision NOT NULL,
            p90_s         double precision NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (site_id, stage, service_class)
        );
        -- Per active parcel, written by the detector: where it is, when it is expected
        -- at the next stage, and when at the site's last stage (median and p90).
        CREATE TABLE parcel_eta (
            tracking_id   text PRIMARY KEY,
            site_id       text NOT NULL,
            read_point_id text NOT NULL,
            stage         text NOT NULL,
            entered_at    timestamptz NOT NULL,
            next_stage    text,
            next_due      timestamptz,
            eta           timestamptz,
            eta_p90       timestamptz,
            delivery_due  timestamptz,
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        -- How far the detector has published alert_events on MQTT.
        CREATE TABLE alert_publish_cursor (
            publisher text PRIMARY KEY,
            event_id  bigint NOT NULL
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
    # -- issue 12 (one schema owner): 60-69 -----------------------------------------
    Migration(
        60,
        "drop parcels.expected_tags",
        common="""
        -- Written only by a manifest loader that nothing called; nothing reads it.
        ALTER TABLE parcels DROP COLUMN expected_tags;
        """,
    ),
    # -- issue 13 item 4, issue 18 item 3 (the scan feed, detection shards): 75-79 ------
    Migration(
        75,
        "scan feed: the writing transaction of every scan, and a log of scan commits",
        common="""
        -- storage/feed.py: followers see scans in commit order, by transaction id
        -- and snapshot, not by a time that is taken when the transaction starts.
        -- Added without a default first: TimescaleDB accepts only constant defaults
        -- in ADD COLUMN on a compressed hypertable, but any in SET DEFAULT. Rows
        -- stored before this migration keep NULL: they are older than every feed.
        ALTER TABLE scans ADD COLUMN xact_id xid8;
        ALTER TABLE scans ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
        -- Partial: rows stored before this migration (NULL) take no index space. On a
        -- large existing database building it reads every partition while writes
        -- wait: apply this migration in a maintenance window.
        CREATE INDEX scans_xact ON scans (xact_id) WHERE xact_id IS NOT NULL;
        -- One row per writing transaction, in the same transaction as its scans:
        -- which transactions to look for, and the range of `ts` that holds their
        -- rows (so a follower's query is pruned to those partitions or chunks).
        CREATE TABLE scan_commits (
            xact_id   xid8        PRIMARY KEY DEFAULT pg_current_xact_id(),
            ts_from   timestamptz NOT NULL,
            ts_to     timestamptz NOT NULL,
            logged_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    # -- issue 14 (site files, every detection setting, live reload): 80-89 ---------
    Migration(
        80,
        "site files: successors, device settings, site tolerances, change notifications",
        common="""
        -- A read point may feed many (a sorter feeds every chute): one row per hop.
        -- next_read_point_id stays, kept by the repository as the successor when there
        -- is exactly one, for the readers that show "the next read point".
        CREATE TABLE read_point_successors (
            read_point_id text NOT NULL REFERENCES read_points ON DELETE CASCADE,
            successor_id  text NOT NULL REFERENCES read_points ON DELETE CASCADE,
            PRIMARY KEY (read_point_id, successor_id),
            CHECK (read_point_id <> successor_id)
        );
        INSERT INTO read_point_successors (read_point_id, successor_id)
            SELECT read_point_id, next_read_point_id FROM read_points
            WHERE next_read_point_id IS NOT NULL;
        -- The protocol is `kind`; its settings (baud rate, framing, power ...) as given.
        ALTER TABLE devices ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
        -- Per site: device clock disagreement and the gap that still makes a repeated
        -- read a duplicate. Sites without a row use the detector's defaults.
        CREATE TABLE site_tolerances (
            site_id          text PRIMARY KEY REFERENCES sites ON DELETE CASCADE,
            skew_tolerance_s double precision NOT NULL CHECK (skew_tolerance_s >= 0),
            duplicate_gap_s  double precision NOT NULL CHECK (duplicate_gap_s > 0)
        );
        -- Detection reloads its configuration when any of these change (LISTEN), not
        -- on a poll. One notification per statement; PostgreSQL folds identical ones
        -- of a transaction into one. Not `devices`: detection does not read it, and the
        -- ingest updates its last_seen with every health report.
        CREATE FUNCTION reference_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('parceltrack_reference', TG_TABLE_NAME);
            RETURN NULL;
        END $$;
        DO $$
        DECLARE t text;
        BEGIN
            FOREACH t IN ARRAY ARRAY['sites', 'read_points', 'read_point_successors',
                'service_classes', 'stage_standards', 'missing_windows',
                'device_thresholds', 'site_tolerances', 'sort_plans', 'sort_plan_entries']
            LOOP
                EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR '
                    'TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION reference_changed()',
                    t || '_changed', t);
            END LOOP;
        END $$;
        """,
    ),
    # -- issue 15 (outbound delivery, customer subscriptions): 90-99 ------------------
    Migration(
        90,
        "outbound delivery queue",
        common="""
        -- Every e-mail and webhook that must leave (storage/outbound.py queues them in
        -- the caller's transaction; notify/ sends them). One row per message and target;
        -- (subscriber, idempotency_key) makes queuing a repeat a no-op.
        CREATE TABLE outbound_deliveries (
            delivery_id     bigserial PRIMARY KEY,
            channel         text NOT NULL CHECK (channel IN ('email', 'webhook')),
            target          text NOT NULL,
            subscriber      text NOT NULL,
            idempotency_key text NOT NULL,
            kind            text NOT NULL,
            subject         text,
            body            text NOT NULL,
            html            text,
            unsubscribe_url text,
            secret          text,
            state           text NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts        integer NOT NULL DEFAULT 0,
            created_at      timestamptz NOT NULL DEFAULT now(),
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz,
            dead_at         timestamptz,
            last_error      text,
            UNIQUE (subscriber, idempotency_key)
        );
        CREATE INDEX outbound_due ON outbound_deliveries (next_attempt_at)
            WHERE state = 'pending';
        CREATE INDEX outbound_dead ON outbound_deliveries (dead_at DESC) WHERE state = 'dead';
        -- Each attempt, for the admins' view and the per-subscriber rate limit.
        CREATE TABLE outbound_attempts (
            attempt_id  bigserial PRIMARY KEY,
            delivery_id bigint NOT NULL REFERENCES outbound_deliveries ON DELETE CASCADE,
            subscriber  text NOT NULL,
            at          timestamptz NOT NULL DEFAULT now(),
            ok          boolean NOT NULL,
            detail      text NOT NULL
        );
        CREATE INDEX outbound_attempts_recent ON outbound_attempts (subscriber, at DESC);
        -- Wakes the engine at commit, so a message leaves within the 5 s promised.
        CREATE FUNCTION outbound_wake() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('parceltrack_outbound', NEW.delivery_id::text);
            RETURN NEW;
        END $$;
        CREATE TRIGGER outbound_queued AFTER INSERT ON outbound_deliveries
            FOR EACH ROW EXECUTE FUNCTION outbound_wake();
        """,
    ),
    Migration(
        91,
        "customer subscriptions, notification cursor, replayable dead letters",
        common="""
        -- The retry window counts from here: queuing, or an admin's replay.
        ALTER TABLE outbound_deliveries ADD COLUMN retry_from timestamptz NOT NULL
            DEFAULT now();
        -- The header a webhook's signature travels in, where not X-Parceltrack-Signature
        -- (EPCIS subscriptions want GS1-Signature).
        ALTER TABLE outbound_deliveries ADD COLUMN signature_header text;
        -- Messages still pending when their subscriber unsubscribes are not sent.
        ALTER TABLE outbound_deliveries DROP CONSTRAINT outbound_deliveries_state_check,
            ADD CONSTRAINT outbound_deliveries_state_check
            CHECK (state IN ('pending', 'delivered', 'dead', 'cancelled'));
        -- A customer's wish to hear about one parcel, by e-mail or webhook, in a
        -- language. `secret` signs its webhooks; `unsubscribe_token` ends it.
        CREATE TABLE customer_subscriptions (
            subscription_id   bigserial PRIMARY KEY,
            tracking_id       text NOT NULL REFERENCES parcels,
            channel           text NOT NULL CHECK (channel IN ('email', 'webhook')),
            target            text NOT NULL,
            language          text NOT NULL CHECK (language IN ('en', 'zh-CN')),
            secret            text,
            unsubscribe_token text NOT NULL UNIQUE,
            created_at        timestamptz NOT NULL DEFAULT now(),
            unsubscribed_at   timestamptz
        );
        CREATE UNIQUE INDEX customer_subscriptions_one ON customer_subscriptions
            (tracking_id, channel, target) WHERE unsubscribed_at IS NULL;
        -- Where the notifier has read up to in scans (by ingested_at) and alert_events.
        CREATE TABLE notify_cursor (
            name        text PRIMARY KEY,
            scan_at     timestamptz NOT NULL,
            alert_event bigint NOT NULL
        );
        """,
    ),
    # -- issue 15 items 3-4 (partners, EPCIS 2.0 queries): 110-119 ------------------
    Migration(
        110,
        "partner accounts on parcels and api keys",
        common="""
        -- A partner (an e-commerce shipper) sees only the parcels of its own account:
        -- the manifest names the account, a partner key carries it.
        ALTER TABLE parcels ADD COLUMN account text;
        CREATE INDEX parcels_account ON parcels (account) WHERE account IS NOT NULL;
        ALTER TABLE api_keys ADD COLUMN account text;
        ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
        ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
            CHECK (role IN ('customer', 'controller', 'manager', 'admin', 'partner'));
        -- A partner key without an account would see nothing or, worse, everything.
        ALTER TABLE api_keys ADD CONSTRAINT api_keys_partner_account
            CHECK ((role = 'partner') = (account IS NOT NULL));
        """,
    ),
    Migration(
        111,
        "EPCIS named queries and subscriptions",
        common="""
        -- Named queries belong to an owner: a partner account, or '' for staff, so
        -- one partner never sees another's query names or results.
        CREATE TABLE epcis_queries (
            owner      text NOT NULL,
            name       text NOT NULL,
            query      jsonb NOT NULL,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (owner, name)
        );
        -- Webhook subscriptions to a named query. The cursor is the last scan
        -- (record time, event id) handed to the delivery engine.
        CREATE TABLE epcis_subscriptions (
            subscription_id uuid PRIMARY KEY,
            owner           text NOT NULL,
            query_name      text NOT NULL,
            dest            text NOT NULL,
            signature_token text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            initial_record_time timestamptz NOT NULL,
            cursor_ingested timestamptz NOT NULL,
            cursor_event    text NOT NULL DEFAULT '',
            FOREIGN KEY (owner, query_name) REFERENCES epcis_queries ON DELETE CASCADE
        );
        """,
    ),
    # -- issue 16 (controllers' and managers' quality): 120-139 ----------------------
    Migration(
        120,
        "alert severities, assignment and escalation; complaint deadlines; staff ratings",
        common="""
        -- Severity per alert kind: a row without a site is the default, a site's own
        -- row wins. The defaults rank what stops the floor above what delays one parcel.
        CREATE TABLE alert_severities (
            site_id  text REFERENCES sites,
            kind     text NOT NULL,
            severity text NOT NULL CHECK (severity IN ('minor', 'major', 'critical'))
        );
        CREATE UNIQUE INDEX alert_severities_key
            ON alert_severities (coalesce(site_id, ''), kind);
        INSERT INTO alert_severities (site_id, kind, severity) VALUES
            (NULL, 'silence', 'critical'), (NULL, 'noread', 'major'),
            (NULL, 'missing', 'major'), (NULL, 'missort', 'major'),
            (NULL, 'misroute', 'major'), (NULL, 'late', 'minor'), (NULL, 'delay', 'minor');
        -- Escalation: an alert still open (not acknowledged, not resolved) after_s
        -- seconds after it opened goes to the site's on-duty list, then again every
        -- repeat_s seconds until someone acknowledges it or it resolves. Same default
        -- rule as severities: a site's own row wins.
        CREATE TABLE escalation_rules (
            site_id  text REFERENCES sites,
            kind     text NOT NULL,
            after_s  double precision NOT NULL CHECK (after_s > 0),
            repeat_s double precision NOT NULL CHECK (repeat_s > 0)
        );
        CREATE UNIQUE INDEX escalation_rules_key
            ON escalation_rules (coalesce(site_id, ''), kind);
        INSERT INTO escalation_rules (site_id, kind, after_s, repeat_s) VALUES
            (NULL, 'silence', 300, 900), (NULL, 'noread', 600, 1800),
            (NULL, 'missing', 900, 1800), (NULL, 'missort', 900, 1800),
            (NULL, 'misroute', 900, 1800), (NULL, 'late', 1800, 3600),
            (NULL, 'delay', 1800, 3600);
        -- Who is on duty at a site, how they are reached, and from which severity on.
        CREATE TABLE on_duty (
            duty_id      bigserial PRIMARY KEY,
            site_id      text NOT NULL REFERENCES sites,
            name         text NOT NULL,
            channel      text NOT NULL CHECK (channel IN ('email', 'webhook')),
            address      text NOT NULL,
            min_severity text NOT NULL DEFAULT 'minor'
                         CHECK (min_severity IN ('minor', 'major', 'critical')),
            language     text NOT NULL DEFAULT 'en',
            secret       text,  -- signs webhooks (HMAC); never listed back
            UNIQUE (site_id, channel, address),
            CHECK (channel <> 'webhook' OR secret IS NOT NULL)
        );
        -- A controller an alert is assigned to (any change is logged in alert_events).
        ALTER TABLE alerts ADD COLUMN assigned_to text, ADD COLUMN assigned_at timestamptz;
        -- Each escalation round sent for an alert (0 = the escalation, 1.. reminders):
        -- written in the transaction that queues the messages, so a restarted
        -- scheduler knows what went out and sends nothing twice.
        CREATE TABLE alert_escalations (
            alert_id bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
            round    integer NOT NULL CHECK (round >= 0),
            sent_at  timestamptz NOT NULL DEFAULT now(),
            digest   text,
            PRIMARY KEY (alert_id, round)
        );

        -- Counter staff customers can name in their feedback, and the counters.
        CREATE TABLE staff (
            staff_id   text PRIMARY KEY,
            name       text NOT NULL,
            site_id    text REFERENCES sites,
            counter_id text
        );
        ALTER TABLE feedback ADD COLUMN staff_id text REFERENCES staff,
                             ADD COLUMN counter_id text,
                             ADD COLUMN deadline timestamptz;
        CREATE INDEX feedback_staff ON feedback (staff_id, created_at)
            WHERE staff_id IS NOT NULL;
        CREATE INDEX feedback_unanswered ON feedback (deadline)
            WHERE kind = 'complaint' AND first_answer_at IS NULL;
        -- How long a site has to answer a complaint; 7 days where no row says otherwise.
        CREATE TABLE complaint_policies (
            site_id      text PRIMARY KEY REFERENCES sites,
            answer_within interval NOT NULL CHECK (answer_within > interval '0')
        );
        UPDATE feedback SET deadline = created_at + interval '7 days' WHERE kind = 'complaint';
        -- Overdue complaints escalated (once each), and daily reports sent.
        CREATE TABLE complaint_escalations (
            feedback_id bigint PRIMARY KEY REFERENCES feedback ON DELETE CASCADE,
            sent_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE report_recipients (
            address  text PRIMARY KEY,
            name     text NOT NULL,
            site_id  text REFERENCES sites,
            language text NOT NULL DEFAULT 'en'
        );
        CREATE TABLE daily_reports (
            day     date NOT NULL,
            address text NOT NULL,
            sent_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (day, address)
        );
        """,
    ),
    Migration(
        121,
        "manager figures computed ahead",
        common="""
        -- The manager page's figures for its standard periods (the last 1, 7 and 30
        -- days, every site), computed by `parceltrack quality` in the background: on
        -- millions of scans they take minutes, the page must open in under a second.
        CREATE TABLE figure_snapshots (
            days        integer PRIMARY KEY CHECK (days > 0),
            since       timestamptz NOT NULL,
            until       timestamptz NOT NULL,
            computed_at timestamptz NOT NULL,
            took_s      double precision NOT NULL,
            body        jsonb NOT NULL
        );
        """,
    ),
    # -- issue 17 (detection checkpoints): 150-154 ------------------------------------
    Migration(
        150,
        "scan feed: how far scan_commits has been pruned",
        common="""
        -- A follower resuming from a stored position (a detection checkpoint) needs
        -- every commit after it still logged: `feed.prune` records its horizon here,
        -- so such a position is refused once pruning has passed it.
        CREATE TABLE scan_commits_pruned (
            only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            pruned_below xid8    NOT NULL
        );
        """,
    ),
    # -- issue 16 remainder (manager figures from hourly rollups): 160-169 ------------
    Migration(
        160,
        "hourly rollups of the manager figures",
        common="""
        -- storage/rollup.py keeps these from the scan feed, one transaction per step
        -- with the feed position it reached, so every committed scan counts once.
        -- Hours are UTC hour starts; any period of whole hours is a sum of rows.
        CREATE TABLE rollup_position (
            only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            feed_xmin    xid8 NOT NULL,
            feed_xmax    xid8 NOT NULL,
            in_flight    xid8[] NOT NULL DEFAULT '{}',
            -- Scans older than this were never rolled up (a rebuild starts here).
            rolled_from  timestamptz NOT NULL,
            caught_up_at timestamptz NOT NULL
        );
        -- Per site and hour: scans and no-reads (throughput), parcels first seen,
        -- first chute reads (all; those with a plan; those off the plan).
        CREATE TABLE rollup_site_hours (
            site_id      text NOT NULL,
            hour         timestamptz NOT NULL,
            scans        bigint NOT NULL DEFAULT 0,
            noreads      bigint NOT NULL DEFAULT 0,
            parcels_seen bigint NOT NULL DEFAULT 0,
            first_chutes bigint NOT NULL DEFAULT 0,
            chuted       bigint NOT NULL DEFAULT 0,
            missorted    bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (hour, site_id)
        );
        -- Parcels that left a site (first read at a leaving stage), by class and hour.
        CREATE TABLE rollup_on_time_hours (
            site_id       text NOT NULL,
            service_class text NOT NULL,
            hour          timestamptz NOT NULL,
            finished      bigint NOT NULL DEFAULT 0,
            on_time       bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (hour, site_id, service_class)
        );
        -- Waits until the next read, as a histogram: bucket 0 is under 1 s, bucket
        -- k >= 1 holds [10^((k-1)/20), 10^(k/20)) seconds (20 per decade).
        CREATE TABLE rollup_dwell_hours (
            site_id       text NOT NULL,
            read_point_id text NOT NULL,
            hour          timestamptz NOT NULL,
            bucket        smallint NOT NULL,
            waits         bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (hour, site_id, read_point_id, bucket)
        );
        -- Each parcel's visit to a site: what the counters above were built from, so a
        -- read that arrives late (earlier than one already counted) moves the count.
        CREATE TABLE rollup_visits (
            site_id       text NOT NULL,
            tracking_id   text NOT NULL,
            arrived       timestamptz NOT NULL,
            last_seen     timestamptz NOT NULL,
            left_at       timestamptz,
            service_class text,
            on_time       boolean,
            chuted_at     timestamptz,
            chute         text,
            missorted     boolean,
            PRIMARY KEY (site_id, tracking_id)
        );
        -- Losses are visits that never left: few, so a partial index finds them.
        CREATE INDEX rollup_visits_open ON rollup_visits (site_id, arrived)
            WHERE left_at IS NULL;
        CREATE INDEX rollup_visits_last_seen ON rollup_visits (last_seen);
        """,
    ),
    # -- issue 15 remainder (notifications in commit order): 170-179 ------------------
    Migration(
        170,
        "alert changes in commit order; the notifier's feed positions",
        common="""
        -- event_id is taken when the change is written, not when it commits: a change
        -- of a slow transaction can become visible after a later id. Followers that
        -- must miss none (the notifier) read by the writer's transaction id against
        -- snapshots, as the scan feed does (storage/feed.py). Rows written before this
        -- migration keep NULL: older than every follower's position. (A volatile
        -- default in ADD COLUMN would stamp them all with this migration's id.)
        ALTER TABLE alert_events ADD COLUMN xact_id xid8;
        ALTER TABLE alert_events ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
        CREATE INDEX alert_events_xact ON alert_events (xact_id) WHERE xact_id IS NOT NULL;
        -- Where the notifier stands in each feed: a snapshot, `xmin:xmax:in-flight`
        -- (storage/feed.py FeedPosition). NULL: a cursor from before this migration,
        -- read once more by scan_at / alert_event, then followed by position.
        ALTER TABLE notify_cursor ADD COLUMN scan_position text;
        ALTER TABLE notify_cursor ADD COLUMN alert_position text;
        """,
    ),
    # -- the alert stream and the MQTT publisher in commit order: 210-219 -------------
    Migration(
        210,
        "the MQTT alert publisher's feed positions",
        common="""
        -- The publisher follows alert_events by commit (storage/feed.py), not by
        -- event_id, which a slow transaction commits out of order. `position`: every
        -- change committed before this snapshot is published. `toward`: a later
        -- snapshot being published in event_id order, up to `toward_event` (batches
        -- move on PUBACK). `event_id` stays the newest event published; with no
        -- position it is a cursor from before this migration, read once by id.
        ALTER TABLE alert_publish_cursor ADD COLUMN position text;
        ALTER TABLE alert_publish_cursor ADD COLUMN toward text;
        ALTER TABLE alert_publish_cursor ADD COLUMN toward_event bigint;
        """,
    ),
)


def has_timescale(conn: psycopg.Connection[Any]) -> bool:
    """True when the timescaledb extension is installed in this database."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


# What an operator does about a TimescaleDB library installed but not preloaded (the
# state right after installing Timescale's package without timescaledb-tune).
PRELOAD_FIX = (
    "add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart "
    "PostgreSQL, or run timescaledb-tune"
)
# What an operator does to move a database migrated for plain PostgreSQL to TimescaleDB:
# its tables cannot be turned into hypertables and aggregates in place.
TIMESCALE_MOVE = (
    "to move it to TimescaleDB, dump its data (pg_dump --data-only), migrate a new "
    "database with --require-timescale and restore the dump into it"
)
# Part of the message TimescaleDB's loader ends the session with (a FATAL) when its
# library is not preloaded.
_NOT_PRELOADED = "must be preloaded"


class TimescaleUnavailable(ParceltrackError):
    """`--require-timescale` was given, but the server cannot give TimescaleDB."""


def _said(diag: psycopg.errors.Diagnostic) -> str:
    return f"{diag.severity or 'ERROR'} {diag.sqlstate or '?????'}: {diag.message_primary}"


def _create_timescale(dsn: str) -> str | None:
    """CREATE EXTENSION timescaledb on a connection of its own: None when it worked, or
    what the server said when the library is not preloaded; other failures raise.

    TimescaleDB's loader refuses with a FATAL, which ends the session, so this must not
    be the connection that holds the lock and applies the migrations. The reason is
    looked for in the error and in the notices sent before it."""
    # Read inside the handler: a notice's diagnostic is valid only during the call.
    notices: list[tuple[str, str]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.message_primary or "", _said(d))))
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            said = [(exc.diag.message_primary or "", _said(exc.diag)), *notices]
            said.append((str(exc), str(exc).strip()))
            for message, report in said:
                if _NOT_PRELOADED in message:
                    return report
            raise
    return None


def _choose_flavour(conn: psycopg.Connection[Any], dsn: str, require: bool) -> str:
    """The flavour of a database migrated for the first time: "timescale" when the
    server gives TimescaleDB (creating the extension), else "postgres".

    A library that is installed but not preloaded falls back to plain PostgreSQL with a
    warning naming the fix, or, with `require`, is refused with that same fix."""
    if has_timescale(conn):
        return "timescale"
    if not _timescale_available(conn):
        if require:
            raise TimescaleUnavailable("the timescaledb extension is not installed on the server")
        return "postgres"
    refusal = _create_timescale(dsn)
    if refusal is None:
        return "timescale"
    problem = (
        f"timescaledb is installed but not preloaded (the server said {refusal!r}): {PRELOAD_FIX}"
    )
    if require:
        raise TimescaleUnavailable(problem)
    log.warning("%s; migrating for plain PostgreSQL instead", problem)
    return "postgres"


def _timescale_available(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return row.fetchone() is not None


def recorded_flavour(conn: psycopg.Connection[Any]) -> str | None:
    """The flavour the database's first migration was applied with; None before any."""
    exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute("SELECT flavour FROM schema_migrations ORDER BY version LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def _keep_plain(conn: psycopg.Connection[Any], require: bool) -> None:
    """A database migrated for plain PostgreSQL stays plain, even where TimescaleDB has
    become available since: its later migrations' TimescaleDB parts assume hypertables."""
    problem = f"this database was migrated for plain PostgreSQL; {TIMESCALE_MOVE}"
    if require:
        raise TimescaleUnavailable(problem)
    if _timescale_available(conn):
        log.warning("%s; migrating it for plain PostgreSQL", problem)


def applied_versions(conn: psycopg.Connection[Any]) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if not exists or exists[0] is None:
        return set()
    return {int(str(v)) for (v,) in conn.execute("SELECT version FROM schema_migrations")}


def migrate(dsn: str, require_timescale: bool = False) -> list[int]:
    """Apply every pending migration; return the versions applied (none when up to date).

    The flavour (TimescaleDB or plain PostgreSQL) is chosen when the first migration is
    applied and recorded; later runs keep it. With `require_timescale`, a database or
    server that cannot give TimescaleDB is refused (TimescaleUnavailable) instead of
    migrated for plain PostgreSQL."""
    with psycopg.connect(dsn, autocommit=True) as lock:
        # Held until this connection closes, however it closes (no unlock in a
        # `finally` that could bury the real error), and over the flavour choice too,
        # so two first runs cannot choose differently.
        lock.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        flavour = recorded_flavour(lock)
        if flavour is None:
            flavour = _choose_flavour(lock, dsn, require_timescale)
        elif flavour == "postgres":
            _keep_plain(lock, require_timescale)
        # A session opened after CREATE EXTENSION, as TimescaleDB's loader expects.
        with psycopg.connect(dsn, autocommit=True) as conn:
            return _apply(conn, flavour)


def _apply(conn: psycopg.Connection[Any], flavour: str) -> list[int]:
    """Apply the pending migrations in `flavour`, each in its own transaction."""
    timescale = flavour == "timescale"
    applied: list[int] = []
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
        with conn.transaction():
            for sql in (step.common, step.timescale if timescale else step.postgres):
                if sql.strip():
                    conn.execute(sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, flavour) VALUES (%s, %s, %s)",
                (step.version, step.name, flavour),
            )
        log.info("applied migration %d (%s) on %s", step.version, step.name, flavour)
        applied.append(step.version)
    return applied
