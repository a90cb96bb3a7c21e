"""The detection engine: reads in, alert changes out; no I/O.

It ties the parcel state (detect/core.py), the device state (detect/devices.py)
and the reference arrays together, and turns the slots the checks return into
`AlertChange` records (alerts are few; parcels are many). The service persists
and publishes the changes; the scorer (bench/score.py) compares them with a
scenario's ground truth. The same code runs in both.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from detect.core import BIT, ParcelState, apply_reads, holds, tick
from detect.devices import DeviceState, DeviceThresholds
from detect.keys import KeyCodec
from detect.reference import Reference
from parceltrack.alerts import DEVICE_KINDS, PARCEL_KINDS, AlertKind

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    """Per parcel: service class, destination, origin and destination site, accepted."""

    service_class: str
    destination: str
    origin_site: str | None
    destination_site: str | None
    accepted_at: float
    tagged: bool = True  # carries an RFID tag (the manifest names its EPC)


@dataclass(frozen=True, slots=True)
class ScanBatch:
    """Scans as columns. `tracking_id` is None for no-reads."""

    tracking_id: Sequence[str | None]
    read_point: Sequence[str]
    device: Sequence[str]
    site: Sequence[str]
    ts: F64
    noread: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class AlertChange:
    action: str  # "open" or "resolve"
    kind: AlertKind
    fingerprint: str
    site_id: str | None = None
    read_point_id: str | None = None
    device_id: str | None = None
    tracking_id: str | None = None
    detectable_at: float | None = None
    episode: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def fingerprint(kind: AlertKind, subject: str) -> str:
    """Stable identity of an alert: one live alert per parcel (or device) and kind."""
    return f"{kind}:{subject}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class Engine:
    def __init__(
        self,
        ref: Reference,
        manifest: Callable[[list[str]], dict[str, ManifestFacts]],
        thresholds: DeviceThresholds | None = None,
        capacity: int = 1024,
        site_thresholds: dict[str, DeviceThresholds] | None = None,
    ) -> None:
        self.ref = ref
        self.manifest = manifest
        self.state = ParcelState(capacity)
        self.devices = DeviceState(thresholds or DeviceThresholds(), site_thresholds)
        self.codec = KeyCodec()
        self.unknown_read_points = 0
        self.new_ids: list[str] = []  # parcels the last batch brought into the state

    # -- reads -------------------------------------------------------------------------

    def ingest(self, batch: ScanBatch) -> list[AlertChange]:
        """Apply a batch of scans; returns the alerts it resolves."""
        self.new_ids = []
        if len(batch) == 0:
            return []
        changes: list[AlertChange] = []
        dev = self.devices.indices(batch.device, batch.site)
        self.devices.count(dev, batch.ts, batch.noread)
        for d in self.devices.heard(dev, batch.ts).tolist():
            changes.append(self._device_change("resolve", AlertKind.SILENCE, d))
        # Columns as object arrays: the per-row work (None checks, dictionary lookups)
        # runs in C loops, not in Python (a restart replays millions of rows).
        tracking_ids = np.asarray(batch.tracking_id, dtype=object)
        read = np.flatnonzero(~batch.noread & np.not_equal(tracking_ids, cast(Any, None)))
        if len(read) == 0:
            return changes
        ids = tracking_ids[read].tolist()
        names = np.asarray(batch.read_point, dtype=object)[read].tolist()
        rp = np.fromiter(
            map(self.ref.rp_index.get, names, itertools.repeat(-1)), dtype=np.int32, count=len(read)
        )
        self.unknown_read_points += int((rp < 0).sum())
        keys = self.codec.encode(ids)
        slots, new = self.state.slots_for(keys)
        if len(new):
            self._fill(new)
        outcome = apply_reads(self.state, self.ref, slots, rp, batch.ts[read])
        for kind, resolved in outcome.resolved.items():
            for s in resolved.tolist():
                changes.append(self._parcel_change("resolve", kind, s))
        late = outcome.late
        for i, s in enumerate(late.slots.tolist()):
            tracking = self.tracking_id(s)
            rp_name = self.ref.read_points[int(late.read_point[i])]
            site = self.ref.sites[int(self.ref.rp_site[int(late.read_point[i])])]
            fp = fingerprint(AlertKind.DELAY, tracking)
            entered = float(late.entered[i])
            details = {
                "entered_stage": _iso(entered),
                "deadline": _iso(float(late.due[i])),
                "arrived_late_at": _iso(float(self.state.last_seen[s])),
            }
            changes.append(
                AlertChange("open", AlertKind.DELAY, fp, site, rp_name, None, tracking,
                            float(late.due[i]), f"{rp_name}@{entered:.3f}", details)
            )  # fmt: skip
            changes.append(
                AlertChange("resolve", AlertKind.DELAY, fp, site, rp_name, tracking_id=tracking)
            )
        return changes

    def _fill(self, slots: I64) -> None:
        ids = self.codec.decode_many(self.state.key[slots])
        self.new_ids = ids
        facts = self.manifest(ids)
        ref = self.ref
        n = len(ids)
        svc = np.zeros(n, dtype=np.int8)
        dest = np.full(n, -1, dtype=np.int16)
        origin = np.full(n, -1, dtype=np.int16)
        dsite = np.full(n, -1, dtype=np.int16)
        delivery = np.full(n, np.inf)
        tagged = np.ones(n, dtype=np.bool_)
        for i, t in enumerate(ids):
            f = facts.get(t)
            if f is None:
                continue  # not in the manifest: still tracked, never judged by plan or route
            c = ref.class_index.get(f.service_class, 0)
            svc[i] = c
            dest[i] = ref.dest_index.get(f.destination, -1)
            origin[i] = ref.site_index.get(f.origin_site or "", -1)
            dsite[i] = ref.site_index.get(f.destination_site or "", -1)
            delivery[i] = f.accepted_at + float(ref.delivery_s[c])
            tagged[i] = f.tagged
        self.state.set_attributes(slots, svc, dest, origin, dsite, delivery, tagged)

    # -- ticks -------------------------------------------------------------------------

    def tick(self, now: float) -> list[AlertChange]:
        """Alerts to open (and device alerts to close) at `now`."""
        changes: list[AlertChange] = []
        for kind, slots in tick(self.state, now).items():
            for s in slots.tolist():
                changes.append(self._parcel_change("open", kind, s))
        opened, closed = self.devices.check(now)
        for kind in DEVICE_KINDS:
            for d in opened[kind].tolist():
                changes.append(self._device_change("open", kind, d, now))
            for d in closed[kind].tolist():
                changes.append(self._device_change("resolve", kind, d))
        return changes

    def tracking_id(self, slot: int) -> str:
        return self.codec.decode(int(self.state.key[slot]))

    def _parcel_change(self, action: str, kind: AlertKind, slot: int) -> AlertChange:
        st, ref = self.state, self.ref
        tracking = self.tracking_id(slot)
        rp = int(st.rp[slot])
        # A mis-sort or mis-route names where it was seen (the wrong chute, the first
        # read at the wrong site), wherever the parcel is by now.
        place, seen_at = {
            AlertKind.MISSORT: (st.missort_rp, st.missort_at),
            AlertKind.MISROUTE: (st.misroute_rp, st.misroute_at),
        }.get(kind, (None, None))
        if action == "open" and place is not None and seen_at is not None and place[slot] >= 0:
            rp = int(place[slot])
        rp_name = ref.read_points[rp] if rp >= 0 else None
        site = ref.sites[int(ref.rp_site[rp])] if rp >= 0 else None
        if action == "resolve":
            return AlertChange(
                action, kind, fingerprint(kind, tracking), site, rp_name, tracking_id=tracking
            )
        at = {
            AlertKind.DELAY: float(st.deadline[slot]),
            AlertKind.MISSING: float(st.missing_at[slot]),
            AlertKind.LATE: float(st.late_at[slot]),
        }.get(kind, float(st.last_seen[slot]))
        details: dict[str, Any] = {
            "last_seen": _iso(float(st.last_seen[slot])),
            "stage": ref.stages[int(st.stage[slot])] if rp >= 0 else None,
            "entered_stage": _iso(float(st.entered[slot])),
        }
        if kind == AlertKind.MISSORT:
            planned = int(st.planned_chute[slot])
            details["planned_chute"] = ref.read_points[planned] if planned >= 0 else None
        if kind == AlertKind.MISROUTE:
            ds = int(st.dest_site[slot])
            details["destination_site"] = ref.sites[ds] if ds >= 0 else None
        if kind in (AlertKind.DELAY, AlertKind.MISSING, AlertKind.LATE):
            details["deadline"] = _iso(at)
        episode = f"{rp_name}@{float(st.entered[slot]):.3f}"
        if kind in (AlertKind.MISSORT, AlertKind.MISROUTE):
            seen = float(st.last_seen[slot])
            if seen_at is not None and not np.isnan(seen_at[slot]):
                seen = float(seen_at[slot])
            episode = f"{rp_name}@{seen:.3f}"
        return AlertChange(
            action,
            kind,
            fingerprint(kind, tracking),
            site,
            rp_name,
            None,
            tracking,
            at,
            episode,
            details,
        )

    def _device_change(self, action: str, kind: AlertKind, d: int, now: float = 0.0) -> AlertChange:
        dev = self.devices
        device = dev.ids[d]
        if action == "resolve":
            return AlertChange(
                action, kind, fingerprint(kind, device), dev.site[d], device_id=device
            )
        details: dict[str, Any] = {}
        at = now
        if kind == AlertKind.SILENCE:
            at = float(dev.last_heard[d] + dev.silence_s[d])
            details["last_heard"] = _iso(float(dev.last_heard[d]))
        else:
            rate, base, reads, _ = dev.rates(now)
            details.update(
                rate=round(float(rate[d]), 4),
                baseline=round(float(base[d]), 4),
                reads=int(reads[d]),
            )
        return AlertChange(
            action,
            kind,
            fingerprint(kind, device),
            dev.site[d],
            device_id=device,
            detectable_at=at,
            episode=f"{device}@{at:.3f}",
            details=details,
        )

    # -- restart -----------------------------------------------------------------------

    def adopt_live(
        self, live: Sequence[tuple[str, str, str | None]], now: float
    ) -> list[AlertChange]:
        """Mark alerts live in the database as open; resolve those no longer true.

        `live` holds (kind, subject, read point) of alerts not resolved. Called after
        the state was rebuilt from the scans, so a restart neither duplicates nor loses
        an alert, and for parcels a batch brings back into the state. Alerts of parcels
        not in the state are left alone.
        """
        changes: list[AlertChange] = []
        # Kinds come from the database as text; other kinds are not the detector's.
        parcel = [(AlertKind(k), s, rp) for k, s, rp in live if k in PARCEL_KINDS]
        if parcel:
            keys = self.codec.encode([s for _, s, _ in parcel])
            slots = self.state.find(keys)
            for (kind, subject, rp), slot in zip(parcel, slots.tolist(), strict=True):
                st_rp = int(self.state.rp[slot]) if slot >= 0 else -1
                cur = self.ref.read_points[st_rp] if st_rp >= 0 else None
                moved = (
                    kind in (AlertKind.DELAY, AlertKind.MISSING) and rp is not None and cur != rp
                )
                if slot < 0:
                    continue  # not seen lately: left as it is until the parcel turns up
                still = bool(holds(self.state, kind, np.array([slot]), now)[0])
                if still and not moved:
                    self.state.open[slot] |= BIT[kind]
                else:
                    changes.append(
                        AlertChange(
                            "resolve", kind, fingerprint(kind, subject), tracking_id=subject
                        )
                    )
        for text, subject, _ in live:
            if text in DEVICE_KINDS:
                kind = AlertKind(text)
                d = self.devices.index.get(subject)
                if d is not None:
                    self.devices.mark_open(np.array([d]), kind)
                else:
                    changes.append(
                        AlertChange("resolve", kind, fingerprint(kind, subject), device_id=subject)
                    )
        return changes

    def heard_from(self, devices: list[str], sites: list[str], at: F64) -> list[AlertChange]:
        """Health reports: a device heard from is not silent; returns silences ended."""
        dev = self.devices.indices(devices, sites)
        return [
            self._device_change("resolve", AlertKind.SILENCE, d)
            for d in self.devices.heard(dev, at).tolist()
        ]
