"""Real local receivers for outbound messages: an HTTP server that misbehaves on
purpose, and an SMTP server (aiosmtpd) that keeps what it is sent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    """One request as the receiver saw it, and how it answered."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    answer: str
    wall: float = field(default_factory=time.time)


# What the receiver does with one request: "ok", "500", "timeout" (answers after the
# sender gave up), "slow" (answers 200 late but in time), "drop" (closes the socket).
Behaviour = Callable[[Received, int], str]


@dataclass
class WebhookReceiver:
    behaviour: Behaviour
    slow_s: float = 0.3
    hang_s: float = 2.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def seen(self, key: str) -> int:
        """Requests so far that carried `key` as their idempotency key."""
        with self.lock:
            return sum(1 for r in self.requests if r.headers.get("idempotency-key") == key)

    def accepted_keys(self) -> set[str]:
        with self.lock:
            return {
                r.headers["idempotency-key"] for r in self.requests if r.answer in ("ok", "slow")
            }


@contextmanager
def webhook_receiver(behaviour: Behaviour, **kwargs: float) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(behaviour, **kwargs)  # type: ignore[arg-type]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Received(
                time.monotonic(),
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                "",
            )
            key = request.headers.get("idempotency-key", "")
            answer = behaviour(request, receiver.seen(key))
            request.answer = answer
            with receiver.lock:
                receiver.requests.append(request)
            if answer == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if answer == "timeout":
                time.sleep(receiver.hang_s)
            if answer == "slow":
                time.sleep(receiver.slow_s)
            code = 500 if answer in ("500", "timeout") else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class Mailbox:
    """An aiosmtpd handler that keeps every message, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, str]]:
    """A real SMTP server on a free port, and its smtp:// URL."""
    mailbox = Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()
