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
    """Parse SSE frames until `want` events (frames with data, not comments) arrived."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    deadline = time.monotonic() + deadline_s
    for line in lines:
        if line == "":
            if "data" in current:
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


def _changes(events: list[dict[str, str]]) -> list[tuple[int, str]]:
    return [(json.loads(e["data"])["alert"]["alert_id"], e["event"]) for e in events]


def _event_ids(events: list[dict[str, str]]) -> list[int]:
    return [int(json.loads(e["data"])["event_id"]) for e in events]


def _last_id(events: list[dict[str, str]]) -> str:
    """The client's last event id after these frames (a frame without `id` keeps it)."""
    ids = [e["id"] for e in events if "id" in e]
    assert ids, "no frame carried an id"
    return ids[-1]


@pytest.fixture
def stream_client(live_api: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_api.url, timeout=httpx.Timeout(20.0)) as c:
        yield c


def test_stream_sends_live_changes_and_replays_after_last_event_id(
    stream_client: httpx.Client, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Live alert changes arrive with their event ids; a reconnect with Last-Event-ID (a
    position) gets exactly what it missed, in order, the position on its last frame."""
    h = auth(keys["controller"])
    with stream_client.stream("GET", "/v1/alerts/stream", headers=h) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        first = _open_alerts(seeded.dsn, 2)
        live = _read_events(lines, 2)
    assert [json.loads(e["data"])["alert"]["alert_id"] for e in live] == first
    assert {e["event"] for e in live} == {"alert.opened"}
    assert "id" in live[-1]
    last_seen = _last_id(live)
    # While disconnected: two more alerts open and one is acknowledged.
    missed = _open_alerts(seeded.dsn, 2)
    stream_client.post(f"/v1/alerts/{missed[0]}/ack", headers=h)
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers={**h, "Last-Event-ID": last_seen}
    ) as response:
        replay = _read_events(response.iter_lines(), 3)
    assert _event_ids(replay) == sorted(_event_ids(replay))
    assert min(_event_ids(replay)) > max(_event_ids(live))
    assert _changes(replay) == [
        (missed[0], "alert.opened"),
        (missed[1], "alert.opened"),
        (missed[0], "alert.acknowledged"),
    ]
    assert all(":" in e["id"] for e in replay if "id" in e)  # positions, not event ids
    assert "id" in replay[-1]


def test_a_change_committed_after_a_later_one_still_reaches_the_stream(
    stream_client: httpx.Client, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A change whose transaction began first but commits after a later change was sent
    is sent when it commits, live and to a client resuming from before its commit."""
    h = auth(keys["controller"])
    with (
        psycopg.connect(seeded.dsn) as slow,
        stream_client.stream("GET", "/v1/alerts/stream", headers=h) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        slow.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id) VALUES ('silence:slow', %s, %s)",
            (AlertKind.SILENCE, SITE),
        )
        [later] = _open_alerts(seeded.dsn, 1)
        sent = _read_events(lines, 1)
        assert _changes(sent) == [(later, "alert.opened")]
        before_commit = _last_id(sent)
        slow.commit()
        late = _read_events(lines, 1)
    [held] = _event_ids(late)
    assert held < _event_ids(sent)[0]  # written first, committed last
    assert json.loads(late[0]["data"])["alert"]["fingerprint"] == "silence:slow"
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers={**h, "Last-Event-ID": before_commit}
    ) as response:
        again = _read_events(response.iter_lines(), 1)
    assert _event_ids(again) == [held]


def test_a_client_cut_mid_batch_gets_the_whole_batch_again(
    stream_client: httpx.Client, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Only a batch's last frame has an id, so a client that read part of a batch
    resumes before it and gets all of it again (at least once)."""
    h = auth(keys["controller"])
    with stream_client.stream("GET", "/v1/alerts/stream", headers=h) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        [first] = _open_alerts(seeded.dsn, 1)
        resume = _last_id(_read_events(lines, 1))
    # Three changes in one transaction: one batch for a stream that reads them together.
    with psycopg.connect(seeded.dsn) as conn:
        together = [
            int(row[0])
            for row in conn.execute(
                "INSERT INTO alerts (fingerprint, kind, site_id) "
                "SELECT 'delay:batch' || n, %s, %s FROM generate_series(1, 3) n "
                "RETURNING alert_id",
                (AlertKind.DELAY, SITE),
            ).fetchall()
        ]
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers={**h, "Last-Event-ID": resume}
    ) as response:
        part = _read_events(response.iter_lines(), 1)
    assert _changes(part) == [(together[0], "alert.opened")]
    assert "id" not in part[0]  # the client's last event id stays `resume`
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers={**h, "Last-Event-ID": resume}
    ) as response:
        whole = _read_events(response.iter_lines(), 3)
    assert _changes(whole) == [(a, "alert.opened") for a in together]
    assert ["id" in e for e in whole] == [False, False, True]
    assert first not in [a for a, _ in _changes(whole)]


def test_a_numeric_last_event_id_still_resumes_then_positions_follow(
    stream_client: httpx.Client, seeded: Seeded, keys: dict[str, str]
) -> None:
    """An event id from a client of the stream before positions gets the changes after
    it, then live changes carry positions."""
    h = auth(keys["controller"])
    with psycopg.connect(seeded.dsn) as conn:
        row = conn.execute("SELECT max(event_id) FROM alert_events").fetchone()
    assert row is not None
    old_id = str(row[0])
    missed = _open_alerts(seeded.dsn, 2)
    with stream_client.stream(
        "GET", "/v1/alerts/stream", headers={**h, "Last-Event-ID": old_id}
    ) as response:
        lines = response.iter_lines()
        replay = _read_events(lines, 2)
        live_ids = _open_alerts(seeded.dsn, 1)
        live = _read_events(lines, 1)
    assert _changes(replay) == [(a, "alert.opened") for a in missed]
    assert min(_event_ids(replay)) > int(old_id)
    assert _changes(live) == [(live_ids[0], "alert.opened")]
    assert ":" in _last_id(replay) and ":" in _last_id(live)


@pytest.mark.parametrize(
    ("value", "lang", "says"),
    [
        ("12:x", "en", "Last-Event-ID: not an id this stream sends"),
        ("5:3:", "en", "Last-Event-ID: not an id this stream sends"),
        ("3:9:12", "en", "Last-Event-ID: not an id this stream sends"),
        ("99999999999999999999", "en", "Last-Event-ID: not an id this stream sends"),
        ("abc", "zh-CN", "Last-Event-ID：不是本事件流发送的 id"),
        ("1000000000:1000000000:", "en", "Last-Event-ID: a position this database has not"),
        ("1000000000:1000000000:", "zh-CN", "Last-Event-ID：该位置是本数据库尚未到达的位置"),
    ],
    ids=[
        "garbage",
        "xmin-above-xmax",
        "in-flight-out-of-range",
        "id-too-big",
        "zh-CN",
        "ahead",
        "ahead-zh-CN",
    ],
)
def test_a_malformed_last_event_id_is_refused_naming_the_header(
    client: TestClient, keys: dict[str, str], value: str, lang: str, says: str
) -> None:
    """A Last-Event-ID the stream never sent is a 422 naming the header, in the caller's
    language, before any stream starts."""
    response = client.get(
        "/v1/alerts/stream",
        headers={**auth(keys["controller"]), "Last-Event-ID": value, "Accept-Language": lang},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith(says)


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
