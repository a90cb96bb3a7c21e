"""Escalation planning (quality/escalation.py), pure: who gets which message, when many
alerts become one digest, and keys that never change for the same report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quality.escalation import DueAlert, OnDuty, plan

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
ANA = OnDuty(1, "LHR1", "Ana", "email", "ana@example.org")
HOOK = OnDuty(2, "LHR1", "Floor", "webhook", "http://x/h", "critical", "zh-CN", "s" * 16)
OTHER_SITE = OnDuty(3, "PVG1", "Wang", "email", "wang@example.org")


def _alert(i: int, kind: str = "missing", severity: str = "major", rnd: int = 0) -> DueAlert:
    return DueAlert(
        alert_id=i,
        kind=kind,
        site_id="LHR1",
        severity=severity,
        round=rnd,
        opened_at=NOW - timedelta(minutes=16),
        read_point_id="LHR1-IND1",
        tracking_id=f"CP{i:09d}GB",
    )


def test_one_message_per_alert_and_person_at_its_site() -> None:
    """Two due alerts reach the site's e-mail recipient as two messages; the webhook that
    wants only critical alerts and the other site's person get nothing."""
    messages = plan([_alert(1), _alert(2)], [ANA, HOOK, OTHER_SITE], {}, 10, NOW)
    assert [(m.duty.duty_id, m.idempotency_key) for m in messages] == [
        (1, "escalation:1:0"),
        (1, "escalation:2:0"),
    ]
    assert messages[0].subject == "[major] Missing at LHR1, unacknowledged for 16 min"
    assert "CP000000001GB" in messages[0].text and "nobody" in messages[0].text


def test_reminders_say_which_round_in_the_recipients_language() -> None:
    """A critical alert's second reminder reaches the Chinese webhook in Chinese."""
    (message,) = plan([_alert(7, "silence", "critical", rnd=2)], [HOOK], {}, 10, NOW)
    assert message.kind == "alert.reminder" and message.idempotency_key == "escalation:7:2"
    assert message.subject.startswith("第 2 次提醒")
    assert message.body["round"] == 2 and message.body["severity"] == "critical"


def test_a_silent_device_stranding_300_parcels_is_one_digest() -> None:
    """300 missing-parcel alerts due at once become one message naming the silent device
    and the count, not 300 messages."""
    due = [_alert(i) for i in range(1, 301)]
    messages = plan(due, [ANA], {"LHR1": ["LHR1-scan-tun1"]}, 10, NOW)
    assert len(messages) == 1
    (digest,) = messages
    assert digest.kind == "alert.digest" and len(digest.alerts) == 300
    assert digest.subject == "[major] 300 alerts open at LHR1"
    assert "LHR1-scan-tun1" in digest.text and "Missing 300" in digest.text
    assert digest.body["count"] == 300 and digest.body["silent_devices"] == ["LHR1-scan-tun1"]


def test_digest_keys_depend_on_what_is_reported_not_on_order() -> None:
    """The same alerts and rounds give the same digest key in any order; a new round a new key."""
    due = [_alert(i) for i in range(1, 21)]
    first = plan(due, [ANA], {}, 10, NOW)[0].idempotency_key
    again = plan(list(reversed(due)), [ANA], {}, 10, NOW + timedelta(minutes=5))[0].idempotency_key
    later = plan([_alert(i, rnd=1) for i in range(1, 21)], [ANA], {}, 10, NOW)[0].idempotency_key
    assert first == again != later
