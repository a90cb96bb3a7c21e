"""The simulator's virtual devices on real ptys and TCP sockets, read by the edge's
drivers and framers (kept out of tests/unit: these open ports and run threads)."""

import os
import time
from pathlib import Path

import serial

from edge.barcode import BarcodeFramer, BarcodeRead
from edge.drivers import MercuryDriver, MercurySettings, R2000Driver, Read, RfidRead
from firmware_sim.faults import FaultPlan
from firmware_sim.player import ScannerBank
from firmware_sim.rfid import TagField, VirtualMercury, VirtualR2000
from firmware_sim.scenario import ScheduledRead
from firmware_sim.transport import PtyTransport, TcpTransport
from tests.waiting import wait_until

EPC = "3174257BF4499602D2000000"


def _drive(url: str, driver: MercuryDriver | R2000Driver, seconds: float) -> list[Read]:
    port = serial.serial_for_url(url, timeout=0.02)
    port.write(driver.on_open(time.time()))
    reads: list[Read] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = port.read(max(1, port.in_waiting))
        now = time.time()
        reads += driver.feed(data, now)
        out = driver.poll(now)
        if out:
            port.write(out)
    port.write(driver.on_close())
    port.close()
    return reads


def test_virtual_readers_present_tags_to_mercury_and_r2000_over_tcp() -> None:
    """present() on a virtual reader makes the tag readable, on both antennas, by each driver."""
    readers = (
        (VirtualMercury(TcpTransport(), TagField((1, 2), seed=0)), MercuryDriver()),
        (VirtualR2000(TcpTransport(), TagField((1, 2), seed=1)), R2000Driver()),
    )
    try:
        for reader, driver in readers:
            assert reader.url.startswith("socket://127.0.0.1:")
            reader.present(EPC, 1.0)
            reads = _drive(reader.url, driver, 1.2)
            assert reads and all(isinstance(r, RfidRead) and r.epc_hex == EPC for r in reads)
    finally:
        for reader, _ in readers:
            reader.close()


def test_mercury_streams_only_after_it_is_told_to_start(tmp_path: Path) -> None:
    """A tag in the field produces no bytes until the host starts continuous reading."""
    reader = VirtualMercury(PtyTransport(tmp_path / "m"), TagField((1, 2)))
    try:
        reader.present(EPC, 2.0)
        fd = os.open(reader.url, os.O_RDWR | os.O_NONBLOCK)
        time.sleep(0.3)  # the interval in which a reader streaming on its own would send
        try:
            assert os.read(fd, 100) == b""
        except BlockingIOError:
            pass  # nothing to read: as it should be
        finally:
            os.close(fd)
        assert reader.counters.tag_reads_sent == 0
    finally:
        reader.close()


def test_scanner_bank_faults_reach_the_line_and_are_counted_by_the_framer(
    tmp_path: Path,
) -> None:
    """Garbled scanner output is counted as bad frames by the edge framer."""
    bank = ScannerBank(tmp_path, ["s"], faults=FaultPlan(truncate_rate=1.0, seed=3))
    port = serial.serial_for_url(str(bank.ports["s"].path), timeout=0.2)
    try:
        for _ in range(5):
            bank.send(ScheduledRead(0.0, "s", "RP", "RR473124829GB"))
        bank.ports["s"].write(b"]C0EE123456785CN\r\n")
        framer = BarcodeFramer()
        reads: list[BarcodeRead] = []

        def decoded() -> list[BarcodeRead]:
            reads.extend(framer.feed(port.read(max(1, port.in_waiting))))
            return reads

        wait_until(decoded, 5, "a code decoded from the line", interval=0)
        assert [r.tracking_id for r in reads][-1] == "EE123456785CN"
        assert bank.fault_counts.truncated == 5 and framer.frames_bad >= 1
    finally:
        port.close()
        bank.close()


def test_a_drifting_reader_clock_is_noticed_by_the_driver() -> None:
    """A simulated reader whose clock runs 50 % fast trips the driver's skew check."""
    reader = VirtualMercury(TcpTransport(), TagField((1,)), FaultPlan(clock_drift=0.5))
    try:
        reader.present(EPC, 2.5)
        driver = MercuryDriver(MercurySettings(max_clock_skew_s=0.3))
        reads = _drive(reader.url, driver, 2.5)
        assert reads and driver.stats.clock_skews >= 1
    finally:
        reader.close()


def test_scanner_bank_unplug_removes_the_port_and_replug_brings_it_back(
    tmp_path: Path,
) -> None:
    """An unplugged scanner's name vanishes; replugged, frames flow on the new line."""
    bank = ScannerBank(tmp_path, ["s"])
    try:
        bank.unplug("s")
        assert not (tmp_path / "s").exists()
        bank.replug("s")
        port = serial.serial_for_url(str(tmp_path / "s"), timeout=2)
        bank.send(ScheduledRead(0.0, "s", "RP", "RR473124829GB"))
        assert port.read_until(b"\r\n") == b"]C0RR473124829GB\r\n"
        port.close()
    finally:
        bank.close()
