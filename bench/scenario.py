"""Scenario generation speed: an hour of arrivals at a given rate, beside the time the
same number of bare S10.make calls take (the per-parcel work no generator can skip);
and playback onto ptys as fast as it goes, beside writing the same frames raw."""

from __future__ import annotations

import argparse
import os
import select
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from firmware_sim.arrivals import FLAT_PROFILE
from firmware_sim.barcode import ScannerFraming
from firmware_sim.clock import PlaybackClock
from firmware_sim.player import ScannerBank, play, scanner_frame
from firmware_sim.scenario import FaultRates, ScenarioConfig, generate
from parceltrack.identifiers import S10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate-per-hour", type=float, default=100_000.0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--sites", default="LHR1,MAN1,EDI1")
    parser.add_argument("--rfid-sites", default="MAN1")
    parser.add_argument("--play-parcels", type=int, default=20_000, help="0: skip playback")


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
    if args.play_parcels:
        _bench_play(args.play_parcels, args.rate_per_hour)
    return 0


def _bench_play(parcels: int, rate_per_hour: float) -> None:
    scenario = generate(
        ScenarioConfig(seed=1, sites=("LHR1",), rfid_sites=(), parcels=parcels,
                       rate_per_hour=rate_per_hour)
    )  # fmt: skip
    reads = scenario.reads
    frames = [scanner_frame(r, ScannerFraming()) for r in reads]
    with tempfile.TemporaryDirectory() as folder:
        bank = ScannerBank(Path(folder), sorted({r.device for r in scenario.read_points}))
        fds = [
            os.open(Path(folder) / d, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY) for d in bank.ports
        ]
        done = threading.Event()

        def drain() -> None:  # the edge agents' part: keep the ptys empty
            while not done.is_set():
                ready, _, _ = select.select(fds, [], [], 0.05)
                for fd in ready:
                    os.read(fd, 65536)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            started = time.perf_counter()
            sent = play(scenario, bank, clock=PlaybackClock(datetime.now(UTC), speed=1e9))
            play_s = time.perf_counter() - started
            started = time.perf_counter()
            for read, data in zip(reads, frames, strict=True):
                bank.ports[read.device].write(data)
            raw_s = time.perf_counter() - started
        finally:
            done.set()
            reader.join()
            for fd in fds:
                os.close(fd)
            bank.close()
    real_rate = len(reads) / max(scenario.duration_s, 1.0)
    print(f"play       {play_s:8.2f} s  ({sent / play_s:,.0f} frames/s onto ptys)")
    print(f"baseline   {raw_s:8.2f} s  ({len(reads) / raw_s:,.0f} frames/s, raw writes)")
    print(f"ratio play/baseline: {play_s / raw_s:.1f}x")
    print(f"highest speed-up at {rate_per_hour:,.0f} parcels/h: {sent / play_s / real_rate:,.0f}x")
