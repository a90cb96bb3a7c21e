import pytest

from parceltrack.errors import InvalidTrackingNumber
from parceltrack.identifiers import S10, is_s10, parse_s10, s10_check_digit


@pytest.mark.parametrize(
    "text",
    ["RR473124829GB", "EE471108151FR", "EE123456785CN", "rr 473 124 829 gb"],
    ids=["RR-GB", "EE-FR", "EE-CN", "spaced-lowercase"],
)
def test_public_vectors_are_valid(text: str) -> None:
    """The UPU's published S10 examples validate, in any case and with spaces."""
    assert is_s10(text)
    assert str(parse_s10(text)) == text.replace(" ", "").upper()


def test_wrong_check_digit_says_which_digit_was_expected() -> None:
    """EE123456789CN fails the check digit and the message names the right digit."""
    with pytest.raises(InvalidTrackingNumber, match="expected 5"):
        parse_s10("EE123456789CN")


@pytest.mark.parametrize(
    "text",
    ["", "RR47312482GB", "1R473124829GB", "RR473124829G", "RR4731248X9GB"],
    ids=["empty", "short-serial", "digit-prefix", "short-country", "letter-in-serial"],
)
def test_malformed_numbers_are_rejected_with_the_expected_shape(text: str) -> None:
    """Malformed input is refused with a message describing the S10 shape."""
    with pytest.raises(InvalidTrackingNumber, match="2 letters, 9 digits"):
        parse_s10(text)


@pytest.mark.parametrize(
    ("serial", "digit"),
    [("47312482", 9), ("12345678", 5), ("00000000", 5), ("00000001", 4)],
    ids=["gb-vector", "cn-vector", "zeros-11-to-5", "plain"],
)
def test_check_digit_rule_including_the_10_and_11_cases(serial: str, digit: int) -> None:
    """C = 11 - (S mod 11), with 10 -> 0 and 11 -> 5."""
    assert s10_check_digit(serial) == digit


def test_make_builds_valid_numbers_for_any_serial() -> None:
    """S10.make computes the check digit, so every generated number validates."""
    for serial in range(0, 10_000_000, 99_991):
        assert is_s10(str(S10.make("CP", serial, "GB")))


def test_service_indicator_from_first_letter() -> None:
    """The first letter of the service indicator tells EMS, parcel, registered ..."""
    assert parse_s10("EE123456785CN").service_indicator == "EMS"
    assert parse_s10("RR473124829GB").service_indicator == "registered"
