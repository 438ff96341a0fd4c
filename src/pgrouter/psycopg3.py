"""``pgrouter.psycopg3.PoolManager``: the manager over psycopg 3 pools (hasql's import path)."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

from .drivers.psycopg import PsycopgDriver
from .manager import BasePoolManager


class PoolManager(BasePoolManager[psycopg_pool.AsyncConnectionPool, psycopg.AsyncConnection[Any]]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=PsycopgDriver(), **kwargs)


__all__ = ["PoolManager", "PsycopgDriver"]
