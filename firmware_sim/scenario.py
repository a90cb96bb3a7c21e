"""A sorting-centre scenario: sites and their layouts, versioned sort plans, service
classes and standards, the manifest, every read each device will make, and the ground
truth about every injected fault. Pure and deterministic for a seed (numpy's PCG64);
the file format is documented in docs/scenarios.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim.arrivals import DAILY_PROFILE, FLAT_PROFILE, Peak, arrival_times
from firmware_sim.epc import SSCC96
from firmware_sim.layout import (
    ReadPointSpec,
    SiteSpec,
    SortPlan,
    SortPlanEntry,
    site_layout,
    sort_plans,
)
from firmware_sim.standards import SERVICE_CLASSES, ServiceClass, StageStandard, stage_standards
from firmware_sim.truth import FAULT_KINDS, Fault, wall_clock
from parceltrack.errors import ParceltrackError
from parceltrack.identifiers import S10

FORMAT = "parceltrack-scenario"
FORMAT_VERSION = 1

# A parcel's reads, in order, as columns of the per-parcel matrix: the sorter read
# twice when the parcel is recirculated (slot SORTER_AGAIN).
SLOTS = ("induction", "tunnel", "sorter", "sorter_again", "chute", "door")
_IND, _TUN, _SRT, _SRT2, _CHU, _DOR = range(6)
# Which slot's read starts each timed stage (induction, tunnel, sort, chute).
_STAGE_SLOT = (_IND, _TUN, _SRT, _CHU)
_TIMED = ("induction", "tunnel", "sort", "chute")


class ScenarioError(ParceltrackError, ValueError):
    """A scenario configuration or file that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Fraction of parcels given each fault; each parcel gets at most one. The count of
    each kind is exactly round(rate x parcels)."""

    missort: float = 0.0
    delay: float = 0.0
    lost: float = 0.0
    noread: float = 0.0
    recirculation: float = 0.0

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(getattr(self, k) for k in FAULT_KINDS)


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    seed: int = 1
    sites: tuple[str, ...] = ("LHR1", "MAN1", "EDI1")
    rfid_sites: tuple[str, ...] = ("MAN1",)
    destinations: tuple[str, ...] = ("LON", "MAN", "BHX", "GLA", "EDI", "BRS")
    chutes: int = 0  # 0: one per destination plus a spare
    induction_lines: int = 2
    parcels: int | None = 1000  # None: every arrival within duration_s
    duration_s: float | None = None
    rate_per_hour: float = 7200.0  # all sites together, the day's average
    profile: tuple[float, ...] = DAILY_PROFILE
    peaks: tuple[Peak, ...] = ()
    start: str = "2026-01-05T06:00:00+00:00"  # wall clock of scenario time 0 (nominal)
    # Nominal seconds from arriving at a stage to the next read point.
    transit_s: tuple[tuple[str, float], ...] = (
        ("induction", 4.0),
        ("tunnel", 6.0),
        ("sort", 8.0),
        ("chute", 30.0),
    )
    site_factor_step: float = 0.1  # site i is (1 + i x step) slower, standards alike
    faults: FaultRates = field(default_factory=lambda: FaultRates(0.01, 0.01, 0.005, 0.02, 0.02))
    plan_change_fraction: float | None = 0.5  # sort plan v2 from this share of arrivals
    company_prefix: str = "0614141"  # GS1 company prefix of the SSCC-96 tags
    tag_dwell_s: float = 0.6  # how long a tag stays in an RFID gate's field

    @classmethod
    def barcode_only(
        cls,
        seed: int = 1,
        parcels: int = 50,
        rate_per_s: float = 2.0,
        lost_rate: float = 0.1,
        noread_rate: float = 0.02,
        site: str = "LHR1",
    ) -> ScenarioConfig:
        """One barcode-only site with lost parcels and tunnel no-reads only, at a flat
        rate: the shape the foundation's end-to-end test and overdue detector expect."""
        return cls(
            seed=seed,
            sites=(site,),
            rfid_sites=(),
            destinations=("LON", "MAN", "BHX", "GLA"),
            chutes=4,
            induction_lines=1,
            parcels=parcels,
            rate_per_hour=rate_per_s * 3600.0,
            profile=FLAT_PROFILE,
            faults=FaultRates(lost=lost_rate, noread=noread_rate),
        )

    def validate(self) -> None:
        if not self.sites or len(set(self.sites)) != len(self.sites):
            raise ScenarioError("sites must be a non-empty list of distinct names")
        if unknown := set(self.rfid_sites) - set(self.sites):
            raise ScenarioError(f"RFID sites {sorted(unknown)} are not among the sites")
        if not self.destinations:
            raise ScenarioError("at least one destination is needed")
        chutes = self.chutes or len(self.destinations) + 1
        if chutes < max(2, len(self.destinations)):
            raise ScenarioError("need at least one chute per destination (and two chutes)")
        if (self.parcels is None) == (self.duration_s is None):
            raise ScenarioError("give exactly one of parcels and duration_s")
        rates = self.faults.as_tuple()
        if min(rates) < 0 or sum(rates) > 1:
            raise ScenarioError("fault rates must be >= 0 and add up to at most 1")
        if {k for k, _ in self.transit_s} != set(_TIMED):
            raise ScenarioError(f"transit_s needs exactly the stages {_TIMED}")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    tracking_id: str
    service_class: str
    destination: str
    origin_site: str = ""
    destination_site: str = ""
    epc: str | None = None  # SSCC-96 hex for RFID-tagged items
    inducted_at_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ScheduledRead:
    at: float  # seconds of scenario time from the start
    device: str
    read_point: str
    code: str | None  # barcode: the S10 number; None: seen but not decoded (or RFID)
    epc: str | None = None  # RFID reads: the tag's EPC hex
    tracking_id: str = ""  # the parcel, whatever the device could read (truth)
    protocol: str = "barcode"


@dataclass(frozen=True)
class Reads:
    """Every read of the scenario as columns, ordered by time: milliseconds from the
    start, index into read_points, index into the manifest, decoded or not."""

    at_ms: npt.NDArray[np.int64]
    read_point: npt.NDArray[np.int32]
    parcel: npt.NDArray[np.int32]
    decoded: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.at_ms)


@dataclass
class Scenario:
    config: ScenarioConfig
    start: datetime
    sites: list[SiteSpec]
    read_points: list[ReadPointSpec]
    service_classes: list[ServiceClass]
    stage_standards: list[StageStandard]
    sort_plans: list[SortPlan]
    destinations: dict[str, str]  # destination -> the site that delivers it
    manifest: list[ManifestEntry]
    columns: Reads
    faults: list[Fault]

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def site(self) -> str:
        """The first site (single-site callers)."""
        return self.sites[0].site

    @property
    def duration_s(self) -> float:
        return float(self.columns.at_ms[-1]) / 1000.0 if len(self.columns) else 0.0

    @cached_property
    def reads(self) -> list[ScheduledRead]:
        """The reads as objects, in time order (built on first use)."""
        rps = self.read_points
        out = []
        for at, rp_i, p_i, ok in zip(
            self.columns.at_ms.tolist(),
            self.columns.read_point.tolist(),
            self.columns.parcel.tolist(),
            self.columns.decoded.tolist(),
            strict=True,
        ):
            rp, parcel = rps[rp_i], self.manifest[p_i]
            rfid = rp.is_rfid
            out.append(
                ScheduledRead(
                    at / 1000.0,
                    rp.device,
                    rp.read_point,
                    parcel.tracking_id if ok and not rfid else None,
                    parcel.epc if ok and rfid else None,
                    parcel.tracking_id,
                    rp.protocol,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "seed": self.config.seed,
            "config": asdict(self.config),
            "clock": {"start": self.start.isoformat(), "speed": 1.0},
            "duration_s": self.duration_s,
            "sites": [asdict(s) for s in self.sites],
            "read_points": [asdict(r) for r in self.read_points],
            "service_classes": [asdict(c) for c in self.service_classes],
            "stage_standards": [asdict(s) for s in self.stage_standards],
            "sort_plans": [
                {
                    "site": p.site,
                    "version": p.version,
                    "effective_from_s": p.effective_from_s,
                    "effective_from": wall_clock(self.start, p.effective_from_s),
                    "entries": [asdict(e) for e in p.entries],
                }
                for p in self.sort_plans
            ],
            "destinations": [
                {"destination": d, "destination_site": s} for d, s in self.destinations.items()
            ],
            "manifest": [asdict(m) for m in self.manifest],
            "faults": [f.to_dict(self.start) for f in self.faults],
            "reads": {
                "at_ms": self.columns.at_ms.tolist(),
                "read_point": self.columns.read_point.tolist(),
                "parcel": self.columns.parcel.tolist(),
                "decoded": self.columns.decoded.astype(np.int8).tolist(),
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> Scenario:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "scenario") -> Scenario:
        if raw.get("format") != FORMAT or raw.get("version") != FORMAT_VERSION:
            raise ScenarioError(
                f"{where} is not a {FORMAT} version {FORMAT_VERSION} file "
                f"(format={raw.get('format')!r}, version={raw.get('version')!r})"
            )
        try:
            return cls._from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise ScenarioError(f"{where} is malformed: {exc!r}") from exc

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Scenario:
        cfg = dict(raw["config"])
        cfg["faults"] = FaultRates(**cfg["faults"])
        cfg["peaks"] = tuple(Peak(**p) for p in cfg["peaks"])
        for key in ("sites", "rfid_sites", "destinations", "profile"):
            cfg[key] = tuple(cfg[key])
        cfg["transit_s"] = tuple((k, float(v)) for k, v in cfg["transit_s"])
        reads = raw["reads"]
        return cls(
            config=ScenarioConfig(**cfg),
            start=datetime.fromisoformat(raw["clock"]["start"]),
            sites=[SiteSpec(**s) for s in raw["sites"]],
            read_points=[ReadPointSpec(**r) for r in raw["read_points"]],
            service_classes=[ServiceClass(**c) for c in raw["service_classes"]],
            stage_standards=[StageStandard(**s) for s in raw["stage_standards"]],
            sort_plans=[
                SortPlan(
                    p["site"],
                    p["version"],
                    p["effective_from_s"],
                    tuple(SortPlanEntry(**e) for e in p["entries"]),
                )
                for p in raw["sort_plans"]
            ],
            destinations={d["destination"]: d["destination_site"] for d in raw["destinations"]},
            manifest=[ManifestEntry(**m) for m in raw["manifest"]],
            columns=Reads(
                np.asarray(reads["at_ms"], dtype=np.int64),
                np.asarray(reads["read_point"], dtype=np.int32),
                np.asarray(reads["parcel"], dtype=np.int32),
                np.asarray(reads["decoded"], dtype=np.bool_),
            ),
            faults=[Fault.from_dict(f) for f in raw["faults"]],
        )


def s10_serial(seed: int, n: int) -> int:
    """A distinct eight-digit serial per parcel (distinct for n < 89,999,999)."""
    return 10_000_000 + (seed * 7_919_111 + n) % 89_999_999


def generate(config: ScenarioConfig | None = None) -> Scenario:
    """Build the scenario the configuration describes; the same config gives the same
    scenario, byte for byte."""
    cfg = config or ScenarioConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    start = datetime.fromisoformat(cfg.start)
    start_hour = start.hour + start.minute / 60 + start.second / 3600
    arrivals = arrival_times(
        rng,
        cfg.rate_per_hour,
        cfg.profile,
        cfg.peaks,
        start_hour,
        parcels=cfg.parcels,
        duration_s=cfg.duration_s,
    )
    n = len(arrivals)
    chutes = cfg.chutes or len(cfg.destinations) + 1
    sites = [SiteSpec(s, f"Sorting centre {s}", s in cfg.rfid_sites) for s in cfg.sites]
    read_points = [rp for s in sites for rp in site_layout(s, chutes, cfg.induction_lines)]
    transit = dict(cfg.transit_s)
    classes = SERVICE_CLASSES
    factors = np.array([1.0 + cfg.site_factor_step * i for i in range(len(sites))])
    standards = [
        st
        for i, s in enumerate(sites)
        for st in stage_standards(s.site, float(factors[i]), transit, classes)
    ]
    change_at = (
        round(cfg.plan_change_fraction * float(arrivals[-1]), 3)
        if cfg.plan_change_fraction is not None and n
        else None
    )
    plans = [p for s in cfg.sites for p in sort_plans(s, cfg.destinations, chutes, change_at)]
    destinations = {d: cfg.sites[i % len(cfg.sites)] for i, d in enumerate(cfg.destinations)}

    # Everything random is drawn up front, for every parcel, in a fixed order: the
    # scenario stays reproducible whichever faults end up used.
    site_of = rng.integers(0, len(sites), n)
    dest_of = rng.integers(0, len(cfg.destinations), n)
    shares = np.array([c.share for c in classes])
    class_of = rng.choice(len(classes), size=n, p=shares / shares.sum())
    line_of = rng.integers(0, cfg.induction_lines, n)
    jitter = rng.uniform(0.8, 1.2, size=(n, 5))
    order = rng.permutation(n)
    delay_stage = rng.integers(0, len(_TIMED), n)
    delay_extra = rng.uniform(0.1, 1.0, n)
    lost_slot = np.array([_IND, _TUN, _SRT, _CHU])[rng.integers(0, 4, n)]
    wrong_pick = rng.integers(0, chutes - 1, n)

    kind_of = np.full(n, -1, dtype=np.int8)
    taken = 0
    for k, rate in enumerate(cfg.faults.as_tuple()):
        count = round(rate * n)
        kind_of[order[taken : taken + count]] = k
        taken += count
    missort, delay, lost, noread, recirc = (kind_of == k for k in range(len(FAULT_KINDS)))

    # standard[site, stage, class] and nominal[stage] in seconds
    nominal = np.array([transit[s] for s in _TIMED])
    slack = np.array([c.slack for c in classes])
    standard = np.round(factors[:, None, None] * nominal[None, :, None] * slack[None, None, :], 3)
    # Transit after each slot: induction, tunnel, sorter, sorter loop, chute.
    col_nominal = np.array([nominal[0], nominal[1], nominal[2], nominal[2], nominal[3]])
    dur = factors[site_of][:, None] * col_nominal[None, :] * jitter
    # A recirculated tray goes round about as long as the sorter's own transit, so the
    # second sorter read comes within the sort standard.
    stage_col = np.array([0, 1, 2, 4])[delay_stage]
    held = standard[site_of, delay_stage, class_of] * (1.0 + delay_extra)
    rows = np.flatnonzero(delay)
    dur[rows, stage_col[rows]] = held[rows]

    t = np.zeros((n, 6))
    t[:, _IND] = arrivals
    t[:, _TUN] = t[:, _IND] + dur[:, 0]
    t[:, _SRT] = t[:, _TUN] + dur[:, 1]
    t[:, _SRT2] = t[:, _SRT] + dur[:, 3]
    t[:, _CHU] = np.where(recirc, t[:, _SRT2], t[:, _SRT]) + dur[:, 2]
    t[:, _DOR] = t[:, _CHU] + dur[:, 4]
    t_ms = np.rint(t * 1000.0).astype(np.int64)

    change_ms = None if change_at is None else round(change_at * 1000)
    version_idx = (
        np.zeros(n, dtype=np.int64) if change_ms is None else (t_ms[:, _CHU] >= change_ms) * 1
    )
    assigned = (dest_of + version_idx) % chutes  # layout.sort_plans: v1 shift 0, v2 shift 1
    wrong = wrong_pick + (wrong_pick >= assigned)
    chute = np.where(missort, wrong, assigned)

    per_site = cfg.induction_lines + 2 + 2 * chutes
    base = site_of * per_site
    rp = np.empty((n, 6), dtype=np.int32)
    rp[:, _IND] = base + line_of
    rp[:, _TUN] = base + cfg.induction_lines
    rp[:, _SRT] = base + cfg.induction_lines + 1
    rp[:, _SRT2] = rp[:, _SRT]
    rp[:, _CHU] = base + cfg.induction_lines + 2 + 2 * chute
    rp[:, _DOR] = rp[:, _CHU] + 1

    slot = np.arange(6)
    present = np.ones((n, 6), dtype=np.bool_)
    present[:, _SRT2] = recirc
    present &= ~(lost[:, None] & (slot[None, :] > lost_slot[:, None]))
    decoded = np.ones((n, 6), dtype=np.bool_)
    decoded[:, _TUN] = ~noread
    is_rfid = np.array([r.is_rfid for r in read_points])
    # An RFID gate that misses a tag reports nothing at all; a scanner says NOREAD.
    emitted = present & (decoded | ~is_rfid[rp])

    parcel_idx = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], (n, 6))[emitted]
    at_flat, rp_flat, ok_flat = t_ms[emitted], rp[emitted], decoded[emitted]
    slot_flat = np.broadcast_to(slot[None, :], (n, 6))[emitted]
    sequence = np.lexsort((slot_flat, parcel_idx, at_flat))
    columns = Reads(
        at_flat[sequence],
        rp_flat[sequence].astype(np.int32),
        parcel_idx[sequence].astype(np.int32),
        ok_flat[sequence],
    )

    manifest = _manifest(cfg, n, classes, site_of, dest_of, class_of, t_ms, sites, destinations)
    faults = _truth(
        cfg, read_points, manifest, kind_of, site_of, class_of, delay_stage,
        lost_slot, t_ms, rp, assigned, version_idx, standard, chutes,
    )  # fmt: skip
    return Scenario(
        config=cfg,
        start=start,
        sites=sites,
        read_points=read_points,
        service_classes=list(classes),
        stage_standards=standards,
        sort_plans=plans,
        destinations=destinations,
        manifest=manifest,
        columns=columns,
        faults=faults,
    )


def _manifest(
    cfg: ScenarioConfig,
    n: int,
    classes: tuple[ServiceClass, ...],
    site_of: npt.NDArray[np.int64],
    dest_of: npt.NDArray[np.int64],
    class_of: npt.NDArray[np.int64],
    t_ms: npt.NDArray[np.int64],
    sites: list[SiteSpec],
    destinations: dict[str, str],
) -> list[ManifestEntry]:
    rfid = [s.rfid for s in sites]
    dest_names = list(cfg.destinations)
    out = []
    inducted = t_ms[:, _IND].tolist()
    for i, (s, d, c, at) in enumerate(
        zip(site_of.tolist(), dest_of.tolist(), class_of.tolist(), inducted, strict=True)
    ):
        serial = s10_serial(cfg.seed, i)
        klass = classes[c]
        epc = SSCC96(cfg.company_prefix, f"0{serial:09d}").hex if rfid[s] else None
        out.append(
            ManifestEntry(
                str(S10.make(klass.s10_prefix, serial, "GB")),
                klass.service_class,
                dest_names[d],
                sites[s].site,
                destinations[dest_names[d]],
                epc,
                at / 1000.0,
            )
        )
    return out


def _truth(
    cfg: ScenarioConfig,
    read_points: list[ReadPointSpec],
    manifest: list[ManifestEntry],
    kind_of: npt.NDArray[np.int8],
    site_of: npt.NDArray[np.int64],
    class_of: npt.NDArray[np.int64],
    delay_stage: npt.NDArray[np.int64],
    lost_slot: npt.NDArray[np.int64],
    t_ms: npt.NDArray[np.int64],
    rp: npt.NDArray[np.int32],
    assigned: npt.NDArray[np.int64],
    version_idx: npt.NDArray[np.int64],
    standard: npt.NDArray[np.float64],
    chutes: int,
) -> list[Fault]:
    """One Fault per faulty parcel; only those parcels are visited (a few percent)."""
    faults = []
    per_site = cfg.induction_lines + 2 + 2 * chutes
    for i in np.flatnonzero(kind_of >= 0).tolist():
        kind = FAULT_KINDS[int(kind_of[i])]
        m = manifest[i]
        site, cls = int(site_of[i]), int(class_of[i])

        def at(slot: int, i: int = i) -> float:
            return int(t_ms[i, slot]) / 1000.0

        def point(slot: int, i: int = i) -> ReadPointSpec:
            return read_points[int(rp[i, slot])]

        first_chute = site * per_site + cfg.induction_lines + 2
        expected_chute = read_points[first_chute + 2 * int(assigned[i])]
        if kind == "missort":
            where = point(_CHU)
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(_CHU), at(_CHU),
                {
                    "destination": m.destination,
                    "expected_chute": expected_chute.read_point,
                    "plan_version": int(version_idx[i]) + 1,
                },
            )  # fmt: skip
        elif kind == "delay":
            stage = int(delay_stage[i])
            slot = _STAGE_SLOT[stage]
            where = point(slot)
            limit = float(standard[site, stage, cls])
            next_slot = {_IND: _TUN, _TUN: _SRT, _SRT: _CHU, _CHU: _DOR}[slot]
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(slot), round(at(slot) + limit, 3),
                {
                    "standard_s": limit,
                    "held_s": round(at(next_slot) - at(slot), 3),
                    "next_read_point": point(next_slot).read_point,
                    "next_read_at_s": at(next_slot),
                },
            )  # fmt: skip
        elif kind == "lost":
            slot = int(lost_slot[i])
            where = point(slot)
            stage = _STAGE_SLOT.index(slot)
            limit = float(standard[site, stage, cls])
            expected_next = {
                _IND: point(_TUN).read_point,
                _TUN: point(_SRT).read_point,
                _SRT: expected_chute.read_point,
                _CHU: point(_DOR).read_point,
            }[slot]
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(slot), round(at(slot) + limit, 3),
                {"standard_s": limit, "expected_next_read_point": expected_next},
            )  # fmt: skip
        elif kind == "noread":
            where = point(_TUN)
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(_TUN), at(_TUN), {"protocol": where.protocol},
            )  # fmt: skip
        else:  # recirculation
            where = point(_SRT)
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(_SRT), at(_SRT2), {"loops": 1},
            )  # fmt: skip
        faults.append(fault)
    faults.sort(key=lambda f: (f.detectable_at_s, f.tracking_id, f.kind))
    return faults
