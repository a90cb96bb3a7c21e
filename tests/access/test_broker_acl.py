"""Broker access control against a real Mosquitto with a password file and an ACL."""

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from composition.acl import render_acl
from composition.services import PrivateMosquitto
from edge.config import AgentConfig, load_agent_config
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient, ReasonCode
from tests.waiting import wait_until

PASSWORDS = {
    "ingest": "ingest-pw",
    "detect": "detect-pw",
    "api": "api-pw",
    "agent-a": "a-pw",
    "agent-b": "b-pw",
}


def _agent(tmp_path: Path, agent: str, device: str) -> AgentConfig:
    path = tmp_path / f"{agent}.toml"
    path.write_text(
        f'[agent]\nid = "{agent}"\nsite = "LHR1"\n\n[[devices]]\nid = "{device}"\n'
        f'protocol = "barcode"\nport = "/dev/null"\nread_point = "LHR1-TUN1"\n'
    )
    return load_agent_config(path)


@pytest.fixture(scope="module")
def secured_broker(
    services_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateMosquitto]:
    tmp = tmp_path_factory.mktemp("acl")
    passwd, acl = tmp / "passwd", tmp / "acl"
    passwd.touch()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    acl.write_text(render_acl([_agent(tmp, "agent-a", "scan-a"), _agent(tmp, "agent-b", "scan-b")]))
    broker = PrivateMosquitto(
        services_dir / "mq-acl", extra_conf=f"password_file {passwd}\nacl_file {acl}"
    )
    broker.start()
    yield broker
    broker.destroy()


class Client:
    def __init__(self, broker: PrivateMosquitto, user: str | None, password: str | None = None):
        url = f"mqtt://{user}:{password}@127.0.0.1:{broker.port}" if user else broker.url
        self.connack: list[ReasonCode] = []
        self.suback: list[list[ReasonCode]] = []
        self.puback: dict[int, ReasonCode] = {}
        self.received: list[str] = []
        self._acked = threading.Event()
        self.client = MqttClient(f"{user}-{time.monotonic_ns()}", BrokerAddress.from_url(url))
        self.client.on_connect(self.connack.append)
        self.client.on_subscribe(self.suback.append)
        self.client.on_publish(self._on_publish)
        self.client.on_message(lambda m: self.received.append(m.topic))
        self.client.start()

    def _on_publish(self, mid: int, rc: ReasonCode) -> None:
        self.puback[mid] = rc

    def publish(self, topic: str) -> ReasonCode:
        info = self.client.publish(topic, b"{}", qos=1)
        wait_until(lambda: info.mid in self.puback, 5, f"the PUBACK for {topic}")
        return self.puback[info.mid]

    def subscribe(self, topic: str) -> ReasonCode:
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: self.suback, 5, f"the SUBACK for {topic}")
        return self.suback.pop()[0]

    def close(self) -> None:
        self.client.stop()


@pytest.fixture
def ingest(secured_broker: PrivateMosquitto) -> Iterator[Client]:
    c = Client(secured_broker, "ingest", PASSWORDS["ingest"])
    assert c.client.wait_connected()
    assert not c.subscribe(topics.INGEST_SHARE).is_failure
    assert not c.subscribe(topics.ALL_HEALTH).is_failure
    yield c
    c.close()


def test_anonymous_clients_are_refused(secured_broker: PrivateMosquitto) -> None:
    """A client with no credentials gets a refused CONNACK and never connects."""
    c = Client(secured_broker, None)
    wait_until(lambda: c.connack, 5, "the CONNACK")
    assert not c.client.is_connected()
    assert c.connack and c.connack[0].is_failure
    c.close()


def test_wrong_password_is_refused(secured_broker: PrivateMosquitto) -> None:
    """A known user with the wrong password is refused."""
    c = Client(secured_broker, "agent-a", "guess")
    wait_until(lambda: c.connack, 5, "the CONNACK")
    assert not c.client.is_connected() and c.connack[0].is_failure
    c.close()


def test_an_agent_publishes_under_its_own_devices_only(
    secured_broker: PrivateMosquitto, ingest: Client
) -> None:
    """Agent A's own device topic reaches ingest; A posing as B's device is refused."""
    a = Client(secured_broker, "agent-a", PASSWORDS["agent-a"])
    assert a.client.wait_connected()
    own, foreign = topics.events("LHR1", "scan-a"), topics.events("LHR1", "scan-b")
    assert not a.publish(own).is_failure
    assert a.publish(foreign).is_failure  # PUBACK "not authorized"
    assert a.publish(topics.health("LHR1", "scan-b")).is_failure
    assert a.publish(topics.alerts("LHR1")).is_failure
    wait_until(lambda: own in ingest.received, 5, "the agent's own event at the ingest")
    time.sleep(0.3)  # kept: a refused publication wrongly let through would arrive now
    assert ingest.received == [own]
    a.close()


@pytest.mark.parametrize(
    ("topic", "publisher", "published"),
    [
        (topics.events("LHR1", "scan-b"), "agent-b", topics.events("LHR1", "scan-b")),
        (topics.health("LHR1", "scan-b"), "agent-b", topics.health("LHR1", "scan-b")),
        (topics.alerts("LHR1"), "detect", topics.alerts("LHR1")),
        (f"{topics.PREFIX}/#", "agent-b", topics.events("LHR1", "scan-b")),
        (topics.INGEST_SHARE, "agent-b", topics.events("LHR1", "scan-b")),
    ],
    ids=["other-device-events", "other-device-health", "alerts", "everything", "ingest-share"],
)
def test_an_agent_cannot_read_other_topics(
    secured_broker: PrivateMosquitto, topic: str, publisher: str, published: str
) -> None:
    """An agent subscribed to another device's, the alerts' or all topics receives nothing.

    Mosquitto may grant the SUBACK; what the ACL guarantees is that nothing is delivered.
    """
    a = Client(secured_broker, "agent-a", PASSWORDS["agent-a"])
    other = Client(secured_broker, publisher, PASSWORDS[publisher])
    assert a.client.wait_connected() and other.client.wait_connected()
    a.subscribe(topic)
    assert not other.publish(published).is_failure
    time.sleep(0.5)  # kept: what is checked is that nothing arrives within this time
    assert a.received == []
    a.close()
    other.close()


def test_only_detection_publishes_alerts(secured_broker: PrivateMosquitto) -> None:
    """Detection may publish alerts; the API may only read them."""
    detect = Client(secured_broker, "detect", PASSWORDS["detect"])
    api = Client(secured_broker, "api", PASSWORDS["api"])
    assert detect.client.wait_connected() and api.client.wait_connected()
    assert not api.subscribe(topics.ALL_ALERTS).is_failure
    assert not detect.publish(topics.alerts("LHR1")).is_failure
    assert api.publish(topics.alerts("LHR1")).is_failure
    wait_until(lambda: api.received, 5, "the alert at the API")
    assert api.received == [topics.alerts("LHR1")]
    detect.close()
    api.close()


def test_an_agent_reads_only_its_own_devices_receipts(secured_broker: PrivateMosquitto) -> None:
    """Ingest may publish receipts; agent A receives scan-a's and never scan-b's."""
    ingest = Client(secured_broker, "ingest", PASSWORDS["ingest"])
    a = Client(secured_broker, "agent-a", PASSWORDS["agent-a"])
    assert ingest.client.wait_connected() and a.client.wait_connected()
    a.subscribe(topics.receipts("LHR1", "scan-a"))
    a.subscribe(topics.receipts("LHR1", "scan-b"))
    a.subscribe(topics.ALL_RECEIPTS)
    assert not ingest.publish(topics.receipts("LHR1", "scan-b")).is_failure
    assert not ingest.publish(topics.receipts("LHR1", "scan-a")).is_failure
    wait_until(lambda: a.received, 5, "agent A's own receipt")
    time.sleep(0.5)  # kept: scan-b's receipt, wrongly let through, would arrive now
    # Once per matching subscription of A's own filters; scan-b's never.
    assert set(a.received) == {topics.receipts("LHR1", "scan-a")}
    ingest.close()
    a.close()


@pytest.mark.parametrize("publisher", ["agent-a", "agent-b", "detect", "api"])
def test_only_ingest_publishes_receipts(secured_broker: PrivateMosquitto, publisher: str) -> None:
    """A receipt from an agent (even for its own device) or another service is refused
    and never reaches the agent, which would otherwise drop reads not yet committed."""
    a = Client(secured_broker, "agent-a", PASSWORDS["agent-a"])
    other = Client(secured_broker, publisher, PASSWORDS[publisher])
    assert a.client.wait_connected() and other.client.wait_connected()
    a.subscribe(topics.receipts("LHR1", "scan-a"))
    assert other.publish(topics.receipts("LHR1", "scan-a")).is_failure
    time.sleep(0.5)  # kept: what is checked is that nothing arrives within this time
    assert a.received == []
    a.close()
    other.close()
