"""What the drivers' ``run()`` hooks share: argument shapes, rows as dicts, psycopg2's mogrify."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def positional_args(args: Any, driver: str) -> tuple[Any, ...]:
    """``args`` for ``$1, $2...`` placeholders: a sequence, or nothing."""
    if args is None:
        return ()
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Sequence):
        raise TypeError(
            f"the {driver} driver takes $1, $2... placeholders: args must be a list or "
            f"tuple, got {type(args).__name__}"
        )
    return tuple(args)


def rows_as_dicts(
    description: Sequence[Any], rows: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    """DB-API rows as dicts, keyed by the cursor's column names."""
    names = [column[0] for column in description]
    return [dict(zip(names, row)) for row in rows]


def psycopg2_mogrify(connection: Any, query: str, args: Any) -> str:
    """psycopg2's own rendering of ``query`` (``cursor.mogrify``), as text; sends nothing."""
    import psycopg2.extensions

    with connection.cursor() as cursor:
        rendered = cursor.mogrify(query, args)
    codec = psycopg2.extensions.encodings.get(connection.encoding, "utf-8")
    return str(rendered.decode(codec))


__all__ = ["positional_args", "psycopg2_mogrify", "rows_as_dicts"]
