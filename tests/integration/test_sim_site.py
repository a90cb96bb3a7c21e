import threading
import time
from pathlib import Path

import psycopg

from composition.services import PrivateMosquitto
from composition.site import run_site
from firmware_sim.scenario import FaultRates, ScenarioConfig
from ingest.worker import IngestSettings, IngestWorker
from parceltrack.config import BrokerAddress


def test_sim_site_loads_its_centre_and_its_agent_delivers_the_reads(
    tmp_path: Path, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """`sim site` (compose's edge service) loads the manifest and its reads reach scans."""
    broker = BrokerAddress.from_url(mqtt_server.url)
    worker = IngestWorker(IngestSettings(dsn=db_dsn, broker=broker, client_id="ingest-site"))
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker.run),
        threading.Thread(
            target=run_site,
            args=(
                ScenarioConfig(
                    seed=5,
                    sites=("LHR1",),
                    rfid_sites=(),
                    parcels=10,
                    rate_per_hour=36_000,
                    faults=FaultRates(0, 0, 0, 0, 0, 0),
                ),
                tmp_path,
                20.0,
                "agent-site",
                db_dsn,
                broker,
                stop,
            ),
        ),
    ]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        scans = 0
        while scans < 50 and time.monotonic() < deadline:  # 10 parcels x 5 read points
            time.sleep(0.5)
            with psycopg.connect(db_dsn) as conn:
                scans = conn.execute("SELECT count(*) FROM scans").fetchone()[0]  # type: ignore[index]
                parcels = conn.execute("SELECT count(*) FROM parcels").fetchone()[0]  # type: ignore[index]
        assert parcels == 10
        assert scans == 50
    finally:
        stop.set()
        worker.stop()
        for t in threads:
            t.join(20)
