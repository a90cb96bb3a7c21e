"""One TOML file per agent: its site, devices, ports, protocols and read points.

Validated on start; errors name the bad key and say what is expected.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.drivers import MercurySettings, R2000Settings
from edge.smoothing import SmoothingSettings
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


Antenna = Annotated[int, Field(ge=1, le=8)]
Region = Literal["NA", "IN", "JP", "PRC", "EU", "KR", "AU", "NZ", "NA2", "OPEN"]  # mercury.REGIONS


class MercuryOptions(_Section):
    region: Region = "EU"
    antennas: Annotated[list[Antenna], Field(min_length=1)] = [1]
    power_dbm: Annotated[float, Field(ge=0, le=31.5)] = 27.0
    response_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    silence_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    max_clock_skew_s: Annotated[float, Field(gt=0)] = 2.0

    def settings(self) -> MercurySettings:
        return MercurySettings(
            self.region, tuple(self.antennas), self.power_dbm, self.response_timeout_s,
            self.silence_timeout_s, self.max_clock_skew_s,
        )  # fmt: skip


class R2000Options(_Section):
    address: Annotated[int, Field(ge=0, le=255)] = 1
    antennas: Annotated[list[Antenna], Field(min_length=1)] = [1]
    power_dbm: Annotated[int, Field(ge=0, le=33)] = 30
    repeat: Annotated[int, Field(ge=1, le=255)] = 1
    response_timeout_s: Annotated[float, Field(gt=0)] = 1.0

    def settings(self) -> R2000Settings:
        return R2000Settings(
            self.address, tuple(self.antennas), self.power_dbm, self.repeat,
            self.response_timeout_s,
        )  # fmt: skip


class SmoothingOptions(_Section):
    quiet_s: Annotated[float, Field(gt=0, description="close a pass after this quiet")] = 1.0
    # antenna -> position along the direction of travel, e.g. { "1" = 0.0, "2" = 1.0 }
    antenna_positions: dict[Antenna, float] = {}

    def settings(self) -> SmoothingSettings:
        return SmoothingSettings(self.quiet_s, dict(self.antenna_positions))


_PROTOCOL_SECTIONS = ("barcode", "mercury", "r2000")


class DeviceConfig(_Section):
    id: Name
    protocol: Literal["barcode", "mercury", "r2000"]
    port: Annotated[str, Field(min_length=1, description="device path or pyserial URL")]
    read_point: Name
    baudrate: Annotated[int, Field(gt=0)] = 115200
    barcode: BarcodeOptions = BarcodeOptions()
    mercury: MercuryOptions = MercuryOptions()
    r2000: R2000Options = R2000Options()
    smoothing: SmoothingOptions = SmoothingOptions()

    @model_validator(mode="after")
    def _options_match_protocol(self) -> DeviceConfig:
        for section in _PROTOCOL_SECTIONS:
            if section != self.protocol and section in self.model_fields_set:
                raise ValueError(
                    f"[devices.{section}] options given for a device whose protocol is "
                    f"{self.protocol!r}; expected [devices.{self.protocol}] or none"
                )
        if self.protocol == "barcode" and "smoothing" in self.model_fields_set:
            raise ValueError("[devices.smoothing] applies to RFID readers only")
        return self

    @property
    def is_rfid(self) -> bool:
        return self.protocol != "barcode"


class AgentSection(_Section):
    id: Name
    site: Name
    outbox: str = "outbox.sqlite"
    mqtt_url: str | None = None  # wins over PARCELTRACK_MQTT_URL unless `edge --env-broker`
    batch_max_events: Annotated[int, Field(ge=1, le=5000)] = 500
    health_interval_s: Annotated[float, Field(gt=0)] = 10.0
    # Outbox bounds: past either, the oldest events are dropped (counted and logged).
    outbox_max_events: Annotated[int, Field(ge=100)] = 5_000_000
    outbox_max_age_s: Annotated[float, Field(gt=0)] = 30 * 24 * 3600.0
    # Backlog (events waiting since before the last (re)connect) is replayed at most
    # this fast, interleaved with live events, so a site reconnecting does not flood.
    replay_rate: Annotated[float, Field(gt=0)] = 20_000.0
    # An event the broker acknowledged stays in the outbox until a commit receipt
    # covers it; without one after this long it is published again (then after 2x,
    # 4x, ... up to resend_max_s), which the ingest deduplicates.
    resend_after_s: Annotated[float, Field(gt=0)] = 30.0
    resend_max_s: Annotated[float, Field(gt=0)] = 600.0


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
