"""``pgrouter.asyncpgsa.PoolManager``: the manager over asyncpgsa pools (hasql's import path)."""

from __future__ import annotations

from typing import Any

import asyncpg

from .drivers.asyncpgsa import AsyncpgsaDriver
from .manager import BasePoolManager


class PoolManager(BasePoolManager[asyncpg.Pool, asyncpg.Connection]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=AsyncpgsaDriver(), **kwargs)


__all__ = ["AsyncpgsaDriver", "PoolManager"]
