"""Checkpoint files (detect/checkpoint.py) without a database: the round trip keeps
the engine's behaviour, and what does not fit is refused with the reason."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detect import checkpoint
from detect.engine import AlertChange, Engine, ManifestFacts, ScanBatch
from detect.reference import DetectConfig, ReadPointRow, Reference, build_reference
from storage.feed import FeedPosition

POINTS = [
    ReadPointRow("S-IND", "S", "induction", "induction", 1),
    ReadPointRow("S-DOR", "S", "door", "dispatch", 5),
]
IDS = ["RR473124829GB", "EE471108151FR", "PARCEL-7/odd"]
POSITION = FeedPosition(700, 705, (701, 703))


def _ref(stage_s: float = 10.0) -> Reference:
    cfg = DetectConfig(skew_tolerance_s=0.0, default_missing_s=20.0)
    return build_reference(
        POINTS, [("express", 1)], [("S", "induction", "express", stage_s)], (), (), (), ["LON"],
        cfg,
    )  # fmt: skip


def _engine(ref: Reference) -> Engine:
    facts = {t: ManifestFacts("express", "LON", "S", "S", 0.0) for t in IDS[:2]}
    return Engine(ref, lambda ids: {t: facts[t] for t in ids if t in facts})


def _reads(
    engine: Engine, ids: list[str | None], rps: list[str], ts: list[float]
) -> list[AlertChange]:
    return engine.ingest(
        ScanBatch(ids, rps, [f"{rp}-dev" for rp in rps], ["S"] * len(ids),
                  np.array(ts), np.array([t is None for t in ids]))
    )  # fmt: skip


def _fit(ref: Reference, **changes: object) -> checkpoint.Fit:
    fit = checkpoint.Fit("1/db/5", 150, None, ref.config, checkpoint.layout_of(ref))
    return replace(fit, **changes)  # type: ignore[arg-type]


def _written(tmp_path: Path, ref: Reference) -> tuple[Engine, Path]:
    engine = _engine(ref)
    _reads(engine, [IDS[0], IDS[1], IDS[2], None], ["S-IND"] * 4, [0.0, 1.0, 2.0, 3.0])
    _reads(engine, [IDS[1]], ["S-DOR"], [5.0])
    engine.tick(12.5)  # opens delays: the open marks must survive
    path = checkpoint.file_for(tmp_path, None)
    cp = checkpoint.capture(engine, POSITION, 12.0, "2026-11-28T10:00:00+00:00", [(3.0, [IDS[0]])])
    assert checkpoint.write(path, cp, _fit(ref)) == path.stat().st_size
    return engine, path


def test_a_restored_engine_alerts_and_moves_like_the_captured_one(tmp_path: Path) -> None:
    """Every parcel and device column, the non-S10 ids and the live-alert marks come back:
    the same reads and ticks then give the same alert changes in both engines."""
    ref = _ref()
    original, path = _written(tmp_path, ref)
    cp = checkpoint.read(path, _fit(ref))
    assert (cp.position, cp.settle) == (POSITION, [(3.0, [IDS[0]])])
    restored = _engine(ref)
    assert checkpoint.restore(restored, cp) is False  # same numbers: nothing to recompute
    for name, col in original.state.columns().items():
        np.testing.assert_array_equal(restored.state.columns()[name], col, err_msg=name)
    assert restored.devices.ids == original.devices.ids
    moved = [_reads(e, [IDS[0], IDS[2]], ["S-DOR", "S-DOR"], [20.0, 20.0])
             for e in (original, restored)]  # fmt: skip
    assert moved[0] == moved[1]
    assert {(c.action, c.kind, c.tracking_id) for c in moved[1]} == {
        ("resolve", "delay", IDS[0]),
        ("resolve", "delay", IDS[2]),
    }  # the delays opened before the capture are resolved, not forgotten
    assert (
        restored.tracking_id(int(restored.state.find(restored.codec.encode([IDS[2]]))[0]))
        == (IDS[2])
    )
    assert restored.tick(100.0) == original.tick(100.0)
    assert restored.devices.check(200.0)[0].keys() == original.devices.check(200.0)[0].keys()


def test_changed_standards_are_reported_for_a_recompute(tmp_path: Path) -> None:
    """A checkpoint taken under other standards loads, and says the deadlines are stale."""
    _, path = _written(tmp_path, _ref())
    later = _ref(stage_s=30.0)
    assert checkpoint.restore(_engine(later), checkpoint.read(path, _fit(later))) is True


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"database": "2/db/5"}, "another database"),
        ({"schema": 151}, "another schema"),
        ({"sites": ("S",)}, "another sites"),
        ({"config": DetectConfig(skew_tolerance_s=2.0)}, "another config"),
        ({"layout": ((), (), (), (), ())}, "another layout"),
    ],
    ids=["database", "schema", "sites", "settings", "layout"],
)
def test_a_checkpoint_for_another_detector_is_refused(
    tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    """Another database, schema, shard, setting or layout: refused, naming which."""
    ref = _ref()
    _, path = _written(tmp_path, ref)
    with pytest.raises(checkpoint.Refused, match=reason):
        checkpoint.read(path, _fit(ref, **changes))


def test_another_format_and_a_missing_file_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of an older format, or none at all, is refused, naming the reason."""
    ref = _ref()
    _, path = _written(tmp_path, ref)
    written = checkpoint.FORMAT
    monkeypatch.setattr(checkpoint, "FORMAT", written + 1)
    with pytest.raises(checkpoint.Refused, match=f"format {written}"):
        checkpoint.read(path, _fit(ref))
    with pytest.raises(checkpoint.Refused, match="no checkpoint"):
        checkpoint.read(tmp_path / "none.npz", _fit(ref))


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    """The second write replaces the first by rename; no temporary file is left."""
    ref = _ref()
    _, path = _written(tmp_path, ref)
    _written(tmp_path, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_flipped_byte_anywhere_is_refused_or_harmless(tmp_path: Path) -> None:
    """A byte flipped at any of 400 positions (headers, names, arrays) gives a refusal or,
    where it lands in zip metadata nothing reads (a timestamp), the very same checkpoint;
    never another exception (a flip in an .npy header once raised one)."""
    ref = _ref()
    _, path = _written(tmp_path, ref)
    original = path.read_bytes()
    whole = checkpoint.read(path, _fit(ref))
    refused = 0
    for position in np.linspace(0, len(original) - 1, 400).astype(int):
        data = bytearray(original)
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            loaded = checkpoint.read(path, _fit(ref))
        except checkpoint.Refused:
            refused += 1
            continue
        assert _same(loaded, whole), position
    assert refused > 300  # nearly every flip is caught, by the CRCs or the parsers


def _same(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint) -> bool:
    def arrays_equal(x: checkpoint.Arrays, y: checkpoint.Arrays) -> bool:
        return x.keys() == y.keys() and all(
            x[k].dtype == y[k].dtype
            and np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f")  # unset: NaN
            for k in x
        )

    return (
        (a.position, a.written_at, a.health_mark, a.settle, a.unknown_read_points, a.others)
        == (b.position, b.written_at, b.health_mark, b.settle, b.unknown_read_points, b.others)
        and arrays_equal(a.parcels, b.parcels)
        and arrays_equal(a.devices, b.devices)
        and arrays_equal(a.numbers, b.numbers)
    )


def test_a_checkpoint_missing_an_array_is_refused(tmp_path: Path) -> None:
    """A zip that lost a member (a flipped name length in the central directory makes
    zipfile skip members silently) is refused, naming the missing array."""
    ref = _ref()
    _, path = _written(tmp_path, ref)
    with zipfile.ZipFile(path) as whole, zipfile.ZipFile(tmp_path / "cut.npz", "w") as cut:
        for member in whole.infolist():
            if member.filename != "device_reads.npy":
                cut.writestr(member, whole.read(member))
    (tmp_path / "cut.npz").replace(path)
    with pytest.raises(checkpoint.Refused, match="device_reads"):
        checkpoint.read(path, _fit(ref))
