"""Sending one claimed message: a signed webhook POST, or an e-mail over SMTP.

Each sender returns an Outcome whose detail is safe to log and store: status codes
and error classes only, never an address, a URL or a server's own words (an SMTP
refusal quotes the recipient).
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

import httpx

from notify.queue import Delivery
from parceltrack import webhooks
from parceltrack.errors import ConfigError

USER_AGENT = "parceltrack-notify/1"


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str
    permanent: bool = False  # a failure no retry can mend: a dead letter at once


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where e-mail goes: smtp://[user:password@]host[:25] or smtps://...[:465]."""

    host: str
    port: int = 25
    tls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "parceltrack <notify@localhost>"

    @classmethod
    def from_url(cls, url: str, sender: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("--smtp must look like smtp://host:25 or smtps://host:465")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender=sender,
        )

    def __repr__(self) -> str:  # never show the password
        return f"SmtpServer(host={self.host!r}, port={self.port}, tls={self.tls})"


def webhook_request(delivery: Delivery, now: float) -> tuple[dict[str, str], bytes]:
    """Headers and body of one attempt: signed at `now`, same key on every repeat."""
    assert delivery.secret is not None
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        delivery.signature_header or webhooks.SIGNATURE_HEADER: webhooks.sign(
            delivery.secret, int(now), body
        ),
        webhooks.IDEMPOTENCY_HEADER: delivery.idempotency_key,
        webhooks.KIND_HEADER: delivery.kind,
    }
    return headers, body


def public_target(url: str) -> bool:
    """False when the URL's host is, or resolves to, an address that is not public
    (loopback, private, link-local: the server's own network). Anyone may subscribe a
    webhook, so without this check the engine would POST into our own network.
    A name that does not resolve passes: the attempt fails and is retried."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return True
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_global for info in infos)


def send_webhook(client: httpx.Client, delivery: Delivery, allow_private: bool = False) -> Outcome:
    # Checked at each attempt; a name re-pointed between check and connect (DNS
    # rebinding) is not caught: a network egress policy is the full answer.
    if not allow_private and not public_target(delivery.target):
        return Outcome(False, "refused: the target is not a public address", permanent=True)
    headers, body = webhook_request(delivery, time.time())
    try:
        response = client.post(delivery.target, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        return Outcome(False, f"timeout ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Outcome(False, f"connection failed ({type(exc).__name__})")
    if 200 <= response.status_code < 300:
        return Outcome(True, f"HTTP {response.status_code}")
    return Outcome(False, f"HTTP {response.status_code}")


def email_message(delivery: Delivery, sender: str) -> EmailMessage:
    """The e-mail of one message: plain text with an HTML alternative."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = delivery.target
    message["Subject"] = delivery.subject or delivery.kind
    message["Message-ID"] = make_msgid(domain="parceltrack.invalid")
    message["X-Parceltrack-Idempotency-Key"] = delivery.idempotency_key
    message["X-Parceltrack-Kind"] = delivery.kind
    if delivery.unsubscribe_url:
        # RFC 8058 one-click: mail clients POST to the link themselves.
        message["List-Unsubscribe"] = f"<{delivery.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(delivery.body)
    if delivery.html:
        message.add_alternative(delivery.html, subtype="html")
    return message


def send_email(server: SmtpServer, delivery: Delivery, timeout_s: float) -> Outcome:
    message = email_message(delivery, server.sender)
    try:
        smtp: smtplib.SMTP
        if server.tls:
            smtp = smtplib.SMTP_SSL(
                server.host, server.port, timeout=timeout_s, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=timeout_s)
        with smtp:
            if server.username and server.password:
                smtp.login(server.username, server.password)
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, f"SMTP {exc.smtp_code}")
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        return Outcome(False, f"SMTP recipient refused {codes}")
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, f"SMTP failed ({type(exc).__name__})")
    return Outcome(True, "SMTP 250")
