"""Reference data the pipeline needs: sites, read points, devices, the manifest."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from firmware_sim.scenario import ManifestEntry, Scenario


def load_layout(conn: psycopg.Connection[Any], scenario: Scenario) -> None:
    """Upsert the scenario's site, read points and devices."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO sites (site_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (scenario.site, f"Sorting centre {scenario.site}"),
        )
        with conn.cursor() as cur:
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
                "VALUES (%s, %s, %s, 'barcode') ON CONFLICT (device_id) DO UPDATE SET "
                "read_point_id = EXCLUDED.read_point_id",
                [(r.device, r.site, r.read_point) for r in scenario.read_points],
            )


def load_manifest(
    conn: psycopg.Connection[Any], entries: Iterable[ManifestEntry], origin_site: str
) -> int:
    """Bulk-load manifest rows with COPY; existing parcels are updated. Returns rows."""
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE manifest_stage (tracking_id text, service_class text, "
            "destination text) ON COMMIT DROP"
        )
        with conn.cursor() as cur:
            with cur.copy("COPY manifest_stage FROM STDIN") as copy:
                for e in entries:
                    copy.write_row((e.tracking_id, e.service_class, e.destination))
            cur.execute(
                "INSERT INTO parcels (tracking_id, service_class, destination, origin_site) "
                "SELECT tracking_id, service_class, destination, %s FROM manifest_stage "
                "ON CONFLICT (tracking_id) DO UPDATE SET service_class = "
                "EXCLUDED.service_class, destination = EXCLUDED.destination",
                (origin_site,),
            )
            return cur.rowcount


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
