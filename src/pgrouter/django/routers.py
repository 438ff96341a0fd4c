"""Django database routers that follow the cluster: writes to the current primary, reads to a
healthy replica within the lag bounds, pins and write tokens honoured.

Each query's route, top to bottom:

1. The *target* alias: the first answer of ``PGROUTER_DELEGATE_ROUTERS``
   (they choose a set by returning one of its aliases), else the instance's
   own database (``hints["instance"]._state.db``), else ``default``.
2. An alias in no database set is returned untouched.
3. ``PGROUTER_ENABLED = False`` (tests): the set's first host, always (under
   the alias asked for when it names that host, such as ``default``).
4. A write: inside ``transaction.atomic()`` on one of the set's aliases,
   that alias (the write is part of that transaction: open it with
   :func:`pgrouter.django.atomic` to have it on the current primary).
   Otherwise :class:`StrictRouter` raises :class:`UnpinnedWriteError` unless
   the set is pinned (:func:`~pgrouter.routing.pinning.pin`, or inside
   ``use_primary``); :class:`GreedyRouter` pins it. Either way the write goes
   to the alias of the host the monitor sees as primary *now*, so after a
   failover writes go to the promoted host with no settings change, and the
   set is noted as written (its token is taken at the end of the request).
5. A read: inside ``transaction.atomic()`` on one of the set's aliases, that
   alias (the transaction sees its own writes); pinned, the primary; with a
   write token carried in, a replica that has replayed it, else the primary;
   else a healthy replica within the lag bounds, chosen by the balancer
   (none: the primary).

``allow_migrate`` is True only on the alias of the set's current primary;
``allow_relation`` within one set (False across sets).
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from ..routing.consistency import current_token
from ..routing.pinning import is_pinned, pin, reads_go_to_primary
from . import state
from .connections import drop_if_stale
from .errors import UnpinnedWriteError
from .sets import DatabaseSet, registry


class _SetRouter:
    """The route of every query (see the module docstring); subclasses say how writes pin."""

    strict = True

    def __init__(self) -> None:
        registry()  # builds the sets (and hooks Django's connections) at Django's first routing

    # -- the target --------------------------------------------------------------

    def _target(self, method: str, model: Any, hints: dict[str, Any]) -> str:
        for router in registry().settings.delegate_routers:
            choose = getattr(router, method, None)
            if choose is not None:
                alias = choose(model, **hints)
                if alias:
                    return str(alias)
        instance = hints.get("instance")
        if instance is not None:
            alias = getattr(getattr(instance, "_state", None), "db", None)
            if alias:
                return str(alias)
        return str(DEFAULT_DB_ALIAS)

    # -- Django's router API -------------------------------------------------------

    def db_for_write(self, model: Any, **hints: Any) -> str:
        target = self._target("db_for_write", model, hints)
        sets = registry()
        member = sets.member(target)
        if member is None:
            return target
        database_set = member[0]
        if not sets.settings.enabled:
            return _unrouted(target, member[1], database_set)
        name = database_set.name
        if not is_pinned(name) and not reads_go_to_primary(name):
            if self.strict:
                raise UnpinnedWriteError(
                    f"a write to database set {name!r} without a pin: call "
                    f"pgrouter.django.pin({name!r}) first (or use GreedyRouter)"
                )
            pin(name)
        alias = _atomic_alias(database_set, database_set.known_primary())
        if alias is not None:  # the write belongs to the transaction open there
            state.note_write(name, alias)
            return alias
        index = database_set.primary_index()
        database_set.watch.note_work(index)
        drop_if_stale(database_set, index)
        alias = database_set.aliases[index]
        state.note_write(name, alias)
        return alias

    def db_for_read(self, model: Any, **hints: Any) -> str:
        target = self._target("db_for_read", model, hints)
        sets = registry()
        member = sets.member(target)
        if member is None:
            return target
        database_set = member[0]
        if not sets.settings.enabled:
            return _unrouted(target, member[1], database_set)
        alias = _atomic_alias(database_set, database_set.known_primary())
        if alias is not None:
            return alias
        name = database_set.name
        if reads_go_to_primary(name):
            index = database_set.primary_index()
            database_set.watch.note_work(index)
        else:
            token = state.token_of(name)
            index = database_set.read_index(token if token is not None else current_token())
        drop_if_stale(database_set, index)
        return database_set.aliases[index]

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        sets = registry()
        first = sets.members.get(getattr(obj1._state, "db", None) or "")
        second = sets.members.get(getattr(obj2._state, "db", None) or "")
        if first is None and second is None:
            return None
        if first is None or second is None:
            return False
        return first[0] is second[0]

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        sets = registry()
        for router in sets.settings.delegate_routers:
            decide = getattr(router, "allow_migrate", None)
            if decide is not None:
                answer = decide(db, app_label, model_name=model_name, **hints)
                if answer is False:
                    return False
        member = sets.members.get(db)
        if member is None:
            return None
        database_set, index = member
        if not sets.settings.enabled:
            return index == 0
        return index == database_set.primary_index()


def _unrouted(target: str, index: int, database_set: DatabaseSet) -> str:
    """Routing off: the set's first host, under the name asked for when it names that host
    (``default`` under Django's ``TestCase``), else the set's name."""
    return target if index == 0 else database_set.name


def _atomic_alias(database_set: DatabaseSet, primary: int) -> str | None:
    """The alias of the set whose connection is in ``transaction.atomic()`` in this thread
    (of those an atomic block is opened on: :meth:`DatabaseSet.atomic_candidates`)."""
    for alias in database_set.atomic_candidates(primary):
        if connections[alias].in_atomic_block:
            return alias
    return None


class StrictRouter(_SetRouter):
    """A write to a set that is not pinned raises :class:`UnpinnedWriteError`."""

    strict = True


class GreedyRouter(_SetRouter):
    """The first write to a set pins it (its reads then go to the primary)."""

    strict = False


__all__ = ["GreedyRouter", "StrictRouter"]
