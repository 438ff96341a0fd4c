"""release_bound.py: a release still running past its bound has its connection aborted."""

from __future__ import annotations

import asyncio

from pgrouter.release_bound import ReleaseBound


async def test_a_release_that_ends_in_time_is_never_aborted() -> None:
    aborted: list[str] = []
    bound = ReleaseBound(0.02, aborted.append)
    token = bound.begin("conn")
    bound.end(token)
    await asyncio.sleep(0.05)
    assert aborted == [] and len(bound) == 0


async def test_overdue_releases_are_aborted_oldest_first_and_only_they() -> None:
    aborted: list[str] = []
    bound = ReleaseBound(0.05, aborted.append)
    bound.begin("stuck 1")
    bound.begin("stuck 2")
    bound.end(bound.begin("ends in time"))
    await asyncio.sleep(0.03)
    late = bound.begin("started later")
    await asyncio.sleep(0.04)  # the first two are due, the last one is not yet
    assert aborted == ["stuck 1", "stuck 2"]
    bound.end(late)
    await asyncio.sleep(0.05)
    assert aborted == ["stuck 1", "stuck 2"]
    assert len(bound) == 0


async def test_close_drops_the_timer_and_what_it_watched() -> None:
    aborted: list[str] = []
    bound = ReleaseBound(0.01, aborted.append)
    bound.begin("conn")
    bound.close()
    await asyncio.sleep(0.03)
    assert aborted == [] and len(bound) == 0


async def test_abort_host_aborts_that_hosts_releases_at_once_bound_or_not() -> None:
    for limit in (None, 10.0):
        aborted: list[str] = []
        bound = ReleaseBound(limit, aborted.append)
        bound.begin("on 1", 1)
        kept = bound.begin("on 2", 2)
        bound.begin("on 1 too", 1)
        assert bound.abort_host(1) == 2
        assert aborted == ["on 1", "on 1 too"] and len(bound) == 1
        bound.end(kept)
        assert len(bound) == 0
        bound.close()
