"""Accuracy of the detection engine on a generated scenario, in accelerated time.

The scenario (firmware_sim) gives the reads and the ground truth of the parcel
faults. On top we add the noise the real pipeline sees, and the faults the
generator does not model (mis-routes, a silent device, a no-read spike), with their
own truth:

- duplicates: a share of reads arrives twice, the copy up to 1.5 s later;
- clock skew: every device stamps its reads with a constant offset, U(-0.2, 0.2) s;
- no-reads and recirculation: from the generator (tunnel no-reads, a second sorter pass);
- mis-route: some parcels, after leaving their origin, are sorted through a third
  site (neither origin nor destination): truth at their first read there;
- device silence: one induction scanner stops (scans and its 5 s health reports):
  truth at its last sign of life + the silence window;
- no-read spike: one barcode tunnel turns 60 % of its reads into no-reads for ten
  minutes: truth when its rolling window would cross the open threshold.

Truth per alert kind: `delay` for delayed *and* lost parcels (both miss their stage
standard; detectable at arrival + standard), `missing` for lost parcels,
`missort`, `misroute`, `silence`, `noread` as above. All times are scenario seconds;
the engine ticks (and receives the scans that arrived meanwhile) every
`tick_wall_s * speed` scenario seconds, which is how often the service would tick
at that playback speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bench.score import KindScore, Raised, Truth, score
from detect.devices import DeviceThresholds
from detect.engine import Engine, ManifestFacts, ScanBatch
from detect.reference import DetectConfig, ReadPointRow, Reference, SortPlanRow, build_reference
from firmware_sim.scenario import Scenario
from parceltrack.alerts import AlertKind
from parceltrack.layout import Stage, Zone

KINDS: tuple[AlertKind, ...] = tuple(AlertKind)
# The alerts each of the simulator's faults should raise (its fault kinds are its own
# words: a lost parcel misses its stage standard first, then goes missing).
FAULT_ALERTS: dict[str, tuple[AlertKind, ...]] = {
    "delay": (AlertKind.DELAY,),
    "lost": (AlertKind.DELAY, AlertKind.MISSING),
    "missort": (AlertKind.MISSORT,),
    "misroute": (AlertKind.MISROUTE,),
}
SPIKE_SHARE = 0.6
HEALTH_EVERY_S = 5.0
TAIL_S = 600.0  # run on after the last read, so late alerts get their chance


@dataclass(frozen=True, slots=True)
class Noise:
    duplicate_rate: float = 0.05
    skew_s: float = 0.2
    misroutes: int = 100
    spike_s: float = 600.0


@dataclass
class AccuracyRun:
    scores: list[KindScore]
    truths: list[Truth]
    raised: list[Raised]
    ticks: int
    reads: int
    unobservable: int  # parcels left out: the injected device faults hid their fault
    tick_seconds: list[float] = field(default_factory=list)


def reference_for(scenario: Scenario, config: DetectConfig, base: float) -> Reference:
    """The scenario's layout, standards and plans as the detector would load them."""
    rps = [
        ReadPointRow(r.read_point, r.site, r.zone, r.stage, r.position, r.is_rfid)
        for r in scenario.read_points
    ]
    return build_reference(
        rps,
        [(c.service_class, c.delivery_days) for c in scenario.service_classes],
        [(s.site, s.stage, s.service_class, s.max_seconds) for s in scenario.stage_standards],
        (),
        [
            SortPlanRow(
                p.site,
                p.version,
                base + p.effective_from_s,
                tuple((e.destination, e.chute, e.door) for e in p.entries),
            )
            for p in scenario.sort_plans
        ],
        (),
        sorted(scenario.destinations),
        config,
    )


# Long holds: stage standards from seconds (induction) to an hour (an economy parcel in a
# chute waiting for its truck), delayed parcels held up to 3x their standard.
LONG_HOLD_TRANSIT_S: tuple[tuple[str, float], ...] = (
    (Stage.INDUCTION, 4.0),
    (Stage.TUNNEL, 6.0),
    (Stage.SORT, 20.0),
    (Stage.CHUTE, 1000.0),
)
LONG_HOLD_FACTOR = 3.0


def long_hold_config() -> DetectConfig:
    """The detector's own defaults (derived missing windows), the bench's skew tolerance."""
    return DetectConfig(skew_tolerance_s=0.45)


def default_config() -> DetectConfig:
    # Missing once a delayed parcel (held at most twice its standard) would have shown.
    return DetectConfig(
        default_stage_s=30.0, default_missing_s=1.0, missing_factor=1.0, skew_tolerance_s=0.45
    )


@dataclass
class _Feed:
    at: np.ndarray  # arrival (true) time, scenario s
    ts: np.ndarray  # stamped time (skewed), scenario s
    rp: np.ndarray  # read point index in the scenario
    parcel: np.ndarray  # manifest index, -1 for none
    noread: np.ndarray


def _feed(
    scenario: Scenario, noise: Noise, rng: np.random.Generator, tail_s: float = TAIL_S
) -> tuple[_Feed, list[Truth], dict[str, list[float]], set[tuple[str, str]]]:
    cols = scenario.columns
    at = cols.at_ms.astype(np.float64) / 1000.0
    rp = cols.read_point.astype(np.int64)
    parcel = cols.parcel.astype(np.int64)
    noread = ~cols.decoded
    rps = scenario.read_points
    truths: list[Truth] = []
    site_of = {s.site: i for i, s in enumerate(scenario.sites)}
    rfid = {s.site for s in scenario.sites if s.rfid}

    # Mis-routes: after its door, a parcel goes through a third (barcode) site.
    faulty = {f.tracking_id for f in scenario.faults}
    by_id = {m.tracking_id: i for i, m in enumerate(scenario.manifest)}
    rp_index = {r.read_point: i for i, r in enumerate(rps)}
    door_at: dict[int, float] = {}
    for a, r, p in zip(at.tolist(), rp.tolist(), parcel.tolist(), strict=True):
        if rps[r].zone == Zone.DOOR:
            door_at[p] = a
    extra: list[tuple[float, int, int]] = []
    chosen = 0
    transit = dict(scenario.config.transit_s)
    for m in scenario.manifest:
        if chosen >= noise.misroutes:
            break
        p = by_id[m.tracking_id]
        if m.tracking_id in faulty or p not in door_at:
            continue
        wrong = [
            s.site
            for s in scenario.sites
            if s.site not in (m.origin_site, m.destination_site) and s.site not in rfid
        ]
        if not wrong:
            continue
        w = wrong[0]
        factor = 1 + scenario.config.site_factor_step * site_of[w]
        t = door_at[p] + 1800.0
        plan = [pl for pl in scenario.sort_plans if pl.site == w and pl.effective_from_s <= t][-1]
        chute = plan.chute_for(m.destination)
        door = chute.replace("CHU", "DOR")
        hops = [
            (f"{w}-IND1", Stage.INDUCTION),
            (f"{w}-TUN1", Stage.TUNNEL),
            (f"{w}-SRT1", Stage.SORT),
            (chute, Stage.CHUTE),
            (door, Stage.DISPATCH),
        ]
        for name, stage in hops:
            extra.append((t, rp_index[name], p))
            t += transit.get(stage, 0.0) * factor
        truths.append(Truth(AlertKind.MISROUTE, m.tracking_id, door_at[p] + 1800.0))
        chosen += 1
    if extra:
        e = np.array(extra)
        at = np.concatenate([at, e[:, 0]])
        rp = np.concatenate([rp, e[:, 1].astype(np.int64)])
        parcel = np.concatenate([parcel, e[:, 2].astype(np.int64)])
        noread = np.concatenate([noread, np.zeros(len(e), dtype=np.bool_)])

    duration = float(at.max())
    devices = sorted({r.device for r in rps})
    dev_of_rp = np.array([devices.index(r.device) for r in rps])
    # Device silence: the last induction line of the first barcode site, from a third in.
    barcode_sites = [s.site for s in scenario.sites if not s.rfid]
    site0 = barcode_sites[0]
    silent_rp = max(i for i, r in enumerate(rps) if r.site == site0 and r.zone == Zone.INDUCTION)
    # Device faults while parcels still arrive (mis-routed ones trickle on for a while).
    arrivals = max(m.inducted_at_s for m in scenario.manifest)
    silent_from = arrivals / 3
    health: dict[str, list[float]] = {}
    for d in devices:
        health[d] = list(np.arange(0.0, duration + tail_s, HEALTH_EVERY_S))
    silent_dev = rps[silent_rp].device
    health[silent_dev] = [h for h in health[silent_dev] if h < silent_from]
    gone = (dev_of_rp[rp] == dev_of_rp[silent_rp]) & (at >= silent_from)
    # No-read spike: the tunnel of the last barcode site, for spike_s from two thirds in.
    spike_site = barcode_sites[-1]
    spike_rp = next(i for i, r in enumerate(rps) if r.site == spike_site and r.zone == Zone.TUNNEL)
    spike_from = 2 * arrivals / 3
    in_spike = (rp == spike_rp) & (at >= spike_from) & (at < spike_from + noise.spike_s)
    converted = in_spike & ~noread & (rng.random(len(at)) < SPIKE_SHARE)
    noread = noread | converted
    blinded = {(int(p), int(r)) for p, r in zip(parcel[converted], rp[converted], strict=True)}
    blinded |= {(int(p), int(r)) for p, r in zip(parcel[gone], rp[gone], strict=True)}

    keep = ~gone
    at, rp, parcel, noread = at[keep], rp[keep], parcel[keep], noread[keep]
    last_read = at[(dev_of_rp[rp] == dev_of_rp[silent_rp])]
    last_sign = max([*health[silent_dev], *last_read[last_read < silent_from].tolist()])
    th = DeviceThresholds()
    truths.append(Truth(AlertKind.SILENCE, silent_dev, last_sign + th.silence_s))
    window = th.window_bins * th.bin_s
    truths.append(
        Truth(
            AlertKind.NOREAD, rps[spike_rp].device, spike_from + window * th.open_rate / SPIKE_SHARE
        )
    )

    # Duplicates and clock skew.
    dup = rng.random(len(at)) < noise.duplicate_rate
    lag = rng.uniform(0.05, 1.5, int(dup.sum()))
    at = np.concatenate([at, at[dup] + lag])
    rp = np.concatenate([rp, rp[dup]])
    parcel = np.concatenate([parcel, parcel[dup]])
    noread = np.concatenate([noread, noread[dup]])
    skew = rng.uniform(-noise.skew_s, noise.skew_s, len(devices))
    ts = at + skew[dev_of_rp[rp]]
    order = np.argsort(at, kind="stable")
    feed = _Feed(at[order], ts[order], rp[order], parcel[order], noread[order])

    unobservable: set[tuple[str, str]] = set()
    for f in scenario.faults:
        # A fault whose reads the injected device faults destroyed (the silent scanner
        # never saw it, the failing tunnel did not decode it) is unknowable: left out.
        p = by_id[f.tracking_id]
        if f.kind == "lost":
            hidden = all((p, int(r)) in blinded for r in cols.read_point[cols.parcel == p])
        else:
            near = [f.read_point, f.details.get("next_read_point", "")]
            hidden = any((p, rp_index[r]) in blinded for r in near if r in rp_index)
        if hidden:
            # A fault that raises no alert still counts its parcel as left out.
            kinds: tuple[str, ...] = FAULT_ALERTS.get(f.kind, (f.kind,))
            unobservable |= {(k, f.tracking_id) for k in kinds}
            continue
        for kind in FAULT_ALERTS.get(f.kind, ()):
            truths.append(Truth(kind, f.tracking_id, f.detectable_at_s))
    return feed, truths, health, unobservable


def run_accuracy(
    scenario: Scenario,
    speed: float = 60.0,
    tick_wall_s: float = 0.25,
    noise: Noise | None = None,
    seed: int = 1,
    config: DetectConfig | None = None,
    tail_s: float = TAIL_S,
) -> AccuracyRun:
    """Feed the scenario through an engine in accelerated time and score its alerts."""
    noise = noise or Noise()
    rng = np.random.default_rng(seed)
    feed, truths, health, unobservable = _feed(scenario, noise, rng, tail_s)
    base = scenario.start.timestamp()
    ref = reference_for(scenario, config or default_config(), base)
    manifest = {
        m.tracking_id: ManifestFacts(
            m.service_class,
            m.destination,
            m.origin_site,
            m.destination_site,
            base + m.inducted_at_s,
            m.epc is not None,
        )
        for m in scenario.manifest
    }
    engine = Engine(ref, lambda ids: {i: manifest[i] for i in ids if i in manifest})
    rps = scenario.read_points
    rp_names = np.array([r.read_point for r in rps], dtype=object)
    rp_dev = np.array([r.device for r in rps], dtype=object)
    rp_site = np.array([r.site for r in rps], dtype=object)
    ids = np.array([m.tracking_id for m in scenario.manifest] + [None], dtype=object)
    hb_dev = np.array([d for d, times in health.items() for _ in times], dtype=object)
    hb_at = np.array([t for times in health.values() for t in times], dtype=np.float64)
    hb_order = np.argsort(hb_at, kind="stable")
    hb_dev, hb_at = hb_dev[hb_order], hb_at[hb_order]
    dev_site = {r.device: r.site for r in rps}

    step = tick_wall_s * speed
    end = float(feed.at.max()) + tail_s
    raised: list[Raised] = []
    tick_seconds: list[float] = []
    lo = hb_lo = 0
    now = 0.0
    ticks = 0
    while now < end:
        now += step
        hi = int(np.searchsorted(feed.at, now, side="right"))
        hb_hi = int(np.searchsorted(hb_at, now, side="right"))
        changes = []
        if hb_hi > hb_lo:
            devs = hb_dev[hb_lo:hb_hi].tolist()
            changes += engine.heard_from(devs, [dev_site[d] for d in devs],
                                         hb_at[hb_lo:hb_hi] + base)  # fmt: skip
            hb_lo = hb_hi
        if hi > lo:
            sl = slice(lo, hi)
            rp = feed.rp[sl]
            p = np.where(feed.noread[sl], -1, feed.parcel[sl])
            batch = ScanBatch(
                tracking_id=ids[p].tolist(),
                read_point=rp_names[rp].tolist(),
                device=rp_dev[rp].tolist(),
                site=rp_site[rp].tolist(),
                ts=feed.ts[sl] + base,
                noread=feed.noread[sl],
            )
            changes += engine.ingest(batch)
            lo = hi
        started = time.perf_counter()
        changes += engine.tick(now + base)
        tick_seconds.append(time.perf_counter() - started)
        ticks += 1
        for c in changes:
            if c.action == "open":
                subject = c.tracking_id or c.device_id or ""
                raised.append(Raised(c.kind, subject, now))
    return AccuracyRun(
        score(truths, raised, KINDS, frozenset(unobservable)), truths, raised, ticks,
        len(feed.at), len({s for _, s in unobservable}),
        tick_seconds,
    )  # fmt: skip
