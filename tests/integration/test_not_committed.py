"""A block whose host went down before it ended is cut, not committed, on both faces.

At the end of ``with``/``async with pm.acquire_master() as conn`` the psycopg
drivers commit. If the primary froze meanwhile and the monitor declared it
down, that COMMIT would wait on a socket that never answers (for ever, with a
SIGSTOP'd server). pgrouter cuts the connection instead, so the server rolls
the transaction back, and raises ``NotCommittedError``: the caller learns at
once that nothing of the block was kept, and after the thaw nothing was.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pgrouter import NotCommittedError
from pgrouter.testing import LocalCluster

#: How long the end of the block may take once the host is known down.
PROMPT = 2.0


def _primary_down(pm: Any, port: int) -> bool:
    return any(host.dsn.port == port and not host.healthy for host in pm.topology)


def _count(cluster: LocalCluster) -> int:
    return int(cluster.primary.sql("SELECT count(*) FROM not_committed").strip())


async def test_async_block_on_a_host_gone_down_is_not_committed(cluster: LocalCluster) -> None:
    from pgrouter.psycopg3 import PoolManager

    frozen = cluster.primary
    frozen.sql("CREATE TABLE not_committed (id int)")
    async with PoolManager(cluster.dsn(), refresh_timeout=0.5) as pm:
        await pm.ready()
        with pytest.raises(NotCommittedError, match="not committed"):
            async with pm.acquire_master() as conn:
                await conn.execute("INSERT INTO not_committed VALUES (1)")
                await asyncio.to_thread(frozen.freeze)
                try:
                    deadline = time.monotonic() + 10
                    while not _primary_down(pm, frozen.port):
                        assert time.monotonic() < deadline, "the frozen primary was never seen down"
                        await asyncio.sleep(0.05)
                    ended = time.monotonic()
                except BaseException:
                    await asyncio.to_thread(frozen.thaw)
                    raise
        took = time.monotonic() - ended
        await asyncio.to_thread(frozen.thaw)
        assert took < PROMPT, f"the end of the block waited {took:.1f} s on a host known down"
        await pm.ready(timeout=15)
        assert _count(cluster) == 0  # the server rolled the block back


@pytest.mark.parametrize("module", ["pgrouter.sync.psycopg", "pgrouter.sync.psycopg2"])
def test_blocking_block_on_a_host_gone_down_is_not_committed(
    cluster: LocalCluster, module: str
) -> None:
    import importlib

    PoolManager = importlib.import_module(module).PoolManager
    frozen = cluster.primary
    frozen.sql("CREATE TABLE not_committed (id int)")
    with PoolManager(cluster.dsn(), refresh_timeout=0.5) as pm:
        pm.ready()
        ended = None
        try:
            with (
                pytest.raises(NotCommittedError, match="not committed"),
                pm.acquire_master() as conn,
            ):
                cursor = conn.cursor()
                cursor.execute("INSERT INTO not_committed VALUES (1)")
                frozen.freeze()
                deadline = time.monotonic() + 10
                while not _primary_down(pm, frozen.port):
                    assert time.monotonic() < deadline, "the frozen primary was never seen down"
                    time.sleep(0.05)
                ended = time.monotonic()
            assert ended is not None
            took = time.monotonic() - ended
        finally:
            frozen.thaw()
        assert took < PROMPT, f"the end of the block waited {took:.1f} s on a host known down"
        pm.ready(timeout=15)
        assert _count(cluster) == 0  # the server rolled the block back
