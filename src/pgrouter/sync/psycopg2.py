"""The blocking manager for psycopg2 (the gDBPool and older Django world).

``pip install 'pgrouter[psycopg2]'``. One blocking pool per host
(:class:`~pgrouter.sync.psycopg2_driver.BlockingPsycopg2Pool`);
``with pm.acquire_master() as conn:`` commits a clean block and rolls back a
failed one, as psycopg2's own ``with connection:``. The monitor's checks run
through aiopg on the monitor's thread. Under gevent, make psycopg2 cooperative
first with psycogreen (``psycogreen.gevent.patch_psycopg()``), as for any
psycopg2 code under gevent.
"""

from __future__ import annotations

from typing import Any

from .manager import BaseSyncPoolManager
from .psycopg2_driver import BlockingPsycopg2Pool, SyncPsycopg2Driver


class PoolManager(BaseSyncPoolManager[BlockingPsycopg2Pool, Any]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=SyncPsycopg2Driver(), **kwargs)


__all__ = ["PoolManager"]
