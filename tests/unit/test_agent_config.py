from pathlib import Path

import pytest

from edge.config import load_agent_config
from parceltrack.errors import ConfigError

GOOD = """
[agent]
id = "agent-1"
site = "LHR1"

[[devices]]
id = "scan-1"
protocol = "barcode"
port = "/dev/ttyUSB0"
read_point = "LHR1-TUN1"

[devices.barcode]
header = "\\u0002"
terminator = "\\u0003"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_good_file_loads_with_defaults_and_outbox_beside_it(tmp_path: Path) -> None:
    """A minimal file loads; the outbox path is relative to the file."""
    config = load_agent_config(_write(tmp_path, GOOD))
    assert config.devices[0].barcode.header == "\x02"
    assert config.devices[0].baudrate == 115200
    assert config.outbox_path == tmp_path / "outbox.sqlite"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD.replace('protocol = "barcode"', 'protocol = "laser"'), "devices.0.protocol"),
        (GOOD.replace('site = "LHR1"', 'site = "LHR 1"'), "agent.site"),
        (GOOD.replace('port = "/dev/ttyUSB0"\n', ""), "devices.0.port"),
        (GOOD + "\n[extra]\nx = 1\n", "extra"),
        (GOOD.replace("[agent]", "[agent]\nbatch_max_events = 0"), "agent.batch_max_events"),
    ],
    ids=["unknown-protocol", "bad-site-name", "missing-port", "unknown-section", "bad-batch"],
)
def test_errors_name_the_bad_key(tmp_path: Path, text: str, key: str) -> None:
    """Validation errors name the key at fault."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_agent_config(_write(tmp_path, text))


def test_duplicate_device_ids_are_refused(tmp_path: Path) -> None:
    """Two devices with one id would share event ids: refused."""
    device = GOOD[GOOD.index("[[devices]]") : GOOD.index("[devices.barcode]")]
    with pytest.raises(ConfigError, match="unique"):
        load_agent_config(_write(tmp_path, GOOD + device))


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not TOML says so."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_agent_config(_write(tmp_path, "[agent\n"))


RFID = """
[agent]
id = "agent-1"
site = "LHR1"

[[devices]]
id = "gate-1"
protocol = "mercury"
port = "socket://10.0.0.5:4001"
read_point = "LHR1-DOR01"

[devices.mercury]
region = "EU"
antennas = [1, 2]

[devices.smoothing]
quiet_s = 0.5
antenna_positions = { "1" = 0.0, "2" = 1.0 }
"""


def test_rfid_device_options_load_into_driver_settings(tmp_path: Path) -> None:
    """Mercury and smoothing sections become the driver's and smoother's settings."""
    device = load_agent_config(_write(tmp_path, RFID)).devices[0]
    assert device.mercury.settings().antennas == (1, 2) and device.is_rfid
    assert device.smoothing.settings().antenna_positions == {1: 0.0, 2: 1.0}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (RFID.replace('region = "EU"', 'region = "MARS"'), "devices.0.mercury.region"),
        (RFID.replace("antennas = [1, 2]", "antennas = [9]"), "devices.0.mercury.antennas.0"),
        (RFID.replace("quiet_s = 0.5", "quiet_s = 0"), "devices.0.smoothing.quiet_s"),
        (RFID.replace('[devices.mercury]\nregion = "EU"', "[devices.r2000]"), "devices.r2000"),
        (RFID.replace('"1" = 0.0', '"x" = 0.0'), "devices.0.smoothing.antenna_positions"),
        (RFID + "[devices.r2000]\npower_dbm = 40\n", "devices.0.r2000.power_dbm"),
    ],
    ids=["region", "antenna", "quiet", "section-for-other-protocol", "position-key", "power"],
)
def test_rfid_option_errors_name_the_bad_key(tmp_path: Path, text: str, key: str) -> None:
    """Bad RFID options are refused with the key at fault in the message."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_agent_config(_write(tmp_path, text))
