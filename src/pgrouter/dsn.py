"""Split a multi-host PostgreSQL DSN into one DSN per host, and hide passwords.

pgrouter opens one pool per host, so the multi-host DSN a user gives (a
``postgresql://`` URL or libpq ``key=value`` pairs) is split here into
:class:`HostDsn` values that the rest of the package works with. The rules are
libpq's, plus one that hasql users rely on: in a URL where only the last host
has a port, that port applies to every host (``db1,db2,db3:6432``).

Nothing here puts a password into a message, ``str`` or ``repr``:
:func:`redact` hides passwords in any text, and parse errors show the DSN only
after it went through it. Text whose form is unclear is not shown at all: a
DSN that is neither a URL nor key=value pairs (a mistyped scheme such as
``postgresql:/u:pw@h``) gets a message naming at most its scheme, and a word
in key=value text that is no ``key=value`` item is hidden, as it may be a
password typed without its key. Two readings of libpq's are refused rather
than followed: ``key= next=x`` (libpq takes ``next=x`` as the value, so an
unset ``$PGHOST`` in ``host=$PGHOST password=x`` would log the password as a
host name), and a URL whose password a raw ``/`` cut short.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from .errors import DsnError

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5432

_SCHEMES = ("postgresql", "postgres")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# What a mistyped scheme looks like: postgresql:/ postgresql// Postg/reSQL://
_LOOSE_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-/]{0,19}?)(:/{0,3}|//)")
# One URL host with its port: name[:port] or [IPv6][:port].
_HOST_PORT_RE = re.compile(r"(?:\[[^\]]*\]|[^:\[\]]*)(?::[0-9]*)?")
# key=value text starts with a name followed by '=', a space or the end.
_NAME_FIRST_RE = re.compile(r"[A-Za-z0-9_.\-]+(?![^ \t\n\r\v\f=])")
# libpq's own keywords; every other key is passed through as an option.
_RESERVED_KEYS = frozenset({"host", "port", "user", "password", "dbname"})
# Option names must survive both output forms unquoted.
_OPTION_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# libpq splits key=value items on ASCII whitespace only (C isspace).
_KV_SPACE = frozenset(" \t\n\r\v\f")

_Fail = Callable[[str], DsnError]
_Span = tuple[int, int]

# libpq's connection keywords: the only bare words an error may quote. Any
# other word without '=' may be a password typed without its key.
_LIBPQ_KEYWORDS = frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "password", "passfile",
        "require_auth", "channel_binding", "connect_timeout", "client_encoding",
        "options", "application_name", "fallback_application_name", "keepalives",
        "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "replication", "gssencmode", "sslmode", "sslnegotiation",
        "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword",
        "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
        "ssl_min_protocol_version", "ssl_max_protocol_version",
        "min_protocol_version", "max_protocol_version", "krbsrvname", "gsslib",
        "gssdelegation", "service", "target_session_attrs", "load_balance_hosts",
    }
)  # fmt: skip

# -- redact -----------------------------------------------------------------
#
# Every pattern below is anchored where it starts (a lookbehind, or match() at
# a known position), and every scan goes forward over text that later scans
# read a bounded number of times, so redact() is linear in the text's length
# (a regex tried at every position of a long word was what made it quadratic).

_WORD_RE = re.compile(r"[^ \t\n\r\v\f]+")
_AUTHORITY_END_RE = re.compile(r"[/\n\r]")
_SPACE_RE = re.compile(r"[ \t\n\r\v\f]")
# A key ending in "password" (also sslpassword, PGPASSWORD, db_password) before '='.
_SECRET_KEY_RE = re.compile(
    r"(?<![A-Za-z0-9_.\-])[A-Za-z0-9_.\-]*password(?=[ \t\n\r\v\f]*=)", re.IGNORECASE
)
_KV_SPACES_RE = re.compile(r"[ \t\n\r\v\f]*")
# A key=value value as libpq reads it, plus whatever is glued to it: quoted
# pieces (an unterminated one runs to the end) and characters, '\' escaping any.
_KV_VALUE_RE = re.compile(r"(?:'(?:[^'\\]|\\.)*(?:'|\\?\Z)|\\.|\\\Z|[^ \t\n\r\v\f'\\])*", re.DOTALL)
_KV_QUOTED_RE = re.compile(r"'((?:[^'\\]|\\.)*)'", re.DOTALL)
_KV_KEY_RE = re.compile(r"[^ \t\n\r\v\f=]*")
_KV_UNQUOTED_RE = re.compile(r"(?:[^ \t\n\r\v\f\\]|\\.|\\\Z)*", re.DOTALL)
_KV_ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)  # a trailing lone '\' is dropped, as in libpq
_ITEM_START_RE = re.compile(r"[A-Za-z0-9_.\-]+=")
# Words after an unquoted password that are no key=value items: likely its rest.
_KV_TAIL_RE = re.compile(r"(?:[ \t\v\f]+[^ \t\n\r\v\f=]+(?![^ \t\n\r\v\f]))*")
# A query value runs to the next '&' ('#' and spaces included, as the parser
# reads it), and on through '&' items without '=' (a raw '&' in the password).
_QUERY_VALUE_RE = re.compile(r"[^&\n\r]*(?:&[^&=\n\r]*(?=[&\n\r]|\Z))*")


def redact(text: str) -> str:
    """Return ``text`` with every password of a DSN in it replaced by ``***``.

    Hides URL userinfo passwords (``scheme://user:SECRET@``, also with a
    mistyped or missing scheme: ``postgresql:/u:SECRET@h``, ``u:SECRET@h``),
    query parameters (``?password=SECRET``, to the next ``&``) and key=value
    pairs (``password=SECRET``, ``password='quoted secret'``; an unterminated
    quote hides the rest). Where text could be either the rest of a password or
    something else, it is hidden: a leak costs more than a shorter log line.
    """
    if not isinstance(text, str):
        raise TypeError(f"redact() takes a str, not {type(text).__name__}")
    spans = sorted(_UserinfoScan(text).spans() + _password_spans(text))
    pieces: list[str] = []
    shown_from = 0
    hide_start = hide_end = -1
    for start, end in spans:
        if start > hide_end:  # a new span: flush the previous one
            if hide_end >= 0:
                pieces += [text[shown_from:hide_start], "***"]
                shown_from = hide_end
            hide_start = start
        hide_end = max(hide_end, end)
    if hide_end >= 0:
        pieces += [text[shown_from:hide_start], "***"]
        shown_from = hide_end
    pieces.append(text[shown_from:])
    return "".join(pieces)


def _end_of(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (one that also matches empty text) ends when matched at ``pos``."""
    match = pattern.match(text, pos)
    assert match is not None
    return match.end()


def _password_spans(text: str) -> list[_Span]:
    """The values of ``...password=`` keys: query parameters and key=value pairs."""
    spans: list[_Span] = []
    pos = 0
    while (key := _SECRET_KEY_RE.search(text, pos)) is not None:
        equals = text.index("=", key.end())
        if text[key.start() - 1 : key.start()] in ("?", "&"):
            start = equals + 1
            end = _end_of(_QUERY_VALUE_RE, text, start)
        else:
            start = _end_of(_KV_SPACES_RE, text, equals + 1)  # libpq skips these too
            end = _end_of(_KV_VALUE_RE, text, start)
            quoted = _KV_QUOTED_RE.match(text, start)
            # "***" is redact's own mask: leave what follows it, so that
            # redacting twice (a message built from redacted text) changes nothing.
            whole = (quoted is not None and quoted.end() == end) or text[start:end] == "***"
            if not whole:
                end = _end_of(_KV_TAIL_RE, text, end)
        spans.append((start, end))
        pos = max(end, key.end())
    return spans


class _UserinfoScan:
    """Finds the ``SECRET`` of ``user:SECRET@host`` in text, in one forward pass.

    After a ``//`` the authority runs, as in the parser, to the next ``/`` (or
    line end), spaces included, and the secret to its last ``@``; if a raw ``/``
    in the password ended it early, to the last ``@`` of that word. Without ``//``
    (``postgresql:/u:SECRET@h``, ``u:SECRET@h``) the secret runs from a word's
    first ``:`` to its last ``@``.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._spans: list[_Span] = []
        # Caches for searches whose start only moves forward; without them a
        # word of many '//' and no '@' would be scanned once per '//'.
        self._colon: int | None = None
        self._word_end = -1
        self._word_last_at = -1

    def spans(self) -> list[_Span]:
        text, pos = self._text, 0
        while (word := _WORD_RE.search(text, pos)) is not None:
            start, end = word.span()
            while start < end:
                start = self._step(start, end)
            pos = start
        return self._spans

    def _step(self, start: int, end: int) -> int:
        """Look at ``text[start:end]``, the rest of a word; return where to go on."""
        text = self._text
        slashes = text.find("//", start, end)
        at = text.rfind("@", start, end if slashes == -1 else slashes)
        if at != -1:
            colon = text.find(":", start, at)
            if colon != -1:
                self._spans.append((colon + 1, at))
                return at + 1
        if slashes == -1:
            return end
        userinfo = slashes + 2
        authority_end = _AUTHORITY_END_RE.search(text, userinfo)
        stop = len(text) if authority_end is None else authority_end.start()
        at = text.rfind("@", userinfo, stop)
        if at == -1:
            at = self._last_at_in_word(stop)
        if at == -1:
            return stop
        colon = self._next_colon(userinfo)
        if colon == -1 or colon > at:
            # No "user:" after the '//': was the '//' inside a password (u:a//b@h)?
            colon = text.find(":", start, slashes - 1)
        if colon != -1 and colon < at:
            self._spans.append((colon + 1, at))
            return at + 1
        return stop

    def _next_colon(self, pos: int) -> int:
        if self._colon is None or -1 < self._colon < pos:
            self._colon = self._text.find(":", pos)
        return self._colon

    def _last_at_in_word(self, pos: int) -> int:
        if pos >= self._word_end:
            space = _SPACE_RE.search(self._text, pos)
            self._word_end = len(self._text) if space is None else space.start()
            self._word_last_at = self._text.rfind("@", pos, self._word_end)
        return self._word_last_at if self._word_last_at >= pos else -1


@dataclass(frozen=True, repr=False)
class HostDsn:
    """Everything needed to connect to one host; printing it hides the password.

    ``host`` is a name, an IPv4 or IPv6 address (no brackets) or a unix-socket
    directory (starts with ``/``). Empty ``user``/``password``/``dbname``
    become ``None``: libpq treats empty as unset, and one spelling keeps
    equality and round trips exact. The password takes part in equality (two
    DSNs with different passwords are different connections) but not in repr.
    """

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, compare=True, repr=False)
    dbname: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("user", "password", "dbname"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        object.__setattr__(self, "options", tuple((k, v) for k, v in self.options))
        if not self.host:
            raise DsnError("empty host")
        if "," in self.host:
            # Commas separate hosts in every DSN form, so one could not be written back.
            raise DsnError(f"host {self.host!r} contains a comma")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise DsnError(f"port of host {self.host!r} must be an int, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise DsnError(f"bad port {self.port} for host {self.host!r} (expected 1-65535)")
        seen: set[str] = set()
        for key, _ in self.options:
            if not _OPTION_KEY_RE.fullmatch(key):
                raise DsnError(f"bad option name {key!r}")
            if key in _RESERVED_KEYS:
                raise DsnError(f"{key!r} is a field of HostDsn, not an option")
            if key in seen:
                raise DsnError(f"option {key!r} given twice")
            seen.add(key)

    @property
    def is_socket(self) -> bool:
        """Whether ``host`` is a unix-socket directory."""
        return self.host.startswith("/")

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 bracketed): the host's name in logs and errors."""
        if not self.is_socket and ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def to_url(self) -> str:
        """The full ``postgresql://`` URL, password included."""
        password = None if self.password is None else quote(self.password, safe="")
        return self._url(password, hide_secrets=False)

    def to_conninfo(self) -> str:
        """The libpq ``key=value`` string, password included."""
        items = [("host", self.host), ("port", str(self.port))]
        for key in ("user", "password", "dbname"):
            value = getattr(self, key)
            if value is not None:
                items.append((key, value))
        items.extend(self.options)
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in items)

    def with_options(self, **extra: str) -> HostDsn:
        """A copy with ``extra`` options added; an existing option keeps its place."""
        merged = dict(self.options)
        merged.update(extra)
        return replace(self, options=tuple(merged.items()))

    def __str__(self) -> str:
        return self._url(None if self.password is None else "***", hide_secrets=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def _url(self, password: str | None, *, hide_secrets: bool) -> str:
        userinfo = ""
        if self.user is not None or password is not None:
            userinfo = quote(self.user or "", safe="")
            if password is not None:
                userinfo += f":{password}"
            userinfo += "@"
        query: list[tuple[str, str]] = []
        if self.is_socket:
            # A directory cannot sit in the authority; libpq and asyncpg read it here.
            netloc = ""
            query += [("host", quote(self.host, safe="/")), ("port", str(self.port))]
        elif ":" in self.host:
            netloc = f"[{quote(self.host, safe=':')}]:{self.port}"
        else:
            netloc = f"{quote(self.host, safe='')}:{self.port}"
        for key, value in self.options:
            hidden = hide_secrets and "password" in key.lower()  # e.g. sslpassword
            query.append((quote(key, safe=""), "***" if hidden else quote(value, safe="")))
        path = f"/{quote(self.dbname, safe='')}" if self.dbname is not None else ""
        query_text = "&".join(f"{key}={value}" for key, value in query)
        return f"postgresql://{userinfo}{netloc}{path}{'?' if query_text else ''}{query_text}"


def split_dsn(dsn: str) -> list[HostDsn]:
    """Split a multi-host URL or key=value DSN into one :class:`HostDsn` per host.

    Hosts keep their order; user, password, database and options are the same
    for each. Raises :class:`DsnError` naming the bad part (never the password),
    and ``TypeError`` for anything but a ``str``.
    """
    if not isinstance(dsn, str):
        hint = "; decode it first" if isinstance(dsn, (bytes, bytearray)) else ""
        raise TypeError(f"the DSN must be a str, not {type(dsn).__name__}{hint}")
    text = dsn.strip()
    if not text:
        raise DsnError("empty DSN: expected a postgresql:// URL or key=value pairs")
    scheme = _SCHEME_RE.match(text)
    if scheme:
        return _split_url(text, scheme)
    if _NAME_FIRST_RE.match(text):
        return _split_conninfo(text)
    # Neither form: nothing of it can be shown, as nothing says where a password is.
    raise DsnError(_not_a_dsn(text))


def _not_a_dsn(text: str) -> str:
    """Why ``text`` is no DSN, quoting at most a short scheme-like start of it."""
    scheme = _LOOSE_SCHEME_RE.match(text)
    if scheme:
        name, separator = scheme.groups()
        if "/" in separator or re.sub("[^a-z]", "", name.lower()) in _SCHEMES:
            return (
                f"looks like a URL but the scheme is {scheme.group(0)!r}; "
                "expected postgresql:// or postgres://"
            )
    if any(mark in text for mark in ("@", "//", ":")):
        return "looks like a URL but has no scheme; expected postgresql:// or postgres:// first"
    return "not a DSN: expected a postgresql:// URL or key=value pairs"


# -- parsing ----------------------------------------------------------------


def _error(message: str, dsn: str, hidden: Sequence[_Span]) -> DsnError:
    """A DsnError showing ``dsn`` with ``hidden`` spans and all passwords masked.

    The spans cover what :func:`redact` cannot recognise alone, such as the
    tail of an unquoted password that contained a space.
    """
    shown = dsn
    for start, end in sorted(hidden, reverse=True):
        shown = f"{shown[:start]}***{shown[end:]}"
    return DsnError(f"{message} (in DSN: {redact(shown)})")


def _decode(text: str, what: str, fail: _Fail) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        # Never echo the text: it may be the password.
        raise fail(f"the {what} is not valid percent-encoded UTF-8") from None


def _split_url(dsn: str, scheme: re.Match[str]) -> list[HostDsn]:
    hidden: list[_Span] = []

    def fail(message: str) -> DsnError:
        return _error(message, dsn, hidden)

    # Find the userinfo before anything can fail, so every error hides the password.
    start = scheme.end()
    slash = dsn.find("/", start)
    authority_end = len(dsn) if slash == -1 else slash
    at = dsn.rfind("@", start, authority_end)
    raw_user = raw_password = None
    if at != -1:
        raw_user, colon, raw_password = dsn[start:at].partition(":")
        if colon:
            hidden.append((at - len(raw_password), at))
        else:
            raw_password = None
    elif _cut_password(dsn, start, slash):
        # Likely "user:pa/ss@host": a raw '/' cut the password, and naming any
        # part of the authority, path or query could leak it.
        hidden.append((start, dsn.rfind("@")))
        raise fail(
            "'@' after the first '/': write '/', '?' and '@' in a password as "
            "%2F, %3F and %40, and '@' in a database name as %40"
        )
    if scheme.group(1).lower() not in _SCHEMES:
        raise fail(f"unknown scheme {scheme.group(1)!r} (expected postgresql:// or postgres://)")

    host_start = start if at == -1 else at + 1
    ends = (dsn.find("/", host_start), dsn.find("?", host_start))
    netloc_end = min((i for i in ends if i != -1), default=len(dsn))
    path, _, query = dsn[netloc_end:].partition("?")
    params: dict[str, str] = {}
    offset = netloc_end + len(path) + 1
    key = ""
    number = 0
    for item in query.split("&"):
        item_start, offset = offset, offset + len(item) + 1
        if not item:
            continue
        number += 1
        previous_key = key
        key, equals, value = item.partition("=")
        if not equals:
            if "password" in previous_key.lower():
                # Most likely the rest of a password with a raw '&': don't show it.
                hidden.append((item_start, item_start + len(item)))
                raise fail("text after the password has no '='; write '&' in it as %26")
            if key in _LIBPQ_KEYWORDS:
                raise fail(f"query parameter {key!r} has no '='")
            # Any other word may be a password typed without its key.
            hidden.append((item_start, item_start + len(item)))
            raise fail(f"query parameter #{number} has no '='")
        key = _decode(key, "query parameter name", fail)
        params[key] = _decode(value, f"value of query parameter {key!r}", fail)

    url_hosts = _url_hosts(dsn[host_start:netloc_end], fail)
    if "host" in params or "port" in params:
        # libpq: query values override the authority's; lists follow key=value rules.
        host_text = params.pop("host", ",".join(host for host, _ in url_hosts))
        port_text = params.pop("port", ",".join(port for _, port in url_hosts))
        hosts = _conninfo_hosts(host_text, port_text, fail)
    else:
        hosts = _url_ports(url_hosts, fail)

    user = None if raw_user is None else _decode(raw_user, "user name", fail)
    password = None if raw_password is None else _decode(raw_password, "password", fail)
    dbname = _decode(path[1:], "database name", fail) if path else None
    return _build(
        hosts,
        params.pop("user", user),
        params.pop("password", password),
        params.pop("dbname", dbname),
        params,
        fail,
    )


def _cut_password(dsn: str, start: int, slash: int) -> bool:
    """Whether a URL with no '@' before its first '/' reads as ``user:pa/ss@host``.

    So it does if an '@' follows in the path, or anywhere after a "port" that
    is none (``u:pa?s/s@h``); not for ``h:5432/db?x=a@b``.
    """
    head = dsn[start:slash]
    if slash == -1 or ":" not in head or "@" not in dsn[slash:]:
        return False
    authority, question, _ = head.partition("?")
    if not question and "@" in dsn[slash:].partition("?")[0]:
        return True
    # Only a list of host[:port] (or [IPv6][:port]) makes it "host:5432?x=a@b".
    return not all(_HOST_PORT_RE.fullmatch(item) for item in authority.split(","))


def _url_hosts(netloc: str, fail: _Fail) -> list[tuple[str, str]]:
    """``(host, port text)`` per comma-separated URL host; ``[]`` if there is none."""
    if not netloc:
        return []
    entries: list[tuple[str, str]] = []
    items = netloc.split(",")
    for number, item in enumerate(items, 1):
        if item.startswith("["):
            close = item.find("]")
            if close == -1:
                raise fail(f"host #{number} {item!r} has no closing ']'")
            host, after = item[1:close], item[close + 1 :]
            if after and not after.startswith(":"):
                raise fail(f"unexpected {after!r} after ']' in host #{number} {item!r}")
            port = after[1:]
        else:
            host, _, port = item.partition(":")
        host = _decode(host, f"host #{number}", fail)
        # A lone empty host (":5433", "@/db") means the default, as in libpq.
        if not host and len(items) > 1:
            raise fail(f"host #{number} of {netloc!r} is empty")
        entries.append((host, port))
    return entries


def _url_ports(entries: list[tuple[str, str]], fail: _Fail) -> list[tuple[str, int]]:
    """Resolve URL ports: 5432 where missing, unless only the last host has one."""
    if not entries:
        return [(DEFAULT_HOST, DEFAULT_PORT)]
    hosts = [host or DEFAULT_HOST for host, _ in entries]
    ports = [_port(port, host, fail) for host, (_, port) in zip(hosts, entries, strict=True)]
    if len(ports) > 1 and ports[-1] is not None and all(port is None for port in ports[:-1]):
        # "db1,db2,db3:6432": the cluster's one port, written once at the end.
        ports = [ports[-1]] * len(ports)
    return [
        (host, DEFAULT_PORT if port is None else port)
        for host, port in zip(hosts, ports, strict=True)
    ]


def _port(text: str, host: str, fail: _Fail) -> int | None:
    """The port in ``text``, ``None`` if empty; fails naming ``host`` otherwise."""
    if not text:
        return None
    if not (len(text) <= 5 and text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise fail(f"bad port {text!r} for host {host!r} (expected 1-65535)")
    return int(text)


#: "user:password@" at the start of a key=value host (see _conninfo_hosts).
_USERINFO_IN_HOST = re.compile(r"^[^@]*:[^@]*@")


def _conninfo_hosts(host_text: str, port_text: str, fail: _Fail) -> list[tuple[str, int]]:
    """libpq's lists: one port for all hosts, or one per host ('' meaning 5432)."""
    hosts = host_text.split(",") if host_text else [DEFAULT_HOST]
    for number, host in enumerate(hosts, 1):
        if not host:
            raise fail(f"host #{number} of {host_text!r} is empty")
        if not host.startswith("/") and _USERINFO_IN_HOST.search(host):
            # user:password@host pasted into host=: no host name looks like it,
            # and quoting it would log the password. Say what, not the text.
            raise fail(
                f"host #{number} contains '@' (user:password@host in host=?); give "
                "user= and password= as their own keys"
            )
    ports = port_text.split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    elif len(ports) != len(hosts):
        raise fail(
            f"{len(ports)} ports ({port_text!r}) for {len(hosts)} hosts ({host_text!r}); "
            "give one port for all hosts or one per host"
        )
    resolved = []
    for host, port_item in zip(hosts, ports, strict=True):
        port = _port(port_item, host, fail)
        resolved.append((host, DEFAULT_PORT if port is None else port))
    return resolved


def _split_conninfo(dsn: str) -> list[HostDsn]:
    hidden: list[_Span] = []

    def fail(message: str) -> DsnError:
        return _error(message, dsn, hidden)

    params = dict(_conninfo_items(dsn, hidden, fail))  # a repeated key: the last wins, as in libpq
    hosts = _conninfo_hosts(params.pop("host", ""), params.pop("port", ""), fail)
    user, password = params.pop("user", None), params.pop("password", None)
    return _build(hosts, user, password, params.pop("dbname", None), params, fail)


def _conninfo_items(dsn: str, hidden: list[_Span], fail: _Fail) -> list[tuple[str, str]]:
    """Tokenize ``key = value`` pairs as libpq's conninfo_parse does, with two refusals.

    An item that is not ``name=value`` is hidden from the error with all after
    it (it may be a password typed without its key, or a URL), unless it is a
    bare libpq keyword. ``key= other=x`` is refused: libpq would read
    ``other=x`` as the value, and an unset environment variable in
    ``host=$PGHOST password=x`` would make the password a logged host name.
    """
    items: list[tuple[str, str]] = []
    i, end = 0, len(dsn)
    after_secret = False
    for number in itertools.count(1):
        i = _end_of(_KV_SPACES_RE, dsn, i)
        if i >= end:
            break
        key_start = i
        i = _end_of(_KV_KEY_RE, dsn, i)
        key = dsn[key_start:i]
        i = _end_of(_KV_SPACES_RE, dsn, i)
        if i >= end or dsn[i] != "=":
            if after_secret:
                # Most likely the rest of an unquoted password with spaces: hide it
                # with the password, up to the next item that has a '='.
                hidden[-1] = (hidden[-1][0], _end_of(_KV_TAIL_RE, dsn, key_start + len(key)))
                raise fail("text after the password has no '='; quote values with spaces")
            if key in _LIBPQ_KEYWORDS:
                raise fail(f"{key!r} has no '=' (expected key=value)")
            if number == 1:
                raise DsnError(_not_a_dsn(dsn))
            hidden.append((key_start, end))
            raise fail(f"item #{number} has no '=' (expected key=value)")
        if not key:
            raise fail("'=' without a key before it")
        if not _OPTION_KEY_RE.fullmatch(key):
            hidden.append((key_start, end))
            raise fail(f"the key of item #{number} is not a name (expected key=value)")
        equals = i
        value_start = _end_of(_KV_SPACES_RE, dsn, equals + 1)
        secret = "password" in key.lower()
        quoted = value_start < end and dsn[value_start] == "'"
        if quoted:
            match = _KV_QUOTED_RE.match(dsn, value_start)
            if match is None:
                if secret:
                    hidden.append((value_start, end))
                raise fail(f"the value of {key!r} has an unterminated quote")
            raw, i = match.group(1), match.end()
        else:
            i = _end_of(_KV_UNQUOTED_RE, dsn, value_start)
            raw = dsn[value_start:i]
            if value_start > equals + 1 and _looks_like_an_item(raw):
                if secret:
                    hidden.append((value_start, i))
                raise fail(
                    f"empty value for {key!r} (the next item would be read as its value); "
                    f"quote the value, or write {key}='' for an empty one"
                )
        if secret:
            hidden.append((value_start, i))
        # A token glued to a password, or after an unquoted one, may be part of it.
        after_secret = secret and (not quoted or (i < end and dsn[i] not in _KV_SPACE))
        items.append((key, _KV_ESCAPE_RE.sub(r"\1", raw)))
    return items


def _looks_like_an_item(value: str) -> bool:
    """Whether an unquoted ``value`` after ``key= `` is rather the next item.

    Only libpq keywords and password-like keys count: ``password = a=b`` is a
    password, ``host= password=x`` an empty host.
    """
    item = _ITEM_START_RE.match(value)
    if item is None:
        return False
    name = item.group(0)[:-1]
    return name in _LIBPQ_KEYWORDS or "password" in name.lower()


def _build(
    hosts: list[tuple[str, int]],
    user: str | None,
    password: str | None,
    dbname: str | None,
    options: dict[str, str],
    fail: _Fail,
) -> list[HostDsn]:
    try:
        return [
            HostDsn(host, port, user, password, dbname, tuple(options.items()))
            for host, port in hosts
        ]
    except DsnError as error:
        raise fail(str(error)) from None


def _conninfo_value(value: str) -> str:
    """Quote a key=value value the way libpq reads it back."""
    if value and not any(char.isspace() or char in "'\\" for char in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
