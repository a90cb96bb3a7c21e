"""`parceltrack detect` as the real process an operator starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from composition.services import PrivateMosquitto
from tests.waiting import wait_until


def test_detection_starts_with_no_error_in_its_log(
    db_dsn: str, services_dir: Path, tmp_path: Path
) -> None:
    """Detection starts, connects to the broker and logs no ERROR line (issue 12, bug 4)."""
    broker = PrivateMosquitto(services_dir / "mq-detect-start")
    broker.start()
    log = tmp_path / "detect.log"
    env = {**os.environ, "PARCELTRACK_DSN": db_dsn, "PARCELTRACK_MQTT_URL": broker.url}
    env.pop("PARCELTRACK_MQTT_CA_FILE", None)
    try:
        with log.open("wb") as out:
            detect = subprocess.Popen(
                [sys.executable, "-m", "composition.cli", "detect"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            # The broker's own log says when the detector's alert client connected.
            broker_log = broker.root / "mosquitto.log"
            wait_until(
                lambda: "as parceltrack-detect-alerts" in broker_log.read_text(errors="replace"),
                30,
                "the detector's connection in the broker's log",
            )
        finally:
            detect.send_signal(signal.SIGTERM)
            detect.wait(15)
    finally:
        broker.destroy()
    text = log.read_text(errors="replace")
    assert detect.returncode == 0, text
    assert [line for line in text.splitlines() if " ERROR " in line] == [], text
