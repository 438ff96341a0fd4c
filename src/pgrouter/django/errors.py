"""The errors of pgrouter's Django integration, under pgrouter's base class.

:class:`ConfigError` is also Django's ``ImproperlyConfigured``, so Django's
own handling (``manage.py check``, startup) treats it as a settings error.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from ..errors import PgRouterError


class ConfigError(PgRouterError, ImproperlyConfigured):  # type: ignore[misc]
    """The database sets or the ``PGROUTER_*`` settings are wrong; the message names the part."""


class UnpinnedWriteError(PgRouterError, RuntimeError):
    """:class:`~pgrouter.django.StrictRouter` was asked to route a write to a set not pinned."""


__all__ = ["ConfigError", "UnpinnedWriteError"]
