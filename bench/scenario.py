"""Scenario generation speed: an hour of arrivals at a given rate, beside the time the
same number of bare S10.make calls take (the per-parcel work no generator can skip)."""

from __future__ import annotations

import argparse
import time

from firmware_sim.arrivals import FLAT_PROFILE
from firmware_sim.scenario import FaultRates, ScenarioConfig, generate
from parceltrack.identifiers import S10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate-per-hour", type=float, default=100_000.0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--sites", default="LHR1,MAN1,EDI1")
    parser.add_argument("--rfid-sites", default="MAN1")


def run(args: argparse.Namespace) -> int:
    config = ScenarioConfig(
        seed=1,
        sites=tuple(args.sites.split(",")),
        rfid_sites=tuple(s for s in args.rfid_sites.split(",") if s),
        parcels=None,
        duration_s=args.hours * 3600.0,
        rate_per_hour=args.rate_per_hour,
        profile=FLAT_PROFILE,
        faults=FaultRates(0.01, 0.01, 0.01, 0.02, 0.02),
    )
    started = time.perf_counter()
    scenario = generate(config)
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    text = scenario.to_json()
    serialise_s = time.perf_counter() - started
    n = len(scenario.manifest)
    started = time.perf_counter()
    for i in range(n):
        str(S10.make("CP", 10_000_000 + i, "GB"))
    baseline_s = time.perf_counter() - started
    simulated_s = args.hours * 3600.0
    print(f"parcels {n:,}, reads {len(scenario.columns):,}, faults {len(scenario.faults):,}")
    print(f"generate   {generate_s:8.2f} s  ({n / generate_s:,.0f} parcels/s)")
    print(f"to JSON    {serialise_s:8.2f} s  ({len(text) / 1e6:,.1f} MB)")
    print(f"baseline   {baseline_s:8.2f} s  ({n:,} bare S10.make calls)")
    print(f"ratio generate/baseline: {generate_s / baseline_s:.1f}x")
    print(f"faster than real time: {simulated_s / (generate_s + serialise_s):,.0f}x")
    return 0
