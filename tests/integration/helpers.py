"""Driver-neutral helpers for the integration tests.

Connections of the async drivers are used directly; a sync manager's (kind
``sync``, see sync_adapter.py) are queried in a worker thread, so the test's
event loop runs on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sync_adapter import SyncConnection, run_blocking


def _kind(connection: Any) -> str:
    """Which API ``connection`` speaks, by the library its class comes from."""
    if isinstance(connection, SyncConnection):
        return "sync"  # psycopg 3 or psycopg2, blocking: through a DB-API cursor, in a thread
    module = type(connection).__module__
    if module.startswith("sqlalchemy"):
        return "sqlalchemy"  # SQLAlchemy 2 AsyncConnection: text() queries, explicit commit
    if module.startswith("aiopg.sa"):
        return "aiopg_sa"  # SAConnection: scalar() and execute() take plain SQL
    if module.startswith("aiopg"):
        return "aiopg"  # aiopg.Connection: autocommit, queries through a cursor
    if hasattr(connection, "fetchval"):
        return "asyncpg"  # asyncpg and asyncpgsa
    return "psycopg"


async def fetchval(connection: Any, query: str) -> Any:
    """First column of the first row, on a connection of any driver under test."""
    kind = _kind(connection)
    if kind == "sync":
        return await run_blocking(_sync_fetchval, connection.raw, query)
    if kind == "asyncpg":
        return await connection.fetchval(query)
    if kind == "aiopg_sa":
        return await connection.scalar(query)
    if kind == "aiopg":
        cursor = await connection.cursor()
        try:
            await cursor.execute(query)
            row = await cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else row[0]
    if kind == "sqlalchemy":
        from sqlalchemy import text

        result = await connection.execute(text(query))
        value = result.scalar()
        await connection.commit()
        return value
    cursor = await connection.execute(query)
    row = await cursor.fetchone()
    if not getattr(connection, "autocommit", True):
        await connection.commit()
    return None if row is None else row[0]


async def execute(connection: Any, query: str) -> None:
    """Run ``query`` and commit it, on a connection of any driver under test."""
    kind = _kind(connection)
    if kind == "sync":
        await run_blocking(_sync_execute, connection.raw, query)
    elif kind in ("asyncpg", "aiopg_sa"):
        await connection.execute(query)
    elif kind == "aiopg":
        cursor = await connection.cursor()
        try:
            await cursor.execute(query)
        finally:
            cursor.close()
    elif kind == "sqlalchemy":
        from sqlalchemy import text

        await connection.execute(text(query))
        await connection.commit()
    else:
        await connection.execute(query)
        if not connection.autocommit:
            await connection.commit()


def _sync_fetchval(connection: Any, query: str) -> Any:
    """fetchval on a blocking DB-API connection; commits as the psycopg kind does."""
    with connection.cursor() as cursor:
        cursor.execute(query)
        row = cursor.fetchone()
    if not connection.autocommit:
        connection.commit()
    return None if row is None else row[0]


def _sync_execute(connection: Any, query: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(query)
    if not connection.autocommit:
        connection.commit()


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
