"""One TOML file per agent: its site, devices, ports, protocols and read points.

Validated on start; errors name the bad key and say what is expected.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parceltrack.errors import ConfigError

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BarcodeOptions(_Section):
    header: str = ""
    terminator: str = "\r\n"
    aim: bool = True
    noread: str = "NOREAD"
    separator: str | None = None


class DeviceConfig(_Section):
    id: Name
    protocol: Literal["barcode"]
    port: Annotated[str, Field(min_length=1, description="device path or pyserial URL")]
    read_point: Name
    baudrate: Annotated[int, Field(gt=0)] = 115200
    barcode: BarcodeOptions = BarcodeOptions()


class AgentSection(_Section):
    id: Name
    site: Name
    outbox: str = "outbox.sqlite"
    mqtt_url: str | None = None  # PARCELTRACK_MQTT_URL wins when set
    batch_max_events: Annotated[int, Field(ge=1, le=5000)] = 500
    health_interval_s: Annotated[float, Field(gt=0)] = 10.0


class AgentConfig(_Section):
    agent: AgentSection
    devices: Annotated[list[DeviceConfig], Field(min_length=1)]
    base_dir: Path = Path(".")

    @property
    def outbox_path(self) -> Path:
        path = Path(self.agent.outbox)
        return path if path.is_absolute() else self.base_dir / path


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate an agent's TOML file."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read agent configuration: {exc}") from exc
    try:
        config = AgentConfig.model_validate({**raw, "base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    ids = [d.id for d in config.devices]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: devices: device ids must be unique, got {ids}")
    return config


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        parts.append(f"{key}: {err['msg']}")
    return "; ".join(parts)
