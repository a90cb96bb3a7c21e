"""A sorting-centre scenario: sites and their layouts, versioned sort plans, service
classes and standards, the manifest, every read each device will make, and the ground
truth about every injected fault. Pure and deterministic for a seed (numpy's PCG64);
the file format is documented in docs/scenarios.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from firmware_sim.arrivals import DAILY_PROFILE, FLAT_PROFILE, Peak, arrival_times
from firmware_sim.clock import PlaybackClock
from firmware_sim.hubs import DEFAULT_COUNTRY, Hub
from firmware_sim.layout import (
    ReadPointSpec,
    SiteSpec,
    SortPlan,
    SortPlanEntry,
    site_layout,
    sort_plans,
)
from firmware_sim.parcels import (
    CHU,
    DOR,
    IND,
    SRT,
    SRT2,
    TUN,
    ManifestEntry,
    Reads,
    ScheduledRead,
    build_manifest,
)
from firmware_sim.standards import SERVICE_CLASSES, ServiceClass, StageStandard, stage_standards
from firmware_sim.truth import FAULT_KINDS, Fault, record_faults, wall_clock
from parceltrack.errors import ParceltrackError
from parceltrack.i18n import LANGUAGES
from parceltrack.layout import TIMED_STAGES, Protocol, Stage, Zone
from storage import model
from storage.model import ReferenceData

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Fault",
    "FaultRates",
    "ManifestEntry",
    "Reads",
    "Scenario",
    "ScenarioConfig",
    "ScenarioError",
    "ScheduledRead",
    "generate",
]

FORMAT = "parceltrack-scenario"
FORMAT_VERSION = 1


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
    # Needs a site that is neither the parcel's origin nor its destination site; only
    # such parcels can get it, so the count is at most the number of them.
    misroute: float = 0.0

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
        (Stage.INDUCTION, 4.0),
        (Stage.TUNNEL, 6.0),
        (Stage.SORT, 8.0),
        (Stage.CHUTE, 30.0),
    )
    site_factor_step: float = 0.1  # site i is (1 + i x step) slower, standards alike
    faults: FaultRates = field(default_factory=lambda: FaultRates(0.01, 0.01, 0.005, 0.02, 0.02))
    plan_change_fraction: float | None = 0.5  # sort plan v2 from this share of arrivals
    company_prefix: str = "0614141"  # GS1 company prefix of the SSCC-96 tags
    tag_dwell_s: float = 0.6  # how long a tag stays in an RFID gate's field
    linehaul_s: float = 1800.0  # nominal door-to-induction time to another site
    # Centres with their own zone, S10 country, language and express standards
    # (firmware_sim/hubs.py), e.g. hubs.CHINESE_HUB; each must be among `sites`.
    hubs: tuple[Hub, ...] = ()
    # A delayed parcel takes 1.1 to this many times its stage standard at the stage.
    delay_max_factor: float = 2.0

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
        if self.faults.misroute > 0 and len(self.sites) < 2:
            raise ScenarioError("mis-routes need at least two sites")
        if {k for k, _ in self.transit_s} != set(TIMED_STAGES):
            stages = ", ".join(TIMED_STAGES)
            raise ScenarioError(f"transit_s needs exactly the stages ({stages})")
        if not self.delay_max_factor > 1.1:
            raise ScenarioError("delay_max_factor must be above 1.1 (a delay passes 1.1x)")
        self._validate_hubs()

    def _validate_hubs(self) -> None:
        sites = [h.site for h in self.hubs]
        if unknown := set(sites) - set(self.sites):
            raise ScenarioError(f"hubs {sorted(unknown)} are not among the sites")
        if len(set(sites)) != len(sites):
            raise ScenarioError("a site has more than one hub entry")
        for hub in self.hubs:
            if hub.language not in LANGUAGES:
                raise ScenarioError(f"hub {hub.site}: language must be one of {LANGUAGES}")
            if not (len(hub.country) == 2 and hub.country.isalpha() and hub.country.isupper()):
                raise ScenarioError(f"hub {hub.site}: country must be 2 capital letters")
            if min(hub.same_city_days, hub.other_city_days) < 0:
                raise ScenarioError(f"hub {hub.site}: delivery days must be >= 0")
            try:
                ZoneInfo(hub.timezone)
            except (ValueError, ZoneInfoNotFoundError) as exc:
                raise ScenarioError(f"hub {hub.site}: unknown timezone {hub.timezone!r}") from exc


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
        """The reads as objects, in time order (built on first use, kept)."""
        return list(self.iter_reads())

    def iter_reads(self) -> Iterator[ScheduledRead]:
        """The reads as objects, in time order, one at a time (for long playbacks)."""
        rps = self.read_points
        for at, rp_i, p_i, ok in zip(
            self.columns.at_ms.tolist(),
            self.columns.read_point.tolist(),
            self.columns.parcel.tolist(),
            self.columns.decoded.tolist(),
            strict=True,
        ):
            rp, parcel = rps[rp_i], self.manifest[p_i]
            rfid = rp.is_rfid
            yield ScheduledRead(
                at / 1000.0,
                rp.device,
                rp.read_point,
                parcel.tracking_id if ok and not rfid else None,
                parcel.epc if ok and rfid else None,
                parcel.tracking_id,
                rp.protocol,
            )

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

    def truth_lines(self, start: datetime, speed: float = 1.0) -> str:
        """The ground truth as JSON Lines, wall-clock fields for a playback that put
        scenario time 0 at `start` and ran at `speed` (docs/scenarios.md)."""
        return "".join(json.dumps(f.to_dict(start, speed)) + "\n" for f in self.faults)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    def reference_data(self, clock: PlaybackClock | None = None) -> ReferenceData:
        """What an operator would supply for this scenario, in wall-clock terms.

        Times are mapped through `clock` (default: the scenario's own nominal start at
        speed 1): sort plans take effect at clock.wall(effective_from_s) and stage
        standards are wall-clock seconds, so an accelerated playback is judged by
        equally accelerated standards."""
        clock = clock or PlaybackClock(self.start)
        return ReferenceData(
            sites=tuple(model.Site(s.site, s.name, s.timezone) for s in self.sites),
            read_points=tuple(
                model.ReadPoint(
                    r.read_point, r.site, Zone(r.zone), Stage(r.stage), r.description,
                    r.position, r.next_read_point,
                )
                for r in self.read_points
            ),
            devices=tuple(
                model.Device(r.device, r.site, r.read_point, Protocol(r.protocol))
                for r in self.read_points
            ),
            service_classes=tuple(
                model.ServiceClass(c.service_class, c.description, c.delivery_days)
                for c in self.service_classes
            ),
            stage_standards=tuple(
                model.StageStandard(
                    s.site, Stage(s.stage), s.service_class, clock.wall_seconds(s.max_seconds)
                )
                for s in self.stage_standards
            ),
            sort_plans=tuple(
                model.SortPlan(
                    p.site,
                    clock.wall(p.effective_from_s),
                    tuple(model.SortPlanEntry(e.destination, e.chute, e.door) for e in p.entries),
                    p.version,
                )
                for p in self.sort_plans
            ),
            manifest=tuple(
                model.ManifestEntry(
                    m.tracking_id, m.service_class, m.destination, m.destination_site or None,
                    m.origin_site or self.site, m.epc,
                )
                for m in self.manifest
            ),
        )  # fmt: skip

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
        cfg["hubs"] = tuple(Hub(**h) for h in cfg.get("hubs", ()))
        reads = raw["reads"]
        columns = Reads(
            np.asarray(reads["at_ms"], dtype=np.int64),
            np.asarray(reads["read_point"], dtype=np.int32),
            np.asarray(reads["parcel"], dtype=np.int32),
            np.asarray(reads["decoded"], dtype=np.bool_),
        )
        sizes = {len(columns.at_ms), len(columns.read_point), len(columns.parcel)}
        if len(sizes | {len(columns.decoded)}) != 1:
            raise ValueError("the reads columns differ in length")
        if len(columns) and (
            min(columns.read_point) < 0
            or max(columns.read_point) >= len(raw["read_points"])
            or min(columns.parcel) < 0
            or max(columns.parcel) >= len(raw["manifest"])
        ):
            raise ValueError("a read names a read point or parcel the file does not have")
        return cls(
            config=ScenarioConfig(**cfg),
            start=datetime.fromisoformat(raw["clock"]["start"]),
            sites=[SiteSpec(**s) for s in raw["sites"]],
            read_points=[
                ReadPointSpec(**{**r, "zone": Zone(r["zone"]), "stage": Stage(r["stage"])})
                for r in raw["read_points"]
            ],
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
            columns=columns,
            faults=[Fault.from_dict(f) for f in raw["faults"]],
        )


def generate(
    config: ScenarioConfig | None = None,
    *,
    seed: int = 1,
    parcels: int = 50,
    rate_per_s: float = 2.0,
    lost_rate: float = 0.1,
    noread_rate: float = 0.02,
    site: str = "LHR1",
) -> Scenario:
    """Build the scenario the configuration describes; the same config gives the same
    scenario, byte for byte. Without a config, the keywords make the foundation's
    single-site, barcode-only scenario (ScenarioConfig.barcode_only)."""
    cfg = config or ScenarioConfig.barcode_only(
        seed, parcels, rate_per_s, lost_rate, noread_rate, site
    )
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
    hubs = {h.site: h for h in cfg.hubs}
    sites = [site_spec(s, s in cfg.rfid_sites, hubs.get(s)) for s in cfg.sites]
    read_points = [rp for s in sites for rp in site_layout(s, chutes, cfg.induction_lines)]
    transit = dict(cfg.transit_s)
    classes = SERVICE_CLASSES + tuple(c for h in cfg.hubs for c in h.service_classes())
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
    delay_stage = rng.integers(0, len(TIMED_STAGES), n)
    delay_extra = rng.uniform(0.1, cfg.delay_max_factor - 1.0, n)
    lost_slot = np.array([IND, TUN, SRT, CHU])[rng.integers(0, 4, n)]
    wrong_pick = rng.integers(0, chutes - 1, n)
    # Drawn last, so adding mis-routes left every earlier draw (and scenario) as it was.
    wrong_site_u = rng.random(n)
    linehaul_jitter = rng.uniform(0.8, 1.2, n)
    wrong_line = rng.integers(0, cfg.induction_lines, n)
    wrong_jitter = rng.uniform(0.8, 1.2, size=(n, 4))

    n_sites = len(sites)
    dest_site = dest_of % n_sites  # destinations go round-robin over the sites
    _hub_classes(cfg, classes, site_of, dest_site, class_of)
    kind_of = np.full(n, -1, dtype=np.int8)
    taken = 0
    rates = cfg.faults.as_tuple()
    misroute_k = FAULT_KINDS.index("misroute")
    for k, rate in enumerate(rates):
        count = round(rate * n)
        if k == misroute_k:
            rest = order[taken:]
            spare = n_sites - np.where(site_of[rest] == dest_site[rest], 1, 2)
            kind_of[rest[spare > 0][:count]] = k
        else:
            kind_of[order[taken : taken + count]] = k
            taken += count
    missort, delay, lost, noread, recirc, misroute = (kind_of == k for k in range(len(FAULT_KINDS)))

    # standard[site, stage, class] and nominal[stage] in seconds
    nominal = np.array([transit[s] for s in TIMED_STAGES])
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
    t[:, IND] = arrivals
    t[:, TUN] = t[:, IND] + dur[:, 0]
    t[:, SRT] = t[:, TUN] + dur[:, 1]
    t[:, SRT2] = t[:, SRT] + dur[:, 3]
    t[:, CHU] = np.where(recirc, t[:, SRT2], t[:, SRT]) + dur[:, 2]
    t[:, DOR] = t[:, CHU] + dur[:, 4]
    t_ms = np.rint(t * 1000.0).astype(np.int64)

    change_ms = None if change_at is None else round(change_at * 1000)
    version_idx = (
        np.zeros(n, dtype=np.int64) if change_ms is None else (t_ms[:, CHU] >= change_ms) * 1
    )
    assigned = (dest_of + version_idx) % chutes  # layout.sort_plans: v1 shift 0, v2 shift 1
    wrong = wrong_pick + (wrong_pick >= assigned)
    chute = np.where(missort, wrong, assigned)

    per_site = cfg.induction_lines + 2 + 2 * chutes
    base = site_of * per_site
    rp = np.empty((n, 6), dtype=np.int32)
    rp[:, IND] = base + line_of
    rp[:, TUN] = base + cfg.induction_lines
    rp[:, SRT] = base + cfg.induction_lines + 1
    rp[:, SRT2] = rp[:, SRT]
    rp[:, CHU] = base + cfg.induction_lines + 2 + 2 * chute
    rp[:, DOR] = rp[:, CHU] + 1

    slot = np.arange(6)
    present = np.ones((n, 6), dtype=np.bool_)
    present[:, SRT2] = recirc
    present &= ~(lost[:, None] & (slot[None, :] > lost_slot[:, None]))
    decoded = np.ones((n, 6), dtype=np.bool_)
    decoded[:, TUN] = ~noread
    is_rfid = np.array([r.is_rfid for r in read_points])
    # An RFID gate that misses a tag reports nothing at all; a scanner says NOREAD.
    emitted = present & (decoded | ~is_rfid[rp])

    parcel_idx = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], (n, 6))[emitted]
    at_flat, rp_flat, ok_flat = t_ms[emitted], rp[emitted], decoded[emitted]
    slot_flat = np.broadcast_to(slot[None, :], (n, 6))[emitted]

    # Mis-routed parcels leave by their right door but reach a wrong site after the
    # linehaul, and pass through it as if it were theirs.
    away = _misroute_reads(
        cfg, sites, read_points, np.flatnonzero(misroute), site_of, dest_site, dest_of,
        t[:, DOR], wrong_site_u, linehaul_jitter, wrong_line, wrong_jitter, nominal, factors,
        change_ms, chutes, is_rfid,
    )  # fmt: skip
    parcel_idx = np.concatenate((parcel_idx, away.parcel))
    at_flat = np.concatenate((at_flat, away.at_ms))
    rp_flat = np.concatenate((rp_flat, away.read_point))
    ok_flat = np.concatenate((ok_flat, np.ones(len(away.parcel), dtype=np.bool_)))
    slot_flat = np.concatenate((slot_flat, away.slot))
    misroutes = away.first_reads
    sequence = np.lexsort((slot_flat, parcel_idx, at_flat))
    columns = Reads(
        at_flat[sequence],
        rp_flat[sequence].astype(np.int32),
        parcel_idx[sequence].astype(np.int32),
        ok_flat[sequence],
    )

    manifest = build_manifest(
        cfg.seed, cfg.company_prefix, cfg.destinations, classes, site_of, dest_of, class_of,
        t_ms[:, IND], sites, destinations,
        [hubs[s.site].country if s.site in hubs else DEFAULT_COUNTRY for s in sites],
    )  # fmt: skip
    faults = record_faults(
        cfg.induction_lines, read_points, manifest, kind_of, site_of, class_of, delay_stage,
        lost_slot, t_ms, rp, assigned, version_idx, standard, chutes, misroutes,
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


@dataclass(frozen=True)
class _AwayReads:
    """Reads of mis-routed parcels at the wrong site, and each one's first read there."""

    parcel: npt.NDArray[np.int32]
    at_ms: npt.NDArray[np.int64]
    read_point: npt.NDArray[np.int32]
    slot: npt.NDArray[np.int64]
    first_reads: dict[int, tuple[ReadPointSpec, float, str]]


def _misroute_reads(
    cfg: ScenarioConfig,
    sites: list[SiteSpec],
    read_points: list[ReadPointSpec],
    mr: npt.NDArray[np.intp],
    site_of: npt.NDArray[np.int64],
    dest_site: npt.NDArray[np.int64],
    dest_of: npt.NDArray[np.int64],
    door_at: npt.NDArray[np.float64],
    wrong_site_u: npt.NDArray[np.float64],
    linehaul_jitter: npt.NDArray[np.float64],
    wrong_line: npt.NDArray[np.int64],
    wrong_jitter: npt.NDArray[np.float64],
    nominal: npt.NDArray[np.float64],
    factors: npt.NDArray[np.float64],
    change_ms: int | None,
    chutes: int,
    is_rfid: npt.NDArray[np.bool_],
) -> _AwayReads:
    n_sites = len(sites)
    per_site = cfg.induction_lines + 2 + 2 * chutes
    origin, home = site_of[mr], dest_site[mr]
    # A uniform pick among the sites that are neither origin nor destination site.
    lo, hi = np.minimum(origin, home), np.maximum(origin, home)
    spare = n_sites - np.where(origin == home, 1, 2)
    w = (wrong_site_u[mr] * spare).astype(np.int64)
    w += w >= lo
    w += (w >= hi) & (origin != home)
    tw = np.zeros((len(mr), 5))
    tw[:, 0] = door_at[mr] + cfg.linehaul_s * linehaul_jitter[mr]
    for j in range(4):
        tw[:, j + 1] = tw[:, j] + nominal[j] * factors[w] * wrong_jitter[mr, j]
    tw_ms = np.rint(tw * 1000.0).astype(np.int64)
    w_version = (
        np.zeros(len(mr), dtype=np.int64) if change_ms is None else (tw_ms[:, 3] >= change_ms) * 1
    )
    w_chute = (dest_of[mr] + w_version) % chutes
    w_base = w * per_site
    rw = np.stack(
        [
            w_base + wrong_line[mr],
            w_base + cfg.induction_lines,
            w_base + cfg.induction_lines + 1,
            w_base + cfg.induction_lines + 2 + 2 * w_chute,
            w_base + cfg.induction_lines + 3 + 2 * w_chute,
        ],
        axis=1,
    ).astype(np.int32)
    tagged = np.array([s.rfid for s in sites])[origin]
    # An untagged parcel passes an RFID gate unseen.
    emitted = ~is_rfid[rw] | tagged[:, None]
    return _AwayReads(
        np.broadcast_to(mr.astype(np.int32)[:, None], (len(mr), 5))[emitted],
        tw_ms[emitted],
        rw[emitted],
        np.broadcast_to(np.arange(6, 11)[None, :], (len(mr), 5))[emitted],
        {
            int(i): (
                read_points[int(rw[j, 0])],
                int(tw_ms[j, 0]) / 1000.0,
                sites[int(home[j])].site,
            )
            for j, i in enumerate(mr.tolist())
        },
    )


def site_spec(site: str, rfid: bool, hub: Hub | None) -> SiteSpec:
    """A site as generated: a hub brings its name, zone and language."""
    if hub is None:
        return SiteSpec(site, f"Sorting centre {site}", rfid)
    return SiteSpec(site, hub.name, rfid, hub.timezone, hub.language)


def _hub_classes(
    cfg: ScenarioConfig,
    classes: tuple[ServiceClass, ...],
    site_of: npt.NDArray[np.int64],
    dest_site: npt.NDArray[np.int64],
    class_of: npt.NDArray[np.int64],
) -> None:
    """Parcels posted at a hub travel by its express classes: same city when the hub
    also delivers their destination, else other cities (in place, after every random
    draw, so scenarios without hubs stay as they were)."""
    index = {c.service_class: k for k, c in enumerate(classes)}
    for hub in cfg.hubs:
        here = cfg.sites.index(hub.site)
        posted = site_of == here
        class_of[posted] = np.where(
            dest_site[posted] == here,
            index[hub.same_city_class],
            index[hub.other_city_class],
        )
