"""Pins: which clusters' reads go to the primary, for this task or thread only.

A read that must see a write just made (or that must not see a replica at all)
pins its cluster: every read of that cluster then goes to the primary, until
the pin expires, :func:`unpin_all` clears it, or the unit of work ends. Every
manager asks :func:`reads_go_to_primary` with its ``name`` on every read; this
module decides, the manager obeys.

Four kinds of state, one answer (:func:`reads_go_to_primary`):

- a pin (:func:`pin`, :func:`pin_until`): open-ended, or with an expiry;
- a :func:`use_primary` block: reads to the primary inside it, pinned or not;
- an :func:`unpinned_replica` block: reads to replicas inside it despite a pin;
- a :func:`pinning_context`: a fresh, empty set of pins for one unit of work
  (a request, a task), the outer set restored when it ends.

When ``use_primary`` and ``unpinned_replica`` blocks for one name nest, the
innermost block wins, as any nested scope does. A pin made inside either block
outlives the block: blocks say how reads inside them go, pins say what the unit
of work needs until it ends.

Where the state lives, and why it cannot leak
---------------------------------------------
Everything sits in one :class:`~contextvars.ContextVar` holding a frozen value
(two read-only mappings), replaced whole on every change and never mutated. A
mutable dict in the variable would be shared by every context copied from the
one that created it: asyncio copies the context when it creates a task, so a
pin set by one task would show in its siblings. With frozen values, a task or
a thread only ever sees its own pins.

That is also how pins travel, by contextvars' own rules:

- a task inherits the pins its creator had *when it was created*; pins set or
  cleared later, by either side, stay with the side that made them (a pin set
  in a child task never reaches the parent that awaits it);
- a new thread starts with no pins, except where its context is copied from
  the caller (``asyncio.to_thread`` does; ``loop.run_in_executor`` does not);
- a ``with`` block must end in the context it began in (the same task or the
  same thread); :class:`~contextvars.ContextVar` raises ``ValueError`` if not.

Carrying pins across requests
-----------------------------
Pins die with the request's context, and an expiry on ``time.monotonic()``
means nothing in another process. :func:`pinned_names` therefore gives each
live pin's expiry as a wall-clock time (seconds since the epoch, as
``time.time()``), or ``None`` for a pin without one, and :func:`pin_until`
re-creates a pin from that form. A middleware with a signed cookie does::

    with pinning_context():
        for name, expires_at in cookie_pins(request).items():
            pin_until(name, expires_at)
        response = handler(request)
        set_cookie_pins(response, pinned_names())

and decides itself how long an open-ended (``None``) pin lasts in the next
request, e.g. ``pin_until(name, time.time() + PIN_SECONDS)``. A wall clock that
steps moves carried expiries with it; within a process, expiry stays monotonic.

django-pindb's names
--------------------
django-pindb brought the same idea to Django's database routers; its calls map
onto this module as follows:

- ``pin(alias)``: pin a database set's reads to its master — :func:`pin`, which
  can also expire;
- ``unpin_all()``: start or end a request clean — :func:`unpin_all`, or better a
  :func:`pinning_context` around the unit of work;
- ``is_pinned(alias)`` — :func:`is_pinned`;
- ``master(alias)``, a block that goes to the master whatever the pins say —
  :func:`use_primary`;
- reading from a replica despite a pin (its ``unpinned_replica`` block, or
  asking it for a replica alias outright: ``get_replica()``, ``get_slave()``
  in the old master/slave spelling) — :func:`unpinned_replica`, a block, since
  pgrouter has no aliases to hand out.

The hot path
------------
:func:`reads_go_to_primary` runs on every read of every manager: with nothing
pinned and no block open it is one ``ContextVar.get()`` and an identity test,
and allocates nothing; otherwise one or two lookups in a small mapping, and a
``time.monotonic()`` call when the pin found has an expiry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType, TracebackType

__all__ = [
    "is_pinned",
    "pin",
    "pin_until",
    "pinned_names",
    "pinning_context",
    "reads_go_to_primary",
    "unpin_all",
    "unpinned_replica",
    "use_primary",
]

#: The monotonic expiry of a pin that has none: later than any time.
_FOREVER = math.inf


@dataclass(frozen=True, slots=True)
class _PinState:
    """One context's pins and open blocks, replaced whole, never changed.

    ``pins`` maps a cluster name to its pin's expiry on ``time.monotonic()``
    (:data:`_FOREVER` for none); expired entries may linger until the next
    change and are ignored. ``blocks`` maps a name to ``True`` inside a
    :func:`use_primary` block and ``False`` inside an :func:`unpinned_replica`
    one, the innermost open block's word.
    """

    pins: Mapping[str, float]
    blocks: Mapping[str, bool]


_EMPTY: Mapping[str, float] = MappingProxyType({})
_NO_BLOCKS: Mapping[str, bool] = MappingProxyType({})

#: The state of a context with nothing pinned and no block open; the hot path
#: tests for it by identity, so every change that empties the state returns it.
_NOTHING = _PinState(_EMPTY, _NO_BLOCKS)

_state: ContextVar[_PinState] = ContextVar("pgrouter_pins", default=_NOTHING)


def _state_of(pins: Mapping[str, float], blocks: Mapping[str, bool]) -> _PinState:
    """The state for these pins and blocks: :data:`_NOTHING` when both are empty."""
    if not pins and not blocks:
        return _NOTHING
    return _PinState(pins, blocks)


def reads_go_to_primary(name: str) -> bool:
    """Whether a read of cluster ``name`` must go to the primary, here and now.

    True inside a :func:`use_primary` block for ``name``, False inside an
    :func:`unpinned_replica` one (the innermost wins), else whether ``name``
    has a live pin. The manager calls it on every read, so it is kept to a
    context lookup when nothing is pinned.
    """
    state = _state.get()
    if state is _NOTHING:
        return False
    in_block = state.blocks.get(name)
    if in_block is not None:
        return in_block
    expires = state.pins.get(name)
    if expires is None:
        return False
    return expires == _FOREVER or expires > time.monotonic()


def is_pinned(name: str = "default") -> bool:
    """Whether cluster ``name`` has a live pin in this context.

    Only pins count: a :func:`use_primary` block sends reads to the primary
    without pinning, and an :func:`unpinned_replica` block sends them to
    replicas without unpinning. An expired pin is not pinned.
    """
    expires = _state.get().pins.get(name)
    return expires is not None and expires > time.monotonic()


def pin(name: str = "default", seconds: float | None = None) -> None:
    """Send reads of cluster ``name`` to the primary, in this context.

    With ``seconds``, the pin ends that long from now (on ``time.monotonic()``);
    without, it lasts until :func:`unpin_all` or the end of the enclosing
    :func:`pinning_context`. Pinning never shortens a pin already there: the
    later expiry wins, and an open-ended pin stays open-ended.

    Raises ``ValueError`` unless ``seconds`` is None or above zero.
    """
    if seconds is None:
        _pin_at(name, _FOREVER)
        return
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"pin seconds must be above zero, got {seconds!r}")
    _pin_at(name, time.monotonic() + seconds)


def pin_until(name: str, expires_at: float | None) -> None:
    """Re-create a pin carried from another request, as :func:`pinned_names` gave it.

    ``expires_at`` is a wall-clock time (seconds since the epoch, like
    ``time.time()``), turned into a monotonic expiry here; ``None`` pins
    without expiry. A time already past pins nothing: the pin ended while it
    was being carried. Like :func:`pin`, never shortens a pin already there.

    Raises ``ValueError`` on NaN.
    """
    if expires_at is None:
        _pin_at(name, _FOREVER)
        return
    if math.isnan(expires_at):
        raise ValueError("pin_until expires_at is NaN")
    remaining = expires_at - time.time()
    if remaining > 0:
        _pin_at(name, time.monotonic() + remaining)


def _pin_at(name: str, expires: float) -> None:
    """Set ``name``'s pin to end at monotonic ``expires``, dropping expired pins."""
    state = _state.get()
    now = time.monotonic()
    pins = {other: until for other, until in state.pins.items() if until > now}
    pins[name] = max(expires, pins.get(name, expires))
    _state.set(_PinState(MappingProxyType(pins), state.blocks))


def unpin_all() -> None:
    """Drop every pin in this context; open blocks keep their effect until they end."""
    state = _state.get()
    if state.pins:
        _state.set(_state_of(_EMPTY, state.blocks))


def pinned_names() -> dict[str, float | None]:
    """The live pins in this context: cluster name -> wall-clock expiry, or None.

    Expiries are seconds since the epoch (``time.time()``), not monotonic, so
    that they survive a cookie and another process: :func:`pin_until` takes
    them back. ``None`` is a pin without expiry; how long to carry it is the
    carrier's choice. The dict is a new one, the caller's to change.
    """
    pins = _state.get().pins
    if not pins:
        return {}
    now = time.monotonic()
    wall = time.time()
    return {
        name: None if expires == _FOREVER else wall + (expires - now)
        for name, expires in pins.items()
        if expires > now
    }


class _OneUse:
    """A ``with`` block over this module's state, entered at most once.

    Single use because the block keeps its :class:`~contextvars.Token`: one
    object shared by concurrent tasks would mix their tokens up, so a second
    entry raises instead. Call :func:`use_primary` (etc.) for each block.
    """

    __slots__ = ("_entered", "_token")

    def __init__(self) -> None:
        self._entered = False
        self._token: Token[_PinState] | None = None

    def _enter(self) -> _PinState:
        if self._entered:
            raise RuntimeError(
                f"{type(self).__name__} is single-use: create a new one for each with block"
            )
        self._entered = True
        return _state.get()


class _Block(_OneUse):
    """A :func:`use_primary` or :func:`unpinned_replica` block for one cluster name."""

    __slots__ = ("_name", "_outer", "_to_primary")

    def __init__(self, name: str, to_primary: bool) -> None:
        super().__init__()
        self._name = name
        self._to_primary = to_primary
        self._outer = _NOTHING

    def __enter__(self) -> None:
        outer = self._outer = self._enter()
        blocks = dict(outer.blocks)
        blocks[self._name] = self._to_primary
        self._token = _state.set(_PinState(outer.pins, MappingProxyType(blocks)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        inner = _state.get()
        # reset() restores the blocks as they were (and checks we are in the
        # context we entered in); the pins made inside the block are kept.
        _state.reset(self._token)
        if inner.pins is not self._outer.pins:
            _state.set(_state_of(inner.pins, self._outer.blocks))


class _FreshPins(_OneUse):
    """A :func:`pinning_context` block."""

    __slots__ = ()

    def __enter__(self) -> None:
        outer = self._enter()
        self._token = _state.set(_state_of(_EMPTY, outer.blocks))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _state.reset(self._token)


def use_primary(name: str = "default") -> AbstractContextManager[None]:
    """A block in which reads of cluster ``name`` go to the primary.

    A plain ``with``, in sync and async code alike; on exit, reads go where
    they went before. Blocks nest, the innermost deciding. Pins made inside
    the block stay after it. Each call gives a block for one ``with``.
    """
    return _Block(name, to_primary=True)


def unpinned_replica(name: str = "default") -> AbstractContextManager[None]:
    """A block in which reads of cluster ``name`` go to replicas, pinned or not.

    For a read known not to need the writes before it (a report, a search)
    inside a pinned request. Inside a :func:`use_primary` block it overrides
    that block too, being the inner one. The pins themselves are untouched:
    :func:`is_pinned` still says True, and they apply again on exit.
    """
    return _Block(name, to_primary=False)


def pinning_context() -> AbstractContextManager[None]:
    """A block with a fresh, empty set of pins, for one unit of work.

    Wrap each request or task in one: pins made inside are dropped on exit and
    the pins from outside, hidden inside, come back as they were. Open
    :func:`use_primary` / :func:`unpinned_replica` blocks around it still
    apply: they are visible in the code that opened them, pins are not.
    """
    return _FreshPins()
