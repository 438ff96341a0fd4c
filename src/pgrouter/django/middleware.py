"""PinningMiddleware: one unit of work per request, and a signed cookie that carries a
write's token to the requests after it.

Each request runs in a fresh pinning context (:mod:`pgrouter.routing.pinning`)
and unit of work (:mod:`pgrouter.django.state`), started from the request's
cookie. After the response, for each set written in the request, a write
token is taken on the alias its writes went to, and the cookie carries, per
set, the pin's expiry (now + ``PGROUTER_PINNING_SECONDS``) and the token. The
next request reads that set from a replica as soon as one has replayed the
token (instead of from the primary for the whole pin), and from the primary
until then; a set whose token could not be taken is pinned until the expiry.

The cookie is signed (:mod:`django.core.signing`, with ``SECRET_KEY`` and a
salt of ours) and its age bounded by the pin's lifetime. One that is forged,
garbled, expired, of another site (another key or salt) or of another form
is ignored: never an error page, never trusted. :func:`rejected_cookies`
counts them; each gets a debug log line, without the cookie's content.

Sync and async: under ASGI the middleware stays async, and the token queries
(blocking) run through ``sync_to_async``, on the thread the view's ORM calls
used, whose connections they need.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core import signing

from . import state
from .sets import registry

logger = logging.getLogger("pgrouter")

#: The signing salt: a cookie signed for anything else does not verify here.
COOKIE_SALT = "pgrouter.django.pins"

_rejected = 0
_rejected_lock = threading.Lock()


def rejected_cookies() -> int:
    """How many pinning cookies were ignored (forged, garbled, expired, foreign) so far."""
    return _rejected


def _reject(reason: str) -> None:
    global _rejected
    with _rejected_lock:
        _rejected += 1
    logger.debug("pgrouter: pinning cookie ignored: %s", reason)


def read_cookie(request: Any) -> state.Carried:
    """The carried state of the request's cookie; empty when absent or not to be trusted."""
    sets = registry()
    settings = sets.settings
    value = request.COOKIES.get(settings.pinning_cookie)
    if not value:
        return {}
    try:
        data = signing.loads(value, salt=COOKIE_SALT, max_age=settings.pinning_seconds)
    except signing.SignatureExpired:
        _reject("expired")
        return {}
    except signing.BadSignature:
        _reject("bad signature (forged, garbled, or of another key or salt)")
        return {}
    except Exception as error:  # a valid signature over something that is not JSON
        _reject(f"unreadable ({type(error).__name__})")
        return {}
    try:
        return state.carried_in(data, frozenset(sets.sets))
    except ValueError as error:
        _reject(f"not pgrouter's form ({error})")
        return {}


def write_cookie(request: Any, response: Any, carried: state.Carried, had_cookie: bool) -> None:
    """Set the cookie for ``carried``, or delete one the request brought that has nothing left."""
    settings = registry().settings
    if not carried:
        if had_cookie:
            response.delete_cookie(settings.pinning_cookie, samesite="Lax")
        return
    value = signing.dumps(state.encode(carried), salt=COOKIE_SALT, compress=True)
    response.set_cookie(
        settings.pinning_cookie,
        value,
        max_age=int(settings.pinning_seconds) + 1,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )


class PinningMiddleware:
    """One pinning context per request and the signed cookie (see the module docstring)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        sets = registry()
        if not sets.settings.enabled:
            return self.get_response(request)
        carried = read_cookie(request)
        with state.unit_of_work(carried):
            response = self.get_response(request)
            self._finish(request, response)
        return response

    async def _acall(self, request: Any) -> Any:
        sets = registry()
        if not sets.settings.enabled:
            return await self._respond(request)
        carried = read_cookie(request)
        with state.unit_of_work(carried):
            response = await self._respond(request)
            # The token queries block; on the thread the ORM calls used (thread_sensitive).
            await sync_to_async(self._finish)(request, response)
        return response

    async def _respond(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        return await get_response(request)

    def _finish(self, request: Any, response: Any) -> None:
        sets = registry()
        settings = sets.settings
        carried = state.outgoing(settings.pinning_seconds, frozenset(sets.sets))
        write_cookie(request, response, carried, settings.pinning_cookie in request.COOKIES)


__all__ = ["COOKIE_SALT", "PinningMiddleware", "read_cookie", "rejected_cookies", "write_cookie"]
