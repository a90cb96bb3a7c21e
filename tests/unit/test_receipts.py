"""Commit receipts (parceltrack/receipts.py) and the outbox logic that obeys them."""

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from edge.outbox import Outbox, OutboxBounds
from parceltrack import topics
from parceltrack.errors import WireFormatError
from parceltrack.events import EventKind, ScanEvent
from parceltrack.receipts import (
    MAX_RANGES,
    Committed,
    Receipt,
    decode_receipt,
    encode_receipt,
    event_seqs,
    json_schema,
    published_schema,
    ranges_by_boot,
    ranges_of,
    receipts_for,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
TOPIC = topics.receipts("LHR1", "scan-1")


def _payload(**fields: object) -> bytes:
    body: dict[str, object] = {
        "v": 1, "site": "LHR1", "device": "scan-1", "boot": 7, "ranges": [[0, 9]],
        "ts": NOW.isoformat(),
    }  # fmt: skip
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("seqs", "ranges"),
    [
        ([], ()),
        ([5], ((5, 5),)),
        ([3, 1, 2, 2, 7, 8, 10], ((1, 3), (7, 8), (10, 10))),
        (range(0, 500), ((0, 499),)),
    ],
    ids=["none", "one", "unordered-with-duplicates", "a-whole-batch"],
)
def test_ranges_merge_runs_of_sequence_numbers(seqs: list[int], ranges: tuple[object]) -> None:
    """Sequence numbers become sorted inclusive runs; duplicates and order do not matter."""
    assert ranges_of(seqs) == ranges


def test_receipts_are_one_per_device_and_boot() -> None:
    """Ranges of two devices and two boots give three receipts, adjacent ranges joined."""
    committed: list[Committed] = [
        ("LHR1", "a", 1, ((0, 0),)), ("LHR1", "a", 1, ((1, 4), (9, 9))),
        ("LHR1", "a", 2, ((0, 0),)), ("LHR1", "b", 1, ((4, 4),)),
    ]  # fmt: skip
    got = {(r.device, r.boot): r.ranges for r in receipts_for(committed)}
    assert got == {("a", 1): ((0, 4), (9, 9)), ("a", 2): ((0, 0),), ("b", 1): ((4, 4),)}


@pytest.mark.parametrize(
    ("boots", "seqs", "expected"),
    [
        ([7, 7, 7], [10, 11, 12], {7: ((10, 12),)}),
        ([7, 7, 7], [10, 12, 11], {7: ((10, 12),)}),
        ([7, 7, 7, 7], [10, 11, 11, 14], {7: ((10, 11), (14, 14))}),
        ([7, 8, 7], [0, 0, 1], {7: ((0, 1),), 8: ((0, 0),)}),
        ([], [], {}),
    ],
    ids=["consecutive", "out-of-order", "duplicate-and-gap", "two-boots", "empty"],
)
def test_ranges_by_boot_of_one_message(
    boots: list[int], seqs: list[int], expected: dict[int, tuple[object]]
) -> None:
    """A message's events give their ranges per boot, whatever their order."""
    assert ranges_by_boot(boots, seqs) == expected


def test_a_receipt_with_too_many_ranges_is_split() -> None:
    """Every other sequence number committed makes more runs than one receipt may carry."""
    committed: list[Committed] = [
        ("LHR1", "a", 1, ((2 * i, 2 * i),)) for i in range(MAX_RANGES + 5)
    ]
    parts = receipts_for(committed)
    assert [len(r.ranges) for r in parts] == [MAX_RANGES, 5]
    assert sum(r.events for r in parts) == MAX_RANGES + 5


def test_round_trip_keeps_the_ranges() -> None:
    """An encoded receipt decodes to the same device, boot and ranges, and covers them."""
    receipt = Receipt("LHR1", "scan-1", 7, ((0, 499), (600, 600)))
    decoded = decode_receipt(TOPIC, encode_receipt(receipt, NOW))
    assert decoded == receipt
    assert decoded.covers(499) and decoded.covers(600) and not decoded.covers(500)


def test_published_schema_matches_the_model_and_the_encoder() -> None:
    """The committed JSON Schema is the model's, and encoded receipts validate against it."""
    assert published_schema() == json.loads(json.dumps(json_schema()))
    receipt = Receipt("LHR1", "scan-1", 7, ((0, 3),))
    jsonschema.validate(json.loads(encode_receipt(receipt, NOW)), published_schema())


@pytest.mark.parametrize(
    ("topic", "payload", "names"),
    [
        (topics.events("LHR1", "scan-1"), _payload(), "receipts"),
        (TOPIC, _payload(device="scan-2"), "scan-2"),
        (TOPIC, _payload(ranges=[[9, 3]]), "ranges.0"),
        (TOPIC, _payload(ranges=[]), "ranges"),
        (TOPIC, _payload(ranges=[[-1, 3]]), "ranges"),
        (TOPIC, _payload(boot="x"), "boot"),
        (TOPIC, _payload(v=2), "v"),
        (TOPIC, _payload(extra=1), "extra"),
        (TOPIC, b"not json", "payload"),
    ],
    ids=[
        "events-topic", "other-device", "reversed-range", "no-ranges", "negative-seq",
        "boot-not-int", "unknown-version", "unknown-field", "not-json",
    ],
)  # fmt: skip
def test_bad_receipts_are_refused_naming_the_field(topic: str, payload: bytes, names: str) -> None:
    """A receipt on the wrong topic, for another device or malformed raises and says where."""
    with pytest.raises(WireFormatError, match=names):
        decode_receipt(topic, payload)


def test_event_seqs_reads_dead_lettered_batches_leniently() -> None:
    """Boot and sequence of each event a bad batch names; what is not an integer is skipped."""
    payload = json.dumps(
        {"events": [{"boot": 7, "seq": 1}, {"boot": 7, "seq": "2"}, {"boot": 7, "seq": 3}, 5]}
    ).encode()
    assert event_seqs(payload) == [(7, 1), (7, 3)]
    assert event_seqs(b"{broken") == [] and event_seqs(b"[1]") == []


def test_event_seqs_survives_nesting_deeper_than_json_can_parse() -> None:
    """A dead-lettered payload nested 100,000 deep names no events; it raises nothing
    (it once raised RecursionError and killed the ingest worker's thread)."""
    assert event_seqs(b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") == []


# -- the outbox keeps events until a receipt covers them --------------------------------


def _events(n: int, start: int = 0, device: str = "dev-1", boot: int = 1) -> list[ScanEvent]:
    now = datetime.now(UTC)
    return [
        ScanEvent(device, boot, start + i, now, "LHR1", "LHR1-TUN1", EventKind.READ, f"C{i}")
        for i in range(n)
    ]


def _seqs_waiting(outbox: Outbox) -> list[int]:
    """Sequence numbers still in the outbox (acknowledged or not), in row order."""
    rows = outbox._db.execute("SELECT seq FROM outbox ORDER BY row_id").fetchall()
    return [int(r[0]) for r in rows]


def test_puback_only_marks_events_acknowledged(tmp_path: Path) -> None:
    """Acknowledged events stay in the outbox, out of the publish queue, counted as lag."""
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append(_events(10))
    pending = outbox.oldest_texts(0, 100)
    outbox.mark_acked([p.row_id for p in pending[:6]])
    assert outbox.depth()[0] == 10
    assert [json.loads(p.text)["seq"] for p in outbox.oldest_texts(0, 100)] == [6, 7, 8, 9]
    count, lag = outbox.unreceipted()
    assert count == 6 and lag is not None and lag >= 0


def test_a_receipt_removes_exactly_the_events_it_covers(tmp_path: Path) -> None:
    """Only the receipted device's boot and ranges leave; other devices and boots stay."""
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append(_events(10) + _events(3, device="dev-2") + _events(2, boot=2))
    assert outbox.apply_receipt("dev-1", 1, [(0, 3), (8, 20)]) == 6
    assert _seqs_waiting(outbox) == [4, 5, 6, 7, 0, 1, 2, 0, 1]
    assert outbox.depth()[0] == 9
    assert outbox.apply_receipt("dev-1", 1, [(0, 3)]) == 0  # a receipt seen twice


def test_unreceipted_events_are_published_again_with_a_growing_wait(tmp_path: Path) -> None:
    """After `after_s` without receipt an acknowledged event is due again, then after 2x."""
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append(_events(4))
    rows = [p.row_id for p in outbox.oldest_texts(0, 10)]
    outbox.mark_acked(rows, now=1000.0)
    assert outbox.due_for_resend(10, after_s=5, max_s=60, now=1004.0) == []
    due = outbox.due_for_resend(10, after_s=5, max_s=60, now=1005.0)
    assert [p.row_id for p in due] == rows
    # In flight again: not due twice, and not acknowledged until the next PUBACK.
    assert outbox.due_for_resend(10, after_s=5, max_s=60, now=2000.0) == []
    assert outbox.unreceipted()[0] == 0
    outbox.mark_acked(rows, now=2000.0)  # second publication: the wait doubles
    assert outbox.due_for_resend(10, after_s=5, max_s=60, now=2009.0) == []
    assert len(outbox.due_for_resend(10, after_s=5, max_s=60, now=2010.0)) == 4


def test_the_resend_wait_stops_growing_at_its_maximum(tmp_path: Path) -> None:
    """An event published many times waits at most `max_s` for its receipt."""
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append(_events(1))
    [row] = [p.row_id for p in outbox.oldest_texts(0, 10)]
    outbox._db.execute("UPDATE outbox SET tries = 40")
    outbox.mark_acked([row], now=0.0)
    assert outbox.due_for_resend(10, after_s=5, max_s=60, now=59.0) == []
    assert len(outbox.due_for_resend(10, after_s=5, max_s=60, now=60.0)) == 1


def test_bounds_count_unreceipted_events(tmp_path: Path) -> None:
    """Acknowledged events without receipt count against max_events like unsent ones."""
    outbox = Outbox(tmp_path / "o.sqlite", OutboxBounds(max_events=100))
    outbox.append(_events(80))
    outbox.mark_acked([p.row_id for p in outbox.oldest_texts(0, 100)])
    outbox.append(_events(40, start=80))
    assert outbox.depth()[0] == 100 and outbox.dropped == 20
    assert _seqs_waiting(outbox)[0] == 20


def test_an_outbox_from_before_receipts_is_upgraded(tmp_path: Path) -> None:
    """Rows stored without boot and seq columns get them from their text, and obey receipts."""
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE outbox (row_id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL,"
            " created REAL NOT NULL, event TEXT NOT NULL, site TEXT)"
        )
        old = Outbox(tmp_path / "new.sqlite")
        old.append(_events(3))
        texts = [p.text for p in old.oldest_texts(0, 10)]
        db.executemany(
            "INSERT INTO outbox (device, created, event, site) VALUES ('dev-1', 1.0, ?, 'LHR1')",
            [(t,) for t in texts],
        )
    outbox = Outbox(path)
    assert outbox.apply_receipt("dev-1", 1, [(0, 1)]) == 2
    assert _seqs_waiting(outbox) == [2]
