"""Edge: frames parsed per second per protocol on one core, and outbox replay rate,
each beside a baseline measured in the same run."""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edge import mercury, r2000
from edge.barcode import BarcodeFramer
from edge.outbox import Outbox
from firmware_sim.rfid import PC_96, gen2_crc
from parceltrack import wire
from parceltrack.events import EventKind, ScanEvent

CHUNK = 4096  # what one serial read returns at most, roughly


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=100_000, help="frames per protocol")
    parser.add_argument("--events", type=int, default=50_000, help="events to replay")


def _epcs(n: int) -> list[bytes]:
    rng = random.Random(1)
    return [bytes([0x31]) + rng.randbytes(11) for _ in range(n)]


def mercury_stream(n: int) -> bytes:
    out = []
    for i, epc in enumerate(_epcs(n)):
        read = mercury.TagRead(
            epc=epc, rssi=-50 - i % 20, antenna=1 + i % 4, frequency_khz=865_700,
            timestamp_ms=i, phase=i % 180, protocol=5, pc=PC_96,
            tag_crc=gen2_crc(PC_96.to_bytes(2, "big") + epc),
        )  # fmt: skip
        out.append(mercury.encode_response(0x22, 0, mercury.encode_tag_read(read)))
    return b"".join(out)


def r2000_stream(n: int) -> bytes:
    reads = (
        r2000.encode_tag_read(1, r2000.TagRead(epc, PC_96, -50 - i % 20, 1 + i % 4, i % 6))
        for i, epc in enumerate(_epcs(n))
    )
    return b"".join(reads)


def barcode_stream(n: int) -> bytes:
    return b"".join(b"]C0RR%09dGB\r\n" % i for i in range(n))


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - start


def _chunks(buf: bytes) -> list[bytes]:
    return [buf[i : i + CHUNK] for i in range(0, len(buf), CHUNK)]


def parse_mercury(chunks: list[bytes]) -> int:
    framer, n = mercury.MercuryFramer(), 0
    for c in chunks:
        for f in framer.feed(c):
            n += mercury.decode_tag_read(f.data) is not None
    return n


def parse_r2000(chunks: list[bytes]) -> int:
    framer, n = r2000.R2000Framer(), 0
    for c in chunks:
        for f in framer.feed(c):
            n += isinstance(r2000.interpret(f), r2000.TagRead)
    return n


def parse_barcode(chunks: list[bytes]) -> int:
    framer, n = BarcodeFramer(), 0
    for c in chunks:
        n += len(framer.feed(c))
    return n


def scan_baseline(buf: bytes, head: int, length_at: int, overhead: int) -> int:
    """The least any framer must do: find each frame start and jump by its LEN."""
    pos, n, end = 0, 0, len(buf)
    while True:
        pos = buf.find(head, pos)
        if pos < 0 or pos + length_at >= end:
            return n
        pos += buf[pos + length_at] + overhead
        n += 1


def find_baseline(buf: bytes, sep: bytes) -> int:
    pos, n = 0, 0
    while (pos := buf.find(sep, pos) + 1) > 0:
        n += 1
    return n


def _seen_event(seq: int, now: datetime) -> ScanEvent:
    return ScanEvent(
        "LHR1-gate-1", 1, seq, now, "LHR1", "LHR1-DOR01", EventKind.SEEN,
        code="3174257BF4499602D2000000", epc="urn:epc:id:sscc:0614141.1234567890",
        rssi=-51.0, antenna=2, read_count=17, first_seen=now, last_seen=now,
    )  # fmt: skip


def replay(events: int, folder: Path) -> tuple[float, float]:
    """Events/s drained the way the publisher does (read, encode as wire batches,
    delete), and raw SQLite select+delete of the same rows as the baseline."""
    now = datetime.now(UTC)
    outbox = Outbox(folder / "bench-outbox.sqlite")
    for start in range(0, events, 5000):
        outbox.append([_seen_event(i, now) for i in range(start, min(events, start + 5000))])
    raw = sqlite3.connect(folder / "bench-raw.sqlite", isolation_level=None)
    raw.execute("CREATE TABLE t (row_id INTEGER PRIMARY KEY, event TEXT)")
    raw.execute("BEGIN")
    raw.executemany(
        "INSERT INTO t SELECT row_id, event FROM (SELECT ? AS row_id, ? AS event)",
        outbox._db.execute("SELECT row_id, event FROM outbox").fetchall(),
    )
    raw.execute("COMMIT")

    def drain() -> int:
        cursor, n = 0, 0
        while batch := outbox.oldest_texts(cursor, 500):
            wire.encode_batch_texts("LHR1", "LHR1-gate-1", "agent-1", [p.text for p in batch])
            outbox.remove([p.row_id for p in batch])
            cursor, n = batch[-1].row_id, n + len(batch)
        return n

    def drain_raw() -> int:
        cursor, n = 0, 0
        while rows := raw.execute(
            "SELECT row_id, event FROM t WHERE row_id > ? ORDER BY row_id LIMIT 500", (cursor,)
        ).fetchall():
            raw.execute("BEGIN")
            raw.executemany("DELETE FROM t WHERE row_id = ?", [(r[0],) for r in rows])
            raw.execute("COMMIT")
            cursor, n = rows[-1][0], n + len(rows)
        return n

    n, t = _timed(drain)
    m, u = _timed(drain_raw)
    outbox.close()
    raw.close()
    return n / t, m / u


def replay_with_receipts(events: int, folder: Path) -> float:
    """Events/s drained as the publisher does with commit receipts (issue 13): read
    the unacknowledged, encode, mark acknowledged on the PUBACK, then delete what the
    ingest's receipt covers (one receipt per batch, its sequence range)."""
    now = datetime.now(UTC)
    outbox = Outbox(folder / "bench-receipts.sqlite")
    for start in range(0, events, 5000):
        outbox.append([_seen_event(i, now) for i in range(start, min(events, start + 5000))])

    def drain() -> int:
        cursor, n = 0, 0
        while batch := outbox.oldest_texts(cursor, 500):
            wire.encode_batch_texts("LHR1", "LHR1-gate-1", "agent-1", [p.text for p in batch])
            outbox.mark_acked([p.row_id for p in batch])
            first, last = json.loads(batch[0].text)["seq"], json.loads(batch[-1].text)["seq"]
            outbox.apply_receipt("LHR1-gate-1", 1, [(first, last)])
            cursor, n = batch[-1].row_id, n + len(batch)
        return n

    n, t = _timed(drain)
    outbox.close()
    return n / t


def _mercury_baseline(buf: bytes) -> int:
    return scan_baseline(buf, 0xFF, 1, 7)


def _r2000_baseline(buf: bytes) -> int:
    return scan_baseline(buf, 0xA0, 1, 2)


def _barcode_baseline(buf: bytes) -> int:
    return find_baseline(buf, b"\r\n")


def run(args: argparse.Namespace) -> int:
    print(f"edge bench: {args.frames} frames per protocol, chunks of {CHUNK} bytes, one core")
    Row = tuple[str, bytes, Callable[[list[bytes]], int], Callable[[bytes], int], str]
    rows: list[Row] = [
        ("mercury", mercury_stream(args.frames), parse_mercury, _mercury_baseline, "find+skip"),
        ("r2000", r2000_stream(args.frames), parse_r2000, _r2000_baseline, "find+skip"),
        ("barcode", barcode_stream(args.frames), parse_barcode, _barcode_baseline, "find CRLF"),
    ]
    for name, buf, parse, baseline, what in rows:
        chunks = _chunks(buf)
        n, t = _timed(lambda: parse(chunks))  # noqa: B023
        m, u = _timed(lambda: baseline(buf))  # noqa: B023
        if n != args.frames:
            print(f"  {name}: parsed {n} of {args.frames} frames: FAILED")
            return 1
        print(
            f"  {name:8s} {n / t:>12,.0f} frames/s   baseline ({what:9s}) "
            f"{m / u:>12,.0f} frames/s   ratio {(n / t) / (m / u):.3f}"
        )
    with tempfile.TemporaryDirectory() as folder:
        rate, base = replay(args.events, Path(folder))
    print(
        f"  replay   {rate:>12,.0f} events/s   baseline (raw SQLite) {base:>12,.0f} rows/s "
        f"    ratio {rate / base:.3f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        receipted = replay_with_receipts(args.events, Path(folder))
    print(
        f"  replay with receipts (PUBACK marks, receipt deletes) {receipted:>12,.0f} events/s"
        f"   ratio to the replay above {receipted / rate:.3f}"
    )
    print(f"  load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs, shared)")
    return 0
