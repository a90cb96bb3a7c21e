"""How scenario time maps onto the wall clock during a playback."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from parceltrack.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PlaybackClock:
    """Scenario time 0 is `start` on the wall clock; `speed` scenario seconds pass per
    wall-clock second (60: an hour of scenario in a minute)."""

    start: datetime
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ConfigError("a playback start time needs a UTC offset")
        if not self.speed > 0:
            raise ConfigError(f"playback speed must be positive, got {self.speed}")

    def wall(self, at_s: float) -> datetime:
        """The wall-clock time of scenario second `at_s`."""
        return self.start + timedelta(seconds=at_s / self.speed)

    def wall_seconds(self, duration_s: float) -> float:
        """A scenario duration (a stage standard, say) as wall-clock seconds."""
        return duration_s / self.speed

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "speed": self.speed}

    def save(self, path: Path) -> None:
        """Written whole or not at all: a player may be waiting for this file."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_dict()))
        partial.replace(path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PlaybackClock:
        try:
            return cls(datetime.fromisoformat(raw["start"]), float(raw.get("speed", 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a playback clock: {raw!r}") from exc

    @classmethod
    def load(cls, path: Path) -> PlaybackClock:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read playback clock {path}: {exc}") from exc
        return cls.from_dict(raw)
