"""Property tests: no password leaks out of DSN text, whatever surrounds or mangles it.

Every generated password is ``JJ<a>JJ<b>JJ``, and the letter ``J`` occurs
nowhere else: not in the DSN templates, the junk around them or pgrouter's
messages. So a ``J`` in any output is a piece of the password (its start, its
middle or its tail), not just the whole password.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgrouter.dsn import redact, split_dsn
from pgrouter.errors import DsnError

MARK = "J"
# Characters DSN syntax treats specially, a few non-ASCII ones, and plain ones.
SPECIAL = "'\"#&@/ :=%?\\;,+!$`~[](){}<>|^*\t"
UNICODE = "éß☃中\u00a0"
PLAIN = string.ascii_letters.replace(MARK, "") + string.digits
ASCII_SPACE = " \t\n\r\v\f"

body = st.text(st.sampled_from(SPECIAL + UNICODE + PLAIN), max_size=8)
passwords = st.builds(lambda a, b: f"JJ{a}JJ{b}JJ", body, body)
junk = st.text(st.characters(exclude_characters=MARK, codec="utf-8"), max_size=12)
users = st.sampled_from(["app", "u", "", "a.b-c"])
schemes = st.sampled_from(["postgresql", "postgres"])


def kv_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def kv_escaped(value: str) -> str:
    return "".join("\\" + char if char in "\\'" + ASCII_SPACE else char for char in value)


def has_any(text: str, chars: str) -> bool:
    return any(char in text for char in chars)


# Each form writes a DSN around the password, or returns None if the form cannot
# carry it (a raw '/' in a URL password, say, which libpq would read otherwise).
Form = Callable[[str, str, str], "str | None"]

WELL_FORMED: dict[str, Form] = {
    "url": lambda pw, user, scheme: f"{scheme}://{user}:{quote(pw, safe='')}@h1,h2:5433/db",
    "url_raw": lambda pw, user, scheme: (
        None if has_any(pw, "/%\n\r") else f"{scheme}://{user}:{pw}@h1:5432/db?sslmode=require"
    ),
    "query": lambda pw, user, scheme: (
        f"{scheme}://h1/db?user={user}&password={quote(pw, safe='')}&application_name=x"
    ),
    "query_raw": lambda pw, user, scheme: (
        None if has_any(pw, "&%\n\r") else f"{scheme}://h1,h2/db?password={pw}"
    ),
    "kv_quoted": lambda pw, user, scheme: f"host=h1,h2 password={kv_quoted(pw)} dbname=db",
    "kv_escaped": lambda pw, user, scheme: f"host=h1 user={user or 'x'} password={kv_escaped(pw)}",
    "kv_spaced": lambda pw, user, scheme: f"host=h1 password = {kv_quoted(pw)} port=5433",
}

# Mistakes people make; split_dsn must refuse each without showing the password.
MISTAKES: dict[str, Form] = {
    "kv_raw_space": lambda pw, user, scheme: (
        None
        if has_any(pw, "'\\=\n\r") or not has_any(pw, " \t")
        else f"host=h1 password={pw} dbname=db"
    ),
    "url_raw_slash": lambda pw, user, scheme: (
        None if has_any(pw, "@" + ASCII_SPACE) else f"{scheme}://{user}:{pw}/x@h1/db"
    ),
    "scheme_one_slash": lambda pw, user, scheme: (
        None if has_any(pw, ASCII_SPACE) else f"{scheme}:/{user}:{pw}@db1/app"
    ),
    "scheme_no_colon": lambda pw, user, scheme: (
        None if has_any(pw, "/\n\r") else f"{scheme}//{user}:{pw}@h/db"
    ),
    "scheme_slash_inside": lambda pw, user, scheme: (
        None if has_any(pw, "/\n\r") else f"Postg/reSQL://{user}:{pw}@h/db"
    ),
    "scheme_missing": lambda pw, user, scheme: (
        None if has_any(pw, ASCII_SPACE) else f"{user or 'u'}:{pw}@h/db?sslmode=x"
    ),
    "scheme_unknown": lambda pw, user, scheme: (
        None if has_any(pw, "/\n\r") else f"mysql://{user}:{pw}@h/db"
    ),
}


def dsns(forms: dict[str, Form]) -> st.SearchStrategy[tuple[str, str]]:
    """``(dsn, password)`` in one of ``forms``."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, str]:
        password = draw(passwords)
        form = forms[draw(st.sampled_from(sorted(forms)))]
        dsn = form(password, draw(users), draw(schemes))
        assume(dsn is not None)
        assert dsn is not None
        return dsn, password

    return build()


any_dsns = dsns(WELL_FORMED | MISTAKES)


def assert_hidden(text: str, password: str) -> None:
    assert password not in text
    assert MARK not in text, f"part of the password shows in {text!r}"


@settings(max_examples=400, deadline=None)
@given(any_dsns, junk, junk, st.sampled_from([" ", "\n", "", "'", " dsn="]))
def test_redact_hides_every_password_in_any_text(
    dsn_and_password: tuple[str, str], before: str, after: str, glue: str
) -> None:
    dsn, password = dsn_and_password
    text = f"{before}{glue}{dsn}{glue if glue != ' dsn=' else ' '}{after}"
    assert_hidden(redact(text), password)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dsn_and_password=any_dsns, after=junk)
def test_split_dsn_never_shows_the_password(
    dsn_and_password: tuple[str, str], after: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn, password = dsn_and_password
    # Junk only after the DSN: before it, it could turn the password into another
    # field (dbname=' swallowing it), which is then no password to hide.
    text = f"{dsn} {after}" if after.strip() else dsn
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pgrouter"):
        try:
            hosts = split_dsn(text)
        except DsnError as error:
            assert_hidden(str(error), password)
            assert_hidden(repr(error), password)
            # What `pgrouter status` prints: the message through redact() once more.
            assert_hidden(redact(str(error)), password)
        else:
            for host in hosts:
                # str and repr are what callers print; address is what pgrouter logs.
                for shown in (str(host), repr(host), host.address, repr([host])):
                    assert_hidden(shown, password)
    for record in caplog.records:
        assert_hidden(record.getMessage(), password)


@settings(max_examples=200, deadline=None)
@given(dsns(WELL_FORMED))
def test_well_formed_dsns_keep_their_password(dsn_and_password: tuple[str, str]) -> None:
    # The hiding above does not come from refusing good DSNs: these parse, and
    # the password comes back whole.
    dsn, password = dsn_and_password
    for host in split_dsn(dsn):
        assert host.password == password


@settings(max_examples=200, deadline=None)
@given(dsns(MISTAKES))
def test_mistakes_are_refused(dsn_and_password: tuple[str, str]) -> None:
    dsn, password = dsn_and_password
    with pytest.raises(DsnError) as caught:
        split_dsn(dsn)
    assert_hidden(str(caught.value), password)
