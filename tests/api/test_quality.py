"""Issue 16 over HTTP: feedback naming staff, complaint deadlines and the overdue view,
staff scores with history, alert severities, escalation rules, the on-duty list,
assignment, the manager figures (JSON and CSV) and the floor view's data."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.quality_texts import texts
from storage import figures
from tests.api.conftest import SITE, Seeded, auth


def _staff(client: TestClient, key: str, staff_id: str = "S-1") -> None:
    answer = client.put(
        f"/v1/staff/{staff_id}",
        json={"name": "Li Wei", "site_id": SITE, "counter_id": "C-3"},
        headers=auth(key),
    )
    assert answer.status_code == 200, answer.text


def _feedback(client: TestClient, tracking: str, kind: str, **extra: str) -> dict[str, object]:
    answer = client.post(
        f"/v1/parcels/{tracking}/feedback", json={"kind": kind, "message": "m", **extra}
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_feedback_names_staff_and_scores_follow_the_rules(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Three praises and two complaints naming one staff member: 100 + 30 - 40 = 90 points,
    no star, 0.9x bonus; the history shows each step in order."""
    _staff(client, keys["manager"])
    kinds = ["praise", "complaint", "praise", "praise", "complaint"]
    ids = [
        _feedback(client, seeded.dispatched, k, staff_id="S-1", counter_id="C-3")["feedback_id"]
        for k in kinds
    ]
    listed = client.get("/v1/staff", headers=auth(keys["manager"])).json()
    assert [
        (s["staff_id"], s["score"], s["stars"], s["praise"], s["complaints"]) for s in listed
    ] == [("S-1", 90, 0, 3, 2)]
    assert listed[0]["bonus_factor"] == pytest.approx(0.9)
    history = client.get("/v1/staff/S-1", headers=auth(keys["manager"])).json()["history"]
    assert [h["feedback_id"] for h in history] == ids
    assert [h["score"] for h in history] == [110, 90, 100, 110, 90]
    item = client.get(f"/v1/feedback/{ids[0]}", headers=auth(keys["controller"])).json()
    assert (item["staff_id"], item["counter_id"]) == ("S-1", "C-3")


def test_unknown_staff_is_refused_naming_the_field(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Feedback naming a staff member nobody registered is 422 naming staff_id, not a 5xx;
    registering one at a site that does not exist is 409."""
    answer = client.post(
        f"/v1/parcels/{seeded.dispatched}/feedback",
        json={"kind": "praise", "message": "kind", "staff_id": "nobody"},
    )
    assert answer.status_code == 422
    assert "staff_id" in answer.json()["detail"]
    assert client.get("/v1/staff/nobody", headers=auth(keys["manager"])).status_code == 404
    assert client.get("/v1/staff", headers=auth(keys["controller"])).status_code == 403
    elsewhere = client.put(
        "/v1/staff/S-2", json={"name": "X", "site_id": "NOPE"}, headers=auth(keys["manager"])
    )
    assert elsewhere.status_code == 409


def test_complaints_get_a_deadline_and_the_overdue_view_lists_them(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A complaint is due 7 days after it is written, or within the site's own policy;
    praise has no deadline; overdue=true lists unanswered complaints past it."""
    first = _feedback(client, seeded.dispatched, "complaint")
    created = datetime.fromisoformat(str(first["created_at"]))
    assert datetime.fromisoformat(str(first["deadline"])) - created == timedelta(days=7)
    assert _feedback(client, seeded.dispatched, "praise")["deadline"] is None
    policy = client.put(
        f"/v1/sites/{SITE}/complaint-policy",
        json={"answer_within_s": 2 * 86400},
        headers=auth(keys["manager"]),
    )
    assert policy.status_code == 200
    second = _feedback(client, seeded.missorted, "complaint")
    due = datetime.fromisoformat(str(second["deadline"]))
    assert due - datetime.fromisoformat(str(second["created_at"])) == timedelta(days=2)
    overdue = client.get(
        "/v1/feedback", params={"overdue": "true"}, headers=auth(keys["controller"])
    )
    assert overdue.json()["items"] == []
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:  # the week has passed
        conn.execute(
            "UPDATE feedback SET deadline = now() - interval '1 minute' WHERE feedback_id = %s",
            (first["feedback_id"],),
        )
    items = client.get(
        "/v1/feedback", params={"overdue": "true"}, headers=auth(keys["controller"])
    ).json()["items"]
    assert [(i["feedback_id"], i["overdue"]) for i in items] == [(first["feedback_id"], True)]
    bad = client.put(
        "/v1/sites/NOPE/complaint-policy",
        json={"answer_within_s": 60},
        headers=auth(keys["manager"]),
    )
    assert bad.status_code == 409


def test_severities_and_escalation_rules_have_defaults_a_site_overrides(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Every kind has a default severity and rule; a site's own setting wins for that
    kind only, and an unknown kind or a negative time is refused with a reason."""
    headers = auth(keys["manager"])
    before = client.get(f"/v1/sites/{SITE}/alert-severities", headers=headers).json()
    assert all(r["site_default"] for r in before) and len(before) == 7
    after = client.put(
        f"/v1/sites/{SITE}/alert-severities/delay", json={"severity": "critical"}, headers=headers
    ).json()
    changed = {r["kind"]: (r["severity"], r["site_default"]) for r in after}
    assert changed["delay"] == ("critical", False)
    assert changed["silence"] == ("critical", True)
    rules = client.put(
        f"/v1/sites/{SITE}/escalation-rules/missing",
        json={"after_s": 60, "repeat_s": 120},
        headers=headers,
    ).json()
    missing = next(r for r in rules if r["kind"] == "missing")
    assert (missing["after_s"], missing["repeat_s"], missing["site_default"]) == (60, 120, False)
    assert (
        client.put(
            f"/v1/sites/{SITE}/escalation-rules/not-a-kind",
            json={"after_s": 60, "repeat_s": 60},
            headers=headers,
        ).status_code
        == 422
    )
    negative = client.put(
        f"/v1/sites/{SITE}/escalation-rules/delay",
        json={"after_s": -1, "repeat_s": 60},
        headers=headers,
    )
    assert negative.status_code == 422 and "after_s" in negative.text


def test_on_duty_list_checks_addresses_per_channel(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A webhook needs a URL and a signing secret, an e-mail an address; entries can be
    listed (never with the secret) and removed."""
    headers = auth(keys["manager"])
    mail = client.post(
        f"/v1/sites/{SITE}/on-duty",
        json={"name": "Ana", "channel": "email", "address": "ana@example.org"},
        headers=headers,
    )
    assert mail.status_code == 201
    wrong = client.post(
        f"/v1/sites/{SITE}/on-duty",
        json={"name": "Hook", "channel": "webhook", "address": "ana@example.org"},
        headers=headers,
    )
    assert wrong.status_code == 422 and "address" in wrong.text
    unsigned = client.post(
        f"/v1/sites/{SITE}/on-duty",
        json={"name": "Hook", "channel": "webhook", "address": "http://127.0.0.1:9/hook"},
        headers=headers,
    )
    assert unsigned.status_code == 422 and "secret" in unsigned.text
    listed = client.get(f"/v1/sites/{SITE}/on-duty", headers=auth(keys["controller"])).json()
    assert [d["address"] for d in listed] == ["ana@example.org"]
    gone = client.delete(f"/v1/sites/{SITE}/on-duty/{mail.json()['duty_id']}", headers=headers)
    assert gone.status_code == 204
    assert client.get(f"/v1/sites/{SITE}/on-duty", headers=headers).json() == []


def test_alerts_are_assigned_to_a_controller(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Assigning a live alert stores the controller and shows in the alert list; a resolved
    alert cannot be assigned (409) and an unknown one is 404."""
    live, resolved = seeded.alert_ids
    headers = auth(keys["controller"])
    answer = client.post(f"/v1/alerts/{live}/assign", json={"controller": "mei"}, headers=headers)
    assert answer.status_code == 200 and answer.json()["assigned_to"] == "mei"
    listed = client.get("/v1/alerts", params={"state": "open"}, headers=headers).json()["items"]
    assert [a["assigned_to"] for a in listed if a["alert_id"] == live] == ["mei"]
    late = client.post(f"/v1/alerts/{resolved}/assign", json={"controller": "x"}, headers=headers)
    assert late.status_code == 409
    assert (
        client.post(
            "/v1/alerts/99999/assign", json={"controller": "x"}, headers=headers
        ).status_code
        == 404
    )


def test_an_alert_is_taken_by_the_caller_and_unassigned(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """An assignment naming nobody goes to the caller's key name; DELETE leaves the alert
    with nobody (twice is harmless), which the list shows; a resolved alert is 409."""
    live, resolved = seeded.alert_ids
    headers = auth(keys["controller"])
    taken = client.post(f"/v1/alerts/{live}/assign", json={}, headers=headers)
    assert taken.status_code == 200 and taken.json()["assigned_to"] == "controller-1"
    for _ in range(2):
        freed = client.delete(f"/v1/alerts/{live}/assign", headers=headers)
        assert freed.status_code == 200 and freed.json()["assigned_to"] is None
    listed = client.get("/v1/alerts", params={"state": "open"}, headers=headers).json()["items"]
    assert [a["assigned_to"] for a in listed if a["alert_id"] == live] == [None]
    assert client.delete(f"/v1/alerts/{resolved}/assign", headers=headers).status_code == 409
    assert client.delete("/v1/alerts/99999/assign", headers=headers).status_code == 404
    with psycopg.connect(seeded.dsn) as conn:
        row = conn.execute(
            "SELECT assigned_to, assigned_at FROM alerts WHERE alert_id = %s", (live,)
        ).fetchone()
    assert row == (None, None)


def test_manager_figures_as_json_and_csv(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """The figures endpoint returns every chart's table; one figure's CSV has the same
    columns and rows; a controller may not read them and a bad period is 422."""
    headers = auth(keys["manager"])
    body = client.get("/v1/manager/figures", params={"site": SITE}, headers=headers).json()
    assert [f["name"] for f in body["figures"]] == list(figures.names())
    rates = next(f for f in body["figures"] if f["name"] == "rates")
    row = dict(zip(rates["columns"], rates["rows"][0], strict=True))
    assert (row["parcels_seen"], row["chuted"], row["missorted"], row["noreads"]) == (4, 2, 1, 3)
    exported = client.get(
        "/v1/manager/figures/rates", params={"site": SITE, "format": "csv"}, headers=headers
    )
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(exported.text)))
    assert table[0] == rates["columns"] and len(table) == len(rates["rows"]) + 1
    assert client.get("/v1/manager/figures", headers=auth(keys["controller"])).status_code == 403
    bad = client.get(
        "/v1/manager/figures",
        params={"since": "2026-01-01T00:00:00+00:00", "until": "2025-01-01T00:00:00+00:00"},
        headers=headers,
    )
    assert bad.status_code == 422 and "since" in bad.json()["detail"]
    assert client.get("/v1/manager/figures/nope", headers=headers).status_code == 422


def test_floor_lists_read_points_with_alerts_and_throughput(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """The floor view's data has every read point of the site in flow order, the open
    mis-sort alert at the sorter, the parcels waiting at induction (the detector's
    parcel_eta) with the longest wait, and the scans of the last hour per minute."""
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        for tracking, ago in ((seeded.accepted, 700), (seeded.on_conveyor, 100)):
            conn.execute(
                "INSERT INTO parcel_eta (tracking_id, site_id, read_point_id, stage, entered_at) "
                "VALUES (%s, %s, %s, 'induction', now() - make_interval(secs => %s))",
                (tracking, SITE, f"{SITE}-IND1", ago),
            )
    body = client.get("/v1/floor", headers=auth(keys["controller"])).json()
    (site,) = body["sites"]
    points = {p["read_point_id"]: p for p in site["read_points"]}
    assert list(points)[:3] == [f"{SITE}-IND1", f"{SITE}-TUN1", f"{SITE}-SRT1"]
    assert points[f"{SITE}-SRT1"]["open_alerts"] == 1
    assert points[f"{SITE}-SRT1"]["worst_severity"] == "major"
    tunnel = points[f"{SITE}-TUN1"]["per_minute"]
    assert len(tunnel) == 60 and sum(tunnel) == 7  # four parcels read, three no-reads
    assert points[f"{SITE}-IND1"]["standard_s"] == 600.0
    assert points[f"{SITE}-IND1"]["parcels"] == 2
    assert points[f"{SITE}-IND1"]["longest_wait_s"] == pytest.approx(700, abs=30)
    assert points[f"{SITE}-TUN1"]["parcels"] == 0


def test_standard_periods_are_served_as_computed_ahead(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """With a fresh snapshot, days=7 serves it (saying when it was computed) even after
    new feedback; with a site it is computed now and has it; days and since together
    are 422."""

    async def snapshot() -> None:
        async with await psycopg.AsyncConnection.connect(seeded.dsn, autocommit=True) as conn:
            await figures.take_snapshot(conn, 7, datetime.now(UTC))

    asyncio.run(snapshot())
    _feedback(client, seeded.dispatched, "complaint")
    headers = auth(keys["manager"])

    def complaints(body: dict[str, Any]) -> int:
        return len(next(f for f in body["figures"] if f["name"] == "complaints")["rows"])

    ahead = client.get("/v1/manager/figures", params={"days": 7}, headers=headers).json()
    assert ahead["computed_at"] is not None and complaints(ahead) == 0
    now = client.get("/v1/manager/figures", params={"days": 7, "site": SITE}, headers=headers)
    assert now.json()["computed_at"] is None and complaints(now.json()) == 1
    csv_ahead = client.get(
        "/v1/manager/figures/complaints", params={"days": 7, "format": "csv"}, headers=headers
    )
    assert len(csv_ahead.text.splitlines()) == 1  # the header: as computed ahead
    both = client.get(
        "/v1/manager/figures",
        params={"days": 7, "since": "2026-11-01T00:00:00+00:00"},
        headers=headers,
    )
    assert both.status_code == 422 and "days" in both.json()["detail"]


def test_manager_page_is_served_in_the_readers_language_with_the_page_policy(
    client: TestClient,
) -> None:
    """/manager answers in the language Accept-Language asks for (?lang= wins), with every
    placeholder filled and the pages' security headers; the floor view's texts follow."""
    chinese = client.get("/manager", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert chinese.status_code == 200
    assert '<html lang="zh-CN">' in chinese.text and "{{" not in chinese.text
    assert texts("zh-CN")["page_title"] in chinese.text
    assert "script-src 'self'" in chinese.headers["content-security-policy"]
    english = client.get("/manager?lang=en", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in english.text and texts("en")["page_title"] in english.text
    floor = client.get("/manager/texts", headers={"Accept-Language": "zh-CN"}).json()
    assert floor["lang"] == "zh-CN" and floor["texts"] == texts("zh-CN")
