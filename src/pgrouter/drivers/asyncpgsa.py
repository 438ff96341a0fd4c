"""asyncpgsa behind the driver seam: one asyncpgsa pool per host.

asyncpgsa's pool is an ``asyncpg.Pool`` whose connections compile SQLAlchemy
Core queries, so everything but opening the pool is asyncpg's
(:class:`~pgrouter.drivers.asyncpg.AsyncpgDriver`). asyncpgsa 0.27 needs
SQLAlchemy < 2 (1.3 or 1.4).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import asyncpgsa

from ..dsn import HostDsn
from .asyncpg import AsyncpgDriver


class AsyncpgsaDriver(AsyncpgDriver):
    name = "asyncpgsa"

    async def create_pool(self, dsn: HostDsn, **pool_kwargs: Any) -> asyncpg.Pool:
        return await asyncpgsa.create_pool(dsn.to_url(), **pool_kwargs)


__all__ = ["AsyncpgsaDriver"]
