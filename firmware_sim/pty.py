"""Virtual serial ports: a pty pair whose slave side is linked under a stable name,
as udev does for real adapters (/dev/serial/by-id/...)."""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import termios
import tty
from pathlib import Path


class VirtualSerialPort:
    """The device end (master) of a pty; the host opens `path` with pyserial."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master, self._slave = os.openpty()
        # Raw on both ends: no echo, no CR/LF translation, bytes pass unchanged.
        tty.setraw(self.master)
        tty.setraw(self._slave)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(os.ttyname(self._slave))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def unread(self) -> int:
        """Bytes written to the line that the host has not read yet (the slave's queue)."""
        count = array.array("i", [0])
        fcntl.ioctl(self._slave, termios.FIONREAD, count)
        return count[0]

    def read(self, limit: int = 4096) -> bytes:
        return os.read(self.master, limit)

    def unplug(self) -> None:
        """The adapter vanishes: the port name goes away and the line closes."""
        self.close()

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
