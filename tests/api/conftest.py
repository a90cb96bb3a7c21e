"""Fixtures of the API tests: a seeded database, keys per role, an in-process client
and a real HTTP server in a thread (for streams and schemathesis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import ApiSettings, create_app
from api.security import ROLES, key_hash, new_key
from composition.services import PrivateMosquitto, PrivatePostgres, free_port, wait_for_port
from firmware_sim.scenario import generate
from ingest.store import ScanPartitions, write_scans
from parceltrack.alerts import AlertKind
from parceltrack.config import BrokerAddress
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import has_timescale
from storage.reference import load_layout, load_manifest
from tests.plugins.services import _drop_database, _fresh_database
from tests.waiting import wait_until

SCENARIO = generate(seed=3, parcels=8)
SITE = "LHR1"


@dataclass(frozen=True, slots=True)
class Seeded:
    """Parcels of the seeded database, by what happened to them."""

    dsn: str
    in_sorting: str  # at the sorter just now
    on_conveyor: str  # read at the tunnel, on its way to the sorter
    dispatched: str  # through the right chute and out of the door
    missorted: str  # into the wrong chute; an open mis-sort alert
    accepted: str  # in the manifest, never scanned
    alert_ids: tuple[int, ...]


def _scan(tracking: str, rp: str, seq: int, at: datetime, kind: EventKind) -> ScanEvent:
    return ScanEvent(
        device=f"{rp}-dev",
        boot=1,
        seq=seq,
        ts=at,
        site=SITE,
        read_point=rp,
        kind=kind,
        code=tracking if kind is EventKind.READ else None,
        tracking_id=tracking if kind is EventKind.READ else None,
    )


def seed(dsn: str) -> Seeded:
    now = datetime.now(UTC)
    manifest = {m.tracking_id: m for m in SCENARIO.manifest}
    ids = list(manifest)
    in_sorting, on_conveyor, dispatched, missorted, accepted = ids[:5]
    plan = {e.destination: e.chute for e in SCENARIO.sort_plans[0].entries}
    right = plan[manifest[dispatched].destination]
    door = right.replace("CHU", "DOR")
    wrong = next(c for d, c in plan.items() if d != manifest[missorted].destination)
    routes = {
        in_sorting: [("IND1", 30), ("TUN1", 25), ("SRT1", 10)],
        on_conveyor: [("IND1", 20), ("TUN1", 5)],
        dispatched: [
            ("IND1", 300),
            ("TUN1", 290),
            ("SRT1", 280),
            (right[5:], 270),
            (door[5:], 200),
        ],
        missorted: [("IND1", 300), ("TUN1", 290), ("SRT1", 280), (wrong[5:], 270)],
    }
    events, seq = [], 0
    for tracking, route in routes.items():
        for rp, ago in route:
            seq += 1
            events.append(
                _scan(tracking, f"{SITE}-{rp}", seq, now - timedelta(seconds=ago), EventKind.READ)
            )
    for i in range(3):  # no-reads at the tunnel
        seq += 1
        events.append(
            _scan("", f"{SITE}-TUN1", seq, now - timedelta(seconds=40 + i), EventKind.NOREAD)
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        data = SCENARIO.reference_data()
        load_layout(conn, data)
        classes = [c.service_class for c in SCENARIO.service_classes]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO service_classes (service_class, delivery_days) VALUES (%s, %s)",
                [(c.service_class, c.delivery_days) for c in SCENARIO.service_classes],
            )
        for stage in ("induction", "tunnel", "sort", "chute", "dispatch"):
            for cls in classes:
                conn.execute(
                    "INSERT INTO stage_standards VALUES (%s, %s, %s, %s)",
                    (SITE, stage, cls, 600.0),
                )
        load_manifest(conn, data.manifest)
        plan_id = conn.execute(
            "INSERT INTO sort_plans (site_id, version, effective_from) "
            "VALUES (%s, 1, now() - interval '1 day') RETURNING sort_plan_id",
            (SITE,),
        ).fetchone()
        assert plan_id is not None
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sort_plan_entries VALUES (%s, %s, %s, %s)",
                [(plan_id[0], d, c, c.replace("CHU", "DOR")) for d, c in plan.items()],
            )
        with conn.transaction():
            write_scans(conn, events, ScanPartitions(has_timescale(conn)))
        alert_ids = []
        for i, (tracking, kind) in enumerate(
            [(missorted, AlertKind.MISSORT), (in_sorting, AlertKind.DELAY)]
        ):
            row = conn.execute(
                "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING alert_id",
                (f"{kind}:{tracking}:{i}", kind, SITE, f"{SITE}-SRT1", tracking),
            ).fetchone()
            assert row is not None
            alert_ids.append(int(row[0]))
        # The delay alert is resolved: only the mis-sort stays open.
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = %s",
            (alert_ids[1],),
        )
    return Seeded(dsn, in_sorting, on_conveyor, dispatched, missorted, accepted, tuple(alert_ids))


@pytest.fixture
def seeded(db_dsn: str) -> Seeded:
    return seed(db_dsn)


def make_key(dsn: str, role: str, name: str | None = None, account: str | None = None) -> str:
    """A key of `role` (a partner's with its `account`)."""
    key = new_key()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (key_hash, prefix, name, role, account) "
            "VALUES (%s, %s, %s, %s, %s)",
            (key_hash(key), key[:7], name or f"{role}-1", role, account),
        )
    return key


def partner_owning(dsn: str, account: str, *tracking_ids: str) -> str:
    """A partner key of `account`, which the parcels `tracking_ids` are given to."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE parcels SET account = %s WHERE tracking_id = ANY(%s)",
            (account, list(tracking_ids)),
        )
    return make_key(dsn, "partner", account=account)


@pytest.fixture
def keys(seeded: Seeded) -> dict[str, str]:
    """One key per role, named after it (controller-1, manager-1 ...)."""
    return {role: make_key(seeded.dsn, role) for role in ROLES}


def settings_for(dsn: str, broker: PrivateMosquitto, **overrides: object) -> ApiSettings:
    base = {"rate_per_s": 1000.0, "burst": 1000.0, "keepalive_s": 0.5}
    return ApiSettings(dsn=dsn, broker=BrokerAddress.from_url(broker.url), **{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def app(seeded: Seeded, mqtt_server: PrivateMosquitto) -> FastAPI:
    return create_app(settings_for(seeded.dsn, mqtt_server))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ThreadedServer:
    """uvicorn serving the app on a free port from a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_for_port(self.port)
        wait_until(lambda: self.server.started, 10, "uvicorn started")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_api(app: FastAPI) -> Iterator[ThreadedServer]:
    with ThreadedServer(app) as server:
        yield server


@dataclass(frozen=True, slots=True)
class SharedApi:
    """One seeded database and server for a whole module of read-mostly tests."""

    server: ThreadedServer
    seeded: Seeded
    keys: dict[str, str]


@pytest.fixture(scope="module")
def shared_api(
    pg_server: PrivatePostgres, _template: str, mqtt_server: PrivateMosquitto
) -> Iterator[SharedApi]:
    dsn = _fresh_database(pg_server.dsn(), _template)
    seeded = seed(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Far from any id a test or the fuzzer picks, so none can revoke these keys.
        conn.execute("SELECT setval('api_keys_key_id_seq', 987654321987)")
    keys = {role: make_key(dsn, role) for role in ROLES}
    app = create_app(settings_for(dsn, mqtt_server, rate_per_s=1e6, burst=1e6))
    with ThreadedServer(app) as server:
        yield SharedApi(server, seeded, keys)
    _drop_database(pg_server.dsn(), dsn)
