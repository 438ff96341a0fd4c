"""One host's pools for the async face: opened, rebuilt, retired, cut, as the monitor says.

A :class:`PoolKeeper` opens the host's pool when the monitor first finds the
host usable (its admission, before the host is published healthy), rebuilds
it when the host comes back after a failure or a restart (the old pool's
connections died with the server), retires old pools, which close in the
background once their borrowed connections are back, and terminates every
pool at once when the manager cuts a superseded primary. It follows the
monitor; the monitor knows nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Generic

from ..bounded import wait_bounded
from ..driver import ConnT, Driver, PoolT
from ..dsn import HostDsn

logger = logging.getLogger("pgrouter")

#: Opening a pool makes ``min_size`` connections; give it more room than one probe.
MIN_POOL_OPEN_TIMEOUT = 5.0


class PoolKeeper(Generic[PoolT, ConnT]):
    """Owns one host's current pool and the retired ones still closing."""

    def __init__(
        self,
        *,
        index: int,
        dsn: HostDsn,
        driver: Driver[PoolT, ConnT],
        pool_kwargs: dict[str, Any],
        refresh_timeout: float,
    ) -> None:
        self.index = index
        self.dsn = dsn
        self.pool: PoolT | None = None
        self._driver = driver
        self._pool_kwargs = pool_kwargs
        self._refresh_timeout = refresh_timeout
        self._pool_is_stale = False
        #: The driver's pool refused the caller's pool_factory_kwargs (a
        #: TypeError): a configuration error, which ready() raises, not an outage.
        self.config_error: Exception | None = None
        # Old pools closing in the background; they still take back the
        # connections borrowed from them before the rebuild.
        self._retired_pools: list[PoolT] = []
        self._closing_tasks: set[asyncio.Task[None]] = set()  # keeps them from being collected

    def owns(self, pool: object) -> bool:
        return pool is self.pool or any(pool is old for old in self._retired_pools)

    def all_pools(self) -> list[PoolT]:
        current = [self.pool] if self.pool is not None else []
        return current + list(self._retired_pools)

    async def admit(self, restarted: bool) -> None:
        """The host passed its check: have its pool open (a new one after a restart)."""
        if restarted:
            self._pool_is_stale = self.pool is not None
        try:
            await self._ensure_pool()
        except Exception as error:
            if self._driver.is_config_error(error):  # a keyword its pool does not take
                self.config_error = error
            raise

    def host_failed(self) -> None:
        """The host failed a check: whatever the pool holds was opened before the failure."""
        self._pool_is_stale = self.pool is not None

    async def _ensure_pool(self) -> None:
        if self.pool is not None and not self._pool_is_stale:
            return
        timeout = max(MIN_POOL_OPEN_TIMEOUT, self._refresh_timeout)
        new_pool = await wait_bounded(
            self._driver.create_pool(self.dsn, **self._pool_kwargs),
            timeout,
            dispose_late=self._driver.terminate_pool,
        )
        old_pool, self.pool, self._pool_is_stale = self.pool, new_pool, False
        if old_pool is not None:
            logger.info("pgrouter: %s: pool rebuilt", self.dsn.address)
            self._retire(old_pool)

    def _retire(self, pool: PoolT) -> None:
        """Close an old pool once its borrowed connections are back, in the background."""
        self._retired_pools.append(pool)

        async def close_when_returned() -> None:
            try:
                await self._driver.close_pool(pool)
            except Exception as error:  # it was dead anyway
                logger.debug("pgrouter: closing old pool of %s: %s", self.dsn.address, error)
            finally:
                with contextlib.suppress(ValueError):
                    self._retired_pools.remove(pool)

        self._closing_tasks.add(task := asyncio.create_task(close_when_returned()))
        task.add_done_callback(self._closing_tasks.discard)

    def cut_pools(self) -> None:
        """Terminate every pool of this host now (a superseded primary): no waiting
        for borrowed connections, whose sockets the manager has cut already.

        The next healthy check opens a fresh pool, which routing leaves
        unused for as long as the host stays fenced or superseded.
        """
        pools = self.all_pools()
        self.pool, self._retired_pools, self._pool_is_stale = None, [], False
        for pool in pools:
            self._retired_pools.append(pool)
            self._closing_tasks.add(task := asyncio.create_task(self._terminate(pool)))
            task.add_done_callback(self._closing_tasks.discard)

    async def _terminate(self, pool: PoolT) -> None:
        try:
            await self._driver.terminate_pool(pool)
        except Exception as error:  # it was being cut anyway
            logger.debug("pgrouter: cutting a pool of %s: %s", self.dsn.address, error)
        finally:
            with contextlib.suppress(ValueError):
                self._retired_pools.remove(pool)

    async def close_pools(self, terminate: bool) -> None:
        pools = self.all_pools()
        self.pool, self._retired_pools = None, []
        for pool in pools:
            with contextlib.suppress(Exception):
                if terminate:
                    await self._driver.terminate_pool(pool)
                else:
                    await self._driver.close_pool(pool)



__all__ = ["MIN_POOL_OPEN_TIMEOUT", "PoolKeeper"]
