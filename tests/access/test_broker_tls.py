"""Every process connects to a broker that accepts only TLS (issue 12, bug 2).

The private Mosquitto has one listener, TLS only, with a throwaway CA; every process
gets `PARCELTRACK_MQTT_URL=mqtts://...` and `PARCELTRACK_MQTT_CA_FILE`, as an
operator would set them. Each process must then connect and do its work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from composition.pipeline import Pipeline
from firmware_sim.scenario import ScenarioConfig, generate
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient
from tests.counting import count
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

# Lost parcels make the detector open `missing` alerts, which it must publish.
SCENARIO = generate(ScenarioConfig.barcode_only(seed=3, parcels=12, rate_per_s=4.0, lost_rate=0.3))
SPEED = 10.0


@pytest.fixture(scope="module")
def pipeline(services_dir: Path) -> Iterator[Pipeline]:
    p = Pipeline(
        services_dir / "tls",
        SCENARIO,
        speed=SPEED,
        overdue_after_s=6.0,
        missing_after_s=4.0,
        broker_tls=True,
    )
    # start() already waits on two broker round trips: the edge's health seen by a
    # TLS client, and the API's /healthz, which is 200 only once its client connected.
    p.start()
    yield p
    p.stop()


def test_the_broker_refuses_plain_mqtt(pipeline: Pipeline) -> None:
    """The only listener is TLS: a plain MQTT client gets no connection."""
    assert pipeline.mosquitto.url.startswith("mqtts://")
    plain = MqttClient(
        "plain", BrokerAddress.from_url(pipeline.mosquitto.url.replace("s://", "://"))
    )
    plain.start()
    try:
        assert not plain.wait_connected(3.0)
    finally:
        plain.stop()


def test_edge_and_ingest_store_every_read_health_and_status(pipeline: Pipeline) -> None:
    """Every read the edge agent published over TLS is stored by ingest, with health and status."""
    reads = len(SCENARIO.reads)
    duration = SCENARIO.reads[-1].at / SPEED
    wait_until(
        lambda: count(pipeline.dsn, "SELECT count(*) FROM scans") >= reads,
        duration + 60,
        "every read stored",
    )
    devices = {rp.device for rp in SCENARIO.read_points}
    assert count(pipeline.dsn, "SELECT count(*) FROM device_health") == len(devices)
    assert count(pipeline.dsn, "SELECT count(*) FROM agent_status WHERE state = 'online'") == 1


def test_detection_publishes_its_alerts(pipeline: Pipeline) -> None:
    """The detector's alerts reach the broker: its cursor moves only on the broker's PUBACK."""
    wait_until(lambda: count(pipeline.dsn, "SELECT count(*) FROM alert_events") > 0, 90, "an alert")
    cursor = "SELECT event_id FROM alert_publish_cursor WHERE publisher = 'detect'"
    wait_until(
        lambda: count(pipeline.dsn, cursor) > 0, 30, "the broker's PUBACK of a detection alert"
    )


def test_sim_publish_delivers_through_tls(pipeline: Pipeline) -> None:
    """`parceltrack sim publish` connects with the CA file too; ingest stores what it sent."""
    before = count(pipeline.dsn, "SELECT count(*) FROM scans")
    scenario = str(pipeline.workdir / "scenario.json")
    publisher = pipeline.spawn("publish", "sim", "publish", "--scenario", scenario, "--speed", "0",
                               "--agent", "sim-tls", "--quiet")  # fmt: skip
    assert publisher.wait(60) == 0, (pipeline.logs / "publish.log").read_text()[-2000:]
    expected = before + len(SCENARIO.reads)
    wait_until(
        lambda: count(pipeline.dsn, "SELECT count(*) FROM scans") >= expected,
        30,
        "the published events stored",
    )
