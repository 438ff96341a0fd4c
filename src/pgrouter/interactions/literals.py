"""pgrouter's own SQL literals, for dry runs of drivers that have no ``mogrify``.

asyncpg (and asyncpgsa, and SQLAlchemy's asyncpg dialect) send parameters
apart from the query text, so none of them can show "the SQL as the server
would see it". :func:`render_numbered` puts each ``$n`` of a query back as a
literal the server parses to the same value.

Quoting assumes nothing about the server's ``standard_conforming_strings``:
a text without a backslash is a plain ``'...'`` literal (quotes doubled),
which means the same under either setting; a text with a backslash becomes an
``E'...'`` literal with the backslash doubled, which also means the same under
either. NUL cannot be stored in a PostgreSQL text and is refused. Values
whose literal alone would not say their type (floats, dates, UUIDs...) carry a
cast, so ``SELECT <literal>`` gives back the Python value it came from.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

# Scanned over, never rendered into: quoted texts and identifiers, comments,
# dollar-quoted bodies; and the placeholders themselves. An identifier may
# contain "$" after its first character (``foo$1`` is no placeholder).
_TOKEN = re.compile(
    r"""
      (?P<estring>[eE]'(?:[^'\\]|\\.|'')*'?)
    | (?P<string>'(?:[^']|'')*'?)
    | (?P<ident>"(?:[^"]|"")*"?)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<dollar_quote>\$(?P<tag>[A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$)
    | (?P<placeholder>\$(?P<number>[0-9]+))
    | (?P<word>[A-Za-z_\x80-\uffff][A-Za-z_0-9$\x80-\uffff]*)
    """,
    re.VERBOSE | re.DOTALL,
)


def render_numbered(query: str, args: Sequence[Any] | None) -> str:
    """``query`` with each ``$n`` replaced by the literal of ``args[n - 1]``.

    Placeholders inside quoted texts, quoted identifiers, comments and
    dollar-quoted bodies are left alone, as the server would. A ``$n`` with
    no argument is a ``ValueError`` naming it; a value of a type with no
    literal here is a ``TypeError`` naming the placeholder and the type.
    """
    if args is None:
        args = ()
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Sequence):
        raise TypeError(
            "args for $n placeholders must be a sequence (list or tuple), "
            f"got {type(args).__name__}"
        )
    out: list[str] = []
    position = 0
    while position < len(query):
        match = _TOKEN.search(query, position)
        if match is None:
            break
        end = match.end()
        if match.group("block_comment") is not None:
            end = _end_of_block_comment(query, match.start())
        elif match.group("dollar_quote") is not None:
            closing = query.find(match.group("dollar_quote"), end)
            end = len(query) if closing < 0 else closing + len(match.group("dollar_quote"))
        elif match.group("placeholder") is not None:
            number = int(match.group("number"))
            if not 1 <= number <= len(args):
                raise ValueError(f"placeholder ${number} has no argument ({len(args)} given)")
            out.append(query[position : match.start()])
            out.append(literal(args[number - 1], where=f"${number}"))
            position = end
            continue
        out.append(query[position:end])
        position = end
    out.append(query[position:])
    return "".join(out)


def _end_of_block_comment(query: str, start: int) -> int:
    """Where the ``/* ... */`` comment opened at ``start`` ends (they nest in SQL)."""
    depth = 0
    position = start
    while position < len(query):
        if query.startswith("/*", position):
            depth += 1
            position += 2
        elif query.startswith("*/", position):
            depth -= 1
            position += 2
            if depth == 0:
                return position
        else:
            position += 1
    return len(query)


def quote_text(text: str, *, where: str = "value") -> str:
    """A text literal that means ``text`` whatever ``standard_conforming_strings`` is."""
    if "\x00" in text:
        raise ValueError(f"{where}: PostgreSQL text cannot contain NUL (\\x00)")
    doubled = text.replace("'", "''")
    if "\\" in text:
        return "E'" + doubled.replace("\\", "\\\\") + "'"
    return "'" + doubled + "'"


def literal(value: Any, *, where: str = "value") -> str:
    """The SQL literal of one Python value (see the module docstring for the types)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # Parenthesised: "x-$1" with -5 must not become the comment "x--5".
        return f"({value})" if value < 0 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "'NaN'::float8"
        if math.isinf(value):
            return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
        return f"'{value!r}'::float8"  # repr: the shortest text that reads back the same
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return "'NaN'::numeric"
        if value.is_infinite():
            return "'Infinity'::numeric" if value > 0 else "'-Infinity'::numeric"
        return f"'{value}'::numeric"
    if isinstance(value, str):
        return quote_text(value, where=where)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "E'\\\\x" + bytes(value).hex() + "'::bytea"
    if isinstance(value, datetime.datetime):
        kind = "timestamp" if value.tzinfo is None else "timestamptz"
        return f"'{value.isoformat()}'::{kind}"
    if isinstance(value, datetime.date):
        return f"'{value.isoformat()}'::date"
    if isinstance(value, datetime.time):
        kind = "time" if value.tzinfo is None else "timetz"
        return f"'{value.isoformat()}'::{kind}"
    if isinstance(value, datetime.timedelta):
        return (
            f"'{value.days} days {value.seconds} seconds "
            f"{value.microseconds} microseconds'::interval"
        )
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, (list, tuple)):
        if not value:
            return "'{}'"  # an empty array takes its type from where it is used
        items = ",".join(literal(item, where=where) for item in value)
        return f"ARRAY[{items}]"
    if isinstance(value, dict):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{where}: dict is not JSON: {error}") from None
        return quote_text(text, where=where) + "::json"
    raise TypeError(f"{where}: no SQL literal for a {type(value).__name__}")


__all__ = ["literal", "quote_text", "render_numbered"]
