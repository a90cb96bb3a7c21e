"""SSCC-96 EPC encoding (GS1 EPC Tag Data Standard 2.x, section 14.5.2), both ways.

Small and pure on purpose: the simulator needs to *make* tags in bulk, and the binary
layout is fixed: header 0x31 (8 bits), filter (3), partition (3), GS1 company prefix
and serial reference (together 58 bits, split by the partition table) and 24 reserved
zero bits. Checked against the TDS vector 3174257BF4499602D2000000 <->
urn:epc:id:sscc:0614141.1234567890 (SSCC 106141412345678908).
"""

from __future__ import annotations

from dataclasses import dataclass

from parceltrack.errors import ParceltrackError

SSCC96_HEADER = 0x31
# partition -> (company prefix bits, digits, serial reference bits, digits)
_PARTITIONS = {
    0: (40, 12, 18, 5),
    1: (37, 11, 21, 6),
    2: (34, 10, 24, 7),
    3: (30, 9, 28, 8),
    4: (27, 8, 31, 9),
    5: (24, 7, 34, 10),
    6: (20, 6, 38, 11),
}
_BY_DIGITS = {v[1]: p for p, v in _PARTITIONS.items()}


class InvalidEPC(ParceltrackError, ValueError):
    """An EPC that is not a well-formed SSCC-96, or parts that cannot make one."""


@dataclass(frozen=True, slots=True)
class SSCC96:
    """An SSCC-96 tag: filter value, company prefix and serial reference as digits."""

    company_prefix: str
    serial_reference: str  # extension digit followed by the serial
    filter: int = 2  # 2: full case for transport (TDS table 10-5)

    def __post_init__(self) -> None:
        if not (self.company_prefix.isdigit() and self.serial_reference.isdigit()):
            raise InvalidEPC("company prefix and serial reference must be digits")
        if len(self.company_prefix) not in _BY_DIGITS:
            raise InvalidEPC(f"company prefix must have 6-12 digits: {self.company_prefix!r}")
        if len(self.company_prefix) + len(self.serial_reference) != 17:
            raise InvalidEPC("company prefix and serial reference must have 17 digits together")
        if not 0 <= self.filter <= 7:
            raise InvalidEPC(f"filter value must be 0-7, got {self.filter}")

    @property
    def hex(self) -> str:
        """The 96-bit EPC as 24 upper-case hex digits, as a reader reports it."""
        partition = _BY_DIGITS[len(self.company_prefix)]
        cp_bits, _, sr_bits, _ = _PARTITIONS[partition]
        value = SSCC96_HEADER
        value = (value << 3) | self.filter
        value = (value << 3) | partition
        value = (value << cp_bits) | int(self.company_prefix)
        value = (value << sr_bits) | int(self.serial_reference)
        value <<= 24
        return f"{value:024X}"

    @property
    def uri(self) -> str:
        return f"urn:epc:id:sscc:{self.company_prefix}.{self.serial_reference}"

    @property
    def sscc(self) -> str:
        """The 18-digit SSCC: extension digit, company prefix, serial, GS1 check digit."""
        body = self.serial_reference[0] + self.company_prefix + self.serial_reference[1:]
        return body + str(gs1_check_digit(body))

    @property
    def gs1_128(self) -> str:
        """The same SSCC as a GS1-128 label reports it: AIM ]C1, AI (00)."""
        return f"]C100{self.sscc}"


def gs1_check_digit(digits: str) -> int:
    """GS1 mod-10 check digit: weights 3,1,3,... from the rightmost digit."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def decode_sscc96(hex_epc: str) -> SSCC96:
    """Parse a 96-bit SSCC EPC in hex; raise InvalidEPC saying what is wrong."""
    try:
        value = int(hex_epc, 16)
    except ValueError as exc:
        raise InvalidEPC(f"{hex_epc!r} is not hexadecimal") from exc
    if len(hex_epc) != 24:
        raise InvalidEPC(f"an SSCC-96 EPC has 24 hex digits, got {len(hex_epc)}")
    if value >> 88 != SSCC96_HEADER:
        raise InvalidEPC(f"header 0x{value >> 88:02X} is not SSCC-96 (0x31)")
    filter_value = (value >> 85) & 0x7
    partition = (value >> 82) & 0x7
    if partition not in _PARTITIONS:
        raise InvalidEPC(f"partition {partition} is not defined for SSCC-96")
    cp_bits, cp_digits, sr_bits, sr_digits = _PARTITIONS[partition]
    rest = value >> 24
    serial = rest & ((1 << sr_bits) - 1)
    prefix = (rest >> sr_bits) & ((1 << cp_bits) - 1)
    if value & ((1 << 24) - 1):
        raise InvalidEPC("the 24 reserved bits of an SSCC-96 must be zero")
    if prefix >= 10**cp_digits or serial >= 10**sr_digits:
        raise InvalidEPC("company prefix or serial reference overflows its digits")
    return SSCC96(f"{prefix:0{cp_digits}d}", f"{serial:0{sr_digits}d}", filter_value)
