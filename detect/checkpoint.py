"""Checkpoints of the detection state, so that a restart loads the state and follows
the scan feed from where it stood instead of replaying a day of scans.

A checkpoint is one uncompressed `.npz` file (numpy arrays only, never pickles):
every column of the parcel state with its key index, the device state, the keys of
tracking ids that are not S10-shaped, the numbers the deadlines were computed with,
and a JSON header: the format, the feed position the state stands at (a snapshot of
storage/feed.py), and what the state is only valid for (database, schema version,
shard sites, detection settings, layout). It is written to a temporary file, flushed
to disk and renamed over the previous one, so a crash leaves one whole file or the
other; the zip members' CRCs and the list of members in the header catch a
damaged one. A checkpoint that does not fit the
detector loading it is refused (`Refused`, with the reason) and the detector replays
from PostgreSQL instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detect.engine import Engine
from detect.reference import DetectConfig, Reference
from parceltrack.errors import ParceltrackError
from storage.feed import FeedPosition

FORMAT = 2  # bump on any change of what is stored or what it means

# The numbers a reload may change without a new layout (standards, windows, learned
# transit times, plans): a state computed under others is refreshed after loading.
NUMBER_FIELDS = ("stage_s", "grace_s", "missing_s", "delivery_s", "eta_in_s", "eta_in_p90_s",
                 "plan_key", "plan_chute", "plan_door", "skew_s", "gap_s")  # fmt: skip

Arrays = dict[str, npt.NDArray[Any]]


class Refused(ParceltrackError):
    """A checkpoint that cannot stand for this detector's state; says why."""


@dataclass(frozen=True, slots=True)
class Fit:
    """What a checkpoint must agree with to be loaded: the detector's database, schema,
    sites, settings and layout (the state's indices point into the layout)."""

    database: str
    schema: int
    sites: tuple[str, ...] | None
    config: DetectConfig
    layout: tuple[tuple[str, ...], ...]  # sites, read points, stages, classes, destinations

    def header(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "schema": self.schema,
            "sites": None if self.sites is None else sorted(self.sites),
            "config": json.loads(json.dumps(dataclasses.asdict(self.config))),
            "layout": [list(names) for names in self.layout],
        }


def layout_of(ref: Reference) -> tuple[tuple[str, ...], ...]:
    return (ref.sites, ref.read_points, ref.stages, ref.classes, ref.destinations)


def numbers(ref: Reference) -> Arrays:
    return {f: getattr(ref, f) for f in NUMBER_FIELDS}


def same_numbers(a: Arrays, b: Arrays) -> bool:
    return all(
        f in a and f in b and a[f].shape == b[f].shape and np.array_equal(a[f], b[f])
        for f in NUMBER_FIELDS
    )


def file_for(folder: Path, sites: tuple[str, ...] | None) -> Path:
    """One file per shard: a shard's sites (sorted) name it, hashed (any characters)."""
    if sites is None:
        return folder / "detect-all.npz"
    digest = hashlib.sha256("\n".join(sorted(sites)).encode()).hexdigest()[:16]
    return folder / f"detect-sites-{digest}.npz"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The detection state at one feed position, and the service's bookkeeping."""

    position: FeedPosition
    written_at: float  # epoch seconds of the capture
    health_mark: str  # ISO time of the latest device health report taken in
    settle: list[tuple[float, list[str]]]  # a shard's adoptions still due
    unknown_read_points: int
    parcels: Arrays
    devices: Arrays
    others: list[str]  # tracking ids that are not S10-shaped, by negative key
    numbers: Arrays


def capture(
    engine: Engine,
    position: FeedPosition,
    at: float,
    health_mark: str,
    settle: list[tuple[float, list[str]]],
) -> Checkpoint:
    """Copies of the state (cheap: memory copies), taken between ticks so that it
    matches `position`; writing it may then go on in another thread."""
    return Checkpoint(
        position,
        at,
        health_mark,
        [(due, list(ids)) for due, ids in settle],
        engine.unknown_read_points,
        engine.state.columns(),
        engine.devices.columns(),
        engine.codec.others(),
        {k: v.copy() for k, v in numbers(engine.ref).items()},
    )


def write(path: Path, checkpoint: Checkpoint, fit: Fit) -> int:
    """Write atomically (temporary file, fsync, rename, fsync of the folder); returns
    the bytes written."""
    header = {
        "format": FORMAT,
        **fit.header(),
        "position": [
            checkpoint.position.xmin,
            checkpoint.position.xmax,
            list(checkpoint.position.in_flight),
        ],
        "written_at": checkpoint.written_at,
        "health_mark": checkpoint.health_mark,
        "settle": checkpoint.settle,
        "unknown_read_points": checkpoint.unknown_read_points,
    }
    arrays: Arrays = {f"parcel_{k}": v for k, v in checkpoint.parcels.items()}
    arrays.update({f"device_{k}": v for k, v in checkpoint.devices.items()})
    arrays.update({f"number_{k}": v for k, v in checkpoint.numbers.items()})
    arrays["others"] = np.array(checkpoint.others, dtype=np.str_)
    # The members are listed: a flipped name length in the zip's central directory can
    # make zipfile skip members without an error, and a partial state must be refused.
    header["members"] = sorted(arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own: a writer abandoned after a failure may still be writing.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path.stat().st_size


def read(path: Path, fit: Fit) -> Checkpoint:
    """Load a checkpoint written for a detector like this one; raises `Refused` with the
    reason for a missing, damaged, older-format or foreign one."""
    if not path.exists():
        raise Refused(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except Exception as exc:  # whatever a damaged file makes zipfile or numpy raise
        # (a flipped byte in an .npy header can even be a SyntaxError): refuse, replay.
        raise Refused(f"damaged checkpoint {path}: {exc!r}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else None
        raise Refused(f"checkpoint format {got!r}, this detector reads format {FORMAT}")
    if header.get("members") != sorted(arrays):
        missing = sorted(set(header.get("members") or ()) - set(arrays))
        raise Refused(f"damaged checkpoint {path}: arrays missing or foreign: {missing}")
    for key, want in fit.header().items():
        if header.get(key) != want:
            raise Refused(f"checkpoint of another {key}: {header.get(key)!r}, here {want!r}")
    try:
        xmin, xmax, in_flight = header["position"]
        return Checkpoint(
            FeedPosition(int(xmin), int(xmax), tuple(int(x) for x in in_flight)),
            float(header["written_at"]),
            str(header["health_mark"]),
            [(float(due), [str(t) for t in ids]) for due, ids in header["settle"]],
            int(header["unknown_read_points"]),
            _part(arrays, "parcel_"),
            _part(arrays, "device_"),
            [str(t) for t in arrays["others"].tolist()],
            _part(arrays, "number_"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise Refused(f"damaged checkpoint {path}: {exc!r}") from exc


def _part(arrays: Arrays, prefix: str) -> Arrays:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def restore(engine: Engine, checkpoint: Checkpoint) -> bool:
    """Put the checkpoint's state into a fresh engine (its reference loaded for the
    same layout); returns whether the deadlines had to be recomputed because the
    standards, windows, plans or learned times changed since. Raises `Refused` for
    arrays that do not fit."""
    try:
        engine.state.restore(checkpoint.parcels)
        engine.devices.restore(checkpoint.devices)
    except (KeyError, ValueError) as exc:
        raise Refused(f"checkpoint state does not fit: {exc}") from exc
    engine.codec.restore_others(checkpoint.others)
    engine.unknown_read_points = checkpoint.unknown_read_points
    return not same_numbers(checkpoint.numbers, numbers(engine.ref))
