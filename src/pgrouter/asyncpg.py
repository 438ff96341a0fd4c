"""``pgrouter.asyncpg.PoolManager``: the manager over asyncpg pools (hasql's import path)."""

from __future__ import annotations

from typing import Any

import asyncpg

from .drivers.asyncpg import AsyncpgDriver
from .manager import BasePoolManager


class PoolManager(BasePoolManager[asyncpg.Pool, asyncpg.Connection]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=AsyncpgDriver(), **kwargs)


__all__ = ["AsyncpgDriver", "PoolManager"]
