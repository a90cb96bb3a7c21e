"""A WAN link between two local processes that a test can cut and restore.

A TCP relay on a free local port: connections to it are forwarded to the target.
`cut()` resets every live connection and refuses new ones (accepted, then reset at
once), as a failed WAN link looks to a Mosquitto bridge; `restore()` lets traffic
through again. Real sockets, no mocks: the bridge sees real resets and reconnects.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field

from composition.services import free_port


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends RST, as a dead link's peer would see it.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class WanLink:
    target_port: int
    port: int = field(default_factory=free_port)
    _up: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    cuts: int = 0

    def start(self) -> None:
        self._up.set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        accept = threading.Thread(target=self._accept, name="wan-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                inside, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                _reset(inside)
                continue
            try:
                outside = socket.create_connection(("127.0.0.1", self.target_port), 2)
            except OSError:
                _reset(inside)
                continue
            with self._lock:
                self._pairs.append((inside, outside))
            relay = threading.Thread(target=self._relay, args=(inside, outside), daemon=True)
            relay.start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            while self._up.is_set() and not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(65536)
                        if not data:
                            raise ConnectionError
                        peer[src].sendall(data)
                    except OSError:
                        _reset(a)
                        _reset(b)
                        return
        _reset(a)
        _reset(b)

    def cut(self) -> None:
        """Drop the link: every open connection is reset, new ones are refused."""
        self._up.clear()
        self.cuts += 1
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _reset(a)
            _reset(b)

    def restore(self) -> None:
        self._up.set()

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
