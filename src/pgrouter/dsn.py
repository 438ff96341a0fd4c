"""Split a multi-host PostgreSQL DSN into one DSN per host, and hide passwords.

pgrouter opens one pool per host, so the multi-host DSN a user gives (a
``postgresql://`` URL or libpq ``key=value`` pairs) is split here into
:class:`HostDsn` values that the rest of the package works with. The rules are
libpq's, plus one that hasql users rely on: in a URL where only the last host
has a port, that port applies to every host (``db1,db2,db3:6432``).

Nothing here puts a password into a message, ``str`` or ``repr``:
:func:`redact` hides passwords in any text, and parse errors show the DSN only
after it went through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from .errors import DsnError

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 5432

_SCHEMES = ("postgresql", "postgres")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# libpq's own keywords; every other key is passed through as an option.
_RESERVED_KEYS = frozenset({"host", "port", "user", "password", "dbname"})
# Option names must survive both output forms unquoted.
_OPTION_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# libpq splits key=value items on ASCII whitespace only (C isspace).
_KV_SPACE = frozenset(" \t\n\r\v\f")

# One pattern, so each password is matched once, by the first form that fits.
# The URL alternative mirrors the parser: the secret runs to the LAST '@'
# before a '/' (raw '@' in passwords is tolerated); text ends at whitespace.
# "[a-z_]*password" also catches sslpassword and PGPASSWORD.
_SECRET_RE = re.compile(
    r"(?P<url>[A-Za-z][A-Za-z0-9+.\-]*://[^:/\s]*:)[^/\s]*@"
    r"|(?P<query>[?&][A-Za-z_]*password=)[^&\s#]*"
    r"|(?P<kv>[A-Za-z_]*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|'.*|(?:\\.|[^\s\\])+)",
    re.IGNORECASE | re.DOTALL,
)


def redact(text: str) -> str:
    """Return ``text`` with every password of a DSN in it replaced by ``***``.

    Hides URL userinfo passwords (``scheme://user:SECRET@``), query
    parameters (``?password=SECRET``) and key=value pairs (``password=SECRET``,
    ``password='quoted secret'``; an unterminated quote hides the rest).
    """

    def hide(match: re.Match[str]) -> str:
        if match.group("url"):
            return f"{match.group('url')}***@"
        return f"{match.group('query') or match.group('kv')}***"

    return _SECRET_RE.sub(hide, text)


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
    for each. Raises :class:`DsnError` naming the bad part (never the password).
    """
    text = dsn.strip()
    if not text:
        raise DsnError("empty DSN: expected a postgresql:// URL or key=value pairs")
    scheme = _SCHEME_RE.match(text)
    if scheme:
        return _split_url(text, scheme)
    return _split_conninfo(text)


# -- parsing ----------------------------------------------------------------

_Fail = Callable[[str], DsnError]
_Span = tuple[int, int]


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
    elif slash != -1 and "?" not in dsn[start:slash] and ":" in dsn[start:slash]:
        path = dsn[slash:].partition("?")[0]
        if "@" in path:
            # Likely "user:pa/ss@host": a raw '/' cut the password, and naming any
            # part of the authority or path could leak it.
            hidden.append((start, slash + path.rfind("@")))
            raise fail(
                "'@' after the first '/': write '/' in a password as %2F "
                "and '@' in a database name as %40"
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
    for item in query.split("&"):
        item_start, offset = offset, offset + len(item) + 1
        if not item:
            continue
        previous_key = key
        key, equals, value = item.partition("=")
        if not equals:
            if "password" in previous_key.lower():
                # Most likely the rest of a password with a raw '&': don't show it.
                hidden.append((item_start, item_start + len(item)))
                raise fail("text after the password has no '='; write '&' in it as %26")
            raise fail(f"query parameter {key!r} has no '='")
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


def _conninfo_hosts(host_text: str, port_text: str, fail: _Fail) -> list[tuple[str, int]]:
    """libpq's lists: one port for all hosts, or one per host ('' meaning 5432)."""
    hosts = host_text.split(",") if host_text else [DEFAULT_HOST]
    for number, host in enumerate(hosts, 1):
        if not host:
            raise fail(f"host #{number} of {host_text!r} is empty")
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
    """Tokenize ``key = value`` pairs exactly as libpq's conninfo_parse does."""
    items: list[tuple[str, str]] = []
    i, end = 0, len(dsn)
    after_secret = False
    while True:
        while i < end and dsn[i] in _KV_SPACE:
            i += 1
        if i >= end:
            return items
        key_start = i
        while i < end and dsn[i] not in _KV_SPACE and dsn[i] != "=":
            i += 1
        key = dsn[key_start:i]
        while i < end and dsn[i] in _KV_SPACE:
            i += 1
        if i >= end or dsn[i] != "=":
            if after_secret:
                # Most likely the rest of an unquoted password with a space: don't show it.
                hidden.append((key_start, key_start + len(key)))
                raise fail("text after the password has no '='; quote values with spaces")
            raise fail(f"{key!r} has no '=' (expected key=value)")
        if not key:
            raise fail("'=' without a key before it")
        i += 1
        while i < end and dsn[i] in _KV_SPACE:
            i += 1
        value_start = i
        secret = "password" in key.lower()
        chars: list[str] = []
        quoted = i < end and dsn[i] == "'"
        if quoted:
            i += 1
            while True:
                if i >= end or (dsn[i] == "\\" and i + 1 >= end):
                    if secret:
                        hidden.append((value_start, end))
                    raise fail(f"the value of {key!r} has an unterminated quote")
                if dsn[i] == "'":
                    i += 1
                    break
                if dsn[i] == "\\":
                    i += 1
                chars.append(dsn[i])
                i += 1
        else:
            while i < end and dsn[i] not in _KV_SPACE:
                if dsn[i] == "\\":
                    i += 1  # escapes the next character; a trailing one is dropped
                    if i >= end:
                        break
                chars.append(dsn[i])
                i += 1
        if secret:
            hidden.append((value_start, i))
        # A token glued to a password, or after an unquoted one, may be part of it.
        after_secret = secret and (not quoted or (i < end and dsn[i] not in _KV_SPACE))
        items.append((key, "".join(chars)))


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
