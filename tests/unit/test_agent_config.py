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
