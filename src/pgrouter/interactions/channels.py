"""Channel names for LISTEN/NOTIFY: checked before any SQL is written.

Our channel names are exact: ``listen("Foo")`` runs ``LISTEN "Foo"`` (quoted
as an identifier, so the server keeps the case) and ``notify("Foo", ...)``
runs ``pg_notify('Foo', ...)``, which never folds case: the two agree. (An
unquoted ``LISTEN Foo`` typed by hand listens on ``foo``.)
"""

from __future__ import annotations

#: PostgreSQL truncates identifiers past NAMEDATALEN - 1 bytes; a longer
#: channel name would silently listen on its truncation.
MAX_CHANNEL_BYTES = 63


def check_channel(channel: object) -> str:
    """``channel`` if it is a valid channel name; ``TypeError``/``ValueError`` naming the fault."""
    if not isinstance(channel, str):
        raise TypeError(f"a channel name must be a str, not {type(channel).__name__}")
    if not channel:
        raise ValueError("a channel name must not be empty")
    if "\x00" in channel:
        raise ValueError(f"channel name {channel!r} contains a NUL character")
    size = len(channel.encode("utf-8"))
    if size > MAX_CHANNEL_BYTES:
        raise ValueError(
            f"channel name {channel[:20]!r}... is {size} bytes in UTF-8;"
            f" PostgreSQL allows at most {MAX_CHANNEL_BYTES}"
        )
    return channel


def check_channels(channels: tuple[object, ...]) -> tuple[str, ...]:
    """Every name checked, duplicates dropped (order kept); at least one."""
    if not channels:
        raise ValueError("listen() needs at least one channel name")
    return tuple(dict.fromkeys(check_channel(channel) for channel in channels))


def check_payload(payload: object) -> str:
    """A NOTIFY payload: a str without NUL (the server refuses 8000 bytes and more itself)."""
    if not isinstance(payload, str):
        raise TypeError(f"a notification payload must be a str, not {type(payload).__name__}")
    if "\x00" in payload:
        raise ValueError("a notification payload must not contain a NUL character")
    return payload


__all__ = ["MAX_CHANNEL_BYTES", "check_channel", "check_channels", "check_payload"]
