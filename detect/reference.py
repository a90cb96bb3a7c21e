"""Layout, standards, windows and sort plans as arrays the checks index directly.

Built once from plain rows (the service loads them from PostgreSQL; tests write
them by hand) and rebuilt when the configuration changes. Everything a check needs
per parcel is one fancy-indexing step away: `stage_s[site, stage, class]`,
`missing_s[site, stage, class]`, `plan_chute[version, destination]` ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from parceltrack.errors import ConfigError
from parceltrack.layout import SKIPPABLE_STAGES, Zone

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

ROLE_OTHER, ROLE_CHUTE, ROLE_DOOR = 0, 1, 2
# Sites times this plus a Unix time stay exact to a millisecond in float64 and sort
# by site first: one searchsorted finds the sort-plan version in force per read.
_SITE_STRIDE = 1e10


@dataclass(frozen=True, slots=True)
class DetectConfig:
    """Fallbacks where the database has no row, and the tolerances of the checks."""

    default_stage_s: float = 30.0  # stage standard when none is configured
    # Where no missing window is set, it is derived: this much (time for a read to get
    # through the pipeline) plus `missing_factor` times the longer of the stage standard
    # and the learned p90 transit time of the stage. A delayed parcel held up to three
    # times its standard shows up again within two standards after its deadline; until
    # then it cannot be told from a lost one (docs/architecture.md).
    default_missing_s: float = 30.0
    missing_factor: float = 2.0
    default_delivery_days: int = 2
    # Defaults for sites without a row in site_tolerances.
    # A read at a later stage wins over one up to this much later at an earlier stage:
    # device clocks disagree by a few seconds, parcels do not travel backwards that fast.
    skew_tolerance_s: float = 1.0
    # Repeated reads at the same stage closer than this are duplicates, not a new pass.
    duplicate_gap_s: float = 3.0
    min_history_samples: int = 30  # fewer transit samples: ETA uses the standards
    # Stages whose read points may see a parcel without decoding it (an RFID tunnel
    # reports nothing at all): a parcel not seen there is only late once it is also
    # overdue at the stage after.
    skippable_stages: tuple[str, ...] = SKIPPABLE_STAGES


@dataclass(frozen=True, slots=True)
class ReadPointRow:
    read_point: str
    site: str
    zone: str
    stage: str
    position: int
    tag_only: bool = False  # only RFID readers here: a parcel without a tag is not seen


@dataclass(frozen=True, slots=True)
class ToleranceRow:
    """A site's own clock-skew tolerance and duplicate gap (site_tolerances)."""

    site: str
    skew_tolerance_s: float
    duplicate_gap_s: float


@dataclass(frozen=True, slots=True)
class SortPlanRow:
    site: str
    version: int
    effective_from: float  # Unix seconds
    entries: tuple[tuple[str, str, str | None], ...]  # destination, chute, door


@dataclass(frozen=True, slots=True)
class TransitRow:
    site: str
    stage: str
    service_class: str
    samples: int
    p50_s: float
    p90_s: float


@dataclass(frozen=True)
class Reference:
    config: DetectConfig
    sites: tuple[str, ...]
    read_points: tuple[str, ...]
    stages: tuple[str, ...]
    classes: tuple[str, ...]
    destinations: tuple[str, ...]
    rp_site: npt.NDArray[np.int16]
    rp_stage: npt.NDArray[np.int8]
    rp_rank: npt.NDArray[np.int8]  # order of the read point's stage at its site
    stage_rank: npt.NDArray[np.int8]  # [site, stage] order of the stage, -1 if absent
    rp_role: npt.NDArray[np.int8]
    next_stage: npt.NDArray[np.int8]  # [site, stage], -1 at the last stage
    next_tag_only: npt.NDArray[np.bool_]  # [site, stage]: the next stage reads tags only
    stage_s: F64  # [site, stage, class] standard from arrival to the next stage
    grace_s: F64  # [site, stage, class] extra wait when the next stage may go unread
    cum_stage_s: F64  # [site, stage, class] sum of the standards of the stages before
    missing_s: F64  # [site, stage, class]
    delivery_s: F64  # [class]
    eta_in_s: F64  # [site, stage, class] p50 from arriving at stage to the last stage
    eta_in_p90_s: F64
    eta_after_s: F64  # [site, stage, class] the same from arriving at the next stage
    plan_key: F64  # sorted site * stride + effective_from, one per version
    plan_site: npt.NDArray[np.int16]
    plan_version: I32
    plan_chute: I32  # [version, destination] read point, -1 when not planned
    plan_door: I32
    door_lookback_s: float  # longest a parcel may spend in a chute (its standard)
    skew_s: F64  # [site] clock-skew tolerance
    gap_s: F64  # [site] duplicate gap
    site_index: dict[str, int] = field(default_factory=dict)
    rp_index: dict[str, int] = field(default_factory=dict)
    class_index: dict[str, int] = field(default_factory=dict)
    dest_index: dict[str, int] = field(default_factory=dict)
    stage_index: dict[str, int] = field(default_factory=dict)

    def skew_at(self, site: npt.NDArray[np.integer[Any]]) -> F64:
        """The clock-skew tolerance at each site (the default where the site is -1)."""
        out: F64 = np.where(site >= 0, self.skew_s[np.maximum(site, 0)],
                            self.config.skew_tolerance_s)  # fmt: skip
        return out

    def gap_at(self, site: npt.NDArray[np.integer[Any]]) -> F64:
        """The duplicate gap at each site (the default where the site is -1)."""
        out: F64 = np.where(site >= 0, self.gap_s[np.maximum(site, 0)],
                            self.config.duplicate_gap_s)  # fmt: skip
        return out

    def plan_version_at(self, site: npt.NDArray[np.int16], ts: F64, earliest: bool = False) -> I64:
        """Row of the sort-plan version in force at each (site, time); -1 for none, or
        with `earliest`, the site's first version for a time before it."""
        if len(self.plan_key) == 0:
            return np.full(len(ts), -1, dtype=np.int64)
        query = site.astype(np.float64) * _SITE_STRIDE + ts
        pos = np.searchsorted(self.plan_key, query, side="right").astype(np.int64) - 1
        safe = np.maximum(pos, 0)
        ok = (pos >= 0) & (self.plan_site[safe] == site)
        if earliest:
            first = np.searchsorted(self.plan_key, site.astype(np.float64) * _SITE_STRIDE)
            first = np.minimum(first, len(self.plan_key) - 1)
            pos = np.where(ok, pos, first)
            ok = self.plan_site[np.maximum(pos, 0)] == site
        return np.where(ok, pos, -1)

    def planned(
        self,
        site: npt.NDArray[np.int16],
        dest: npt.NDArray[np.int16],
        ts: F64,
        earliest: bool = False,
    ) -> tuple[I32, I32]:
        """Planned chute and door per (site, destination, time); -1 where no plan says
        (with `earliest`, a time before the site's first version takes that version)."""
        version = self.plan_version_at(site, ts, earliest)
        ok = (version >= 0) & (dest >= 0)
        v, d = np.where(ok, version, 0), np.where(ok, dest, 0)
        if self.plan_chute.size == 0:
            none = np.full(len(ts), -1, dtype=np.int32)
            return none, none.copy()
        chute = np.where(ok, self.plan_chute[v, d], -1).astype(np.int32)
        door = np.where(ok, self.plan_door[v, d], -1).astype(np.int32)
        return chute, door


def _index(names: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out.setdefault(n, len(out))
    return out


def build_reference(
    read_points: Sequence[ReadPointRow],
    classes: Sequence[tuple[str, int]],
    standards: Sequence[tuple[str, str, str, float]] = (),
    missing_windows: Sequence[tuple[str, str | None, str | None, float]] = (),
    sort_plans: Sequence[SortPlanRow] = (),
    transits: Sequence[TransitRow] = (),
    destinations: Sequence[str] = (),
    config: DetectConfig | None = None,
    tolerances: Sequence[ToleranceRow] = (),
) -> Reference:
    """Arrays from rows; unknown names in standards or plans are a ConfigError."""
    cfg = config or DetectConfig()
    sites = _index(r.site for r in read_points)
    stages = _index(r.stage for r in sorted(read_points, key=lambda r: r.position))
    rps = _index(r.read_point for r in read_points)
    cls = _index(c for c, _ in classes)
    dests = _index([*destinations, *(e[0] for p in sort_plans for e in p.entries)])
    ns, ng, nc = max(len(sites), 1), max(len(stages), 1), max(len(cls), 1)

    # Stage order per site: by the smallest position of the stage's read points there.
    first_pos: dict[tuple[int, int], int] = {}
    for r in read_points:
        k = (sites[r.site], stages[r.stage])
        first_pos[k] = min(first_pos.get(k, r.position), r.position)
    rank = np.full((ns, ng), -1, dtype=np.int8)
    next_stage = np.full((ns, ng), -1, dtype=np.int8)
    for s in range(ns):
        order = sorted((p, g) for (site, g), p in first_pos.items() if site == s)
        for i, (_, stage_no) in enumerate(order):
            rank[s, stage_no] = i
            if i + 1 < len(order):
                next_stage[s, stage_no] = order[i + 1][1]

    # A stage reads tags only at a site when every read point of it there does.
    tag_only = np.zeros((ns, ng), dtype=np.bool_)
    for s_ in range(ns):
        for g in range(ng):
            here = [r for r in read_points if sites[r.site] == s_ and stages[r.stage] == g]
            tag_only[s_, g] = bool(here) and all(r.tag_only for r in here)
    next_tag_only = np.zeros((ns, ng), dtype=np.bool_)
    has = next_stage >= 0
    next_tag_only[has] = tag_only[np.nonzero(has)[0], next_stage[has]]
    rp_site = np.array([sites[r.site] for r in read_points], dtype=np.int16)
    rp_stage = np.array([stages[r.stage] for r in read_points], dtype=np.int8)
    rp_rank = rank[rp_site, rp_stage].astype(np.int8)
    role: dict[str, int] = {Zone.CHUTE: ROLE_CHUTE, Zone.DOOR: ROLE_DOOR}
    rp_role = np.array([role.get(r.zone, ROLE_OTHER) for r in read_points], dtype=np.int8)

    def need(index: dict[str, int], name: str, what: str) -> int:
        if name not in index:
            raise ConfigError(f"{what} {name!r} is not known")
        return index[name]

    stage_s = np.full((ns, ng, nc), cfg.default_stage_s, dtype=np.float64)
    for site, stage, c, seconds in standards:
        if site in sites and stage in stages and c in cls:
            stage_s[sites[site], stages[stage], cls[c]] = seconds
    skippable = np.array([g in cfg.skippable_stages for g in stages] or [False])
    grace_s = np.zeros_like(stage_s)
    cum_stage_s = np.zeros_like(stage_s)
    for s_ in range(ns):
        for g in range(ng):
            nxt = next_stage[s_, g]
            if nxt >= 0 and skippable[nxt]:
                grace_s[s_, g] = stage_s[s_, nxt]
        run = np.zeros(nc)
        for g in [g for g in np.argsort(rank[s_]) if rank[s_, g] >= 0]:
            cum_stage_s[s_, g] = run
            run = run + stage_s[s_, g]
    delivery_s = np.array([d * 86400.0 for _, d in classes] or [0.0], dtype=np.float64)

    # Transit per stage: learned p50/p90 where history is thick enough, else the standard.
    p50 = stage_s.copy()
    p90 = stage_s.copy()
    for t in transits:
        thick = t.samples >= cfg.min_history_samples
        if thick and t.site in sites and t.stage in stages and t.service_class in cls:
            at = (sites[t.site], stages[t.stage], cls[t.service_class])
            p50[at], p90[at] = t.p50_s, t.p90_s
    missing_s = _missing_windows(cfg, stage_s, p90, missing_windows, sites, stages, cls)
    last = next_stage < 0
    p50[last], p90[last] = 0.0, 0.0
    eta_in = np.zeros_like(p50)
    eta_in90 = np.zeros_like(p90)
    eta_after = np.zeros_like(p50)
    for s in range(ns):
        chain = [int(g) for g in np.argsort(rank[s]) if rank[s, g] >= 0]
        run50 = np.zeros(nc)
        run90 = np.zeros(nc)
        for g in reversed(chain):
            eta_after[s, g] = run50
            run50 = run50 + p50[s, g]
            run90 = run90 + p90[s, g]
            eta_in[s, g], eta_in90[s, g] = run50, run90

    door_feeders = {stages[r.stage] for r in read_points if r.zone == Zone.CHUTE}
    plans = sorted(sort_plans, key=lambda p: (sites.get(p.site, -1), p.effective_from))
    nv, nd = len(plans), max(len(dests), 1)
    plan_chute = np.full((nv, nd), -1, dtype=np.int32)
    plan_door = np.full((nv, nd), -1, dtype=np.int32)
    for v, plan in enumerate(plans):
        need(sites, plan.site, "sort plan site")
        for dest, chute, door in plan.entries:
            plan_chute[v, dests[dest]] = need(rps, chute, "sort plan chute")
            if door is not None:
                plan_door[v, dests[dest]] = need(rps, door, "sort plan door")
    plan_site = np.array([sites[p.site] for p in plans], dtype=np.int16)
    plan_key = plan_site.astype(np.float64) * _SITE_STRIDE + np.array(
        [p.effective_from for p in plans], dtype=np.float64
    )
    return Reference(
        config=cfg,
        sites=tuple(sites),
        read_points=tuple(rps),
        stages=tuple(stages),
        classes=tuple(cls),
        destinations=tuple(dests),
        rp_site=rp_site,
        rp_stage=rp_stage,
        rp_rank=rp_rank,
        stage_rank=rank,
        rp_role=rp_role,
        next_stage=next_stage,
        next_tag_only=next_tag_only,
        stage_s=stage_s,
        grace_s=grace_s,
        cum_stage_s=cum_stage_s,
        missing_s=missing_s,
        delivery_s=delivery_s,
        eta_in_s=eta_in,
        eta_in_p90_s=eta_in90,
        eta_after_s=eta_after,
        plan_key=plan_key,
        plan_site=plan_site,
        plan_version=np.array([p.version for p in plans], dtype=np.int32),
        plan_chute=plan_chute,
        plan_door=plan_door,
        door_lookback_s=float(
            max(
                (stage_s[:, g, :].max() for g in range(ng) if g in door_feeders),
                default=cfg.default_stage_s,
            )
        ),
        skew_s=_per_site(sites, tolerances, "skew_tolerance_s", cfg.skew_tolerance_s),
        gap_s=_per_site(sites, tolerances, "duplicate_gap_s", cfg.duplicate_gap_s),
        site_index=sites,
        rp_index=rps,
        class_index=cls,
        dest_index=dests,
        stage_index=stages,
    )


def _missing_windows(
    cfg: DetectConfig,
    stage_s: F64,
    p90: F64,
    rows: Sequence[tuple[str, str | None, str | None, float]],
    sites: dict[str, int],
    stages: dict[str, int],
    cls: dict[str, int],
) -> F64:
    """[site, stage, class] missing window: the configured one where a row says, else
    derived from the stage standard and the learned transit times (DetectConfig)."""
    missing_s: F64 = cfg.default_missing_s + cfg.missing_factor * np.maximum(stage_s, p90)
    # Rows without a class or stage apply to all; more specific rows win.
    for w_site, w_class, w_stage, seconds in sorted(
        rows, key=lambda w: (w[1] is not None) + (w[2] is not None)
    ):
        if w_site not in sites or (w_class is not None and w_class not in cls):
            continue
        if w_stage is not None and w_stage not in stages:
            continue
        g_sel = slice(None) if w_stage is None else stages[w_stage]
        c_sel = slice(None) if w_class is None else cls[w_class]
        missing_s[sites[w_site], g_sel, c_sel] = seconds
    return missing_s


def _per_site(
    sites: dict[str, int], rows: Sequence[ToleranceRow], name: str, default: float
) -> F64:
    out = np.full(max(len(sites), 1), default, dtype=np.float64)
    for row in rows:
        if row.site in sites:
            out[sites[row.site]] = getattr(row, name)
    return out
