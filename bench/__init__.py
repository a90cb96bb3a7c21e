"""Benchmarks run by `parceltrack bench NAME`: each module prints its figure beside a
baseline measured in the same run, because a ratio holds on a noisy machine and an
absolute time does not. Each module exposes `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import importlib
import pkgutil

NAMES = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"bench.{name}")
