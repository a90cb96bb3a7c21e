"""What a barcode scanner sends on its serial line, byte for byte."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScannerFraming:
    header: bytes = b""
    terminator: bytes = b"\r\n"
    aim: bool = True
    noread: str = "NOREAD"


def code128(text: str) -> str:
    """An S10 label as the scanner reports it: plain Code 128."""
    return f"]C0{text}"


def frame(codes: list[str], framing: ScannerFraming, separator: str = ";") -> bytes:
    """One trigger's output: its codes (AIM prefixes included) joined and framed."""
    body = separator.join(c if framing.aim else c[3:] if c.startswith("]") else c for c in codes)
    return framing.header + body.encode("ascii") + framing.terminator


def noread_frame(framing: ScannerFraming) -> bytes:
    return framing.header + framing.noread.encode("ascii") + framing.terminator
