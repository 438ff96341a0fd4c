"""``pgrouter.aiopg.PoolManager``: the manager over aiopg pools (hasql's import path)."""

from __future__ import annotations

from typing import Any

import aiopg

from .drivers.aiopg import AiopgDriver
from .manager import BasePoolManager


class PoolManager(BasePoolManager[aiopg.Pool, aiopg.Connection]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=AiopgDriver(), **kwargs)


__all__ = ["AiopgDriver", "PoolManager"]
