"""UPU S10 item identifiers: two letters, eight-digit serial, check digit, ISO country."""

from __future__ import annotations

import re
from dataclasses import dataclass

from parceltrack.errors import InvalidTrackingNumber
from parceltrack.i18n import N_

_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_SHAPE = re.compile(r"^[A-Z]{2}\d{9}[A-Z]{2}$")

SERVICE_INDICATORS = {
    "E": "EMS",
    "C": "parcel",
    "R": "registered",
    "L": "tracked letter",
    "H": "e-commerce",
}


def s10_check_digit(serial: str) -> int:
    """Check digit over an eight-digit serial (UPU S10: C = 11 - S mod 11; 10 -> 0, 11 -> 5)."""
    if len(serial) != 8 or not serial.isdigit():
        raise InvalidTrackingNumber(
            N_("S10 serial must be 8 digits, got {serial!r}"), serial=serial
        )
    check = 11 - sum(w * int(d) for w, d in zip(_WEIGHTS, serial, strict=True)) % 11
    return {10: 0, 11: 5}.get(check, check)


@dataclass(frozen=True, slots=True)
class S10:
    """A validated UPU S10 identifier such as ``RR473124829GB``."""

    service: str
    serial: str
    check: int
    country: str

    def __str__(self) -> str:
        return f"{self.service}{self.serial}{self.check}{self.country}"

    @property
    def service_indicator(self) -> str:
        """What the first letter says about the item (EMS, parcel, registered ...)."""
        return SERVICE_INDICATORS.get(self.service[0], "other")

    @classmethod
    def make(cls, service: str, serial: int | str, country: str) -> S10:
        """Build a valid identifier from its parts, computing the check digit."""
        text = f"{int(serial):08d}" if isinstance(serial, int) else serial
        return cls(service.upper(), text, s10_check_digit(text), country.upper())


def parse_s10(text: str) -> S10:
    """Validate a tracking number, raising InvalidTrackingNumber that says what is wrong."""
    value = text.strip().replace(" ", "").upper()
    if not _SHAPE.match(value):
        raise InvalidTrackingNumber(
            N_(
                "{text!r} is not an S10 tracking number: expected 2 letters, 9 digits and "
                "2 letters, like RR473124829GB"
            ),
            text=text,
        )
    serial, given = value[2:10], int(value[10])
    expected = s10_check_digit(serial)
    if given != expected:
        raise InvalidTrackingNumber(
            N_("{text!r} fails the S10 check digit: digit 11 is {given}, expected {expected}"),
            text=text,
            given=given,
            expected=expected,
        )
    return S10(value[:2], serial, given, value[11:])


def is_s10(text: str) -> bool:
    """True when the text is a valid S10 identifier."""
    try:
        parse_s10(text)
    except InvalidTrackingNumber:
        return False
    return True
