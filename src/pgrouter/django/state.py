"""One unit of work's writes and carried tokens (a request, a task), and what it hands on.

Pins are the consistency layer's (:mod:`pgrouter.routing.pinning`); what a
Django unit of work adds lives here, in one :class:`~contextvars.ContextVar`
holding a frozen value replaced whole (as pins do, so a thread or task never
sees another's, and asgiref's ``sync_to_async``, which copies the context
into its thread and back, carries a write in an async view's ORM call back to
the view):

- ``written``: set name -> the alias its writes went to, in this unit of work;
- ``tokens``: set name -> the write token carried in (cookie, task headers):
  reads of that set go to a replica that has replayed it.

What a unit of work hands on (:func:`outgoing`), per set: the pin's
wall-clock expiry and the write token's text (``None`` when no token could be
taken: the next unit of work then pins the set until the expiry). A set
written here gets a fresh token, taken on its primary alias's connection
(:data:`~pgrouter.routing.tokens.WRITE_TOKEN_QUERY`), outside any atomic block
(inside one the write is not committed: no token, a pin). :func:`carried_in`
reads that form back strictly; anything else is refused with ``ValueError``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..routing.pinning import pin_until, pinned_names, pinning_context
from ..routing.tokens import MAX_TOKEN_LENGTH, WRITE_TOKEN_QUERY, WriteToken, token_from_row

logger = logging.getLogger("pgrouter")

#: Version of the carried form: {"v": 1, "s": {set: [expires_at, token text or None]}}.
CARRIED_VERSION = 1
#: At most this many sets in one carried form (anything more is not ours).
MAX_CARRIED_SETS = 64

Carried = dict[str, tuple[float, str | None]]


@dataclass(frozen=True, slots=True)
class WorkState:
    written: Mapping[str, str]
    tokens: Mapping[str, tuple[float, WriteToken]]  # set -> (wall-clock expiry, token)


_EMPTY = WorkState(MappingProxyType({}), MappingProxyType({}))
_state: ContextVar[WorkState] = ContextVar("pgrouter_django_work", default=_EMPTY)


def note_write(name: str, alias: str) -> None:
    """A write of set ``name`` was routed to ``alias`` (called on every routed write)."""
    state = _state.get()
    if state.written.get(name) == alias:
        return
    written = dict(state.written)
    written[name] = alias
    _state.set(WorkState(MappingProxyType(written), state.tokens))


def token_of(name: str) -> WriteToken | None:
    """The token carried in for set ``name`` (``None``: none, or the set was written since)."""
    state = _state.get()
    if state is _EMPTY:
        return None
    entry = state.tokens.get(name)
    if entry is None or entry[0] <= time.time():
        return None
    return entry[1]


def written_sets() -> Mapping[str, str]:
    return _state.get().written


@contextmanager
def unit_of_work(carried: Carried | None) -> Iterator[None]:
    """A fresh unit of work (pins, writes, tokens), started from what was carried in."""
    with pinning_context():
        reset = _state.set(_EMPTY)
        try:
            if carried:
                _apply(carried)
            yield
        finally:
            _state.reset(reset)


def _apply(carried: Carried) -> None:
    now = time.time()
    tokens: dict[str, tuple[float, WriteToken]] = {}
    for name, (expires_at, text) in carried.items():
        if expires_at <= now:
            continue
        if text is None:
            pin_until(name, expires_at)
            continue
        tokens[name] = (expires_at, WriteToken.parse(text))  # checked by carried_in()
    if tokens:
        _state.set(WorkState(_state.get().written, MappingProxyType(tokens)))


def outgoing(pin_seconds: float, known: frozenset[str]) -> Carried:
    """What this unit of work hands on, per set of ``known`` (see the module docstring).

    Takes a token for each set written here (one query on its primary
    alias's connection), so call it once, at the end of the unit of work or
    when a task is queued.
    """
    from django.db import connections

    now = time.time()
    state = _state.get()
    result: Carried = {}
    # Carried in and still alive: handed on unchanged (a read alone extends nothing).
    for name, (carried_until, carried_token) in state.tokens.items():
        if carried_until > now:
            result[name] = (carried_until, str(carried_token))
    for name, pinned_until in pinned_names().items():
        if name in known:
            result[name] = (now + pin_seconds if pinned_until is None else pinned_until, None)
    for name, alias in state.written.items():
        token = _take_token(connections[alias])
        result[name] = (now + pin_seconds, None if token is None else str(token))
    return result


def _take_token(connection: Any) -> WriteToken | None:
    """The write token of ``connection``'s server now; ``None`` inside an atomic block
    (the write is not committed) or when the query fails (the host may be gone)."""
    if connection.in_atomic_block:
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute(WRITE_TOKEN_QUERY)
            row = cursor.fetchone()
        return token_from_row(row)
    except Exception as error:
        logger.debug("pgrouter: no write token on %s: %r", connection.alias, error)
        return None


def encode(carried: Carried) -> dict[str, Any]:
    """The carried form as plain JSON data."""
    return {"v": CARRIED_VERSION, "s": {name: [e, t] for name, (e, t) in carried.items()}}


def carried_in(data: Any, known: frozenset[str]) -> Carried:
    """Read back what :func:`encode` wrote, for the sets of ``known``; ``ValueError`` for
    anything else (never guessed at: the input may be anyone's)."""
    if not isinstance(data, dict) or set(data) != {"v", "s"} or data["v"] != CARRIED_VERSION:
        raise ValueError("not pgrouter's carried form (version 1)")
    sets = data["s"]
    if not isinstance(sets, dict) or len(sets) > MAX_CARRIED_SETS:
        raise ValueError("carried sets are not a small dict")
    result: Carried = {}
    for name, entry in sets.items():
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError("a carried set is not [expiry, token]")
        expires_at, text = entry
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            raise ValueError("a carried expiry is not a number")
        if not math.isfinite(expires_at):
            raise ValueError("a carried expiry is not finite")
        if text is not None:
            if not isinstance(text, str) or len(text) > MAX_TOKEN_LENGTH:
                raise ValueError("a carried token is not a token's text")
            try:
                WriteToken.parse(text)
            except ValueError:
                # Not the parser's message: it quotes the text, and this lands in logs.
                raise ValueError("a carried token does not parse") from None
        if name in known:  # a set this project no longer has: dropped, not an error
            result[name] = (float(expires_at), text)
    return result


__all__ = [
    "Carried",
    "carried_in",
    "encode",
    "note_write",
    "outgoing",
    "token_of",
    "unit_of_work",
    "written_sets",
]
