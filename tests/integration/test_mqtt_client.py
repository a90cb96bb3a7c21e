"""The ground's MQTT client against a real Mosquitto."""

from __future__ import annotations

import logging

import pytest

from composition.services import PrivateMosquitto
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient


@pytest.mark.parametrize("persistent", [False, True], ids=["clean", "persistent"])
def test_a_client_starts_and_stops_with_no_error_logged(
    mqtt_server: PrivateMosquitto, caplog: pytest.LogCaptureFixture, persistent: bool
) -> None:
    """Started, connected and stopped three times over, a client logs no ERROR (paho's
    "Client is not connected" comes from stopping in the wrong order)."""
    caplog.set_level(logging.DEBUG)
    for n in range(3):
        client = MqttClient(
            f"stop-test-{n}-{persistent}",
            BrokerAddress.from_url(mqtt_server.url),
            persistent=persistent,
        )
        client.start()
        assert client.wait_connected()
        client.publish("parceltrack/v1/test/stop", b"x", qos=1).wait_for_publish(5)
        client.stop()
        assert not client.is_connected()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
