"""Webhooks: the customer events they report, and their signatures (what the delivery
engine sends and what a receiver checks).

Every webhook POST carries

    X-Parceltrack-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
    Idempotency-Key: <the same on every repeat of one message>

where the HMAC is keyed with the subscription's secret and computed over
`<t>.` followed by the raw body bytes. The timestamp is inside the signed text,
so a captured request cannot be replayed later than the receiver's tolerance;
the idempotency key lets a receiver drop the repeats at-least-once delivery sends.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

SIGNATURE_HEADER = "X-Parceltrack-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
KIND_HEADER = "X-Parceltrack-Kind"
# A receiver refuses signatures older (or newer) than this, in seconds.
DEFAULT_TOLERANCE_S = 300


class ParcelEvent(StrEnum):
    """What customers are told about (the notifier sends it, the API lists it); a
    webhook carries it as `event`, and `parcel.<event>` as its kind."""

    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    SORTED = "sorted"
    DISPATCHED = "dispatched"
    DELAYED = "delayed"
    EXCEPTION = "exception"
    MISSING = "missing"
    RESOLVED = "resolved"


class InvalidSignature(ValueError):
    """A webhook whose signature header is missing, malformed, stale or wrong."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the signature header for `body` sent at `timestamp`."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secret: str, header: str | None, body: bytes, now: float, tolerance_s: float = 300
) -> int:
    """Check a received signature header; its timestamp, or InvalidSignature saying why."""
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("the header has no t=<unix seconds>") from exc
    if abs(now - timestamp) > tolerance_s:
        raise InvalidSignature(f"timestamp {timestamp} is outside the {tolerance_s:g} s tolerance")
    expected = _mac(secret, timestamp, body)
    # v1 may repeat while a secret is being rotated: any match will do.
    if not any(hmac.compare_digest(expected, given) for given in fields.get("v1", [])):
        raise InvalidSignature("no v1 signature matches the body")
    return timestamp
