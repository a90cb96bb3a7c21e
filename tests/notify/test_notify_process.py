"""`parceltrack notify` as a real process: it survives a restart without losing a
message, and its DEBUG log never holds an e-mail address, a URL, a token or a secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.api.conftest import seed
from tests.notify.receivers import Received, smtp_server, webhook_receiver
from tests.notify.test_notifier import _cursor_exists, _scan, _subscribe
from tests.waiting import wait_until

TOKEN = "tok-5e3c1a9b7d"
ADDRESS = "verena.private@example.org"
SECRET = "whsec_do-not-log-me"


@contextmanager
def notify_process(dsn: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "composition.cli",
                "-v",
                "notify",
                "--allow-private-targets",
                *args,
            ],
            env={**os.environ, "PARCELTRACK_DSN": dsn},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]


def _states(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT state, count(*)::int FROM outbound_deliveries GROUP BY 1")
        return dict(rows.fetchall())


def _failed_attempts(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM outbound_attempts WHERE NOT ok").fetchone()
    return int(row[0]) if row else 0


def test_restart_loses_nothing_and_logs_no_personal_data(db_dsn: str, tmp_path: Path) -> None:
    """Messages failing when the process stops are delivered by the next one; the dead
    letters of an unreachable SMTP server are logged without the address; no log line
    holds the webhook URL, its token, the signing secret or the e-mail address."""
    seeded = seed(db_dsn)
    parcel = seeded.on_conveyor
    healthy = {"on": False}

    def behaviour(_request: Received, _seen: int) -> str:
        return "ok" if healthy["on"] else "drop"

    with smtp_server() as (_mailbox, smtp_url):
        pass  # closed again: e-mail to it fails
    log = tmp_path / "notify.log"
    fast = ["--backoff-base", "0.1", "--backoff-cap", "0.3", "--hold-down", "0.5"]
    with webhook_receiver(behaviour) as receiver:
        url = f"{receiver.url}?token={TOKEN}"
        _subscribe(db_dsn, parcel, "webhook", url, "en", SECRET)
        _subscribe(db_dsn, parcel, "email", ADDRESS, "zh-CN", None)
        with notify_process(db_dsn, log, *fast, "--retry-window", "600", "--smtp", smtp_url):
            wait_until(lambda: _cursor_exists(db_dsn), 20, "the notifier's cursor")
            _scan(db_dsn, parcel, "SRT1", 1)
            wait_until(lambda: _failed_attempts(db_dsn) >= 4, 20, "failing attempts")
        assert _states(db_dsn) == {"pending": 2}
        healthy["on"] = True
        # The second process gives up on e-mail quickly; the webhook now succeeds.
        with notify_process(db_dsn, log, *fast, "--retry-window", "1", "--smtp", smtp_url):
            wait_until(
                lambda: _states(db_dsn) == {"delivered": 1, "dead": 1}, 30, "delivered + dead"
            )
    accepted = [r for r in receiver.requests if r.answer == "ok"]
    assert len(accepted) == 1 and accepted[0].path == f"/hook?token={TOKEN}"
    text = log.read_text()
    assert "dead letter" in text and "queued 2 notifications" in text
    for secret in (TOKEN, ADDRESS, "verena", SECRET, receiver.url, "127.0.0.1:"):
        assert secret not in text, secret
