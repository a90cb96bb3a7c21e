"""What the length-prefixed serial framers (Mercury, R2000) share: their counters, the
buffer, and giving up on a partial frame. Each subclass supplies `feed`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

F = TypeVar("F")


@dataclass
class LengthFramer(Generic[F]):
    """Counters and buffer of a framer that resynchronises on a start byte.

    Every byte fed ends up in exactly one of: a good frame (bytes_framed), dropped
    (bytes_discarded: garbage, false starts, resyncs), or still `buffered`.
    """

    frames_ok: int = 0
    frames_bad: int = 0  # bad check, or a frame cut short by the next one
    bytes_skipped: int = 0  # garbage between frames
    bytes_framed: int = 0
    bytes_discarded: int = 0
    _buffer: bytearray = field(default_factory=bytearray)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[F]:
        raise NotImplementedError

    def resync(self) -> list[F]:
        """Give up on the partial frame at the head of the buffer (its LEN promised
        more than came: truncated, or a false start) and parse what follows. Drivers
        call this when the line has been quiet for a while with bytes still buffered."""
        if not self._buffer:
            return []
        self.frames_bad += 1
        self.bytes_discarded += 1
        del self._buffer[:1]
        return self.feed(b"")

    def _tally(self, ok: int, bad: int, skipped: int, framed: int) -> None:
        """Add one feed's counts (kept in locals inside the hot loop)."""
        self.frames_ok += ok
        self.frames_bad += bad
        self.bytes_skipped += skipped
        self.bytes_framed += framed
        self.bytes_discarded += skipped + bad  # each false start drops its head byte
