"""Which failed ``run()`` may run once more on another host: reads, on host errors only.

A read (``read_only=True``, a SQL string, outside a transaction) changed
nothing, so running it again elsewhere is safe. A write is never run again:
when its connection broke, the write may or may not have committed (the
server may have applied the COMMIT and died before its acknowledgement came
back), and a retry could apply it twice. Nothing inside a transaction is
retried either: the transaction died with its connection.
"""

from __future__ import annotations

from collections.abc import Callable

#: The server ended the session: admin shutdown, crash shutdown, cannot connect now.
SESSION_ENDED_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE an error carries, whichever library raised it (or wrapped it)."""
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        if candidate is None:
            continue
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(candidate, attribute, None)
            if isinstance(code, str):
                return code
    return None


def read_may_retry(error: BaseException, is_host_error: Callable[[BaseException], bool]) -> bool:
    """True when a read that failed with ``error`` may run once more on another host.

    ``is_host_error`` is the driver's: a connection error, a server shutting
    down. A read-only refusal (25006) cannot happen to a read; a query error
    (syntax, a constraint, a cancellation) would fail the same way anywhere.
    """
    return is_host_error(error) or sqlstate_of(error) in SESSION_ENDED_SQLSTATES


__all__ = ["SESSION_ENDED_SQLSTATES", "read_may_retry", "sqlstate_of"]
