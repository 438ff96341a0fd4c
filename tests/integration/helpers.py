"""Driver-neutral helpers for the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


async def fetchval(connection: Any, query: str) -> Any:
    """First column of the first row, on an asyncpg or a psycopg connection."""
    if hasattr(connection, "fetchval"):
        return await connection.fetchval(query)
    cursor = await connection.execute(query)
    row = await cursor.fetchone()
    if not getattr(connection, "autocommit", True):
        await connection.commit()
    return None if row is None else row[0]


async def execute(connection: Any, query: str) -> None:
    if hasattr(connection, "fetchval"):
        await connection.execute(query)
        return
    await connection.execute(query)
    if not connection.autocommit:
        await connection.commit()


async def server_port(connection: Any) -> int:
    return int(await fetchval(connection, "SELECT inet_server_port()"))


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 15, what: str = "condition"
) -> None:
    """Poll ``condition`` until true; fail the test after ``timeout`` seconds.

    A bound on how long a test may hang, not a speed assertion.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
