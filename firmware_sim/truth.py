"""Ground truth: every injected fault, where it happened and from when a detector
can know it. The definitions of `detectable_at_s` follow the stage standards:

- delay:         arrival read at the stage + the stage standard for the parcel's class
- lost:          last read + the standard of the stage of that last read point
- missort:       the read at the wrong chute
- noread:        the moment the parcel passed the tunnel undecoded
- recirculation: the second read at the sorter
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FAULT_KINDS = ("missort", "delay", "lost", "noread", "recirculation")


@dataclass(frozen=True, slots=True)
class Fault:
    tracking_id: str
    kind: str  # one of FAULT_KINDS
    site: str
    read_point: str  # where: the wrong chute, the stage held at, the last read point ...
    stage: str
    at_s: float  # scenario seconds: when the fault happened (see docs/scenarios.md)
    detectable_at_s: float  # scenario seconds from which a detector can know it
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def after_read_point(self) -> str:
        """For lost parcels: the last read point that saw it (the foundation's name)."""
        return self.read_point

    def to_dict(self, start: datetime) -> dict[str, Any]:
        return {
            "tracking_id": self.tracking_id,
            "kind": self.kind,
            "site": self.site,
            "read_point": self.read_point,
            "stage": self.stage,
            "at_s": self.at_s,
            "detectable_at_s": self.detectable_at_s,
            "detectable_at": wall_clock(start, self.detectable_at_s),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fault:
        return cls(
            tracking_id=raw["tracking_id"],
            kind=raw["kind"],
            site=raw["site"],
            read_point=raw["read_point"],
            stage=raw["stage"],
            at_s=float(raw["at_s"]),
            detectable_at_s=float(raw["detectable_at_s"]),
            details=dict(raw.get("details", {})),
        )


def wall_clock(start: datetime, at_s: float, speed: float = 1.0) -> str:
    """Scenario seconds as wall-clock time, for a playback started at `start` at `speed`."""
    return (start + timedelta(seconds=at_s / speed)).isoformat(timespec="milliseconds")
