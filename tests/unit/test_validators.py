"""The seed's network_helper validators and IS_MAC_ADDRESS, with good and bad input."""

from __future__ import annotations

import pytest

from baadal.errors import ValidationError
from baadal.net.validators import (
    check_cidr,
    check_int,
    check_no_control,
    check_safe_name,
    check_vlan_tag,
    generate_random_mac,
    get_ips_in_range,
    is_valid_ipv4,
    is_valid_mac,
    normalize_mac,
    parse_row_id,
    validate_ip_range,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("ip", ["10.0.0.1", "0.0.0.0", "255.255.255.255", "192.168.1.10"])
def test_valid_ipv4(ip: str) -> None:
    assert is_valid_ipv4(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "",
        "10.0.0",
        "10.0.0.256",
        "10.0.0.1/24",
        "010.0.0.1",
        "a.b.c.d",
        " 10.0.0.1",
        "::1",
        None,
        5,
    ],
)
def test_invalid_ipv4(ip: object) -> None:
    assert not is_valid_ipv4(ip)  # type: ignore[arg-type]


def test_ipv4_check_agrees_with_ipaddress() -> None:
    """The pattern takes exactly what ipaddress.IPv4Address takes."""
    import ipaddress
    import random

    def takes(value: str) -> bool:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return False
        return True

    rng = random.Random(16)
    parts = ["0", "00", "01", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255",
             "256", "260", "300", "999", "1000", "", "-1", "+1", " 1", "1 ", "a", "\u0661",
             "0x1", "1e2"]  # fmt: skip
    candidates = [".".join(rng.choice(parts) for _ in range(rng.choice([3, 4, 4, 4, 5])))
                  for _ in range(20_000)]  # fmt: skip
    candidates += ["1.2.3.4\n", "1.2.3.4/32", "1..2.3", ".1.2.3", "1.2.3.4."]
    for value in candidates:
        assert is_valid_ipv4(value) == takes(value), repr(value)


def test_validate_ip_range() -> None:
    assert validate_ip_range("10.0.0.1", "10.0.0.1")
    assert validate_ip_range("10.0.0.1", "10.0.1.0")
    assert not validate_ip_range("10.0.0.2", "10.0.0.1")
    assert not validate_ip_range("10.0.0.1", "10.0.0.300")


def test_get_ips_in_range_includes_both_ends_and_crosses_octets() -> None:
    assert get_ips_in_range("10.0.0.254", "10.0.1.1") == [
        "10.0.0.254",
        "10.0.0.255",
        "10.0.1.0",
        "10.0.1.1",
    ]
    assert get_ips_in_range("10.0.0.5", "10.0.0.5") == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ("10.0.0.9", "10.0.0.1", "reversed"),
        ("10.0.0.1", "nope", "not a valid IPv4"),
        ("10.0.0.0", "10.2.0.0", "larger than"),
    ],
)
def test_get_ips_in_range_errors(a: str, b: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        get_ips_in_range(a, b)


def test_random_macs_are_valid_unicast_and_distinct() -> None:
    macs = {generate_random_mac() for _ in range(500)}
    assert len(macs) == 500
    for mac in macs:
        assert is_valid_mac(mac) and mac.startswith("A2:00:00:") and mac == mac.upper()
        assert normalize_mac(mac) == mac
    assert generate_random_mac("52:54:00").startswith("52:54:00:")
    with pytest.raises(ValidationError):
        generate_random_mac("zz:00")


@pytest.mark.parametrize("mac", ["aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF", "52:54:00:12:34:56"])
def test_valid_mac(mac: str) -> None:
    assert is_valid_mac(mac)


@pytest.mark.parametrize(
    "mac", ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:gg", "aa:bb-cc:dd:ee:ff", "aabbccddeeff", None]
)
def test_invalid_mac(mac: object) -> None:
    assert not is_valid_mac(mac)  # type: ignore[arg-type]


def test_normalize_mac() -> None:
    assert normalize_mac("52-54-00-ab-cd-ef") == "52:54:00:AB:CD:EF"
    with pytest.raises(ValidationError, match="multicast"):
        normalize_mac("01:00:5e:00:00:01")
    with pytest.raises(ValidationError, match="not a valid MAC"):
        normalize_mac("nope")


@pytest.mark.parametrize("tag", [0, 4095, -1, True, "10", 1.5])
def test_vlan_tag_out_of_range(tag: object) -> None:
    with pytest.raises(ValidationError, match=r"out of range 1\.\.4094"):
        check_vlan_tag(tag)  # type: ignore[arg-type]


def test_vlan_tag_ok_and_cidr() -> None:
    assert check_vlan_tag(1) == 1 and check_vlan_tag(4094) == 4094
    assert str(check_cidr("10.1.0.0/24")) == "10.1.0.0/24"
    with pytest.raises(ValidationError, match="not a valid IPv4 network"):
        check_cidr("10.1.0.1/24")  # host bits set


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "../x", "x" * 31, "a;rm"])
def test_unsafe_names_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        check_safe_name(name, "host name", 30)


def test_safe_names() -> None:
    assert check_safe_name("host-1.lab_a", "host name", 30) == "host-1.lab_a"


# --- full matches: a trailing newline is not "the end" (issue 12 item 7) -------------


@pytest.mark.parametrize(
    "mac", ["02:00:00:00:00:01\n", "02:00:00:00:00:01\r", "\n02:00:00:00:00:01"]
)
def test_mac_with_a_newline_refused(mac: str) -> None:
    assert not is_valid_mac(mac)
    with pytest.raises(ValidationError, match="not a valid MAC"):
        normalize_mac(mac)


@pytest.mark.parametrize("name", ["web\n", "web\r\n", "we\x1bb", "web\x00", "web\x9b"])
def test_names_with_control_characters_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        check_safe_name(name, "VM name", 30)


def test_free_text_refuses_control_characters_only() -> None:
    assert check_no_control("Ana María — lab", "first name") == "Ana María — lab"
    for bad in ("x\ny", "x\ty", "\x1b[31mred", "x\x7f", "x\x85"):
        with pytest.raises(ValidationError, match="control characters"):
            check_no_control(bad, "first name")


# --- integers with upper bounds (issue 12 item 8) ------------------------------------


def test_check_int_bounds_and_types() -> None:
    assert check_int(4, "CPUs", 1, 4096) == 4
    with pytest.raises(ValidationError, match=r"out of range: must be 1\.\.4096"):
        check_int(99999999999999999999, "CPUs", 1, 4096)
    for bad in (True, "4", 4.0):
        with pytest.raises(ValidationError, match="whole number"):
            check_int(bad, "CPUs", 1, 4096)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", 12), ("2147483647", 2147483647), ("2147483648", None),
     ("99999999999999999999", None), ("²", None), ("١٢", None), ("12\n", None), ("web", None)],
)  # fmt: skip
def test_parse_row_id_only_ascii_ids_in_range(text: str, expected: int | None) -> None:
    assert parse_row_id(text) == expected
