"""Site brokers bridged to a central broker (real Mosquittos, a real TCP link cut between them)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from composition.acl import render_acl
from composition.bridge import Bridge, render_bridge
from composition.services import PrivateMosquitto
from parceltrack import topics
from parceltrack.config import BrokerAddress
from parceltrack.errors import ConfigError
from parceltrack.mqtt import Message, MqttClient
from tests.plugins.wan import WanLink
from tests.waiting import wait_until


@dataclass
class Topology:
    central: PrivateMosquitto
    links: dict[str, WanLink]
    sites: dict[str, PrivateMosquitto]


@pytest.fixture
def topology(services_dir: Path) -> Iterator[Topology]:
    root = services_dir / f"bridge-{time.monotonic_ns()}"
    central = PrivateMosquitto(root / "central")
    central.start()
    links: dict[str, WanLink] = {}
    sites: dict[str, PrivateMosquitto] = {}
    try:
        for site in ("SITEA", "SITEB"):
            link = links[site] = WanLink(central.port)
            link.start()
            bridge = Bridge(site, BrokerAddress("127.0.0.1", link.port))
            broker = sites[site] = PrivateMosquitto(root / site, extra_conf=render_bridge(bridge))
            broker.start()
        yield Topology(central, links, sites)
    finally:
        for broker in sites.values():
            broker.destroy()
        for link in links.values():
            link.stop()
        central.destroy()


@dataclass
class Listener:
    """A persistent subscriber that records what it receives, by topic."""

    broker: PrivateMosquitto
    filters: tuple[str, ...]
    got: list[tuple[str, bytes]] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = MqttClient(
            f"listener-{time.monotonic_ns()}",
            BrokerAddress.from_url(self.broker.url),
            persistent=True,
        )
        self.client.on_message(self._on_message)
        self.client.on_subscribe(lambda _codes: self.subscribed.set())
        self.client.on_connect(lambda _rc: self.client.subscribe(list(self.filters), qos=1))
        self.client.start()
        assert self.subscribed.wait(10), "the listener's SUBACK"

    def _on_message(self, message: Message) -> None:
        self.got.append((message.topic, message.payload))


def _publisher(broker: PrivateMosquitto) -> MqttClient:
    client = MqttClient(f"pub-{time.monotonic_ns()}", BrokerAddress.from_url(broker.url))
    client.start()
    assert client.wait_connected(10)
    return client


def _bridge_up(site: PrivateMosquitto, central: PrivateMosquitto, name: str) -> None:
    """Wait until a message published at the site crosses to the centre."""
    probe = Listener(central, (topics.health(name, "probe"),))
    publisher = _publisher(site)
    try:
        wait_until(
            lambda: publisher.publish(topics.health(name, "probe"), b"{}", qos=1) and probe.got,
            30,
            f"the bridge of {name} up",
            interval=0.5,
        )
    finally:
        publisher.stop()
        probe.client.stop()


def test_reads_published_at_a_site_reach_the_centre_across_a_wan_cut(topology: Topology) -> None:
    """The site broker accepts reads while its WAN link is cut and forwards all of them after."""
    site = topology.sites["SITEA"]
    _bridge_up(site, topology.central, "SITEA")
    centre = Listener(topology.central, (topics.ALL_EVENTS,))
    publisher = _publisher(site)
    acked: set[int] = set()
    publisher.on_publish(lambda mid, _rc: acked.add(mid))
    sent = []
    try:
        for n in range(300):
            if n == 100:
                topology.links["SITEA"].cut()
            if n == 200:
                # Everything published during the cut was accepted by the site's own broker.
                wait_until(lambda: len(acked) == len(sent), 10, "the site broker's PUBACKs")
                assert len({p for _, p in centre.got}) < 200, "the link was not cut"
                topology.links["SITEA"].restore()
            info = publisher.publish(topics.events("SITEA", "scan-1"), json.dumps(n), qos=1)
            sent.append(info.mid)
            time.sleep(0.01 if n != 150 else 3.0)
        wait_until(
            lambda: {json.loads(p) for _, p in centre.got} == set(range(300)),
            60,
            "every read at the centre",
            interval=0.2,
        )
    finally:
        publisher.stop()
        centre.client.stop()
    assert {t for t, _ in centre.got} == {topics.events("SITEA", "scan-1")}


def test_receipts_and_alerts_flow_back_only_to_their_own_site(topology: Topology) -> None:
    """The centre's receipts and alerts for site A reach A's broker, and nothing of B's does."""
    for name, broker in topology.sites.items():
        _bridge_up(broker, topology.central, name)
    at_a = Listener(topology.sites["SITEA"], ("parceltrack/v1/#",))
    centre = _publisher(topology.central)
    try:
        for topic in (
            topics.receipts("SITEA", "scan-1"),
            topics.alerts("SITEA"),
            topics.receipts("SITEB", "scan-9"),
            topics.alerts("SITEB"),
            topics.events("SITEA", "scan-1"),  # a centre never sends reads down
        ):
            centre.publish(topic, b"{}", qos=1)
        wait_until(lambda: len(at_a.got) >= 2, 15, "site A's receipt and alert")
        time.sleep(1.0)  # anything else that were to cross would have by now
    finally:
        centre.stop()
        at_a.client.stop()
    assert sorted(t for t, _ in at_a.got) == sorted(
        [topics.alerts("SITEA"), topics.receipts("SITEA", "scan-1")]
    )


def test_the_bridge_block_names_the_topics_each_way_at_qos_1() -> None:
    """The generated block keeps a persistent session and crosses only the site's topics."""
    text = render_bridge(Bridge("LHR1", BrokerAddress.from_url("mqtt://bridge:pw@central:1883")))
    lines = text.splitlines()
    assert "cleansession false" in lines and "address central:1883" in lines
    assert "remote_username bridge" in lines and "remote_password pw" in lines
    assert [line for line in lines if line.startswith("topic ")] == [
        "topic parceltrack/v1/LHR1/+/events out 1",
        "topic parceltrack/v1/LHR1/+/health out 1",
        "topic parceltrack/v1/LHR1/agents/+/status out 1",
        "topic parceltrack/v1/LHR1/+/receipts in 1",
        "topic parceltrack/v1/LHR1/alerts in 1",
    ]


@pytest.mark.parametrize(
    ("site", "url", "message"),
    [
        ("LHR/1", "mqtt://central:1883", "not a valid topic level"),
        ("LHR1", "mqtts://central:8883", "CA file"),
    ],
    ids=["bad-site", "tls-without-ca"],
)
def test_a_bridge_that_cannot_work_is_refused(site: str, url: str, message: str) -> None:
    """A site name that is no topic level, or TLS with no CA to verify the centre, is an error."""
    with pytest.raises(ConfigError, match=message):
        Bridge(site, BrokerAddress.from_url(url))


def test_the_cli_prints_a_bridge_that_mosquitto_accepts(tmp_path: Path) -> None:
    """`parceltrack broker bridge` writes a block that a real Mosquitto starts with."""
    done = subprocess.run(
        [sys.executable, "-m", "composition.cli", "broker", "bridge", "--site", "LHR1",
         "--central", "mqtt://127.0.0.1:1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "connection parceltrack-LHR1" in done.stdout
    broker = PrivateMosquitto(tmp_path / "site", extra_conf=done.stdout)
    broker.start()  # raises with Mosquitto's log when it refuses the configuration
    broker.destroy()


def test_a_site_bridge_carries_only_its_own_site_through_the_central_acl(
    services_dir: Path, tmp_path: Path
) -> None:
    """With the central ACL, site A's bridge user delivers A's reads and cannot inject B's."""
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    passwd.touch()
    for user, password in (("ingest", "ingest-pw"), ("bridge-SITEA", "a-pw")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    acl.write_text(render_acl([], bridged_sites=["SITEA"]))
    root = services_dir / f"bridge-acl-{time.monotonic_ns()}"
    central = PrivateMosquitto(
        root / "central", extra_conf=f"password_file {passwd}\nacl_file {acl}"
    )
    central.start()
    bridge = Bridge(
        "SITEA", BrokerAddress.from_url(f"mqtt://bridge-SITEA:a-pw@127.0.0.1:{central.port}")
    )
    site = PrivateMosquitto(root / "site", extra_conf=render_bridge(bridge))
    site.start()
    ingest_url = f"mqtt://ingest:ingest-pw@127.0.0.1:{central.port}"
    got: list[str] = []
    ingest = MqttClient("ingest-acl", BrokerAddress.from_url(ingest_url))
    ingest.on_message(lambda m: got.append(m.topic))
    ingest.on_connect(lambda _rc: ingest.subscribe([topics.ALL_EVENTS], qos=1))
    ingest.start()
    rogue = MqttClient(
        "rogue", BrokerAddress.from_url(f"mqtt://bridge-SITEA:a-pw@127.0.0.1:{central.port}")
    )
    rogue.start()
    publisher = _publisher(site)
    try:
        assert ingest.wait_connected(10) and rogue.wait_connected(10)
        wait_until(
            lambda: publisher.publish(topics.events("SITEA", "scan-1"), b"{}", qos=1) and got,
            30, "site A's read at the centre", interval=0.5,
        )  # fmt: skip
        rogue.publish(topics.events("SITEB", "scan-9"), b"{}", qos=1)
        rogue.publish(topics.events("SITEA", "scan-2"), b"{}", qos=1)
        wait_until(lambda: topics.events("SITEA", "scan-2") in got, 10, "the allowed read")
        time.sleep(0.5)
    finally:
        for client in (publisher, rogue, ingest):
            client.stop()
        site.destroy()
        central.destroy()
    assert topics.events("SITEB", "scan-9") not in got
