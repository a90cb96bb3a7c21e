"""Where a virtual device's bytes go: a pty whose slave is linked under a stable name
(for a serial path) or a TCP listener (for socket:// URLs, like a serial server).
Both can be unplugged (gone: the name vanishes / the port refuses) and plugged back."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import time
from pathlib import Path

from firmware_sim.pty import VirtualSerialPort


class PtyTransport:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._port: VirtualSerialPort | None = None
        self.bytes_lost = 0  # written while nobody read and the line buffer was full
        self.replug()

    @property
    def url(self) -> str:
        return str(self.path)

    def replug(self) -> None:
        if self._port is None:
            self._port = VirtualSerialPort(self.path)
            flags = fcntl.fcntl(self._port.master, fcntl.F_GETFL)
            fcntl.fcntl(self._port.master, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def unplug(self) -> None:
        if self._port is not None:
            self._port.unplug()
            self._port = None

    @property
    def plugged(self) -> bool:
        return self._port is not None

    def read(self, timeout: float) -> bytes:
        port = self._port
        if port is None:
            select.select([], [], [], timeout)
            return b""
        ready, _, _ = select.select([port.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(port.master, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:  # EIO: no host has the slave open
            if exc.errno == errno.EIO:
                time.sleep(timeout)  # select keeps saying "ready" on a hung-up pty
                return b""
            raise

    def write(self, data: bytes) -> None:
        if self._port is None or not data:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._port.master, view) :]
            except BlockingIOError:
                # A UART with nobody reading loses what does not fit: so does this.
                self.bytes_lost += len(view)
                return

    def close(self) -> None:
        self.unplug()


class TcpTransport:
    """One host at a time, as a serial device server (ser2net, Moxa) allows."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self.replug()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def replug(self) -> None:
        if self._listener is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1)
            sock.setblocking(False)
            self.port = sock.getsockname()[1]
            self._listener = sock

    def unplug(self) -> None:
        for s in (self._client, self._listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._client = self._listener = None

    @property
    def plugged(self) -> bool:
        return self._listener is not None

    def read(self, timeout: float) -> bytes:
        if self._listener is None:
            select.select([], [], [], timeout)
            return b""
        watch = [self._client] if self._client else [self._listener]
        ready, _, _ = select.select(watch, [], [], timeout)
        if not ready:
            return b""
        if self._client is None:
            with contextlib.suppress(BlockingIOError):
                self._client, _ = self._listener.accept()
                self._client.setblocking(True)
            return b""
        try:
            data = self._client.recv(4096)
        except OSError:
            data = b""
        if not data:  # the host went away: wait for the next one
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None
        return data

    def write(self, data: bytes) -> None:
        if self._client is None or not data:
            return
        try:
            self._client.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None

    def close(self) -> None:
        self.unplug()
