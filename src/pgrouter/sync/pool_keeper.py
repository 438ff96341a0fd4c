"""One host's blocking pools, kept as the monitor says (the sync twin of aio.pool_keeper).

Opened when the monitor admits the host (on a worker thread of the monitor's
loop: opening a blocking pool must not stall the checks), rebuilt after a
failure or a restart, retired old pools closed once they are no longer
current, cut at once when the host is superseded.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Generic

from ..dsn import HostDsn
from . import green
from .driver import ConnT, PoolT, SyncDriver

logger = logging.getLogger("pgrouter")


class SyncPoolKeeper(Generic[PoolT, ConnT]):
    """Owns one host's current blocking pool."""

    def __init__(
        self,
        *,
        index: int,
        dsn: HostDsn,
        driver: SyncDriver[PoolT, ConnT],
        pool_kwargs: dict[str, Any],
        callers: green.CallerSide,
    ) -> None:
        self._callers = callers
        self.index = index
        self.dsn = dsn
        self.pool: PoolT | None = None
        self._driver = driver
        self._pool_kwargs = pool_kwargs
        self._stale = False
        self._lock = green.original_lock()
        self.config_error: Exception | None = None

    def admit(self, restarted: bool) -> None:
        """The host passed its check: have its pool open (blocking; a new one if stale)."""
        with self._lock:
            if restarted:
                self._stale = self.pool is not None
            if self.pool is not None and not self._stale:
                return
        try:
            new_pool = self._driver.create_pool(self.dsn, **dict(self._pool_kwargs))
        except Exception as error:
            if self._driver.is_config_error(error):
                self.config_error = error
            raise
        with self._lock:
            old, self.pool, self._stale = self.pool, new_pool, False
        if old is not None:
            logger.info("pgrouter: %s: pool rebuilt", self.dsn.address)
            self._close_in_background(old)

    def host_failed(self) -> None:
        with self._lock:
            self._stale = self.pool is not None

    def cut(self) -> None:
        """Close the current pool now (a superseded host); the next admission opens anew."""
        with self._lock:
            old, self.pool, self._stale = self.pool, None, False
        if old is not None:
            self._close_in_background(old)

    def close(self) -> None:
        with self._lock:
            old, self.pool = self.pool, None
        if old is not None:
            with contextlib.suppress(Exception):
                self._driver.close_pool(old)

    def _close_in_background(self, pool: PoolT) -> None:
        def close() -> None:
            try:
                self._driver.close_pool(pool)
            except Exception as error:  # it was dead anyway
                logger.debug("pgrouter: closing an old pool of %s: %s", self.dsn.address, error)

        self._callers.start(close, name="pgrouter-close-pool")


__all__ = ["SyncPoolKeeper"]
