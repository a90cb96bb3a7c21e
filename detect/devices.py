"""Device checks over all devices at once: silence and no-read spikes.

Each device keeps a ring of `bins` time bins (reads and no-reads counted per bin,
by the scan's own time). A no-read spike is the rate over the latest
`window_bins` bins jumping above both an absolute threshold and `jump` times the
device's own rate over the rest of the ring (its recent normal); it closes only
once the rate falls below a lower threshold (hysteresis). A device is silent when
nothing was heard from it (scan or health report) for its site's silence window;
the alert closes when it is heard again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from parceltrack.alerts import DEVICE_KINDS, AlertKind

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# One bit per device kind in `open`, built once from the ground's kinds.
_BIT: dict[AlertKind, np.uint8] = {k: np.uint8(1 << i) for i, k in enumerate(DEVICE_KINDS)}


@dataclass(frozen=True, slots=True)
class DeviceThresholds:
    """Per site: how long a device may stay quiet, and what a no-read spike is."""

    silence_s: float = 60.0
    bin_s: float = 10.0
    window_bins: int = 6
    bins: int = 60
    open_rate: float = 0.2
    close_rate: float = 0.1
    jump: float = 3.0
    min_reads: int = 20
    # A few no-reads cluster by chance at low traffic: a spike needs this many at least.
    min_noreads: int = 8


class DeviceState:
    """Columns per device index; devices are few (hundreds), so a dict maps names."""

    def __init__(
        self,
        thresholds: DeviceThresholds,
        per_site: dict[str, DeviceThresholds] | None = None,
    ) -> None:
        # The ring's geometry (bin_s, window_bins, bins) is one for all; the limits are
        # per site, as columns per device.
        self.t = thresholds
        self.per_site = per_site or {}
        self.limits = {
            name: np.empty(0, dtype=np.float64)
            for name in ("open_rate", "close_rate", "jump", "min_reads", "min_noreads")
        }
        self.ids: list[str] = []
        self.site: list[str] = []
        self.index: dict[str, int] = {}
        self.last_heard = np.empty(0, dtype=np.float64)
        self.silence_s = np.empty(0, dtype=np.float64)
        self.reads = np.zeros((0, thresholds.bins), dtype=np.int32)
        self.noreads = np.zeros((0, thresholds.bins), dtype=np.int32)
        self.bin_no = np.full((0, thresholds.bins), -1, dtype=np.int64)
        self.open = np.zeros(0, dtype=np.uint8)
        self.since = np.empty(0, dtype=np.float64)  # when the spike condition began

    _ARRAYS = ("last_heard", "silence_s", "reads", "noreads", "bin_no", "open", "since")

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """Copies of every device column, names and sites included (for a checkpoint)."""
        out: dict[str, npt.NDArray[Any]] = {n: getattr(self, n).copy() for n in self._ARRAYS}
        out.update({f"limit_{n}": col.copy() for n, col in self.limits.items()})
        out["ids"] = np.array(self.ids, dtype=np.str_)
        out["site"] = np.array(self.site, dtype=np.str_)
        return out

    def restore(self, columns: dict[str, npt.NDArray[Any]]) -> None:
        """Take the state of `columns()`; raises ValueError where it does not fit this
        state's ring of bins (another bin geometry) or is malformed."""
        n = len(columns["ids"])
        for name in self._ARRAYS:
            col, mine = columns.get(name), getattr(self, name)
            if col is None or col.dtype != mine.dtype or col.shape[1:] != mine.shape[1:]:
                raise ValueError(f"device column {name!r} does not fit this detector")
            if len(col) != n:
                raise ValueError(f"device column {name!r} has {len(col)} rows, not {n}")
        limits = {name: columns.get(f"limit_{name}") for name in self.limits}
        if any(c is None or c.shape != (n,) for c in limits.values()):
            raise ValueError("device limits are missing or malformed")
        for name in self._ARRAYS:
            setattr(self, name, columns[name].copy())
        self.limits = {name: np.asarray(c, dtype=np.float64) for name, c in limits.items()}
        self.ids = [str(d) for d in columns["ids"].tolist()]
        self.site = [str(s) for s in columns["site"].tolist()]
        self.index = {d: i for i, d in enumerate(self.ids)}

    def indices(self, devices: Sequence[str], sites: Sequence[str]) -> I64:
        # dict.get mapped in C over the batch; Python runs only for devices not seen yet.
        found = list(map(self.index.get, devices))
        added = 0
        windows: list[DeviceThresholds] = []
        if None in found:
            for i in [i for i, idx in enumerate(found) if idx is None]:
                d, s = devices[i], sites[i]
                idx = self.index.get(d)
                if idx is None:
                    idx = self.index[d] = len(self.ids)
                    self.ids.append(d)
                    self.site.append(s)
                    windows.append(self.per_site.get(s, self.t))
                    added += 1
                found[i] = idx
        out = np.fromiter(found, dtype=np.int64, count=len(found))
        if added:
            n, b = len(self.ids), self.t.bins
            self.last_heard = np.concatenate([self.last_heard, np.full(added, np.nan)])
            self.silence_s = np.concatenate([self.silence_s, [w.silence_s for w in windows]])
            for name, col in self.limits.items():
                extra = np.array([float(getattr(w, name)) for w in windows])
                self.limits[name] = np.concatenate([col, extra])
            self.reads = np.vstack([self.reads, np.zeros((added, b), dtype=np.int32)])
            self.noreads = np.vstack([self.noreads, np.zeros((added, b), dtype=np.int32)])
            self.bin_no = np.vstack([self.bin_no, np.full((added, b), -1, dtype=np.int64)])
            self.open = np.concatenate([self.open, np.zeros(added, dtype=np.uint8)])
            self.since = np.concatenate([self.since, np.full(added, np.nan)])
            assert len(self.open) == n
        return out

    def set_limits(self, per_site: dict[str, DeviceThresholds]) -> None:
        """New per-site silence windows and spike limits for every device, at once (the
        ring's geometry stays: changing it needs a restart)."""
        self.per_site = per_site
        windows = [per_site.get(s, self.t) for s in self.site]
        self.silence_s = np.array([w.silence_s for w in windows], dtype=np.float64)
        for name in self.limits:
            self.limits[name] = np.array([float(getattr(w, name)) for w in windows])

    def heard(self, dev: I64, at: F64) -> I64:
        """Record that devices were heard at these times; returns silences this ends."""
        if len(dev) == 0:
            return np.empty(0, dtype=np.int64)
        np.fmax.at(self.last_heard, dev, at)
        u: I64 = np.unique(dev)
        back: I64 = u[
            ((self.open[u] & _BIT[AlertKind.SILENCE]) != 0) & ~self._silent(u, np.nanmax(at))
        ]
        self.open[back] &= ~_BIT[AlertKind.SILENCE]
        return back

    def _silent(self, dev: I64, now: float) -> npt.NDArray[np.bool_]:
        quiet: npt.NDArray[np.bool_] = (now - self.last_heard[dev]) > self.silence_s[dev]
        return quiet

    def count(self, dev: I64, ts: F64, noread: npt.NDArray[np.bool_]) -> None:
        """Count scans into each device's ring of bins by the scan's time."""
        if len(dev) == 0:
            return
        b = np.floor(ts / self.t.bin_s).astype(np.int64)
        col = b % self.t.bins
        # A ring slot holding an older bin is reset before counting into it.
        stale = self.bin_no[dev, col] < b
        self.reads[dev[stale], col[stale]] = 0
        self.noreads[dev[stale], col[stale]] = 0
        np.maximum.at(self.bin_no, (dev, col), b)
        current = self.bin_no[dev, col] == b
        np.add.at(self.reads, (dev[current], col[current]), 1)
        np.add.at(self.noreads, (dev[current], col[current]), noread[current].astype(np.int32))

    def rates(self, now: float) -> tuple[F64, F64, F64, F64]:
        """No-read rate over the recent window and over the rest of the ring; the recent
        window's scans and no-reads."""
        b_now = int(np.floor(now / self.t.bin_s))
        age = b_now - self.bin_no
        valid = (age >= 0) & (age < self.t.bins)
        recent = valid & (age < self.t.window_bins)
        older = valid & ~recent
        r_reads = np.where(recent, self.reads, 0).sum(axis=1).astype(np.float64)
        r_no = np.where(recent, self.noreads, 0).sum(axis=1)
        o_reads = np.where(older, self.reads, 0).sum(axis=1).astype(np.float64)
        o_no = np.where(older, self.noreads, 0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(r_reads > 0, r_no / np.maximum(r_reads, 1), 0.0)
            base = np.where(o_reads > 0, o_no / np.maximum(o_reads, 1), 0.0)
        return rate, base, r_reads, r_no.astype(np.float64)

    def check(self, now: float) -> tuple[dict[AlertKind, I64], dict[AlertKind, I64]]:
        """(to open, to close) device indices per kind at `now`."""
        n = len(self.ids)
        opened: dict[AlertKind, I64] = {}
        closed: dict[AlertKind, I64] = {}
        if n == 0:
            e = np.empty(0, dtype=np.int64)
            return {k: e for k in DEVICE_KINDS}, {k: e for k in DEVICE_KINDS}
        idx = np.arange(n)
        silent = ~np.isnan(self.last_heard) & self._silent(idx, now)
        live_s = (self.open & _BIT[AlertKind.SILENCE]) != 0
        opened[AlertKind.SILENCE] = np.flatnonzero(silent & ~live_s)
        closed[AlertKind.SILENCE] = np.flatnonzero(live_s & ~silent)
        rate, base, reads, noreads = self.rates(now)
        lim = self.limits
        spike = (
            (reads >= lim["min_reads"])
            & (noreads >= lim["min_noreads"])
            & (rate >= lim["open_rate"])
            & (rate >= lim["jump"] * base)
        )
        live_n = (self.open & _BIT[AlertKind.NOREAD]) != 0
        # Closing needs as much evidence as opening: a quiet spell proves nothing.
        calm = (reads >= lim["min_reads"]) & (rate <= lim["close_rate"])
        opened[AlertKind.NOREAD] = np.flatnonzero(spike & ~live_n)
        closed[AlertKind.NOREAD] = np.flatnonzero(live_n & calm)
        for kind in DEVICE_KINDS:
            self.open[opened[kind]] |= _BIT[kind]
            self.open[closed[kind]] &= ~_BIT[kind]
        return opened, closed

    def mark_open(self, dev: I64, kind: AlertKind) -> None:
        self.open[dev] |= _BIT[kind]
