import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.drivers import RfidRead
from edge.outbox import Outbox, OutboxBounds
from edge.smoothing import Smoother, SmoothingSettings
from parceltrack import wire
from parceltrack.events import EventKind, ScanEvent

EPC = "3174257BF4499602D2000000"
GATE = SmoothingSettings(quiet_s=1.0, antenna_positions={1: 0.0, 2: 1.0})


def _pass_reads(epc: str, antennas_in_order: list[int], start: float) -> list[RfidRead]:
    """Reads of a tag crossing a gate: each antenna in turn, 20 reads each, RSSI peaking."""
    reads = []
    for k, antenna in enumerate(antennas_in_order):
        for i in range(20):
            reads.append(RfidRead(epc, antenna, -60 + 10 - abs(i - 10), start + k * 0.5 + i * 0.02))
    return reads


def test_many_reads_of_one_pass_become_one_seen_pass() -> None:
    """Forty reads over a second give one pass with first/last seen, count and peak RSSI."""
    smoother = Smoother(GATE)
    for r in _pass_reads(EPC, [1, 2], 100.0):
        smoother.add(r)
    assert smoother.close_quiet(101.5) == []  # still within the quiet interval
    [p] = smoother.close_quiet(103.0)
    assert (p.epc_hex, p.read_count, p.peak_rssi) == (EPC, 40, -50)
    assert (p.first_seen, p.last_seen) == (100.0, pytest.approx(100.88))
    assert p.antennas == (1, 2) and p.direction == "in"


def test_direction_follows_antenna_order() -> None:
    """A tag seen by antenna 2 before antenna 1 went the other way: out."""
    smoother = Smoother(GATE)
    for r in _pass_reads(EPC, [2, 1], 0.0):
        smoother.add(r)
    [p] = smoother.close_all()
    assert p.direction == "out"


def test_no_direction_without_antenna_positions() -> None:
    """Without positions configured there is no direction, only the antennas."""
    smoother = Smoother(SmoothingSettings(quiet_s=1.0))
    for r in _pass_reads(EPC, [1, 2], 0.0):
        smoother.add(r)
    [p] = smoother.close_all()
    assert p.direction is None and p.antennas == (1, 2)


def test_two_passes_after_a_quiet_gap_are_two_events() -> None:
    """The same tag back after the quiet interval is a new pass."""
    smoother = Smoother(GATE)
    for r in _pass_reads(EPC, [1], 0.0):
        smoother.add(r)
    first = smoother.close_quiet(5.0)
    for r in _pass_reads(EPC, [1], 10.0):
        smoother.add(r)
    assert len(first) == 1 and len(smoother.close_quiet(20.0)) == 1


def _events(n: int, start: int = 0) -> list[ScanEvent]:
    now = datetime.now(UTC)
    return [
        ScanEvent("dev-1", 1, start + i, now, "LHR1", "LHR1-TUN1", EventKind.READ, f"C{i}")
        for i in range(n)
    ]


def _seqs(outbox: Outbox) -> list[int]:
    """The sequence numbers of the events waiting, in the order they would be published."""
    return [json.loads(p.text)["seq"] for p in outbox.oldest_texts(0, 1000)]


def test_outbox_drops_oldest_when_full_and_keeps_new_reads(tmp_path: Path) -> None:
    """Past max_events the oldest are dropped and counted; the new ones are all kept."""
    outbox = Outbox(tmp_path / "o.sqlite", OutboxBounds(max_events=100))
    outbox.append(_events(80))
    outbox.append(_events(50, start=80))
    assert outbox.depth()[0] == 100 and outbox.dropped == 30
    assert _seqs(outbox) == list(range(30, 130))


def test_outbox_drops_events_past_the_age_bound(tmp_path: Path) -> None:
    """Events older than max_age_s are expired, counted, and the rest stay."""
    outbox = Outbox(tmp_path / "o.sqlite", OutboxBounds(max_age_s=60))
    outbox.append(_events(5))
    assert outbox.expire(now=datetime.now(UTC).timestamp() + 30) == 0
    assert outbox.expire(now=datetime.now(UTC).timestamp() + 120) == 5
    assert outbox.depth()[0] == 0 and outbox.dropped == 5


def test_corrupt_outbox_is_moved_aside_and_a_new_one_opens(tmp_path: Path) -> None:
    """A file that is not a database is renamed, reported, and replaced by a working one."""
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite" * 500)
    outbox = Outbox(path)
    assert outbox.corrupt_moved_to is not None and outbox.corrupt_moved_to.exists()
    assert outbox.corrupt_moved_to.read_bytes().startswith(b"this is not sqlite")
    outbox.append(_events(3))
    assert outbox.depth()[0] == 3


def test_undecodable_row_goes_to_quarantine_not_the_broker(tmp_path: Path) -> None:
    """A row whose JSON is damaged is moved to the quarantine table; the others flow."""
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path)
    outbox.append(_events(3))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE outbox SET event = '{broken' WHERE row_id = 2")
    assert _seqs(outbox) == [0, 2]
    assert outbox.quarantined == 1 and outbox.depth()[0] == 2
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT row_id FROM quarantine").fetchall() == [(2,)]


def test_replay_texts_make_the_same_payload_as_encode_batch(tmp_path: Path) -> None:
    """Batches joined from stored wire texts equal wire.encode_batch of the same events."""
    outbox = Outbox(tmp_path / "o.sqlite")
    events = _events(3)
    outbox.append(events)
    texts = [p.text for p in outbox.oldest_texts(0, 10)]
    assert wire.encode_batch_texts("LHR1", "dev-1", "a", texts) == wire.encode_batch(
        "LHR1", "dev-1", "a", events
    )


def _foundation_row(e: ScanEvent) -> str:
    """An event as the foundation's agents stored it: every field, not the wire form."""
    return json.dumps(
        {
            "device": e.device, "boot": e.boot, "seq": e.seq, "ts": e.ts.isoformat(),
            "site": e.site, "read_point": e.read_point, "kind": e.kind.value,
            "code": e.code, "symbology": e.symbology, "tracking_id": e.tracking_id,
            "epc": e.epc, "rssi": e.rssi, "antenna": e.antenna, "read_count": e.read_count,
            "first_seen": e.first_seen.isoformat() if e.first_seen else None,
            "last_seen": e.last_seen.isoformat() if e.last_seen else None,
            "direction": e.direction,
        }
    )  # fmt: skip


def test_rows_of_an_older_agent_still_replay(tmp_path: Path) -> None:
    """An outbox written in the foundation's row format is upgraded and its rows replay."""
    path = tmp_path / "o.sqlite"
    [event] = _events(1)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE outbox (row_id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL,"
            " created REAL NOT NULL, event TEXT NOT NULL)"
        )
        old = _foundation_row(event)
        db.execute("INSERT INTO outbox (device, created, event) VALUES ('dev-1', 1.0, ?)", (old,))
    [pending] = Outbox(path).oldest_texts(0, 10)
    assert pending.text == wire.event_json(event)
