"""`parceltrack demo`: a simulated sorting centre through the real pipeline, until Ctrl-C."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from api.security import Role
from composition.pipeline import Pipeline
from firmware_sim.arrivals import FLAT_PROFILE
from firmware_sim.hubs import CHINESE_HUB
from firmware_sim.scenario import FaultRates, Scenario, ScenarioConfig, generate
from storage.model import ManifestEntry

if TYPE_CHECKING:
    from api.security import Role


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def controller_key(dsn: str, name: str = "demo-controller", role: Role = "controller") -> str:
    """A new controller API key for the control-room page (it lives as long as the
    demo's database does: everything is removed when the demo stops)."""
    return _new_key(dsn, name, "controller")


def _new_key(dsn: str, name: str, role: Role, account: str | None = None) -> str:
    import asyncio

    import psycopg

    from api.security import create_key

    async def create() -> str:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            _key_id, key = await create_key(conn, name, role, account)
        return key

    return asyncio.run(create())


def partner_key(dsn: str, parcels: Sequence[ManifestEntry], account: str = "demo-shop") -> str:
    """Give `parcels` to a partner's account (the manifest's account column, stored by
    the reference repository) and return a new partner key of that account."""
    import psycopg

    from storage.reference import load_manifest

    with psycopg.connect(dsn) as conn:
        load_manifest(conn, [dataclasses.replace(p, account=account) for p in parcels])
    return _new_key(dsn, f"{account}-partner", "partner", account)


def demo_scenario(parcels: int = 20_000) -> Scenario:
    """About two hours of parcels at real speed in three centres, one of them the
    Chinese hub PVG1 (firmware_sim/hubs.py), with every kind of fault the generator
    knows (docs/scenarios.md); lost and delayed parcels make alerts."""
    return generate(
        ScenarioConfig(
            seed=7,
            sites=("LHR1", "MAN1", CHINESE_HUB.site),
            rfid_sites=(),
            destinations=("LON", "MAN", "SHA", "BHX", "GLA", "SUZ"),
            parcels=parcels,
            rate_per_hour=3.0 * 3600,
            profile=FLAT_PROFILE,
            faults=FaultRates(
                missort=0.01, delay=0.01, lost=0.03, noread=0.02, recirculation=0.02, misroute=0.005
            ),
            hubs=(CHINESE_HUB,),
        )
    )


def chinese_parcel(scenario: Scenario) -> str:
    """A parcel posted at the Chinese hub without an injected fault, for the demo's link."""
    faulty = {f.tracking_id for f in scenario.faults}
    return next(
        m.tracking_id
        for m in scenario.manifest
        if m.origin_site == CHINESE_HUB.site and m.tracking_id not in faulty
    )


def run_demo(workdir: Path, speed: float = 1.0, api_port: int = 8000) -> int:
    console = Console()
    scenario = demo_scenario()
    if api_port and not _port_free(api_port):
        api_port = 0  # taken: any free port; the URL printed below says which
    pipeline = Pipeline(
        workdir / f"demo-{os.getpid()}",
        scenario,
        speed=speed,
        api_port=api_port,
        fast_db=False,
        overdue_after_s=20.0,
        site_files=True,  # standards and plans go in as an operator's site files
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print("[bold]parceltrack demo[/bold]: starting private PostgreSQL and Mosquitto ...")
    try:
        pipeline.start()
        url = pipeline.api_url
        lost = {f.tracking_id for f in scenario.faults if f.kind == "lost"}
        faulty = {f.tracking_id for f in scenario.faults}
        on_time = [
            m.tracking_id
            for m in scenario.manifest[:40]
            if m.tracking_id not in faulty and m.origin_site != CHINESE_HUB.site
        ][:3]
        sites = ", ".join(s.site for s in scenario.sites)
        key = controller_key(pipeline.dsn)
        shop = partner_key(pipeline.dsn, scenario.reference_data().manifest[::10])
        manager = controller_key(pipeline.dsn, "demo-manager", "manager")
        console.print(f"""
[green]Running.[/green] Simulated sorting centres ({sites}) send barcode reads
from {len(scenario.read_points)} virtual scanners (ptys under {pipeline.port_dir})
through one edge agent per site, Mosquitto ({pipeline.mosquitto.url}), ingest and PostgreSQL.
The ground truth of the {len(scenario.faults)} injected faults: {pipeline.workdir}/scenario.json

  Tracking page:   {url}/track?id={on_time[0]}
  Chinese hub:     {url}/track?id={chinese_parcel(scenario)}
                   (上海邮件处理中心: in Chinese when the browser asks for it, or add &lang=zh-CN)
  Control room:    {url}/control-room
  Controller key:  {key}
                   (paste it into the control room; it lasts as long as this demo)
  Manager page:    {url}/manager   (in Chinese: {url}/manager?lang=zh-CN)
  Manager key:     {manager}
  API docs:        {url}/docs
  Health:          {url}/healthz
  Parcel as JSON:  {url}/v1/parcels/{on_time[0]}
  More parcels:    {", ".join(on_time[1:])}
  A lost parcel:   {url}/track?id={sorted(lost)[0] if lost else on_time[0]}
                   (a delay alert opens once its stage standard has passed, a missing alert
                   30 s + two standards after that: watch them in the control room)
  Notifications:   curl -X POST {url}/v1/parcels/{on_time[0]}/subscriptions \\
                     -H 'Content-Type: application/json' \\
                     -d '{{"webhook_url": "https://example.org/hook", "language": "zh-CN"}}'
                   (webhooks signed as docs/api.md says; queued in outbound_deliveries)
  Partner (EPCIS): curl -H 'Authorization: Bearer {shop}' '{url}/epcis/events?perPage=5'
                   (GS1 EPCIS 2.0 events of the parcels of account demo-shop only)
  Alerts so far:   psql {pipeline.dsn} -c 'select * from alerts'
  Logs:            {pipeline.logs}

Parcels enter the centres at about {3.0 * speed:.0f} a second. Press Ctrl-C to stop;
everything under {pipeline.workdir} is removed.""")
        while not stop.wait(1.0):
            pipeline.check_alive()
    finally:
        console.print("stopping ...")
        pipeline.stop()
        console.print("stopped; nothing left behind.")
    return 0
