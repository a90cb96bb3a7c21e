"""A customer subscribes to a parcel the simulator will delay, and is told of the
delay, with its new expected time, by webhook and e-mail: every process real (sim,
edge, Mosquitto, ingest, detect, api, notify, PostgreSQL), receivers in this process."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from composition.pipeline import Pipeline
from firmware_sim.arrivals import FLAT_PROFILE
from firmware_sim.scenario import FaultRates, ScenarioConfig, generate
from parceltrack import webhooks
from tests.notify.receivers import Mailbox, WebhookReceiver, smtp_server, webhook_receiver
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SCENARIO = generate(
    ScenarioConfig(
        seed=21,
        sites=("LHR1",),
        rfid_sites=(),
        destinations=("LON", "MAN", "BHX", "GLA"),
        chutes=4,
        induction_lines=1,
        parcels=30,
        rate_per_hour=2 * 3600,
        profile=FLAT_PROFILE,
        faults=FaultRates(delay=0.2),
    )
)
SPEED = 2.0
HOLD_DOWN = 1.0
# The injected delay that stays detectable longest: well past the hold-down.
DELAYED = max(
    (f for f in SCENARIO.faults if f.kind == "delay"),
    key=lambda f: float(f.details["next_read_at_s"]) - f.detectable_at_s,
)


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[WebhookReceiver, Mailbox, str]]:
    with webhook_receiver(lambda _r, _n: "ok") as hooks, smtp_server() as (mailbox, url):
        yield hooks, mailbox, url


def _post(url: str, body: dict[str, str]) -> dict[str, str]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201
        answer: dict[str, str] = json.loads(resp.read())
    return answer


def test_simulated_delay_reaches_the_subscriber(
    services_dir: Path, receivers: tuple[WebhookReceiver, Mailbox, str]
) -> None:
    """The delay the simulator injects is told by webhook (signed, en) and e-mail (zh-CN)
    with a new expected time, within 5 s of the delay alert opening; the e-mail's
    unsubscribe link ends its subscription."""
    hooks, mailbox, smtp_url = receivers
    assert (float(DELAYED.details["next_read_at_s"]) - DELAYED.detectable_at_s) / SPEED > 3
    pipeline = Pipeline(
        services_dir / "e2e-notify",
        SCENARIO,
        speed=SPEED,
        smtp_url=smtp_url,
        notify_hold_down_s=HOLD_DOWN,
    )
    try:
        pipeline.start()
        path = f"{pipeline.api_url}/v1/parcels/{DELAYED.tracking_id}/subscriptions"
        secret = _post(path, {"webhook_url": hooks.url, "language": "en"})["secret"]
        _post(path, {"email": "kunde@example.org", "language": "zh-CN"})

        def delayed() -> list[dict[str, object]]:
            bodies = [json.loads(r.body) for r in hooks.requests]
            return [b for b in bodies if b["event"] == "delayed"]

        timeout = DELAYED.detectable_at_s / SPEED + 60
        told = wait_until(delayed, timeout, "the delayed webhook", alive=pipeline.check_alive)
        request = next(r for r in hooks.requests if json.loads(r.body)["event"] == "delayed")
        webhooks.verify(
            secret, request.headers["x-parceltrack-signature"], request.body, time.time()
        )
        body = told[0]
        assert body["tracking_id"] == DELAYED.tracking_id
        assert body["reason"] == {
            "code": "delay",
            "text": "It is taking longer than planned at one stage of sorting.",
        }
        assert body["expected_at"] is not None
        assert datetime.fromisoformat(str(body["expected_at"])) > datetime.fromisoformat(
            str(body["occurred_at"])
        )
        with psycopg.connect(pipeline.dsn) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM opened_at) FROM alerts "
                "WHERE tracking_id = %s AND kind = 'delay'",
                (DELAYED.tracking_id,),
            ).fetchone()
        assert row is not None
        latency = request.wall - float(row[0])
        assert latency < 5.0, latency
        mail = wait_until(
            lambda: [m for m in mailbox.messages if "延误" in str(m["Subject"])],
            30,
            "the delayed e-mail",
        )[0]
        text = mail.get_body(("plain",))
        assert text is not None and "新的预计时间" in text.get_content()
        # The e-mail's unsubscribe link works against the running API.
        link = str(mail["List-Unsubscribe"]).strip().strip("<>")
        assert link.startswith(f"{pipeline.api_url}/v1/unsubscribe/") and link in text.get_content()
        with urllib.request.urlopen(link, timeout=10) as resp:
            assert resp.status == 200 and "已退订" in resp.read().decode()
        with psycopg.connect(pipeline.dsn) as conn:
            ended = conn.execute(
                "SELECT count(*) FROM customer_subscriptions WHERE unsubscribed_at IS NOT NULL"
            ).fetchone()
        assert ended == (1,)
    finally:
        pipeline.stop()
