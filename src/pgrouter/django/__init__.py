"""pgrouter for Django: database routers that follow the cluster (issue #12).

Settings (``settings.py``)::

    DATABASES = pgrouter.django.database_set("default", "postgresql://u:p@h1,h2,h3/app")
    DATABASE_ROUTERS = ["pgrouter.django.GreedyRouter"]   # or StrictRouter
    MIDDLEWARE = ["pgrouter.django.middleware.PinningMiddleware", ...]

or django-pindb's form, :func:`populate_replicas`. Every host of a set is
one alias; one monitor per set (:class:`~pgrouter.sync.cluster_watch.ClusterWatch`,
probing through psycopg 3's async connections when psycopg is installed, as
Django's PostgreSQL backend prefers it, else aiopg for psycopg2) says which
alias serves a query: writes go to the current primary's alias, reads to a
healthy replica within the lag bounds, pinned or token-carrying reads where
the routing layer says (:mod:`pgrouter.django.routers`).

Pins are the consistency layer's contextvars (:mod:`pgrouter.routing.pinning`),
keyed by the set's name; these functions take any alias of a set.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ..routing import pinning
from .config import database_set, populate_replicas
from .errors import ConfigError, UnpinnedWriteError
from .routers import GreedyRouter, StrictRouter
from .sets import registry


def _set_name(alias: str) -> str:
    return registry().set_named(alias).name


def pin(alias: str = "default", seconds: float | None = None) -> None:
    """Send reads of ``alias``'s set to its primary, in this context (and allow writes
    under :class:`StrictRouter`); until :func:`unpin_all`, the unit of work's end, or
    ``seconds``."""
    pinning.pin(_set_name(alias), seconds)


def unpin_all() -> None:
    """Drop every pin of this context."""
    pinning.unpin_all()


def is_pinned(alias: str = "default") -> bool:
    return pinning.is_pinned(_set_name(alias))


def use_primary(alias: str = "default") -> AbstractContextManager[None]:
    """A block in which reads of ``alias``'s set go to its primary (pindb's ``master()``)."""
    return pinning.use_primary(_set_name(alias))


def unpinned_replica(alias: str = "default") -> AbstractContextManager[None]:
    """A block in which reads of ``alias``'s set go to replicas, pinned or not."""
    return pinning.unpinned_replica(_set_name(alias))


def get_replica(alias: str = "default") -> str:
    """The alias a plain read of ``alias``'s set would use now (for ``.using()``):
    a healthy replica within the lag bounds, else the primary."""
    return registry().set_named(alias).read_alias(None)


def primary_alias(alias: str = "default") -> str:
    """The alias of ``alias``'s set's current primary."""
    return registry().set_named(alias).write_alias()


def atomic(alias: str = "default", **kwargs: Any) -> Any:
    """``transaction.atomic()`` on the current primary of ``alias``'s set.

    ``transaction.atomic()`` alone opens the transaction on the ``default``
    alias, whatever host is primary; after a failover that host may be gone.
    """
    from django.db import transaction

    return transaction.atomic(using=primary_alias(alias), **kwargs)


__all__ = [
    "ConfigError",
    "GreedyRouter",
    "StrictRouter",
    "UnpinnedWriteError",
    "atomic",
    "database_set",
    "get_replica",
    "is_pinned",
    "pin",
    "populate_replicas",
    "primary_alias",
    "unpin_all",
    "unpinned_replica",
    "use_primary",
]
