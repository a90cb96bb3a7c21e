"""What the serial framers share. Every framer (barcode, Mercury, R2000) keeps the
same counters and buffer (`Framer`); the length-prefixed ones (Mercury, R2000) also
give up on a partial frame the same way (`LengthFramer`). Each subclass supplies
`feed`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

F = TypeVar("F")


@dataclass
class Framer(Generic[F]):
    """Counters and buffer of a framer.

    Every byte fed ends up in exactly one of: a good frame (bytes_framed), dropped
    (bytes_discarded: garbage, false starts, resyncs, bad frames), or still `buffered`.
    The counters are not constructor arguments: a framer always starts at zero.
    """

    frames_ok: int = field(default=0, init=False)
    frames_bad: int = field(default=0, init=False)  # bad check, cut short, undecodable
    bytes_skipped: int = field(default=0, init=False)  # garbage between frames
    bytes_framed: int = field(default=0, init=False)
    bytes_discarded: int = field(default=0, init=False)
    _buffer: bytearray = field(default_factory=bytearray, init=False)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[F]:
        raise NotImplementedError

    def _tally(self, ok: int, bad: int, skipped: int, framed: int) -> None:
        """Add one feed's counts (kept in locals inside the hot loop)."""
        self.frames_ok += ok
        self.frames_bad += bad
        self.bytes_skipped += skipped
        self.bytes_framed += framed
        self.bytes_discarded += skipped + bad  # each false start drops its head byte


@dataclass
class LengthFramer(Framer[F]):
    """A framer that resynchronises on a start byte and trusts a length field."""

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
