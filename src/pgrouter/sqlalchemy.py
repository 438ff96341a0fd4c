"""``pgrouter.sqlalchemy.PoolManager``: the manager over SQLAlchemy 2 ``AsyncEngine`` s.

One engine per host; ``acquire()`` hands out an ``AsyncConnection``, usable
with ``AsyncSession(bind=connection)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .drivers.sqlalchemy import SqlalchemyDriver
from .manager import BasePoolManager


class PoolManager(BasePoolManager[AsyncEngine, AsyncConnection]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=SqlalchemyDriver(), **kwargs)


__all__ = ["PoolManager", "SqlalchemyDriver"]
