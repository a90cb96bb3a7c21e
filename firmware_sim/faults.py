"""Device faults, each configurable by rate (per frame) or by schedule (time windows):
garbled bytes, bad checksums, truncated frames, duplicate and dropped reads, clock
skew, a device that goes silent, a device unplugged and plugged back in."""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("garble", "bad_checksum", "truncate", "duplicate", "drop", "silent", "unplug")


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """From `start_s` to `end_s` after the device started, `kind` applies to every frame
    (or, for silent and unplug, the device says nothing / is gone)."""

    start_s: float
    end_s: float
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    garble_rate: float = 0.0  # random bytes before a frame
    bad_checksum_rate: float = 0.0  # last byte of a frame flipped
    truncate_rate: float = 0.0  # a frame cut short
    duplicate_rate: float = 0.0  # a tag read sent twice
    drop_rate: float = 0.0  # a tag read never sent
    clock_skew_s: float = 0.0  # device clock offset from the host's
    clock_drift: float = 0.0  # 0.01: the device clock runs 1 % fast
    schedule: tuple[FaultWindow, ...] = ()
    seed: int = 0

    def active(self, elapsed_s: float) -> set[str]:
        return {w.kind for w in self.schedule if w.start_s <= elapsed_s < w.end_s}


@dataclass
class FaultCounts:
    garbled: int = 0
    bad_checksum: int = 0
    truncated: int = 0
    duplicated: int = 0
    dropped: int = 0


def mangle(
    frames: list[bytes],
    plan: FaultPlan,
    rng: random.Random,
    counts: FaultCounts,
    forced: set[str] = frozenset(),  # type: ignore[assignment]
) -> bytes:
    """The bytes a faulty device puts on the line for these frames (pure but for rng)."""
    out = bytearray()
    for f in frames:
        if "drop" in forced or (plan.drop_rate and rng.random() < plan.drop_rate):
            counts.dropped += 1
            continue
        copies = 1
        if "duplicate" in forced or (plan.duplicate_rate and rng.random() < plan.duplicate_rate):
            counts.duplicated += 1
            copies = 2
        for _ in range(copies):
            data = bytearray(f)
            if "garble" in forced or (plan.garble_rate and rng.random() < plan.garble_rate):
                counts.garbled += 1
                out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
            if "bad_checksum" in forced or (
                plan.bad_checksum_rate and rng.random() < plan.bad_checksum_rate
            ):
                counts.bad_checksum += 1
                data[-1] ^= 0x5A
            if "truncate" in forced or (plan.truncate_rate and rng.random() < plan.truncate_rate):
                counts.truncated += 1
                data = data[: rng.randrange(1, len(data))]
            out += data
    return bytes(out)
