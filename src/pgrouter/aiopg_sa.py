"""``pgrouter.aiopg_sa.PoolManager``: the manager over aiopg.sa engines (hasql's import path)."""

from __future__ import annotations

from typing import Any

from .drivers.aiopg_sa import AiopgSaDriver
from .manager import BasePoolManager


class PoolManager(BasePoolManager[Any, Any]):
    def __init__(self, dsn: str, **kwargs: Any) -> None:
        super().__init__(dsn, driver=AiopgSaDriver(), **kwargs)


__all__ = ["AiopgSaDriver", "PoolManager"]
