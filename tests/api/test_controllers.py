"""Controllers: alerts (filters, keyset pages, ack), the SSE stream, devices,
throughput, and answering customers' feedback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api.alerts import ALERT_LABELS
from parceltrack.alerts import AlertKind
from tests.api.conftest import SITE, Seeded, ThreadedServer, auth


def _open_alerts(dsn: str, n: int, kind: AlertKind = AlertKind.DELAY) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            int(
                conn.execute(  # type: ignore[index]
                    "INSERT INTO alerts (fingerprint, kind, site_id, tracking_id) "
                    "VALUES (%s, %s, %s, %s) RETURNING alert_id",
                    (f"{kind}:t{i}:{time.monotonic_ns()}", kind, SITE, None),
                ).fetchone()[0]
            )
            for i in range(n)
        ]


def test_alerts_filter_by_state_kind_and_site(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Filters select the open mis-sort alert and the resolved delay one separately."""
    h = auth(keys["controller"])
    open_ = client.get("/v1/alerts", params={"state": "open"}, headers=h).json()["items"]
    assert [a["kind"] for a in open_] == ["missort"]
    resolved = client.get(
        "/v1/alerts", params={"kind": AlertKind.DELAY.value, "site": SITE}, headers=h
    ).json()["items"]
    assert [a["state"] for a in resolved] == ["resolved"]
    assert client.get("/v1/alerts", params={"site": "NOPE"}, headers=h).json()["items"] == []
    future = client.get("/v1/alerts", params={"since": "2999-01-01T00:00:00Z"}, headers=h).json()[
        "items"
    ]
    assert future == []


def test_alert_kinds_lists_every_kind_with_its_label(
    client: TestClient, keys: dict[str, str]
) -> None:
    """GET /v1/alerts/kinds gives every AlertKind, in order, with the label controllers read."""
    body = client.get("/v1/alerts/kinds", headers=auth(keys["controller"])).json()
    assert body == [{"kind": k.value, "label": ALERT_LABELS[k]} for k in AlertKind]


def test_alert_pages_follow_the_cursor_without_gaps_or_repeats(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Walking pages of 3 by `next_cursor` yields every alert once, newest first."""
    made = _open_alerts(seeded.dsn, 7)
    every, cursor = [], None
    while True:
        params: dict[str, int] = {"limit": 3} | ({"after": cursor} if cursor else {})
        page = client.get("/v1/alerts", params=params, headers=auth(keys["controller"])).json()
        every += [a["alert_id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert every == sorted([*made, *seeded.alert_ids], reverse=True)


def test_ack_records_who_and_when_and_twice_is_harmless(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """The first ack stores the controller and time; a second ack by anyone changes nothing."""
    alert = seeded.alert_ids[0]
    first = client.post(f"/v1/alerts/{alert}/ack", headers=auth(keys["controller"])).json()
    assert first["state"] == "acknowledged" and first["acked_by"] == "controller-1"
    again = client.post(f"/v1/alerts/{alert}/ack", headers=auth(keys["manager"])).json()
    assert again == first
    assert client.post("/v1/alerts/999999/ack", headers=auth(keys["controller"])).status_code == 404


def _read_events(lines: Iterator[str], want: int, deadline_s: float = 20) -> list[dict[str, str]]:
    """Parse SSE frames until `want` events (not comments) arrived."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    deadline = time.monotonic() + deadline_s
    for line in lines:
        if line == "":
            if "id" in current:
                events.append(current)
                if len(events) >= want:
                    return events
            current = {}
        elif line.startswith(":"):
            pass  # keep-alive comment
        else:
            field, _, value = line.partition(": ")
            current[field] = value
        assert time.monotonic() < deadline, "stream too slow"
    return events


@pytest.fixture
def stream_client(live_api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api.url, timeout=httpx.Timeout(20.0)) as c:
        yield c


def test_stream_sends_live_changes_and_replays_after_last_event_id(
    stream_client: httpx.Client, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Live alert changes arrive with ids; a reconnect with Last-Event-ID gets exactly what it
    missed, in order."""
    h = auth(keys["controller"])
    with stream_client.stream("GET", "/v1/alerts/stream", headers=h) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        first = _open_alerts(seeded.dsn, 2)
        live = _read_events(lines, 2)
    assert [json.loads(e["data"])["alert"]["alert_id"] for e in live] == first
    assert {e["event"] for e in live} == {"alert.opened"}
    last_seen = live[-1]["id"]
    # While disconnected: two more alerts open and one is acknowledged.
    missed = _open_alerts(seeded.dsn, 2)
    stream_client.post(f"/v1/alerts/{missed[0]}/ack", headers=h)
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers={**h, "Last-Event-ID": last_seen}
    ) as response:
        replay = _read_events(response.iter_lines(), 3)
    assert [int(e["id"]) for e in replay] == sorted(int(e["id"]) for e in replay)
    assert int(replay[0]["id"]) > int(last_seen)
    changes = [(json.loads(e["data"])["alert"]["alert_id"], e["event"]) for e in replay]
    assert changes == [
        (missed[0], "alert.opened"),
        (missed[1], "alert.opened"),
        (missed[0], "alert.acknowledged"),
    ]


def test_idle_stream_sends_keep_alive_comments(
    stream_client: httpx.Client, seeded: Seeded, keys: dict[str, str]
) -> None:
    """With no alert changes, the stream still sends comment lines (keep-alive 0.5 s in tests)."""
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers=auth(keys["controller"])
    ) as response:
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(4)]
    assert sum(line == ": keep-alive" for line in seen) >= 1


def test_devices_show_online_state_counts_and_outbox_depth(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A device reporting health is online with its counters; scan counts come from the scans."""
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device_health VALUES (%s, %s, 'agent-1', now(), true, %s)",
            (
                f"{SITE}-scan-tun1",
                SITE,
                Jsonb({"frames_bad": 2, "reopens": 1, "outbox_depth": 17, "outbox_oldest_s": 3.5}),
            ),
        )
        conn.execute("INSERT INTO agent_status VALUES ('agent-1', %s, 'online', now())", (SITE,))
        conn.execute(
            "INSERT INTO devices (device_id, site_id, kind) VALUES ('silent', %s, 'rfid')", (SITE,)
        )
    devices = {
        d["device_id"]: d
        for d in client.get("/v1/devices", headers=auth(keys["controller"])).json()
    }
    tunnel = devices[f"{SITE}-scan-tun1"]
    assert tunnel["online"] is True and tunnel["outbox_depth"] == 17
    assert (tunnel["frames_bad"], tunnel["reopens"], tunnel["agent_state"]) == (2, 1, "online")
    assert devices["silent"]["online"] is False and devices["silent"]["last_seen"] is None


def test_throughput_counts_reads_and_noreads_per_read_point(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Over the last hour in one bucket, the tunnel shows its 4 reads and 3 no-reads."""
    body = client.get(
        f"/v1/sites/{SITE}/throughput", params={"bucket": 86400}, headers=auth(keys["controller"])
    ).json()
    tunnel = [b for b in body["buckets"] if b["read_point_id"] == f"{SITE}-TUN1"]
    assert sum(b["reads"] for b in tunnel) == 4
    assert sum(b["noreads"] for b in tunnel) == 3
    unknown = client.get("/v1/sites/NOPE/throughput", headers=auth(keys["controller"]))
    assert unknown.status_code == 404


def test_feedback_is_owned_by_the_first_taker_until_closed(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """The first controller to take an item owns it: others get 409; only the owner answers
    and closes; time to first answer is measured."""
    made = client.post(
        f"/v1/parcels/{seeded.missorted}/feedback",
        json={"kind": "complaint", "message": "wrong city"},
    ).json()
    fid = made["feedback_id"]
    alice, bob = keys["controller"], keys["manager"]
    queue = client.get("/v1/feedback", params={"state": "open"}, headers=auth(alice)).json()
    assert [i["feedback_id"] for i in queue["items"]] == [fid]
    assert queue["items"][0]["snapshot"]["status"] == "exception"
    assert client.post(f"/v1/feedback/{fid}/answers", json={"message": "x"},
                       headers=auth(alice)).status_code == 409  # fmt: skip
    taken = client.post(f"/v1/feedback/{fid}/take", headers=auth(alice))
    assert taken.status_code == 200 and taken.json()["owner"] == "controller-1"
    assert client.post(f"/v1/feedback/{fid}/take", headers=auth(alice)).status_code == 200
    assert client.post(f"/v1/feedback/{fid}/take", headers=auth(bob)).status_code == 409
    assert client.post(f"/v1/feedback/{fid}/answers", json={"message": "sorry"},
                       headers=auth(bob)).status_code == 409  # fmt: skip
    answered = client.post(
        f"/v1/feedback/{fid}/answers", json={"message": "We re-routed it."}, headers=auth(alice)
    ).json()
    assert answered["seconds_to_first_answer"] >= 0
    assert [a["author"] for a in answered["answers"]] == ["controller-1"]
    closed = client.post(f"/v1/feedback/{fid}/close", headers=auth(alice)).json()
    assert closed["state"] == "closed" and closed["closed_at"] is not None
    assert client.post(f"/v1/feedback/{fid}/take", headers=auth(bob)).status_code == 409
