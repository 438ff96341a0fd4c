"""pgrouter's own literals for $n placeholders (dry runs): what is replaced, and how.

The values' round trips through a real server are in
tests/integration/test_run.py; here, the scanning of the query text and the
errors, which need no server.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgrouter.interactions.literals import literal, quote_text, render_numbered


def test_each_placeholder_becomes_its_argument() -> None:
    assert render_numbered("SELECT $1, $2, $1", (1, "a")) == "SELECT 1, 'a', 1"


def test_placeholders_in_quoted_text_comments_and_bodies_stay() -> None:
    query = (
        "SELECT '$1', E'\\'$1', \"$1\", $$ $1 $$, $body$ $1 $body$, $1 -- $1\n"
        "/* $1 /* nested $1 */ still $1 */ $2"
    )
    rendered = render_numbered(query, ("x", "y"))
    assert rendered == (
        "SELECT '$1', E'\\'$1', \"$1\", $$ $1 $$, $body$ $1 $body$, 'x' -- $1\n"
        "/* $1 /* nested $1 */ still $1 */ 'y'"
    )


def test_identifier_with_a_dollar_is_no_placeholder() -> None:
    assert render_numbered("SELECT foo$1 FROM t WHERE a = $1", (7,)) == (
        "SELECT foo$1 FROM t WHERE a = 7"
    )


def test_a_placeholder_without_argument_names_itself() -> None:
    with pytest.raises(ValueError, match=r"\$3 has no argument \(2 given\)"):
        render_numbered("SELECT $1, $3", (1, 2))
    with pytest.raises(ValueError, match=r"\$0"):
        render_numbered("SELECT $0", (1,))


def test_args_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match="sequence"):
        render_numbered("SELECT $1", {"a": 1})
    with pytest.raises(TypeError, match="sequence"):
        render_numbered("SELECT $1", "a")


def test_unsupported_type_names_the_placeholder_and_type() -> None:
    with pytest.raises(TypeError, match=r"\$2: no SQL literal for a object"):
        render_numbered("SELECT $1, $2", (1, object()))


def test_nul_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b", where="$1")


def test_negative_numbers_cannot_become_a_comment() -> None:
    assert render_numbered("SELECT 1-$1", (-5,)) == "SELECT 1-(-5)"


def test_typed_literals() -> None:
    assert literal(None) == "NULL"
    assert literal(True) == "true"
    assert literal(1.5) == "'1.5'::float8"
    assert literal(float("nan")) == "'NaN'::float8"
    assert literal(float("-inf")) == "'-Infinity'::float8"
    assert literal(decimal.Decimal("1.10")) == "'1.10'::numeric"
    assert literal(b"\x00\xff") == "E'\\\\x00ff'::bytea"
    assert literal(datetime.date(2024, 2, 29)) == "'2024-02-29'::date"
    assert literal(uuid.UUID(int=1)) == "'00000000-0000-0000-0000-000000000001'::uuid"
    assert literal([1, None, [2]]) == "ARRAY[1,NULL,ARRAY[2]]"
    assert literal({"a": "it's"}) == "'{\"a\": \"it''s\"}'::json"


def test_backslashes_make_an_escape_string() -> None:
    assert quote_text("a\\b") == "E'a\\\\b'"
    assert quote_text("it's") == "'it''s'"


@given(st.text(alphabet=st.characters(blacklist_characters="\x00")))
def test_text_literal_has_no_unescaped_quote_inside(text: str) -> None:
    quoted = quote_text(text)
    body = quoted[2:-1] if quoted.startswith("E'") else quoted[1:-1]
    assert quoted.endswith("'")
    # Every quote inside is doubled, so the literal cannot end early.
    assert "'" not in body.replace("''", "")
    if quoted.startswith("E'"):
        assert "\\" not in body.replace("\\\\", "")
