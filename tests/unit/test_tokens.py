"""Write tokens: exact round trips, strict parsing of any text, and the SQL on a real server."""

from __future__ import annotations

import re
import string
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pgrouter.driver import PROBE_QUERY, parse_lsn
from pgrouter.routing.tokens import (
    MAX_TOKEN_LENGTH,
    WRITE_TOKEN_QUERY,
    WriteToken,
    newest,
    token_from_row,
)
from pgrouter.testing import LocalCluster, Node

UINT64 = (1 << 64) - 1
UINT32 = (1 << 32) - 1

tokens = st.builds(
    WriteToken,
    system_identifier=st.integers(0, UINT64),
    timeline=st.integers(0, UINT32),
    lsn=st.integers(0, UINT64),
)
#: Characters a token is made of and their near misses, so generated text often
#: gets past the first checks.
near_alphabet = st.sampled_from("w1.0123456789abcdefABCDEF-x \n\t\u0661\uff11_+")


def assert_strict(text: str) -> None:
    """``parse`` raises only ValueError, and accepts only text it would write itself."""
    try:
        token = WriteToken.parse(text)
    except ValueError:
        return
    assert str(token) == text


@given(tokens)
def test_round_trip(token: WriteToken) -> None:
    text = str(token)
    assert WriteToken.parse(text) == token
    assert len(text) <= MAX_TOKEN_LENGTH
    # Safe in a cookie, a header and a task argument: no separators, quotes or spaces.
    assert re.fullmatch(r"[0-9a-z.]+", text), text


@given(tokens)
def test_text_form_is_versioned_hex(token: WriteToken) -> None:
    version, sysid, timeline, lsn, check = str(token).split(".")
    assert version == "w1"
    assert (int(sysid, 16), int(timeline, 16), int(lsn, 16)) == (
        token.system_identifier,
        token.timeline,
        token.lsn,
    )
    assert len(check) == 8


@given(st.text())
@example("")
@example("w1")
@example("w1....")
def test_any_text_is_rejected_or_canonical(text: str) -> None:
    assert_strict(text)


@given(st.text(near_alphabet, max_size=60))
def test_near_miss_text_is_rejected_or_canonical(text: str) -> None:
    assert_strict(text)


@given(tokens, st.data())
def test_any_single_character_change_is_rejected(token: WriteToken, data: st.DataObject) -> None:
    text = str(token)
    at = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != text[at]))
    mangled = data.draw(
        st.sampled_from(
            [
                text[:at] + replacement + text[at + 1 :],  # changed
                text[:at] + text[at + 1 :],  # dropped
                text[:at] + replacement + text[at:],  # inserted
            ]
        )
    )
    with pytest.raises(ValueError):
        WriteToken.parse(mangled)


@given(tokens)
def test_every_truncation_is_rejected(token: WriteToken) -> None:
    text = str(token)
    for end in range(len(text)):
        with pytest.raises(ValueError):
            WriteToken.parse(text[:end])


@given(tokens, st.sampled_from([" ", "\n", "\t", "\r\n", "\x00", ";", "\u00a0"]))
def test_surrounding_whitespace_or_junk_is_rejected(token: WriteToken, junk: str) -> None:
    for text in (junk + str(token), str(token) + junk):
        with pytest.raises(ValueError):
            WriteToken.parse(text)


def sealed(body: str) -> str:
    """``body`` with a correct check appended: only the fields can be at fault."""
    return f"{body}.{zlib.crc32(body.encode()):08x}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("w2.1.1.1", "unsupported version 'w2'"),
        ("v1.1.1.1", "does not start with 'w1.'"),
        ("W1.1.1.1", "does not start with 'w1.'"),
        ("w1.1.1", "expected 4 fields"),
        ("w1.1.1.1.1", "expected 4 fields"),
        ("w1..1.1", "system identifier"),
        ("w1.1.1.", "lsn"),
        ("w1.01.1.1", "system identifier"),  # leading zero: a second spelling
        ("w1.A.1.1", "system identifier"),  # uppercase: a second spelling
        ("w1.-1.1.1", "system identifier"),
        ("w1.+1.1.1", "system identifier"),
        ("w1.1_0.1.1", "system identifier"),
        ("w1.g.1.1", "system identifier"),
        ("w1.0x1.1.1", "system identifier"),
        ("w1.1.\u0661.1", "timeline"),  # ARABIC-INDIC DIGIT ONE: int() would take it
        ("w1.1.1.\uff11", "lsn"),  # FULLWIDTH DIGIT ONE
        ("w1.1" + "0" * 16 + ".1.1", "system identifier"),  # 65 bits
        ("w1.1.1" + "0" * 8 + ".1", "timeline"),  # 33 bits
        ("w1.1.1.1" + "0" * 16, "lsn"),  # 65 bits
        ("w1. 1.1.1", "system identifier"),
    ],
)
def test_malformed_fields_are_named(body: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        WriteToken.parse(sealed(body))


def test_wrong_check_is_rejected() -> None:
    text = str(WriteToken(1, 1, 1))
    wrong = text[:-8] + ("0" * 8 if not text.endswith("0" * 8) else "1" * 8)
    with pytest.raises(ValueError, match="check does not match"):
        WriteToken.parse(wrong)
    with pytest.raises(ValueError, match="check is not 8 lowercase hex"):
        WriteToken.parse(text[:-8] + "ABCDEF12")


@pytest.mark.parametrize("size", [MAX_TOKEN_LENGTH + 1, 10_000, 10_000_000])
def test_overlong_input_is_rejected_without_echoing_it(size: int) -> None:
    with pytest.raises(ValueError, match="longer than") as raised:
        WriteToken.parse("w1." + "a" * size)
    assert len(str(raised.value)) < 200


def test_messages_are_ascii_and_short() -> None:
    with pytest.raises(ValueError) as raised:
        WriteToken.parse("\u2603" * MAX_TOKEN_LENGTH)
    message = str(raised.value)
    assert message.isascii()
    assert len(message) < 200


@pytest.mark.parametrize("value", [b"w1.1.1.1.00000000", None, 1, WriteToken(1, 1, 1)])
def test_parse_takes_str_only(value: object) -> None:
    with pytest.raises(TypeError, match=f"takes str, not {type(value).__name__}"):
        WriteToken.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ((-1, 1, 1), ValueError),
        ((1 << 64, 1, 1), ValueError),
        ((1, 1 << 32, 1), ValueError),
        ((1, -1, 1), ValueError),
        ((1, 1, 1 << 64), ValueError),
        ((1, 1, -1), ValueError),
        ((1, True, 1), TypeError),
        ((1, 1, "0/1"), TypeError),
        ((1.0, 1, 1), TypeError),
    ],
)
def test_constructor_refuses_what_has_no_text_form(
    fields: tuple[object, object, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        WriteToken(*fields)  # type: ignore[arg-type]


def test_is_reached_by() -> None:
    token = WriteToken(7, 2, 1000)
    assert token.is_reached_by(1000)
    assert token.is_reached_by(1001)
    assert not token.is_reached_by(999)
    assert not token.is_reached_by(None)


def test_is_from_compares_signed_and_unsigned_identifiers() -> None:
    token = WriteToken((1 << 64) - 5, 1, 1)
    assert token.is_from(-5)  # as PostgreSQL's bigint shows it
    assert token.is_from((1 << 64) - 5)
    assert not token.is_from(5)
    assert not token.is_from(None)


def test_newest_of_one_cluster_is_the_highest_position() -> None:
    old = WriteToken(7, 1, 5000)
    later_lsn = WriteToken(7, 1, 6000)
    new_timeline = WriteToken(7, 2, 100)
    assert newest(None, old) is old
    assert newest(old, later_lsn) is later_lsn
    assert newest(later_lsn, old) is later_lsn
    # A newer timeline wins over a higher position on the old one.
    assert newest(new_timeline, later_lsn) is new_timeline
    assert newest(later_lsn, new_timeline) is new_timeline


def test_newest_of_two_clusters_is_the_later_argument() -> None:
    ours = WriteToken(7, 3, 9000)
    theirs = WriteToken(8, 1, 1)
    assert newest(ours, theirs) is theirs
    assert newest(theirs, ours) is ours


@given(tokens, tokens)
def test_newest_is_one_of_its_arguments_and_never_behind_either(
    a: WriteToken, b: WriteToken
) -> None:
    kept = newest(a, b)
    assert kept in (a, b)
    if a.system_identifier == b.system_identifier:
        assert (kept.timeline, kept.lsn) == max((a.timeline, a.lsn), (b.timeline, b.lsn))
    else:
        assert kept is b


def test_token_from_row_takes_driver_values_and_text() -> None:
    expected = WriteToken(7312345678901234567, 3, 0x16B374D848)
    assert token_from_row((7312345678901234567, 3, "16/B374D848")) == expected
    assert token_from_row(("7312345678901234567", "3", "16/B374D848")) == expected
    # PostgreSQL's signed bigint for an identifier with its top bit set.
    assert token_from_row((-5, 1, "0/1")).system_identifier == (1 << 64) - 5


@pytest.mark.parametrize("row", [(None, 1, "0/1"), (1, None, "0/1"), (1, 1, None), (1, 1, "")])
def test_token_from_row_refuses_missing_values(row: tuple[object, object, object]) -> None:
    with pytest.raises(ValueError):
        token_from_row(row)


def test_ascii_alphabet_only() -> None:
    text = str(WriteToken(UINT64, UINT32, UINT64))
    assert set(text) <= set(string.hexdigits.lower() + "w.")
    assert len(text) == MAX_TOKEN_LENGTH


# --- on a real server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def primary() -> Iterator[Node]:
    with LocalCluster(replicas=0) as cluster:
        yield cluster.primary


def current_wal_lsn(node: Node) -> int:
    lsn = parse_lsn(node.sql("SELECT pg_current_wal_lsn()::text"))
    assert lsn is not None
    return lsn


@pytest.mark.cluster
def test_query_gives_a_token_not_behind_the_last_write(primary: Node) -> None:
    primary.sql("CREATE TABLE IF NOT EXISTS token_writes (n int)")
    for _ in range(3):
        primary.sql("INSERT INTO token_writes VALUES (1)")
        before = current_wal_lsn(primary)
        token = token_from_row(primary.sql(WRITE_TOKEN_QUERY).split("|"))
        assert token.lsn >= before
    assert token.timeline == 1
    assert token.is_from(int(primary.sql("SELECT system_identifier FROM pg_control_system()")))
    assert WriteToken.parse(str(token)) == token


@pytest.mark.cluster
def test_query_agrees_with_the_health_probe(primary: Node) -> None:
    _, _, timeline, _, system_identifier, _ = primary.sql(PROBE_QUERY).split("|")
    token = token_from_row(primary.sql(WRITE_TOKEN_QUERY).split("|"))
    assert token.timeline == int(timeline)
    assert token.is_from(int(system_identifier))


def test_a_token_just_past_a_page_header_names_the_end_of_the_page_before() -> None:
    page = 8192
    for header in (24, 40):
        token = token_from_row((1, 1, f"0/{5 * page + header:X}"))
        assert token.lsn == 5 * page  # a replica that replayed up to the page end has it
    assert token_from_row((1, 1, f"0/{5 * page + 100:X}")).lsn == 5 * page + 100
