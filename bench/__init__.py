"""Benchmarks run by `parceltrack bench NAME`: each module prints its figure beside a
baseline measured in the same run, because a ratio holds on a noisy machine and an
absolute time does not. Each module exposes `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from parceltrack.config import Settings

# The benchmarks; the other modules (accuracy, score) are the harness they share.
NAMES = (
    "alerts",
    "api",
    "detect",
    "edge",
    "ingest",
    "manager",
    "notify",
    "replay",
    "scenario",
)


def load(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"bench.{name}")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("bench", help="benchmarks, each beside its baseline")
    bench_sub = parser.add_subparsers(dest="bench", required=True)
    for name in NAMES:
        module = load(name)
        module.add_arguments(bench_sub.add_parser(name, help=(module.__doc__ or "").strip()))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    code: int = load(args.bench).run(args)
    return code
