"""Pure rules of the delivery engine: backoff, dead-letter window, rate limit, signatures."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify.policy import RateLimit, RetryPolicy, admit
from parceltrack import webhooks

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_backoff_doubles_up_to_the_cap() -> None:
    """Without jitter, delays double from the base and stop at the cap."""
    policy = RetryPolicy(base_s=5, factor=2, cap_s=60, jitter=0.0)
    assert [policy.delay_s(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_jitter_only_shortens() -> None:
    """Jitter takes up to its fraction off a delay, never adds to it."""
    policy = RetryPolicy(base_s=10, jitter=0.2)
    assert policy.delay_s(1, rng=lambda: 0.0) == 10
    assert policy.delay_s(1, rng=lambda: 1.0) == pytest.approx(8)


def test_last_attempt_at_window_end_then_dead() -> None:
    """A retry never goes past the window's end; at or after the end there is none."""
    policy = RetryPolicy(base_s=3600, cap_s=3600, window_s=24 * 3600, jitter=0.0)
    near_end = T0 + timedelta(hours=23, minutes=30)
    assert policy.next_attempt(T0, near_end, 20) == T0 + timedelta(hours=24)
    assert policy.next_attempt(T0, T0 + timedelta(hours=24), 21) is None


def test_a_day_of_retries_takes_a_modest_number_of_attempts() -> None:
    """With the default policy a receiver down for 24 h sees a few dozen attempts, not thousands."""
    policy = RetryPolicy(jitter=0.0)
    now, attempts = T0, 0
    while (retry := policy.next_attempt(T0, now, attempts + 1)) is not None:
        attempts += 1
        now = retry
    assert 20 <= attempts + 1 <= 40


def test_admit_keeps_each_subscriber_within_its_limit() -> None:
    """Due messages over a subscriber's limit (counting what it used) are deferred, in order."""
    due = ["a1", "a2", "b1", "a3", "b2"]
    send, defer = admit(due, lambda m: m[0], {"a": 1}, RateLimit(per_window=2, window_s=60))
    assert send == ["a1", "b1", "b2"]
    assert defer == ["a2", "a3"]


def test_signature_round_trip_and_refusals() -> None:
    """A signature verifies for its body and secret only, and only within the tolerance."""
    body = b'{"event":"delayed"}'
    header = webhooks.sign("s3", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert webhooks.verify("s3", header, body, now=1_700_000_010) == 1_700_000_000
    with pytest.raises(webhooks.InvalidSignature, match="matches"):
        webhooks.verify("other", header, body, now=1_700_000_010)
    with pytest.raises(webhooks.InvalidSignature, match="matches"):
        webhooks.verify("s3", header, body + b" ", now=1_700_000_010)
    with pytest.raises(webhooks.InvalidSignature, match="tolerance"):
        webhooks.verify("s3", header, body, now=1_700_001_000)
    with pytest.raises(webhooks.InvalidSignature, match="t="):
        webhooks.verify("s3", "v1=abc", body, now=1_700_000_000)
    with pytest.raises(webhooks.InvalidSignature, match="no X-Parceltrack-Signature"):
        webhooks.verify("s3", None, body, now=1_700_000_000)


def test_signature_matches_a_hand_computed_hmac() -> None:
    """The header's v1 is HMAC-SHA256(secret, "<t>." + body) in hex, as docs/api.md says."""
    import hashlib
    import hmac

    body = b"{}"
    expected = hmac.new(b"key", b"42.{}", hashlib.sha256).hexdigest()
    assert webhooks.sign("key", 42, body) == f"t=42,v1={expected}"


def _doc_block(after: str, language: str) -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    rest = doc[doc.index(after) :]
    start = rest.index(f"```{language}\n") + len(f"```{language}\n")
    return rest[start : rest.index("```", start)]


def test_docs_python_verifier_accepts_real_signatures_only() -> None:
    """The receiver's verify function in docs/api.md accepts what the engine signs, and
    refuses a changed body or a stale timestamp."""
    namespace: dict[str, Any] = {}
    exec(_doc_block("Verifying, in a few lines of Python", "python"), namespace)
    verify = namespace["verify"]
    body = b'{"event":"sorted"}'
    header = webhooks.sign("whsec_1", int(time.time()), body)
    assert verify("whsec_1", header, body) is True
    assert verify("whsec_1", header, body + b" ") is False
    assert verify("whsec_1", webhooks.sign("whsec_1", int(time.time()) - 3600, body), body) is False


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_docs_curl_signature_matches_the_engine() -> None:
    """The shell recipe in docs/api.md computes the header the engine would send."""
    recipe = _doc_block("To try a receiver by hand", "sh").split("curl ")[0]
    env = {"SECRET": "whsec_2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["bash", "-c", recipe + 'echo "$T $SIG $BODY"'],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    t, sig, body = out.stdout.strip().split(" ", 2)
    assert webhooks.sign("whsec_2", int(t), body.encode()) == f"t={t},v1={sig}"
