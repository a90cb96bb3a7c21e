"""What customers are told, and how it reads: the notifier's pure rules and texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notify.follow import AlertSeen, ScanSeen
from notify.rules import alert_notice, expected_time, scan_notice
from notify.texts import Notice, email, render, webhook_body
from parceltrack.webhooks import ParcelEvent

T0 = datetime(2026, 11, 28, 1, 30, tzinfo=UTC)


def _scan(stage: str, site: str = "PVG1", origin: str | None = "PVG1") -> ScanSeen:
    return ScanSeen(T0, "CA100000004CN", T0, site, "Shanghai hub", "Asia/Shanghai", stage, origin)


@pytest.mark.parametrize(
    ("stage", "site", "event"),
    [
        ("induction", "PVG1", ParcelEvent.ACCEPTED),
        ("induction", "PEK1", ParcelEvent.ARRIVED),
        ("tunnel", "PVG1", None),
        ("sort", "PVG1", ParcelEvent.SORTED),
        ("chute", "PVG1", ParcelEvent.SORTED),
        ("dispatch", "PVG1", ParcelEvent.DISPATCHED),
        ("delivery_office", "PVG1", None),
    ],
    ids=["accepted", "arrived", "tunnel", "sort", "chute", "dispatch", "beyond"],
)
def test_scan_events(stage: str, site: str, event: ParcelEvent | None) -> None:
    """Induction at the origin is accepted, elsewhere arrived; sort and chute are sorted."""
    notice = scan_notice(_scan(stage, site))
    assert (notice.event if notice else None) == event


def test_sort_and_chute_share_one_key_per_site() -> None:
    """Sorter and chute reads at one centre give the same key: the customer hears once."""
    sort, chute = scan_notice(_scan("sort")), scan_notice(_scan("chute"))
    assert sort is not None and chute is not None
    assert sort.idempotency_key() == chute.idempotency_key() == "CA100000004CN:sorted:PVG1"


def _alert(change: str, open_s: float | None, kind: str = "delay") -> AlertSeen:
    resolved = None if open_s is None else T0 + timedelta(seconds=open_s)
    return AlertSeen(7, T0, change, 42, kind, "CA100000004CN", "PVG1", "Shanghai hub",
                     "Asia/Shanghai", T0, resolved)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "open_s", "told"),
    [
        ("opened", None, ParcelEvent.DELAYED),
        ("opened", 1.0, None),
        ("resolved", 1.0, None),
        ("opened", 30.0, ParcelEvent.DELAYED),
        ("resolved", 30.0, ParcelEvent.RESOLVED),
        ("acknowledged", None, None),
    ],
    ids=["still-open", "flap-open", "flap-resolve", "long-open", "long-resolve", "ack"],
)
def test_hold_down(change: str, open_s: float | None, told: ParcelEvent | None) -> None:
    """An alert shorter than the hold-down is never told; a longer one is told, then its end."""
    notice = alert_notice(_alert(change, open_s), hold_down_s=2.0, expected=None)
    assert (notice.event if notice else None) == told


def test_new_expected_time_is_the_eta_pushed_by_the_lateness() -> None:
    """ETA + how far past the stage deadline the parcel is; no ETA, no time."""
    eta, due = T0 + timedelta(hours=3), T0 - timedelta(minutes=15)
    assert expected_time(eta, due, T0) == eta + timedelta(minutes=15)
    assert expected_time(eta, T0 + timedelta(minutes=5), T0) == eta
    assert expected_time(None, due, T0) is None


def _delayed(expected: datetime | None) -> Notice:
    return Notice("CA100000004CN", ParcelEvent.DELAYED, T0, "PVG1", "上海枢纽",
                  "Asia/Shanghai", "alert:42", "delay", expected)  # fmt: skip


def test_texts_in_both_languages_in_the_sites_zone() -> None:
    """The same notice reads in English and Chinese, its times in Shanghai time, named."""
    notice = _delayed(T0 + timedelta(hours=2))
    en, zh = render(notice, "en"), render(notice, "zh-CN")
    assert en.subject == "Parcel CA100000004CN delayed"
    assert zh.subject == "包裹 CA100000004CN 延误"
    assert "2026-11-28 09:30:00 China Standard Time" in en.lines[0]
    assert "2026-11-28 11:30:00 中国标准时间" in zh.lines[-1]
    assert zh.reason == "包裹在某一分拣环节停留的时间超过了计划。"
    assert render(_delayed(None), "en").lines[-1].startswith("We will tell you")


def test_email_carries_links_and_escapes_html() -> None:
    """Both parts carry the tracking and unsubscribe links; text from data is escaped."""
    notice = Notice("CA100000004CN", ParcelEvent.SORTED, T0, "X", "<b>Hub & Co</b>", "UTC", "X")
    mail = email(notice, "en", "http://api/track?id=1&lang=en", "http://api/v1/unsubscribe/t")
    assert "http://api/v1/unsubscribe/t" in mail.text and mail.unsubscribe_url
    assert 'href="http://api/v1/unsubscribe/t"' in mail.html
    assert "&lt;b&gt;Hub &amp; Co&lt;/b&gt;" in mail.html and "<b>Hub" not in mail.html
    assert 'href="http://api/track?id=1&amp;lang=en"' in mail.html


def test_webhook_body_has_machine_fields_and_texts() -> None:
    """A webhook body has the event, ISO times, reason code and text, and its key."""
    body = webhook_body(_delayed(T0 + timedelta(hours=2)), "zh-CN", 12)
    assert body["event"] == "delayed" and body["kind"] == "parcel.delayed"
    assert body["expected_at"] == "2026-11-28T03:30:00+00:00"
    assert body["reason"]["code"] == "delay"
    assert body["idempotency_key"] == "CA100000004CN:delayed:alert:42"
    assert body["subscription_id"] == 12 and body["language"] == "zh-CN"
