"""Barcode scanners on serial: ASCII frames with a header and terminator, optional
AIM symbology identifiers, a configured no-read string. Pure: bytes in, reads out."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.framing import Framer
from parceltrack.identifiers import is_s10

GS = "\x1d"  # FNC1 in GS1-128 transmits as ASCII group separator


@dataclass(frozen=True, slots=True)
class BarcodeSettings:
    """How a scanner frames its output; matches what its configuration sheet says."""

    header: bytes = b""
    terminator: bytes = b"\r\n"
    aim: bool = True  # scanner prefixes each code with its AIM symbology identifier
    noread: str = "NOREAD"
    separator: str | None = None  # several codes from one trigger, joined by this
    max_frame: int = 512  # a longer run without terminator is garbage


@dataclass(frozen=True, slots=True)
class BarcodeRead:
    """One decoded code, or a no-read (code is None)."""

    code: str | None
    symbology: str | None = None
    tracking_id: str | None = None  # the S10 number when the code is one
    sscc: str | None = None  # GS1-128 with AI 00

    @property
    def is_noread(self) -> bool:
        return self.code is None


def parse_gs1(data: str) -> dict[str, str]:
    """Element strings of a GS1-128 code: the AIs this product uses (00 SSCC, 401 GINC,
    420/421 ship-to postal code), variable fields ending at GS."""
    fixed = {"00": 18, "01": 14, "02": 14, "20": 2}
    variable = {"401", "403", "420", "421", "10", "21", "90"}
    out: dict[str, str] = {}
    rest = data
    while rest:
        ai2, ai3 = rest[:2], rest[:3]
        if ai2 in fixed:
            n = fixed[ai2]
            if len(rest) < 2 + n:
                raise ValueError(f"AI ({ai2}) needs {n} characters")
            out[ai2], rest = rest[2 : 2 + n], rest[2 + n :]
        elif ai3 in variable or ai2 in variable:
            ai = ai3 if ai3 in variable else ai2
            value, _, rest = rest[len(ai) :].partition(GS)
            out[ai] = value
        else:
            raise ValueError(f"unknown GS1 application identifier at {rest[:4]!r}")
        rest = rest.lstrip(GS)
    return out


def decode_code(text: str, settings: BarcodeSettings) -> BarcodeRead:
    """A single code as the scanner sent it (AIM prefix included when configured)."""
    symbology = None
    if settings.aim and len(text) >= 3 and text[0] == "]":
        symbology, text = text[:3], text[3:]
    if text == settings.noread or not text:
        return BarcodeRead(None, symbology)
    if symbology == "]C1":
        try:
            sscc = parse_gs1(text).get("00")
        except ValueError:
            sscc = None
        return BarcodeRead(text, symbology, sscc=sscc)
    tracking = text.upper() if is_s10(text) else None
    return BarcodeRead(text, symbology, tracking_id=tracking)


@dataclass
class BarcodeFramer(Framer[BarcodeRead]):
    """Splits a byte stream into frames, resynchronising on the next header/terminator.
    A good frame's bytes_framed include its header and terminator; a line has no
    garbage between frames, so bytes_skipped stays 0 (what precedes a header is
    discarded with the frame it spoils)."""

    settings: BarcodeSettings = field(default_factory=BarcodeSettings)

    def feed(self, data: bytes) -> list[BarcodeRead]:
        self._buffer += data
        reads: list[BarcodeRead] = []
        term, header = self.settings.terminator, self.settings.header
        while True:
            end = self._buffer.find(term)
            if end < 0:
                if len(self._buffer) > self.settings.max_frame:
                    self.frames_bad += 1  # no terminator in sight: drop and resync
                    self.bytes_discarded += len(self._buffer)
                    del self._buffer[:]
                return reads
            raw = bytes(self._buffer[:end])
            size = end + len(term)
            del self._buffer[:size]
            if header:
                start = raw.rfind(header)
                if start < 0:
                    self.frames_bad += 1
                    self.bytes_discarded += size
                    continue
                if start > 0:
                    self.frames_bad += 1  # garbage before the header
                raw = raw[start + len(header) :]
                self.bytes_discarded += start
                size -= start
            elif self.settings.aim and self.settings.separator is None:
                # No header to resync on, but every code starts with its AIM "]":
                # a truncated frame glued to this one ends where the last "]" begins.
                start = raw.rfind(b"]")
                if start > 0:
                    self.frames_bad += 1
                    raw = raw[start:]
                    self.bytes_discarded += start
                    size -= start
            decoded = self._decode_frame(raw)
            if decoded is None:
                self.frames_bad += 1
                self.bytes_discarded += size
                continue
            self.frames_ok += 1
            self.bytes_framed += size
            reads.extend(decoded)

    def _decode_frame(self, raw: bytes) -> list[BarcodeRead] | None:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not text or any(c < " " and c != GS for c in text):
            return None
        parts = text.split(self.settings.separator) if self.settings.separator else [text]
        return [decode_code(p, self.settings) for p in parts]
