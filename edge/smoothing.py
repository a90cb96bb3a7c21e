"""Read smoothing, as RFID middleware does it (ALE event cycles): a gate reads a tag
dozens of times a second; the read point reports one pass per tag, with first and
last seen, read count, peak RSSI and the antennas, closed after a quiet interval.

Direction: where the read point names each antenna's position along the direction of
travel, the order in which the antennas saw the tag (mean time of each antenna's
reads, which is robust to stray reads at the edges of the field) says which way it
went: towards higher positions is "in", towards lower ones "out".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.drivers import RfidRead


@dataclass(frozen=True, slots=True)
class SmoothingSettings:
    quiet_s: float = 1.0
    antenna_positions: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TagPass:
    """One tag's pass through one read point."""

    epc_hex: str
    first_seen: float
    last_seen: float
    read_count: int
    peak_rssi: float
    peak_antenna: int
    antennas: tuple[int, ...]  # in the order they saw the tag (mean read time)
    direction: str | None


@dataclass(slots=True)
class _Open:
    first: float
    last: float
    count: int
    peak_rssi: float
    peak_antenna: int
    antenna_sums: dict[int, list[float]]  # antenna -> [sum of times, count]


class Smoother:
    def __init__(self, settings: SmoothingSettings) -> None:
        self.settings = settings
        self._open: dict[str, _Open] = {}
        self.passes_closed = 0

    @property
    def open_passes(self) -> int:
        return len(self._open)

    def add(self, read: RfidRead) -> None:
        p = self._open.get(read.epc_hex)
        if p is None:
            self._open[read.epc_hex] = _Open(
                read.at, read.at, 1, read.rssi, read.antenna, {read.antenna: [read.at, 1.0]}
            )
            return
        p.first = min(p.first, read.at)
        p.last = max(p.last, read.at)
        p.count += 1
        if read.rssi > p.peak_rssi:
            p.peak_rssi, p.peak_antenna = read.rssi, read.antenna
        acc = p.antenna_sums.get(read.antenna)
        if acc is None:
            p.antenna_sums[read.antenna] = [read.at, 1.0]
        else:
            acc[0] += read.at
            acc[1] += 1

    def close_quiet(self, now: float) -> list[TagPass]:
        """Passes whose tag has not been read for the quiet interval."""
        limit = now - self.settings.quiet_s
        done = [epc for epc, p in self._open.items() if p.last <= limit]
        return [self._close(epc) for epc in done]

    def close_all(self) -> list[TagPass]:
        """Every open pass (on shutdown, so none is lost to a clean stop)."""
        return [self._close(epc) for epc in list(self._open)]

    def _close(self, epc: str) -> TagPass:
        p = self._open.pop(epc)
        self.passes_closed += 1
        order = sorted(p.antenna_sums, key=lambda a: p.antenna_sums[a][0] / p.antenna_sums[a][1])
        return TagPass(
            epc, p.first, p.last, p.count, p.peak_rssi, p.peak_antenna,
            tuple(order), self._direction(order),
        )  # fmt: skip

    def _direction(self, order: list[int]) -> str | None:
        positions = self.settings.antenna_positions
        known = [positions[a] for a in order if a in positions]
        if len(known) < 2 or known[0] == known[-1]:
            return None
        return "in" if known[-1] > known[0] else "out"
