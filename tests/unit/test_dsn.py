"""Splitting multi-host DSNs into per-host DSNs, and keeping passwords out of text."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pgrouter.dsn import HostDsn, redact, split_dsn
from pgrouter.errors import DsnError


def hosts_and_ports(dsn: str) -> list[tuple[str, int]]:
    return [(h.host, h.port) for h in split_dsn(dsn)]


# -- URL form -----------------------------------------------------------------


def test_url_splits_hosts_with_their_own_ports() -> None:
    hosts = split_dsn("postgresql://user:pw@h1:5432,h2,h3:6432/db?sslmode=require")
    assert [(h.host, h.port) for h in hosts] == [("h1", 5432), ("h2", 5432), ("h3", 6432)]
    for h in hosts:
        assert (h.user, h.password, h.dbname) == ("user", "pw", "db")
        assert h.options == (("sslmode", "require"),)


def test_postgres_scheme_is_accepted() -> None:
    assert hosts_and_ports("postgres://u@h1,h2/db") == [("h1", 5432), ("h2", 5432)]


def test_last_port_applies_to_all_hosts_when_no_other_host_has_one() -> None:
    assert hosts_and_ports("postgresql://db1,db2,db3:6432/db") == [
        ("db1", 6432),
        ("db2", 6432),
        ("db3", 6432),
    ]
    assert hosts_and_ports("postgresql://db1:6433/db") == [("db1", 6433)]


def test_mixed_ports_do_not_spread() -> None:
    assert hosts_and_ports("postgresql://db1:6433,db2,db3:6432/db") == [
        ("db1", 6433),
        ("db2", 5432),
        ("db3", 6432),
    ]
    assert hosts_and_ports("postgresql://db1:6433,db2/db") == [("db1", 6433), ("db2", 5432)]


def test_missing_ports_default_to_5432() -> None:
    assert hosts_and_ports("postgresql://h1,h2") == [("h1", 5432), ("h2", 5432)]


def test_ipv6_hosts_in_brackets() -> None:
    hosts = split_dsn("postgresql://[::1]:5433,[fe80::1],h3/db")
    assert [(h.host, h.port) for h in hosts] == [("::1", 5433), ("fe80::1", 5432), ("h3", 5432)]
    assert [h.address for h in hosts] == ["[::1]:5433", "[fe80::1]:5432", "h3:5432"]
    assert hosts[0].to_url() == "postgresql://[::1]:5433/db"
    assert str(hosts[0]) == "postgresql://[::1]:5433/db"


def test_percent_encoding_is_decoded_and_round_trips() -> None:
    (h,) = split_dsn("postgresql://us%40er:p%40ss%3Aw%2Fd%20x@h1:5432/my%2Fdb?x=a%26b")
    assert (h.user, h.password, h.dbname) == ("us@er", "p@ss:w/d x", "my/db")
    assert h.options == (("x", "a&b"),)
    assert h.to_url() == "postgresql://us%40er:p%40ss%3Aw%2Fd%20x@h1:5432/my%2Fdb?x=a%26b"
    assert split_dsn(h.to_url()) == [h]


def test_raw_at_sign_in_password_is_tolerated() -> None:
    (h,) = split_dsn("postgresql://user:p@ss@word@h1:5433/db")
    assert (h.user, h.password, h.host, h.port) == ("user", "p@ss@word", "h1", 5433)


def test_options_are_kept_in_order_for_every_host() -> None:
    hosts = split_dsn("postgresql://h1,h2/db?sslmode=verify-full&application_name=my%20app")
    for h in hosts:
        assert h.options == (("sslmode", "verify-full"), ("application_name", "my app"))


def test_url_without_host_takes_hosts_from_query() -> None:
    (h,) = split_dsn("postgresql:///db?host=/var/run/postgresql")
    assert (h.host, h.port, h.dbname) == ("/var/run/postgresql", 5432, "db")
    assert h.address == "/var/run/postgresql:5432"
    assert h.to_url() == "postgresql:///db?host=/var/run/postgresql&port=5432"
    assert split_dsn(h.to_url()) == [h]


def test_url_query_host_and_port_follow_key_value_rules() -> None:
    assert hosts_and_ports("postgresql:///db?host=a,b&port=5433") == [("a", 5433), ("b", 5433)]
    assert hosts_and_ports("postgresql:///db?host=a,b&port=5433,") == [("a", 5433), ("b", 5432)]
    assert hosts_and_ports("postgresql://u@:6000/db?host=/tmp") == [("/tmp", 6000)]
    assert hosts_and_ports("postgresql://h1,h2/db?port=7000") == [("h1", 7000), ("h2", 7000)]


def test_url_without_any_host_is_localhost() -> None:
    assert hosts_and_ports("postgresql:///db") == [("localhost", 5432)]
    assert hosts_and_ports("postgresql://") == [("localhost", 5432)]


def test_percent_encoded_socket_directory_in_authority() -> None:
    (h,) = split_dsn("postgresql://%2Ftmp:5433/db")
    assert (h.host, h.port) == ("/tmp", 5433)


def test_query_values_override_userinfo_and_path() -> None:
    (h,) = split_dsn("postgresql://a:b@h/db1?user=c&password=d&dbname=db2")
    assert (h.user, h.password, h.dbname, h.options) == ("c", "d", "db2", ())


def test_empty_fields_mean_unset() -> None:
    (h,) = split_dsn("postgresql://:@h/")
    assert (h.user, h.password, h.dbname) == (None, None, None)
    assert HostDsn("h", 1, user="", password="", dbname="") == HostDsn("h", 1)


# -- key=value form ---------------------------------------------------------


def test_conninfo_with_port_per_host_and_quoted_password() -> None:
    hosts = split_dsn("host=h1,h2 port=5432,5433 dbname=db user=u password='a b'")
    assert [(h.host, h.port) for h in hosts] == [("h1", 5432), ("h2", 5433)]
    assert all((h.user, h.password, h.dbname) == ("u", "a b", "db") for h in hosts)


def test_conninfo_one_port_for_all_hosts_and_empty_entry_defaults() -> None:
    assert hosts_and_ports("host=h1,h2,h3 port=6432") == [("h1", 6432), ("h2", 6432), ("h3", 6432)]
    assert hosts_and_ports("host=h1,h2 port=,6432") == [("h1", 5432), ("h2", 6432)]
    assert hosts_and_ports("host=h1,h2") == [("h1", 5432), ("h2", 5432)]


def test_conninfo_no_host_is_localhost() -> None:
    assert hosts_and_ports("dbname=db port=5433") == [("localhost", 5433)]


def test_conninfo_quoting_whitespace_and_other_keys() -> None:
    (h,) = split_dsn(
        r"  host = h1   password = 'it\'s a \\ secret' sslmode=require  application_name=a\ b  "
    )
    assert h.password == "it's a \\ secret"
    assert h.options == (("sslmode", "require"), ("application_name", "a b"))
    assert h.to_conninfo() == (
        r"host=h1 port=5432 password='it\'s a \\ secret' sslmode=require application_name='a b'"
    )
    assert split_dsn(h.to_conninfo()) == [h]


def test_conninfo_repeated_key_last_wins() -> None:
    (h,) = split_dsn("host=a host=b dbname=x dbname=y")
    assert (h.host, h.dbname) == ("b", "y")


def test_conninfo_ipv6_and_socket_hosts() -> None:
    hosts = split_dsn("host=::1,/tmp port=5433")
    assert [h.address for h in hosts] == ["[::1]:5433", "/tmp:5433"]
    assert hosts[1].to_conninfo() == "host=/tmp port=5433"


# -- HostDsn ----------------------------------------------------------------


def test_str_and_repr_hide_the_password() -> None:
    h = HostDsn("h1", 5432, user="u", password="s3cr:t@/", dbname="db")
    assert str(h) == "postgresql://u:***@h1:5432/db"
    assert repr(h) == "HostDsn('postgresql://u:***@h1:5432/db')"
    assert "s3cr" not in f"{h} {h!r} {[h]}"
    assert "s3cr" in h.to_url() and "s3cr" in h.to_conninfo()


def test_str_hides_password_like_options() -> None:
    h = HostDsn("h1", 5432, options=(("sslpassword", "keypass"),))
    assert "keypass" not in str(h) and "keypass" not in repr(h)
    assert "keypass" in h.to_url()


def test_with_options_keeps_order_and_replaces() -> None:
    h = HostDsn("h1", 5432, options=(("a", "1"), ("b", "2")))
    assert h.with_options(a="9", c="3").options == (("a", "9"), ("b", "2"), ("c", "3"))
    assert h.options == (("a", "1"), ("b", "2"))
    with pytest.raises(DsnError, match="password"):
        h.with_options(password="x")


def test_password_takes_part_in_equality() -> None:
    assert HostDsn("h", 1, password="a") != HostDsn("h", 1, password="b")


@pytest.mark.parametrize(
    ("kwargs", "part"),
    [
        ({"host": "", "port": 1}, "empty host"),
        ({"host": "a,b", "port": 1}, "'a,b'"),
        ({"host": "h", "port": 0}, "bad port 0"),
        ({"host": "h", "port": 65536}, "bad port 65536"),
        ({"host": "h", "port": 1, "options": (("bad key", "v"),)}, "'bad key'"),
        ({"host": "h", "port": 1, "options": (("a", "1"), ("a", "2"))}, "'a' given twice"),
    ],
)
def test_invalid_host_dsn(kwargs: dict[str, object], part: str) -> None:
    with pytest.raises(DsnError) as caught:
        HostDsn(**kwargs)  # type: ignore[arg-type]
    assert part in str(caught.value)


# -- errors -----------------------------------------------------------------

SECRET = "S3cr#t!pw"
ENCODED = quote(SECRET, safe="")


@pytest.mark.parametrize(
    ("dsn", "part"),
    [
        (f"mysql://u:{SECRET}@h/db", "unknown scheme 'mysql'"),
        (f"postgresql://u:{ENCODED}@h1,,h2/db", "host #2 of 'h1,,h2' is empty"),
        (f"postgresql://u:{ENCODED}@h1:abc/db", "bad port 'abc' for host 'h1'"),
        (f"postgresql://u:{ENCODED}@h1:0/db", "bad port '0' for host 'h1'"),
        (f"postgresql://u:{ENCODED}@h1:70000/db", "bad port '70000' for host 'h1'"),
        (f"postgresql://u:{ENCODED}@h1,h2:x1/db", "bad port 'x1' for host 'h2'"),
        (f"postgresql://u:{ENCODED}@[::1/db", "'[::1' has no closing ']'"),
        (f"postgresql://u:{ENCODED}@[::1]x/db", "unexpected 'x' after ']'"),
        (f"postgresql://u:{ENCODED}@h/db?sslmode", "query parameter 'sslmode' has no '='"),
        (f"postgresql://u:{SECRET}@h/db?host=a,b&port=1,2,3", "3 ports ('1,2,3') for 2 hosts"),
        (f"postgresql://u:{ENCODED}@h/db?bad%20key=1", "bad option name 'bad key'"),
        (f"postgresql://u:{ENCODED}@h/%ff", "database name is not valid"),
        (f"host=h1 password='{SECRET}' dbname='db", "value of 'dbname' has an unterminated quote"),
        (f"host=h1 password='{SECRET}' sslmode", "'sslmode' has no '='"),
        (f"host=h1,h2,h3 port=1,2 password={SECRET}", "2 ports ('1,2') for 3 hosts ('h1,h2,h3')"),
        (f"host=h1,,h3 password={SECRET}", "host #2 of 'h1,,h3' is empty"),
        (f"host=h1 port=99999 password={SECRET}", "bad port '99999' for host 'h1'"),
        (f"host=h1 =x password={SECRET}", "'=' without a key"),
    ],
)
def test_errors_name_the_bad_part_and_hide_the_password(dsn: str, part: str) -> None:
    with pytest.raises(DsnError) as caught:
        split_dsn(dsn)
    message = str(caught.value)
    assert part in message
    assert SECRET not in message and ENCODED not in message
    assert redact(dsn) in message


@pytest.mark.parametrize("dsn", ["", "   ", "\n\t"])
def test_empty_dsn(dsn: str) -> None:
    with pytest.raises(DsnError, match="empty DSN"):
        split_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "host=h1 password=top secret",  # unquoted space: the rest must not leak either
        "host=h1 password='top secret",  # unterminated quote in the password itself
        "postgresql://u:top/secret@h1/db",  # raw '/' cuts the password
        "postgresql://u:top%ffsecret@h1/db",  # undecodable password
        "postgresql://h1/db?password=top&secret",  # raw '&' in a query password
    ],
)
def test_errors_inside_the_password_do_not_leak_it(dsn: str) -> None:
    with pytest.raises(DsnError) as caught:
        split_dsn(dsn)
    assert "top" not in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "part"),
    [
        (f"postgresql:/app:{SECRET}@db1/app", "the scheme is 'postgresql:/'"),
        (f"postgresql//u:{SECRET}@h/db", "the scheme is 'postgresql//'"),
        (f"Postg/reSQL://u:{SECRET}@h/db", "the scheme is 'Postg/reSQL://'"),
        (f"postgresql:u:{SECRET}@h/db", "the scheme is 'postgresql:'"),
        (f"u:{SECRET}@h/db", "looks like a URL but has no scheme"),
        (f"u:{SECRET}@h/db?sslmode=require", "looks like a URL but has no scheme"),
        (f"{SECRET}", "not a DSN"),
        (f"'{SECRET}'", "not a DSN"),
    ],
)
def test_text_in_neither_form_is_not_quoted(dsn: str, part: str) -> None:
    # Nothing tells where a password is in such text, so none of it is shown.
    with pytest.raises(DsnError) as caught:
        split_dsn(dsn)
    message = str(caught.value)
    assert part in message
    assert "expected postgresql:// or postgres://" in message or "not a DSN" in message
    assert SECRET not in message and "S3cr" not in message and "pw" not in message


@pytest.mark.parametrize(
    ("dsn", "part"),
    [
        (f"host=h1 user=app {SECRET}", "item #3 has no '='"),  # a password without its key
        ("host=h1 user=app S3cretPw", "item #3 has no '='"),  # one that looks like a name
        (f"host=h1 u:{SECRET}@h/db", "item #2 has no '='"),  # a URL after key=value
        (f"host=h1 u:{SECRET}@h/db?sslmode=x", "the key of item #2 is not a name"),
        (f"postgresql://u:{ENCODED}@h/db?S3cretPw", "query parameter #1 has no '='"),
    ],
)
def test_words_that_are_no_items_are_not_quoted(dsn: str, part: str) -> None:
    with pytest.raises(DsnError) as caught:
        split_dsn(dsn)
    message = str(caught.value)
    assert part in message
    assert "S3cr" not in message and ENCODED not in message


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:top?se/cret@h1/db",  # raw '?' then '/': no port, no query
        "postgresql://u:top/se?cret@h1/db",  # raw '/' then '?'
        "postgresql://u:top/secret@h1/db?sslmode=require",
        "postgresql://u:top]?se/cret@h1/db",  # no IPv6 address without a '['
        "postgresql://u:top:?se/cret@h1/db",  # nor a port with a ':'
    ],
)
def test_a_password_cut_by_a_raw_slash_is_not_read_as_a_port(dsn: str) -> None:
    with pytest.raises(DsnError, match="'@' after the first '/'") as caught:
        split_dsn(dsn)
    assert "top" not in str(caught.value) and "cret" not in str(caught.value)


def test_an_at_sign_in_the_query_after_a_port_is_not_a_cut_password() -> None:
    assert hosts_and_ports("postgresql://h1:5432,h2?application_name=a/b@c") == [
        ("h1", 5432),
        ("h2", 5432),
    ]
    assert hosts_and_ports("postgresql://[::1]:5433?application_name=a/b@c") == [("::1", 5433)]


@pytest.mark.parametrize(
    ("dsn", "key"),
    [
        (f"host= password={SECRET} user=app", "host"),  # host=$PGHOST with PGHOST unset
        (f"host=\tpassword={SECRET}", "host"),
        (f"user= password='{SECRET}' host=h1", "user"),
        (f"host=h1 port= sslmode=require password={SECRET}", "port"),
        (f"host=h1 password= sslpassword={SECRET}", "password"),
    ],
)
def test_an_empty_value_does_not_swallow_the_next_item(dsn: str, key: str) -> None:
    # libpq would read "password=..." as the value: a host name, which is logged.
    with pytest.raises(DsnError) as caught:
        split_dsn(dsn)
    message = str(caught.value)
    assert f"empty value for {key!r}" in message
    assert SECRET not in message


def test_a_value_after_spaces_is_still_read() -> None:
    (h,) = split_dsn("host = h1 password = a=b user= app dbname= 'x=y'")
    assert (h.host, h.password, h.user, h.dbname) == ("h1", "a=b", "app", "x=y")
    assert hosts_and_ports("dbname=x host=") == [("localhost", 5432)]
    assert hosts_and_ports("host='' port=5433") == [("localhost", 5433)]


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(None, "NoneType"), (123, "int"), (f"postgresql://u:{SECRET}@h".encode(), "bytes")],
)
def test_split_dsn_of_a_non_str_is_a_type_error(value: object, type_name: str) -> None:
    with pytest.raises(TypeError) as caught:
        split_dsn(value)  # type: ignore[arg-type]
    assert f"not {type_name}" in str(caught.value)
    assert "S3cr" not in str(caught.value)
    with pytest.raises(TypeError, match=f"not {type_name}"):
        redact(value)  # type: ignore[arg-type]


# -- large input: neither function may hang -------------------------------------
# A generous bound only (speed itself is the benchmarks' business): before the
# fix, these took hours.

MEGABYTE = 1_000_000


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "unit", ["a", "//a", "//a/", "a:b@", "//:@", "password=", "'", "&password=", " ", "postgres://"]
)
def test_redact_of_a_megabyte_does_not_hang(unit: str) -> None:
    text = unit * (MEGABYTE // len(unit))
    assert "***" in redact(text + " password=x")  # the timeout is the real check


@pytest.mark.timeout(5)
def test_split_dsn_of_a_megabyte_host_name_does_not_hang() -> None:
    host = "a" * MEGABYTE
    assert hosts_and_ports(f"postgresql://u:pw@{host}/db") == [(host, 5432)]
    assert hosts_and_ports(f"host={host} password=pw") == [(host, 5432)]
    with pytest.raises(DsnError, match="bad port"):
        split_dsn(f"postgresql://u:pw@{host}:x/db")
    with pytest.raises(DsnError, match="bad port"):
        split_dsn(f"host={host} port=x password=pw")


# -- redact -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgres://u:p@ss@h1,h2/db", "postgres://u:***@h1,h2/db"),
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
        ("postgresql://u@h:5432,h2:5433/db", "postgresql://u@h:5432,h2:5433/db"),
        ("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"),
        ("failed: host=h password=secret dbname=x", "failed: host=h password=*** dbname=x"),
        ("password = 'a \\' b' user=u", "password = *** user=u"),
        ("password='never closed", "password=***"),
        ("postgresql://h/db?password=secret&sslmode=x", "postgresql://h/db?password=***&sslmode=x"),
        ("sslpassword=k PGPASSWORD=e", "sslpassword=*** PGPASSWORD=***"),
        ("no dsn here", "no dsn here"),
        # no part of a query password, whatever it holds
        ("postgresql://h/db?password=S3cret#Pw!", "postgresql://h/db?password=***"),
        (
            "postgresql://h/db?password=S3cret Pw!&sslmode=x",
            "postgresql://h/db?password=***&sslmode=x",
        ),
        ("postgresql://h/db?password=top&secret", "postgresql://h/db?password=***"),
        # mistyped or missing schemes, raw '/', '@' and spaces in URL passwords
        ("postgresql:/app:S3cretPw!@db1/app", "postgresql:***@db1/app"),
        ("postgresql//u:pw@h/db", "postgresql//u:***@h/db"),
        ("Postg/reSQL://u:pw@h/db", "Postg/reSQL://u:***@h/db"),
        ("dsn=u:pw@h/db failed", "dsn=u:***@h/db failed"),
        ("postgresql://u:top/secret@h1/db", "postgresql://u:***@h1/db"),
        ("postgresql://u:top secret@h1/db", "postgresql://u:***@h1/db"),
        ("u:a//b@h/db", "u:***@h/db"),
        (
            "x postgresql://u:a@h/db,postgres://v:b@i/db",
            "x postgresql://u:***@h/db,postgres://v:***@i/db",
        ),
        # an unquoted password with a space, and libpq's reading of "password= x"
        ("password=top secret dbname=x", "password=*** dbname=x"),
        ("password= host=h1", "password= ***"),
        ("app@db1:5432 and [::1]:5432 stay", "app@db1:5432 and [::1]:5432 stay"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # its own output goes through unchanged


# -- properties -------------------------------------------------------------

host_names = st.from_regex(r"[a-z][a-z0-9\-]{0,8}(\.[a-z][a-z0-9\-]{0,8}){0,2}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
url_hosts = st.one_of(host_names, ipv4, ipv6)
ports = st.integers(1, 65535)
option_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda key: key not in {"host", "port", "user", "password", "dbname"}
)
options = st.dictionaries(option_keys, st.text(), max_size=3).map(lambda d: tuple(d.items()))


def url_host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@given(
    hosts=st.lists(st.tuples(url_hosts, st.none() | ports), min_size=1, max_size=5),
    user=st.none() | st.text(),
    password=st.none() | st.text(),
    dbname=st.none() | st.text(),
    opts=options,
    scheme=st.sampled_from(["postgresql", "postgres"]),
)
def test_split_random_url(
    hosts: list[tuple[str, int | None]],
    user: str | None,
    password: str | None,
    dbname: str | None,
    opts: tuple[tuple[str, str], ...],
    scheme: str,
) -> None:
    userinfo = ""
    if user is not None or password is not None:
        userinfo = quote(user or "", safe="")
        userinfo += "" if password is None else f":{quote(password, safe='')}"
        userinfo += "@"
    netloc = ",".join(url_host(host, port) for host, port in hosts)
    path = "" if dbname is None else f"/{quote(dbname, safe='')}"
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in opts)
    dsn = f"{scheme}://{userinfo}{netloc}{path}{'?' if query else ''}{query}"

    given_ports = [port for _, port in hosts]
    if len(hosts) > 1 and given_ports[-1] is not None and not any(given_ports[:-1]):
        expected_ports = [given_ports[-1]] * len(hosts)
    else:
        expected_ports = [5432 if port is None else port for port in given_ports]

    result = split_dsn(dsn)
    assert [(h.host, h.port) for h in result] == [
        (host, port) for (host, _), port in zip(hosts, expected_ports, strict=True)
    ]
    for h in result:
        assert h.user == (user or None)
        assert h.password == (password or None)
        assert h.dbname == (dbname or None)
        assert h.options == opts


any_host = st.one_of(
    url_hosts,
    # (user:password@host as a host is refused on purpose: see the test below)
    st.text(min_size=1).filter(lambda host: "," not in host and not re.match("[^@]*:[^@]*@", host)),
    st.text().filter(lambda path: "," not in path).map(lambda path: "/" + path),
)
host_dsns = st.builds(
    HostDsn,
    host=any_host,
    port=ports,
    user=st.none() | st.text(),
    password=st.none() | st.text(),
    dbname=st.none() | st.text(),
    options=options,
)


@given(host_dsns)
def test_url_round_trip(h: HostDsn) -> None:
    assert split_dsn(h.to_url()) == [h]


@given(host_dsns)
def test_conninfo_round_trip(h: HostDsn) -> None:
    assert split_dsn(h.to_conninfo()) == [h]


@given(host_dsns, st.text(min_size=4))
def test_str_never_shows_a_real_password(h: HostDsn, password: str) -> None:
    h = replace(h, password=password)
    assume(password not in repr(replace(h, password="PLACEHOLDER")))
    assert password not in str(h) and password not in repr(h)


passwords = st.text(string.ascii_letters + string.digits + string.punctuation, min_size=4)


def conninfo_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo_unquoted(value: str) -> str:
    return "".join("\\" + char if char in "\\'" else char for char in value)


# Each builds a DSN around the password; the raw-URL form only holds passwords without '/'.
DSN_FORMS: dict[str, Callable[[str], str]] = {
    "url": lambda pw: f"postgresql://user:{quote(pw, safe='')}@h1,h2:5433/db",
    "raw_url": lambda pw: f"postgres://user:{pw}@h1:5432/db?sslmode=require",
    "query": lambda pw: f"postgresql://h1/db?user=u&password={quote(pw, safe='')}",
    "kv_quoted": lambda pw: f"host=h1,h2 password={conninfo_quoted(pw)} dbname=db",
    "kv_unquoted": lambda pw: f"host=h1 password = {conninfo_unquoted(pw)} user=u",
}

# Each turns a valid DSN into one split_dsn must reject: (URL version, key=value version).
CORRUPTIONS: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "scheme": (lambda dsn: dsn.replace("postgres", "mysql", 1), lambda dsn: "mysql://" + dsn),
    "bad_port": (lambda dsn: dsn.replace("h1", "h1:9x", 1), lambda dsn: dsn + " port=9x"),
    "empty_host": (lambda dsn: dsn.replace("h1", "h1,,h0", 1), lambda dsn: dsn + " host=a,,b"),
    "bracket": (lambda dsn: dsn.replace("h1", "[::1", 1), lambda dsn: dsn + " port=1,2,3"),
    "tail": (lambda dsn: dsn + ("&" if "?" in dsn else "?") + "oops", lambda dsn: dsn + " oops"),
    "quote": (lambda dsn: dsn + ("&" if "?" in dsn else "?") + "x=%ff", lambda dsn: dsn + " x='a"),
}


def corrupt(dsn: str, corruption: str) -> str:
    url_version, conninfo_version = CORRUPTIONS[corruption]
    return url_version(dsn) if "://" in dsn else conninfo_version(dsn)


@given(
    password=passwords,
    form=st.sampled_from(sorted(DSN_FORMS)),
    corruption=st.sampled_from(sorted(CORRUPTIONS)),
    context=st.sampled_from(["{}", "connect to {} failed", "dsn={}\nnext line"]),
)
def test_password_never_leaks(password: str, form: str, corruption: str, context: str) -> None:
    if form == "raw_url":
        assume("/" not in password)
    build = DSN_FORMS[form]
    placeholder = build("PLACEHOLDER")
    dsn = build(password)
    assume(password not in placeholder and password not in context)
    assume("h1" not in password and "postgres" not in password)  # the corruptions' targets

    assert password not in redact(context.format(dsn))

    with pytest.raises(DsnError) as caught:
        split_dsn(corrupt(dsn, corruption))
    message = str(caught.value)
    with pytest.raises(DsnError) as caught_placeholder:
        split_dsn(corrupt(placeholder, corruption))
    assume(password not in str(caught_placeholder.value))  # the message's own words
    assert password not in message


@given(password=passwords, form=st.sampled_from(sorted(DSN_FORMS)))
def test_parsed_hosts_never_show_the_password(password: str, form: str) -> None:
    if form == "raw_url":
        assume("/" not in password and "%" not in password)
    if form == "kv_unquoted":
        # "password = host=x" is refused: it reads like "password= host=x" (an empty value).
        assume(not re.match(r"[A-Za-z0-9_.\-]+=", password))
    dsn = DSN_FORMS[form](password)
    placeholder = DSN_FORMS[form]("PLACEHOLDER")
    assume(password not in placeholder and password not in repr(split_dsn(placeholder)))
    for h in split_dsn(dsn):
        assert h.password == password
        assert password not in str(h) and password not in repr(h)


@pytest.mark.parametrize(
    "text", ["host=u:S3cretPw@h dbname=x", "host=db1,app:S3cretPw@db2 dbname=x"]
)
def test_user_and_password_pasted_into_host_is_refused_without_showing_them(text: str) -> None:
    with pytest.raises(DsnError, match="contains '@'") as raised:
        split_dsn(text)
    assert "S3cretPw" not in str(raised.value)
