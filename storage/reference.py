"""Reference data the pipeline needs, from a scenario: sites, read points, devices
(with their protocol), service classes, stage standards, versioned sort plans and the
manifest (bulk, with COPY)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from firmware_sim.clock import PlaybackClock
from firmware_sim.scenario import ManifestEntry, Scenario
from parceltrack.errors import ParceltrackError


class ReferenceDataError(ParceltrackError, ValueError):
    """Reference data that contradicts what the database already holds."""


def load_scenario(
    conn: psycopg.Connection[Any], scenario: Scenario, clock: PlaybackClock | None = None
) -> int:
    """Everything the system needs from a scenario, in one go; returns manifest rows.

    Times are mapped through `clock` (default: the scenario's own nominal start at
    speed 1): sort plans take effect at clock.wall(effective_from_s) and stage
    standards are stored as wall-clock seconds, so an accelerated playback is judged
    by equally accelerated standards."""
    clock = clock or PlaybackClock(scenario.start)
    load_layout(conn, scenario)
    load_standards(conn, scenario, clock)
    return load_manifest(conn, scenario.manifest, scenario.site)


def load_layout(conn: psycopg.Connection[Any], scenario: Scenario) -> None:
    """Upsert the scenario's sites, read points and devices (kind = protocol)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sites (site_id, name, timezone) VALUES (%s, %s, %s) "
            "ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name, "
            "timezone = EXCLUDED.timezone",
            [(s.site, s.name, s.timezone) for s in scenario.sites],
        )
        # First without next hops, then the hops: they reference each other.
        cur.executemany(
            "INSERT INTO read_points (read_point_id, site_id, zone, stage, description, "
            "position) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (read_point_id) DO "
            "UPDATE SET zone = EXCLUDED.zone, stage = EXCLUDED.stage, "
            "description = EXCLUDED.description, position = EXCLUDED.position",
            [
                (r.read_point, r.site, r.zone, r.stage, r.description, r.position)
                for r in scenario.read_points
            ],
        )
        cur.executemany(
            "UPDATE read_points SET next_read_point_id = %s WHERE read_point_id = %s",
            [(r.next_read_point, r.read_point) for r in scenario.read_points],
        )
        cur.executemany(
            "INSERT INTO devices (device_id, site_id, read_point_id, kind) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
            "site_id = EXCLUDED.site_id, read_point_id = EXCLUDED.read_point_id, "
            "kind = EXCLUDED.kind",
            [(r.device, r.site, r.read_point, r.protocol) for r in scenario.read_points],
        )


def load_standards(conn: psycopg.Connection[Any], scenario: Scenario, clock: PlaybackClock) -> None:
    """Upsert service classes and stage standards; replace the scenario sites' sort plans
    by the scenario's versions (effective times mapped through `clock`)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO service_classes (service_class, description, delivery_days) "
            "VALUES (%s, %s, %s) ON CONFLICT (service_class) DO UPDATE SET "
            "description = EXCLUDED.description, delivery_days = EXCLUDED.delivery_days",
            [(c.service_class, c.description, c.delivery_days) for c in scenario.service_classes],
        )
        cur.executemany(
            "INSERT INTO stage_standards (site_id, stage, service_class, max_seconds) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (site_id, stage, service_class) DO UPDATE "
            "SET max_seconds = EXCLUDED.max_seconds",
            [
                (s.site, s.stage, s.service_class, clock.wall_seconds(s.max_seconds))
                for s in scenario.stage_standards
            ],
        )
        cur.execute(
            "DELETE FROM sort_plans WHERE site_id = ANY(%s)", ([s.site for s in scenario.sites],)
        )
        for plan in scenario.sort_plans:
            cur.execute(
                "INSERT INTO sort_plans (site_id, version, effective_from) VALUES (%s, %s, %s) "
                "RETURNING sort_plan_id",
                (plan.site, plan.version, clock.wall(plan.effective_from_s)),
            )
            row = cur.fetchone()
            assert row is not None
            cur.executemany(
                "INSERT INTO sort_plan_entries (sort_plan_id, destination, "
                "chute_read_point_id, door_read_point_id) VALUES (%s, %s, %s, %s)",
                [(row[0], e.destination, e.chute, e.door) for e in plan.entries],
            )


def load_manifest(
    conn: psycopg.Connection[Any], entries: Iterable[ManifestEntry], origin_site: str = ""
) -> int:
    """Bulk-load manifest rows with COPY; existing parcels are updated. Returns rows.

    `origin_site` fills in entries that name none. An EPC already held by another
    parcel, an unknown site or a tracking id twice in one load is refused
    (ReferenceDataError) and nothing of this load is kept."""
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE manifest_stage (tracking_id text, service_class text, "
                "destination text, destination_site text, origin_site text, epc text) "
                "ON COMMIT DROP"
            )
            with conn.cursor() as cur:
                with cur.copy("COPY manifest_stage FROM STDIN") as copy:
                    for e in entries:
                        copy.write_row(
                            (
                                e.tracking_id,
                                e.service_class,
                                e.destination,
                                e.destination_site or None,
                                e.origin_site or origin_site or None,
                                e.epc,
                            )
                        )
                cur.execute(
                    "INSERT INTO parcels (tracking_id, service_class, destination, "
                    "destination_site, origin_site, epc) "
                    "SELECT tracking_id, service_class, destination, destination_site, "
                    "origin_site, epc FROM manifest_stage "
                    "ON CONFLICT (tracking_id) DO UPDATE SET "
                    "service_class = EXCLUDED.service_class, "
                    "destination = EXCLUDED.destination, "
                    "destination_site = EXCLUDED.destination_site, "
                    "origin_site = EXCLUDED.origin_site, epc = EXCLUDED.epc"
                )
                return cur.rowcount
    except (psycopg.errors.IntegrityError, psycopg.errors.CardinalityViolation) as exc:
        raise ReferenceDataError(f"manifest not loaded: {exc.diag.message_detail or exc}") from exc


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One parcel announced by a customer's manifest, with the tags it should carry."""

    tracking_id: str
    service_class: str
    destination: str
    expected_tags: tuple[str, ...] = ()
    destination_site: str | None = None


def load_manifest_records(
    conn: psycopg.Connection[Any], records: Iterable[ManifestRecord], origin_site: str | None
) -> int:
    """Bulk-load a manifest (COPY into a staging table, then one upsert). Returns rows.

    A parcel announced again (a corrected manifest) takes the new values.
    """
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE manifest_records_stage (tracking_id text, service_class text, "
            "destination text, expected_tags text[], destination_site text) ON COMMIT DROP"
        )
        with conn.cursor() as cur:
            with cur.copy("COPY manifest_records_stage FROM STDIN") as copy:
                for r in records:
                    copy.write_row(
                        (r.tracking_id, r.service_class, r.destination, list(r.expected_tags),
                         r.destination_site)
                    )  # fmt: skip
            cur.execute(
                "INSERT INTO parcels (tracking_id, service_class, destination, origin_site, "
                "expected_tags, destination_site) SELECT tracking_id, service_class, "
                "destination, %s, expected_tags, destination_site FROM manifest_records_stage "
                "ON CONFLICT (tracking_id) DO UPDATE SET service_class = EXCLUDED.service_class, "
                "destination = EXCLUDED.destination, expected_tags = EXCLUDED.expected_tags, "
                "destination_site = EXCLUDED.destination_site",
                (origin_site,),
            )
            return cur.rowcount
