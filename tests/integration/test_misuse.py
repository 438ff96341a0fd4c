"""Misuse gets a clear error or a warning, never silence or a hang; real clusters, every driver."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any

import pytest

from pgrouter import PoolManagerClosedError, WrongEventLoopError
from pgrouter.testing import LocalCluster

pytestmark = pytest.mark.cluster


def test_a_manager_used_under_a_second_asyncio_run_says_so(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    """Built outside any loop, used in one asyncio.run(), then in another: a clear error."""
    pm = manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools)

    async def use() -> None:
        await pm.ready()
        async with pm.acquire_master():
            pass

    asyncio.run(use())
    with pytest.raises(WrongEventLoopError, match=r"another event loop.*closed since"):
        asyncio.run(use())

    async def close_elsewhere() -> None:
        await asyncio.wait_for(pm.close(), 5)  # raises at once: never a hang

    with pytest.raises(WrongEventLoopError):
        asyncio.run(close_elsewhere())


async def test_close_warns_about_a_connection_never_given_back_and_can_time_out(
    shared_cluster: LocalCluster,
    manager_cls: Any,
    small_pools: dict[str, int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pgrouter.manager.CLOSE_WARNING_INTERVAL", 0.1)
    caplog.set_level(logging.WARNING, logger="pgrouter")
    pm = manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools)
    await pm.ready()
    kept = await pm.acquire_master()
    closing = asyncio.create_task(pm.close())
    await asyncio.sleep(0.35)
    assert not closing.done()
    waits = [r for r in caplog.records if "close() waits for 1 connection(s)" in r.message]
    assert len(waits) >= 2, "the warning is repeated while close() waits"
    await pm.release(kept)
    await asyncio.wait_for(closing, 5)
    assert pm.closed

    pm = manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools)
    await pm.ready()
    await pm.acquire_master()  # never given back
    await asyncio.wait_for(pm.close(timeout=0.3), 5)
    assert pm.closed
    assert any("timed out with 1 connection(s)" in r.message for r in caplog.records)


async def test_bad_pool_keywords_surface_at_the_start_not_as_an_outage(
    shared_cluster: LocalCluster, manager_cls: Any
) -> None:
    with pytest.raises(TypeError, match=r"pool_factory_kwargs.*bogus_kw"):
        async with manager_cls(shared_cluster.dsn(), pool_factory_kwargs={"bogus_kw": 1}):
            pass
    pm = manager_cls(shared_cluster.dsn(), pool_factory_kwargs={"bogus_kw": 1})
    try:
        with pytest.raises(TypeError, match="bogus_kw"):
            await pm.ready(timeout=10)
        with pytest.raises(TypeError, match="bogus_kw"):
            async with pm.acquire_master(timeout=0.5):
                pass
    finally:
        await pm.terminate()


async def test_after_close_every_call_says_closed(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    pm = manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools)
    await pm.ready()
    await pm.close()
    with pytest.raises(PoolManagerClosedError):
        await pm.ready()
    with pytest.raises(PoolManagerClosedError):
        await pm.get_pool(False)
    with pytest.raises(PoolManagerClosedError):
        pm.acquire_master()


def test_a_manager_dropped_unclosed_warns_once_naming_it(
    shared_cluster: LocalCluster, manager_cls: Any, small_pools: dict[str, int]
) -> None:
    async def forget() -> str:
        pm = manager_cls(shared_cluster.dsn(), pool_factory_kwargs=small_pools)
        await pm.ready()
        return repr(pm)

    with warnings.catch_warnings():  # managers other tests left unclosed on purpose
        warnings.simplefilter("ignore")
        gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        name = asyncio.run(forget())
        gc.collect()
    ours = [
        w
        for w in caught
        if issubclass(w.category, ResourceWarning) and "unclosed <PoolManager" in str(w.message)
    ]
    assert len(ours) == 1 and name in str(ours[0].message), [str(w.message) for w in caught]
