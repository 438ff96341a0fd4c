"""The blocking manager for psycopg 3: one ``psycopg_pool.ConnectionPool`` per host.

``pip install 'pgrouter[psycopg]'``. ``with pm.acquire_master() as conn:`` gives a
``psycopg.Connection`` and commits at the end of a clean block (rolls back when
it raised), as ``pool.connection()`` does; the monitor's checks run with
psycopg's async connections on the monitor's own thread. Works under gevent's
monkey patching (psycopg 3 waits through the patched ``selectors``).
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

from .manager import BaseSyncPoolManager
from .psycopg_driver import SyncPsycopgDriver


class PoolManager(BaseSyncPoolManager[psycopg_pool.ConnectionPool, psycopg.Connection[Any]]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=SyncPsycopgDriver(), **kwargs)


__all__ = ["PoolManager"]
