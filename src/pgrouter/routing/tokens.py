"""Write tokens: where a write landed in a cluster's WAL, as data and as portable text.

A :class:`WriteToken` names a cluster (its system identifier), a timeline and a
WAL byte position taken on the primary after a commit. A read that carries it
must go to a host that has replayed at least that far. The token travels
outside the process (a cookie, an HTTP header, a Celery task argument), so its
text form is short, plain ASCII, and read back strictly: text that is not
exactly what :meth:`WriteToken.__str__` writes is refused, never guessed at.

Text form (version 1)::

    w1.<system identifier>.<timeline>.<lsn>.<check>

Fields are lowercase hex without leading zeros (``0`` for zero), and
``<check>`` is the CRC-32 of everything before it, as 8 hex digits. The check
is what makes a truncated or mangled token fail to parse rather than parse as
a smaller position (a read that misses its write). It detects damage, not
forgery: anyone may write a token, and the router must stay safe with any
token it is given (a forged one can only send its own read to the primary,
or make it wait up to its bound).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..driver import parse_lsn

#: Run on a primary connection after a commit; one row: system identifier,
#: timeline, insert position. The timeline is computed as the health probe does
#: (:data:`pgrouter.driver.PROBE_QUERY`), so the two compare equal. The insert
#: position is never behind the commit record just written (the write and
#: flush positions may be). On a replica the query fails (WAL control
#: functions cannot be executed during recovery): a token only comes from a
#: primary.
WRITE_TOKEN_QUERY = (
    "SELECT (SELECT system_identifier FROM pg_control_system()), "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, "
    "pg_current_wal_insert_lsn()::text"
)

_VERSION = "w1"
_UINT64 = (1 << 64) - 1
_UINT32 = (1 << 32) - 1

#: Lowercase hex without leading zeros, at most ``n`` digits: the one spelling
#: each value has. A character class, not ``\d`` or ``int()``, so no Unicode
#: digit, sign, underscore or whitespace gets through.
_SYSID = re.compile(r"0|[1-9a-f][0-9a-f]{0,15}")
_TIMELINE = re.compile(r"0|[1-9a-f][0-9a-f]{0,7}")
_LSN = _SYSID
_CHECK = re.compile(r"[0-9a-f]{8}")

#: The longest valid token: version, 16 + 8 + 16 digits, check, 4 dots.
MAX_TOKEN_LENGTH = len(_VERSION) + 16 + 8 + 16 + 8 + 4

#: Error messages quote at most this much of the input (it may be anything).
_QUOTE_LIMIT = MAX_TOKEN_LENGTH + 4


@dataclass(frozen=True, slots=True)
class WriteToken:
    """A cluster's WAL position after a write: read it back only where it has been replayed.

    Tokens are not ordered (``<``): two tokens of different clusters have no
    order. :func:`newest` combines the tokens of one scope.
    """

    system_identifier: int  # the cluster's (pg_control_system()), unsigned 64 bits
    timeline: int  # the primary's timeline when the token was taken
    lsn: int  # the WAL insert position, in bytes

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("system_identifier", self.system_identifier, _UINT64),
            ("timeline", self.timeline, _UINT32),
            ("lsn", self.lsn, _UINT64),
        ):
            # bool is an int; True as a WAL position is a bug, not a position.
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"WriteToken {name} must be an int, not {type(value).__name__}")
            if not 0 <= value <= limit:
                raise ValueError(f"WriteToken {name} out of range 0..{limit:#x}: {value}")

    def __str__(self) -> str:
        body = f"{_VERSION}.{self.system_identifier:x}.{self.timeline:x}.{self.lsn:x}"
        return f"{body}.{_check(body)}"

    @classmethod
    def parse(cls, text: str) -> WriteToken:
        """Read back what :meth:`__str__` wrote; ``ValueError`` for anything else.

        Strict on purpose: one spelling per token (no case folding, no
        leading zeros, no surrounding whitespace), so a token parses only if
        it is exactly the text some token writes.
        """
        if not isinstance(text, str):
            raise TypeError(f"WriteToken.parse() takes str, not {type(text).__name__}")
        if len(text) > MAX_TOKEN_LENGTH:
            raise _malformed(text, f"longer than {MAX_TOKEN_LENGTH} characters")
        version, _, rest = text.partition(".")
        if version != _VERSION:
            if re.fullmatch(r"w[0-9]{1,4}", version):
                raise _malformed(text, f"unsupported version {version!r} (this reads {_VERSION})")
            raise _malformed(text, f"does not start with {_VERSION + '.'!r}")
        fields = rest.split(".")
        if len(fields) != 4:
            raise _malformed(text, f"expected 4 fields after the version, found {len(fields)}")
        sysid, timeline, lsn, check = fields
        for name, field, pattern, digits in (
            ("system identifier", sysid, _SYSID, 16),
            ("timeline", timeline, _TIMELINE, 8),
            ("lsn", lsn, _LSN, 16),
        ):
            if not pattern.fullmatch(field):
                raise _malformed(
                    text, f"{name} is not 1 to {digits} lowercase hex digits, no leading zero"
                )
        if not _CHECK.fullmatch(check):
            raise _malformed(text, "check is not 8 lowercase hex digits")
        if check != _check(text[: -len(check) - 1]):
            raise _malformed(text, "check does not match (truncated or altered)")
        return cls(int(sysid, 16), int(timeline, 16), int(lsn, 16))

    def is_reached_by(self, lsn: int | None) -> bool:
        """True when a host that has replayed up to ``lsn`` has this token's write.

        ``None`` (a position not known yet) never reaches a token: a read
        waits or moves on rather than guess. Compares positions only: whether
        the host is of this cluster and timeline is the router's to check.
        """
        return lsn is not None and lsn >= self.lsn

    def is_from(self, system_identifier: int | None) -> bool:
        """True when a host reporting ``system_identifier`` is of this token's cluster.

        PostgreSQL shows the identifier as a signed ``bigint`` (negative once
        its top bit is set), which is how the health probe records it; the
        token holds it unsigned, so both are compared as 64-bit patterns.
        """
        return system_identifier is not None and (system_identifier & _UINT64) == (
            self.system_identifier
        )


def newest(earlier: WriteToken | None, later: WriteToken) -> WriteToken:
    """The token a scope keeps after ``earlier`` and then ``later``: the one a read must honour.

    Of one cluster: the higher ``(timeline, lsn)``, since a newer timeline
    carries on from the old one and a read that reaches the newer write has
    the older one too. Of two clusters (system identifiers differ), positions
    do not compare; ``later`` wins because arguments are in the order the
    writes happened: the scope now writes to the later cluster (a rebuilt or
    replaced one), and a token of a cluster no longer served would only send
    reads to the primary.
    """
    if earlier is None or earlier.system_identifier != later.system_identifier:
        return later
    if (earlier.timeline, earlier.lsn) > (later.timeline, later.lsn):
        return earlier
    return later


def token_from_row(row: Sequence[Any]) -> WriteToken:
    """Build a token from the row of :data:`WRITE_TOKEN_QUERY`, as any driver returns it.

    Values may be ints or their text (psql's output): both convert. The
    signed ``bigint``/``int`` PostgreSQL returns are taken as the unsigned
    values they hold (see :meth:`WriteToken.is_from`).
    """
    system_identifier, timeline, lsn_text = row[0], row[1], row[2]
    if system_identifier is None or timeline is None:
        raise ValueError("write token query returned no system identifier or timeline")
    lsn = parse_lsn(lsn_text)
    if lsn is None:
        raise ValueError("write token query returned no WAL position")
    lsn = _before_page_header(lsn)
    return WriteToken(
        system_identifier=int(system_identifier) & _UINT64,
        timeline=int(timeline) & _UINT32,
        lsn=lsn,
    )


#: PostgreSQL's WAL page size and the sizes of a page's header (short, and long
#: at the start of a segment), as built by default.
_WAL_PAGE = 8192
_PAGE_HEADERS = (24, 40)


def _before_page_header(lsn: int) -> int:
    """The insert position just past a page header is the end of the page before it.

    When the last record ends exactly at a page boundary, the insert position
    points past the next page's header, where no record has been written yet: a
    replica's replay position (the end of the last record) would never reach it
    until more WAL comes. No record ends inside a header, so both name the same
    point of the WAL.
    """
    offset = lsn % _WAL_PAGE
    return lsn - offset if offset in _PAGE_HEADERS else lsn


def _check(body: str) -> str:
    return f"{zlib.crc32(body.encode('ascii')):08x}"


def _malformed(text: str, reason: str) -> ValueError:
    # ascii(): the message lands in logs and HTTP error pages; keep it plain.
    quoted = ascii(text[:_QUOTE_LIMIT])
    if len(text) > _QUOTE_LIMIT or len(quoted) > _QUOTE_LIMIT + 2:
        quoted = quoted[: _QUOTE_LIMIT + 1] + "..."
    return ValueError(f"malformed write token {quoted}: {reason}")
