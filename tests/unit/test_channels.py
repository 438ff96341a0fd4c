"""Channel names and payloads are checked before any SQL: clear errors naming the fault."""

from __future__ import annotations

import pytest

from pgrouter.interactions.channels import (
    MAX_CHANNEL_BYTES,
    check_channel,
    check_channels,
    check_payload,
)


@pytest.mark.parametrize(
    "name", ["jobs", "Foo", 'with "quotes"', "ünïcødé ☃", "x" * MAX_CHANNEL_BYTES, "a b;--"]
)
def test_valid_names_come_back_exactly(name: str) -> None:
    assert check_channel(name) == name


def test_63_bytes_counted_in_utf8_not_characters() -> None:
    assert check_channel("é" * 31) == "é" * 31  # 62 bytes
    with pytest.raises(ValueError, match="64 bytes in UTF-8"):
        check_channel("é" * 32)


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("", ValueError, "must not be empty"),
        ("a\x00b", ValueError, "NUL"),
        ("x" * (MAX_CHANNEL_BYTES + 1), ValueError, "64 bytes"),
        (b"jobs", TypeError, "not bytes"),
        (None, TypeError, "not NoneType"),
        (7, TypeError, "not int"),
    ],
)
def test_invalid_names_raise_naming_the_problem(name: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        check_channel(name)


def test_check_channels_keeps_order_drops_duplicates_and_needs_one() -> None:
    assert check_channels(("b", "a", "b", "A")) == ("b", "a", "A")
    with pytest.raises(ValueError, match="at least one channel"):
        check_channels(())
    with pytest.raises(TypeError, match="not int"):
        check_channels(("ok", 3))


def test_payloads() -> None:
    assert check_payload("") == ""
    assert check_payload("it's \\ fine") == "it's \\ fine"
    with pytest.raises(ValueError, match="NUL"):
        check_payload("a\x00")
    with pytest.raises(TypeError, match="not bytes"):
        check_payload(b"x")
