"""A thin factory for paho-mqtt 2.x clients, the only place that knows paho's knobs."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parceltrack.config import BrokerAddress

# A persistent session outlives a restart of its client by this long (MQTT 5).
SESSION_EXPIRY_S = 7 * 24 * 3600


def make_client(
    client_id: str,
    broker: BrokerAddress,
    *,
    persistent: bool = False,
    receive_maximum: int | None = None,
) -> mqtt.Client:
    """An MQTT 5 client; `persistent` keeps the session (and queued QoS 1 messages)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=broker.ca_file)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.enable_logger()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum:
        properties.ReceiveMaximum = receive_maximum
    client._parceltrack_connect = (broker, persistent, properties)  # type: ignore[attr-defined]
    return client


def connect(client: mqtt.Client, keepalive: int = 30) -> None:
    """Start connecting (async); paho reconnects by itself once loop_start() runs."""
    broker, persistent, properties = client._parceltrack_connect  # type: ignore[attr-defined]
    client.connect_async(
        broker.host,
        broker.port,
        keepalive=keepalive,
        clean_start=not persistent,
        properties=properties,
    )


def wait_connected(client: mqtt.Client, timeout: float = 10.0) -> bool:
    """Block until the client's CONNACK arrived (loop_start() must be running)."""
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
