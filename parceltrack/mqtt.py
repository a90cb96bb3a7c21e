"""A small MQTT 5 client of ours around paho-mqtt 2.x, the only place that knows paho's knobs.

`MqttClient` holds paho's client together with where and how it connects (the
broker address, a persistent session, the CONNECT properties), so nothing is
stuck onto paho's object and no caller can start the network loop before the
connection is set up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from parceltrack.config import BrokerAddress

__all__ = ["SESSION_EXPIRY_S", "Message", "MqttClient", "PublishInfo", "ReasonCode"]

# A persistent session outlives a restart of its client by this long (MQTT 5).
SESSION_EXPIRY_S = 7 * 24 * 3600

Message = mqtt.MQTTMessage
PublishInfo = mqtt.MQTTMessageInfo


class MqttClient:
    """An MQTT 5 client; `persistent` keeps the session (and queued QoS 1 messages).

    Callbacks run on paho's network thread, which holds paho's lock meanwhile:
    they should hand work over rather than block.
    """

    def __init__(
        self,
        client_id: str,
        broker: BrokerAddress,
        *,
        persistent: bool = False,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
        keepalive: int = 30,
        max_inflight: int = 1000,
    ) -> None:
        self.broker = broker
        self.persistent = persistent
        self.keepalive = keepalive
        self._paho = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if broker.username:
            self._paho.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self._paho.tls_set(ca_certs=broker.ca_file)
        self._paho.max_inflight_messages_set(max_inflight)
        self._paho.max_queued_messages_set(0)
        self._paho.reconnect_delay_set(min_delay=1, max_delay=10)
        self._paho.manual_ack_set(manual_ack)
        self._paho.enable_logger()
        self._properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            self._properties.SessionExpiryInterval = SESSION_EXPIRY_S
        if receive_maximum:
            self._properties.ReceiveMaximum = receive_maximum

    # -- set up before start() ------------------------------------------------
    def set_will(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = True) -> None:
        """What the broker publishes for us when we vanish without a DISCONNECT."""
        self._paho.will_set(topic, payload, qos, retain)

    def on_connect(self, callback: Callable[[ReasonCode], None]) -> None:
        self._paho.on_connect = lambda _c, _u, _f, rc, _p=None: callback(rc)

    def on_disconnect(self, callback: Callable[[ReasonCode], None]) -> None:
        self._paho.on_disconnect = lambda _c, _u, _f, rc, _p=None: callback(rc)

    def on_message(self, callback: Callable[[Message], None]) -> None:
        self._paho.on_message = lambda _c, _u, msg: callback(msg)

    def on_publish(self, callback: Callable[[int, ReasonCode], None]) -> None:
        """`callback(mid, reason)` once the broker acknowledged a message (QoS 1: PUBACK)."""
        self._paho.on_publish = lambda _c, _u, mid, rc, _p=None: callback(mid, rc)

    def on_subscribe(self, callback: Callable[[list[ReasonCode]], None]) -> None:
        """`callback(reasons)` on SUBACK, one reason per topic filter."""
        self._paho.on_subscribe = lambda _c, _u, _m, rcs, _p=None: callback(rcs)

    def on_unsubscribe(self, callback: Callable[[], None]) -> None:
        self._paho.on_unsubscribe = lambda *_a: callback()

    # -- connection -----------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho reconnects by itself from then on.

        connect_async comes before loop_start: a loop started first finds no
        connection to serve and paho logs "Client is not connected" as an error.
        """
        self._paho.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self.keepalive,
            clean_start=not self.persistent,
            properties=self._properties,
        )
        self._paho.loop_start()

    def stop(self) -> None:
        """Stop the network thread, then disconnect cleanly (no Last Will).

        In this order paho writes the DISCONNECT from this thread; the other way round
        the network thread runs once more after closing the socket and logs "Client is
        not connected" as an error. Callers wait for their QoS 1 PUBACKs first.
        """
        self._paho.loop_stop()
        self._paho.disconnect()

    def is_connected(self) -> bool:
        return self._paho.is_connected()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Block until the broker's CONNACK arrived (after start())."""
        deadline = time.monotonic() + timeout
        while not self._paho.is_connected():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- messages -------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False
    ) -> PublishInfo:
        return self._paho.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(
        self, filters: str | Sequence[str], qos: int = 1, retain_only_if_new: bool = False
    ) -> None:
        """Subscribe to one or more filters; `retain_only_if_new`: retained messages
        come only when the subscription is new, not again on every reconnect."""
        handling = (
            SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            if retain_only_if_new
            else SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
        )
        options = SubscribeOptions(qos=qos, retainHandling=handling)
        names = [filters] if isinstance(filters, str) else list(filters)
        self._paho.subscribe([(name, options) for name in names])

    def unsubscribe(self, filters: Sequence[str]) -> None:
        self._paho.unsubscribe(list(filters))

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received message (only with `manual_ack`)."""
        self._paho.ack(mid, qos)
