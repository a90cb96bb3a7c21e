"""`parceltrack notify` refuses bad settings at its edge, naming them."""

from __future__ import annotations

import pytest

from composition.cli import main
from notify.send import SmtpServer


def test_bad_smtp_url_is_refused_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    """An --smtp that is no smtp:// or smtps:// URL exits 2 with a message naming --smtp."""
    assert main(["notify", "--smtp", "http://mail.example.org"]) == 2
    assert "--smtp must look like smtp://host:25" in capsys.readouterr().err


def test_smtp_url_parts_and_password_kept_out_of_repr() -> None:
    """smtps:// defaults to 465 with TLS; credentials are read but never shown."""
    server = SmtpServer.from_url("smtps://notify:s3cr%40t@mail.example.org", "n@example.org")
    assert (server.host, server.port, server.tls) == ("mail.example.org", 465, True)
    assert (server.username, server.password) == ("notify", "s3cr@t")
    assert "s3cr" not in repr(server)
    assert SmtpServer.from_url("smtp://127.0.0.1", "x").port == 25
