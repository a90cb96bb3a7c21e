"""`parceltrack sim ...`: generate scenarios, play them onto virtual devices, publish them
straight onto MQTT. The command-line layer: it prints, with rich."""

from __future__ import annotations

import argparse
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from firmware_sim.arrivals import DAILY_PROFILE, FLAT_PROFILE, Peak
from firmware_sim.clock import PlaybackClock
from firmware_sim.hubs import CHINESE_HUB, Hub
from firmware_sim.scenario import FaultRates, Scenario, ScenarioConfig, generate
from firmware_sim.truth import FAULT_KINDS
from parceltrack.config import BrokerAddress, Settings
from parceltrack.errors import ConfigError
from parceltrack.process import stop_on_signals

console = Console(stderr=True)


def register(parent: argparse._SubParsersAction[Any]) -> argparse._SubParsersAction[Any]:
    """Adds `sim` and its actions; returns them for the composition to extend."""
    sim = parent.add_parser("sim", help="generate scenarios and play them on virtual devices")
    sim.set_defaults(func=run)
    sub: argparse._SubParsersAction[Any] = sim.add_subparsers(dest="action", required=True)
    gen = sub.add_parser("generate", help="write a scenario file with its ground truth")
    scenario_arguments(gen)
    gen.add_argument("--out", required=True)
    gen.add_argument(
        "--site-files",
        metavar="DIR",
        help="also write each centre as site files there (for `parceltrack site apply`; "
        "sort plans from the scenario's nominal start)",
    )

    play = sub.add_parser("play", help="play a scenario on virtual serial ports")
    _playback_arguments(play)
    play.add_argument("--port-dir", required=True, help="folder for the ports' names")
    play.add_argument(
        "--exit", action="store_true", help="close the ports and exit when done (default: wait)"
    )
    play.add_argument(
        "--clock-from",
        help="make the ports, wait for this playback clock file to appear, play on it",
    )

    pub = sub.add_parser("publish", help="publish a scenario straight onto MQTT (load tests)")
    _playback_arguments(pub)
    pub.add_argument("--agent", default="sim")
    pub.add_argument("--boot", type=int, default=0, help="boot epoch in event ids (0: now)")
    pub.add_argument("--batch", type=int, default=500, help="events per batch at most")
    return sub


def scenario_arguments(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--sites", default="LHR1", help="comma-separated site ids")
    gen.add_argument("--rfid-sites", default="", help="sites whose parcels carry SSCC-96 tags")
    gen.add_argument("--destinations", default="LON,MAN,BHX,GLA")
    gen.add_argument("--parcels", type=int, help="number of parcels (default 100)")
    gen.add_argument("--duration", type=float, help="or: seconds of arrivals")
    gen.add_argument("--rate", type=float, help="parcels per second (all sites)")
    gen.add_argument("--rate-per-hour", type=float, help="parcels per hour (all sites)")
    gen.add_argument("--profile", choices=("flat", "daily"), default="flat")
    gen.add_argument(
        "--peak",
        action="append",
        default=[],
        metavar="START:DURATION:FACTOR",
        help="extra peak, seconds from the start (repeatable)",
    )
    gen.add_argument("--start", default="2026-01-05T06:00:00+00:00", help="nominal start")
    for kind, default in (
        ("missort", 0.01),
        ("delay", 0.01),
        ("lost", 0.01),
        ("noread", 0.02),
        ("recirculation", 0.02),
        ("misroute", 0.0),
    ):
        gen.add_argument(f"--{kind}-rate", type=float, default=default, dest=f"{kind}_rate")
    gen.add_argument(
        "--plan-change", type=float, default=0.5, help="sort plan v2 from this share (<0: none)"
    )
    gen.add_argument(
        "--chinese-hub",
        metavar="SITE",
        help="make this site (one of --sites) a Chinese hub: Asia/Shanghai, S10 numbers "
        "ending in CN, read points named in Chinese, express classes by destination",
    )
    gen.add_argument(
        "--same-city-days", type=int, default=CHINESE_HUB.same_city_days,
        help="the hub's same-city standard, J+n (default 1: 24 h)",
    )  # fmt: skip
    gen.add_argument(
        "--other-city-days", type=int, default=CHINESE_HUB.other_city_days,
        help="the hub's standard to other cities, J+n (default 3: 72 h)",
    )  # fmt: skip


def _playback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", required=True)
    p.add_argument(
        "--speed", type=float, default=1.0, help="acceleration (publish: 0 = unpaced, at once)"
    )
    p.add_argument("--start-delay", type=float, default=1.0, help="seconds before time 0")
    p.add_argument("--start-at", help="wall-clock time of scenario time 0 (ISO, with offset)")
    p.add_argument("--clock-out", help="write the playback clock (start, speed) here")
    p.add_argument(
        "--truth-out", help="write the ground truth as JSON Lines, on this playback's clock"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "generate":
        return _generate(args)
    stop = stop_on_signals()
    scenario = Scenario.load(Path(args.scenario))
    if args.action == "play":
        return _play(args, scenario, stop)
    return _publish(args, scenario, settings.broker(), stop)


def config_from_args(args: argparse.Namespace) -> ScenarioConfig:
    """The scenario configuration the `sim generate` options describe."""
    if args.rate is not None and args.rate_per_hour is not None:
        raise ConfigError("give --rate or --rate-per-hour, not both")
    if args.parcels is not None and args.duration is not None:
        raise ConfigError("give --parcels or --duration, not both")
    rate = args.rate_per_hour or (args.rate or 2.0) * 3600.0
    peaks = []
    for text in args.peak:
        try:
            start, duration, factor = (float(x) for x in text.split(":"))
        except ValueError as exc:
            raise ConfigError(f"--peak {text!r} is not START:DURATION:FACTOR") from exc
        peaks.append(Peak(start, duration, factor))
    sites = tuple(s for s in args.sites.split(",") if s)
    return ScenarioConfig(
        seed=args.seed,
        sites=sites,
        rfid_sites=tuple(s for s in args.rfid_sites.split(",") if s),
        destinations=tuple(d for d in args.destinations.split(",") if d),
        induction_lines=1 if len(sites) == 1 else 2,
        parcels=None if args.duration is not None else (args.parcels or 100),
        duration_s=args.duration,
        rate_per_hour=rate,
        profile=DAILY_PROFILE if args.profile == "daily" else FLAT_PROFILE,
        peaks=tuple(peaks),
        start=args.start,
        faults=FaultRates(**{k: getattr(args, f"{k}_rate") for k in FAULT_KINDS}),
        plan_change_fraction=args.plan_change if args.plan_change >= 0 else None,
        hubs=_hubs(args),
    )


def _hubs(args: argparse.Namespace) -> tuple[Hub, ...]:
    site = getattr(args, "chinese_hub", None)
    if not site:
        return ()
    return (
        replace(
            CHINESE_HUB,
            site=site,
            same_city_days=args.same_city_days,
            other_city_days=args.other_city_days,
        ),
    )


def summary_table(scenario: Scenario) -> Table:
    """What was generated: parcels, reads, faults by kind, per site and in total."""
    table = Table(title=f"scenario seed {scenario.seed}: {scenario.duration_s:,.0f} s")
    table.add_column("site")
    for name in ("parcels", "reads", *FAULT_KINDS):
        table.add_column(name, justify="right")
    parcels = Counter(m.origin_site for m in scenario.manifest)
    reads = Counter(scenario.read_points[i].site for i in scenario.columns.read_point.tolist())
    faults = Counter((f.site, f.kind) for f in scenario.faults)
    for s in [*(s.site for s in scenario.sites), "total"]:
        if s == "total":
            row = [len(scenario.manifest), len(scenario.columns)]
            row += [sum(faults[(x.site, k)] for x in scenario.sites) for k in FAULT_KINDS]
        else:
            row = [parcels[s], reads[s], *(faults[(s, k)] for k in FAULT_KINDS)]
        table.add_row(s, *(f"{v:,}" for v in row))
    return table


def _generate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with console.status("generating ..."):
        scenario = generate(config)
        scenario.save(Path(args.out))
    console.print(summary_table(scenario))
    console.print(f"wrote {args.out}")
    if args.site_files:
        from firmware_sim.sitefiles import write_site_files

        for path in write_site_files(scenario, Path(args.site_files)):
            console.print(f"wrote {path}")
    return 0


def _clock(args: argparse.Namespace, speed: float) -> PlaybackClock:
    if args.start_at:
        try:
            start = datetime.fromisoformat(args.start_at)
        except ValueError as exc:
            raise ConfigError(f"--start-at {args.start_at!r} is not an ISO time") from exc
    else:
        start = datetime.now(UTC) + timedelta(seconds=args.start_delay)
    clock = PlaybackClock(start, speed)
    return clock


def _wait_for_clock(path: Path, stop: threading.Event) -> PlaybackClock | None:
    while not path.exists():
        if stop.wait(0.05):
            return None
    return PlaybackClock.load(path)


def _record(args: argparse.Namespace, scenario: Scenario, clock: PlaybackClock) -> None:
    if args.clock_out:
        clock.save(Path(args.clock_out))
    if args.truth_out:
        Path(args.truth_out).write_text(scenario.truth_lines(clock.start, clock.speed))


@contextmanager
def _progress(total: int, what: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    if quiet:
        yield lambda _done: None
        return
    columns = (
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(what, total=total)
        yield lambda done: progress.update(task, completed=done)


def _play(args: argparse.Namespace, scenario: Scenario, stop: threading.Event) -> int:
    from firmware_sim.player import ScannerBank, play

    if args.speed <= 0:
        raise ConfigError("play needs a positive --speed")
    bank = ScannerBank(Path(args.port_dir), [r.device for r in scenario.read_points])
    try:
        if args.clock_from:
            clock = _wait_for_clock(Path(args.clock_from), stop)
            if clock is None:
                return 0
        else:
            clock = _clock(args, args.speed)
        _record(args, scenario, clock)
        with _progress(len(scenario.columns), "playing", args.quiet) as progress:
            sent = play(
                scenario,
                bank,
                stop=stop,
                clock=clock,
                on_progress=progress,
                tag_dwell_s=scenario.config.tag_dwell_s,
            )
        console.print(summary_table(scenario))
        console.print(f"sim: sent {sent} frames of {len(scenario.columns)}")
        if not args.exit:
            stop.wait()  # keep the ports open so the agent can drain them
    finally:
        bank.close()
    return 0


def _publish(
    args: argparse.Namespace, scenario: Scenario, broker: BrokerAddress, stop: threading.Event
) -> int:
    from firmware_sim.publish import PublishSettings, publish

    paced = args.speed > 0
    if paced:
        clock = _clock(args, args.speed)
    else:
        # Unpaced: the whole scenario lies just behind now, like an outbox replaying,
        # so no timestamp is in the future (the ingest refuses those).
        clock = PlaybackClock(datetime.now(UTC) - timedelta(seconds=scenario.duration_s + 1))
    _record(args, scenario, clock)
    settings = PublishSettings(
        broker=broker,
        agent=args.agent,
        boot=args.boot or int(datetime.now(UTC).timestamp()),
        batch_max_events=args.batch,
        tag_dwell_s=scenario.config.tag_dwell_s,
    )
    with _progress(len(scenario.columns), "publishing", args.quiet) as progress:
        sent = publish(scenario, settings, clock, paced=paced, stop=stop, on_progress=progress)
    console.print(summary_table(scenario))
    console.print(f"sim: published {sent} events of {len(scenario.columns)}")
    return 0
