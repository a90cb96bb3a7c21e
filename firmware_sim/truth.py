"""Ground truth: every injected fault, where it happened and from when a detector
can know it. The definitions of `detectable_at_s` follow the stage standards:

- delay:         arrival read at the stage + the stage standard for the parcel's class
- lost:          last read + the standard of the stage of that last read point
- missort:       the read at the wrong chute
- noread:        the moment the parcel passed the tunnel undecoded
- recirculation: the second read at the sorter
- misroute:      the first read at the wrong site (its induction line)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from parceltrack.errors import ParceltrackError

FAULT_KINDS = ("missort", "delay", "lost", "noread", "recirculation", "misroute")


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

    def to_dict(self, start: datetime, speed: float = 1.0) -> dict[str, Any]:
        """The fault as in the scenario file; wall-clock fields for a playback that
        started at `start` at `speed` (the file itself: nominal start, speed 1)."""
        return {
            "tracking_id": self.tracking_id,
            "kind": self.kind,
            "site": self.site,
            "read_point": self.read_point,
            "stage": self.stage,
            "at_s": self.at_s,
            "detectable_at_s": self.detectable_at_s,
            "detectable_at": wall_clock(start, self.detectable_at_s, speed),
            "details": self.details,
            "at": wall_clock(start, self.at_s, speed),
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


class TruthFileError(ParceltrackError, ValueError):
    """A ground-truth JSON Lines file that cannot be read; the message says where."""


def read_truth_lines(path: Path) -> list[tuple[Fault, datetime]]:
    """A `--truth-out` file: each fault with its wall-clock `detectable_at`."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TruthFileError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            out.append((Fault.from_dict(raw), datetime.fromisoformat(raw["detectable_at"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise TruthFileError(f"{path}:{number}: not a fault record ({exc!r})") from exc
    return out
