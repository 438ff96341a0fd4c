"""One step of an interaction on a connection already held: a SQL string or a function.

Shared by ``run()`` and held transactions of both faces, so the two forms of
an interaction mean the same everywhere: a SQL string (the driver's own
placeholders, ``args`` its parameters) gives its rows as a list of dicts, or
``True`` with ``get_result=False``; a function is called as
``fn(connection, *args, **kwargs)`` (awaited when it returns an awaitable)
and gives what it returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import arguments


def check_interaction(interaction: Any, args: Any, kwargs: Mapping[str, Any]) -> None:
    """A ``TypeError`` naming what is wrong with an interaction and its arguments."""
    if isinstance(interaction, str):
        if not interaction.strip():
            raise ValueError("run(): the SQL string is empty")
        if kwargs:
            raise TypeError(
                "run(): keyword arguments "
                + ", ".join(sorted(kwargs))
                + " go to a function interaction; a SQL string takes its parameters in args"
            )
        return
    if not callable(interaction):
        raise TypeError(
            "run(): interaction must be a SQL string or a callable fn(conn, *args, **kwargs), "
            f"got {type(interaction).__name__}"
        )
    if args is not None and (
        isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Sequence)
    ):
        raise TypeError(
            "run(): args of a function interaction must be a list or tuple, "
            f"got {type(args).__name__}"
        )


def check_flags(read_only: Any, get_result: Any, partial_txn: Any, dry_run: Any) -> None:
    """run()'s flags are bools; a ``TypeError`` naming the first that is not.

    One comparison each on the path every run() takes; the named check on a miss.
    """
    if (
        read_only.__class__ is bool
        and get_result.__class__ is bool
        and partial_txn.__class__ is bool
        and dry_run.__class__ is bool
    ):
        return
    for name, value in (
        ("read_only", read_only),
        ("get_result", get_result),
        ("partial_txn", partial_txn),
        ("dry_run", dry_run),
    ):
        arguments.flag(name, value)


def check_run(
    manager: object,
    interaction: Any,
    args: Any,
    kwargs: Mapping[str, Any],
    flags: tuple[Any, Any, Any, Any],
    txn: Any,
    transaction_type: type[Any],
) -> None:
    """Every check of a ``run()`` call, by name, before anything is borrowed (both faces).

    ``flags`` are ``(read_only, get_result, partial_txn, dry_run)``; ``txn``
    must be a transaction of ``transaction_type`` held by this ``manager``.
    """
    check_interaction(interaction, args, kwargs)
    read_only, get_result, partial_txn, dry_run = flags
    check_flags(read_only, get_result, partial_txn, dry_run)
    if dry_run and not isinstance(interaction, str):
        raise TypeError("run(dry_run=True) renders a SQL string; a function has no SQL to show")
    if txn is not None and (not isinstance(txn, transaction_type) or txn._manager is not manager):
        raise TypeError(f"txn must be a transaction of this manager, got {txn!r}")


def call_args(args: Any) -> Sequence[Any]:
    return () if args is None else args


def result_of(rows: list[dict[str, Any]], get_result: bool) -> list[dict[str, Any]] | bool:
    return rows if get_result else True


async def run_step_async(
    driver: Any,
    connection: Any,
    interaction: str | Callable[..., Any],
    args: Any,
    get_result: bool,
    kwargs: Mapping[str, Any],
) -> Any:
    """The step on an async driver's connection, inside whatever transaction it is in."""
    if isinstance(interaction, str):
        rows = await driver.run_statement(connection, interaction, args, get_result)
        return result_of(rows, get_result)
    result = interaction(connection, *call_args(args), **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def run_step_sync(
    driver: Any,
    connection: Any,
    interaction: str | Callable[..., Any],
    args: Any,
    get_result: bool,
    kwargs: Mapping[str, Any],
) -> Any:
    """The step on a blocking driver's connection."""
    if isinstance(interaction, str):
        return result_of(
            driver.run_statement(connection, interaction, args, get_result), get_result
        )
    return interaction(connection, *call_args(args), **kwargs)


__all__ = [
    "call_args",
    "check_flags",
    "check_interaction",
    "result_of",
    "run_step_async",
    "run_step_sync",
]
