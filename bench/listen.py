"""listen() benchmark: notifications a second through ``pm.listen()`` against a bare listener.

On a throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and one
replica on loopback). Each round, a sender connection commits ``--batch``
notifications in one statement (``SELECT pg_notify('bench', g::text) FROM
generate_series(1, N) g``: the server delivers them all at the commit, faster
than any client reads), and the clock runs from the send until the listener
has taken the last one. Contenders, per library:

- ``bare``: the library's own listener on a connection of its own (its own channel): asyncpg
  ``add_listener()`` counting in its callback; psycopg 3 ``notifies()``
  (async, and blocking in a thread for the sync face);
- ``pgrouter``: ``pm.listen("bench")`` of ``pgrouter.asyncpg``,
  ``pgrouter.psycopg3`` and ``pgrouter.sync.psycopg`` (the blocking one
  through its monitor thread), taking :class:`~pgrouter.Notification` items.

Method: a warm-up round of each contender, then ``--rounds`` rounds in which
the two contenders of a library run back to back in an order that alternates
round by round; the ratio pgrouter/bare of notifications a second is taken per
round and its median (and quartiles) reported with the median rates. So is
the process's CPU time per notification (``time.process_time()``: every
thread, the blocking face's monitor thread included), a steadier measure than
the rate on a shared machine, and its ratio bare/pgrouter.

The blocking face's bound: its listener reads through psycopg's async
connection on the monitor's loop, so the report also sets the async psycopg
bare listener's CPU against the blocking bare one's (the best the blocking
face could do if pgrouter cost nothing), and the blocking face's CPU against
the async face's (what the hop from the monitor's thread to the consumer's
costs per notification).

    python bench/listen.py [--rounds N] [--batch N] [--quick] [--json PATH]

bench/README.md holds the figures of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
from package_versions import package_versions

import pgrouter.asyncpg
import pgrouter.psycopg3
import pgrouter.sync.psycopg
from pgrouter import Notification
from pgrouter.testing import LocalCluster

#: One channel per contender: a listener must not take (or queue) the other's notifications.
BARE, OURS = "bench_bare", "bench_pgrouter"
SEND = "SELECT count(pg_notify($2, g::text)) FROM generate_series(1, $1) g"
#: A round that takes longer than this failed (a listener lost something).
ROUND_TIMEOUT = 60.0
#: Room for a whole round's batch in the backlog, however the consumer is scheduled.
MAX_PENDING = 10_000_000


def listen(pm: Any, channel: str) -> Any:
    """``pm.listen(channel)`` with room for a round (code before max_pending: without)."""
    try:
        return pm.listen(channel, max_pending=MAX_PENDING)
    except TypeError:
        return pm.listen(channel)


#: One round's notifications a second and CPU microseconds per notification.
Contender = Callable[[int], Awaitable[tuple[float, float]]]


class Clock:
    """Wall and process CPU time of one round."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def result(self, batch: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return batch / wall, cpu / batch * 1e6


async def send(sender: asyncpg.Connection, batch: int, channel: str) -> None:
    await sender.fetchval(SEND, batch, channel)


# -- contenders: each runs one round and returns its notifications a second ----------


def bare_asyncpg(listener: asyncpg.Connection, sender: asyncpg.Connection) -> Contender:
    async def one_round(batch: int) -> tuple[float, float]:
        received = 0
        done = asyncio.Event()

        def on_notify(*_: Any) -> None:
            nonlocal received
            received += 1
            if received == batch:
                done.set()

        await listener.add_listener(BARE, on_notify)
        try:
            clock = Clock()
            await send(sender, batch, BARE)
            await asyncio.wait_for(done.wait(), ROUND_TIMEOUT)
            return clock.result(batch)
        finally:
            await listener.remove_listener(BARE, on_notify)

    return one_round


def bare_psycopg(listener: psycopg.AsyncConnection[Any], sender: asyncpg.Connection) -> Contender:
    async def one_round(batch: int) -> tuple[float, float]:
        async def take() -> None:
            received = 0
            async for _ in listener.notifies(timeout=ROUND_TIMEOUT):
                received += 1
                if received == batch:
                    return

        clock = Clock()
        await send(sender, batch, BARE)
        await asyncio.wait_for(take(), ROUND_TIMEOUT)
        return clock.result(batch)

    return one_round


def through_listen(items: Any, sender: asyncpg.Connection) -> Contender:
    async def one_round(batch: int) -> tuple[float, float]:
        async def take() -> None:
            for _ in range(batch):
                item = await items.__anext__()
                if type(item) is not Notification:  # as a consumer looks for gaps
                    raise RuntimeError(f"listen() lost notifications: {item}")

        clock = Clock()
        await send(sender, batch, OURS)
        await asyncio.wait_for(take(), ROUND_TIMEOUT)
        return clock.result(batch)

    return one_round


def in_thread(take: Callable[[int], None], sender: asyncpg.Connection, channel: str) -> Contender:
    """A blocking consumer in a thread of its own; the sender on this loop."""

    async def one_round(batch: int) -> tuple[float, float]:
        finished = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def consume() -> None:
            try:
                take(batch)
                loop.call_soon_threadsafe(finished.set_result, None)
            except BaseException as error:
                loop.call_soon_threadsafe(finished.set_exception, error)

        thread = threading.Thread(target=consume, daemon=True)
        clock = Clock()
        thread.start()
        await send(sender, batch, channel)
        await asyncio.wait_for(finished, ROUND_TIMEOUT)
        return clock.result(batch)

    return one_round


# -- the run --------------------------------------------------------------------------


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4)
    return low, mid, high


async def compare(
    name: str, bare: Contender, ours: Contender, rounds: int, batch: int
) -> dict[str, Any]:
    await bare(batch // 4)  # warm-up
    await ours(batch // 4)
    rates: dict[str, list[float]] = {"bare": [], "pgrouter": []}
    cpu: dict[str, list[float]] = {"bare": [], "pgrouter": []}
    ratios, cpu_ratios = [], []
    for number in range(rounds):
        order = [("bare", bare), ("pgrouter", ours)]
        if number % 2:
            order.reverse()
        got = {}
        for label, contender in order:
            got[label] = await contender(batch)
            rates[label].append(got[label][0])
            cpu[label].append(got[label][1])
        ratios.append(got["pgrouter"][0] / got["bare"][0])
        cpu_ratios.append(got["bare"][1] / got["pgrouter"][1])
        print(
            f"{name} round {number + 1}/{rounds}: {ratios[-1]:.2f} (CPU {cpu_ratios[-1]:.2f})",
            file=sys.stderr,
        )
    low, mid, high = quartiles(ratios)
    return {
        "library": name,
        "bare_per_s": statistics.median(rates["bare"]),
        "pgrouter_per_s": statistics.median(rates["pgrouter"]),
        "ratio": mid,
        "ratio_q1": low,
        "ratio_q3": high,
        "bare_cpu_us": statistics.median(cpu["bare"]),
        "pgrouter_cpu_us": statistics.median(cpu["pgrouter"]),
        "cpu_ratio": statistics.median(cpu_ratios),
    }


async def main(rounds: int, batch: int) -> list[dict[str, Any]]:
    results = []
    with LocalCluster(replicas=1) as cluster:
        dsn, primary = cluster.dsn(), cluster.primary.dsn()
        sender = await asyncpg.connect(primary)
        try:
            bare_listener = await asyncpg.connect(primary)
            async with pgrouter.asyncpg.PoolManager(dsn) as pm:
                await pm.ready(timeout=30)
                async with listen(pm, OURS) as items:
                    results.append(
                        await compare(
                            "asyncpg",
                            bare_asyncpg(bare_listener, sender),
                            through_listen(items, sender),
                            rounds,
                            batch,
                        )
                    )
            await bare_listener.close()

            plain = await psycopg.AsyncConnection.connect(primary, autocommit=True)
            await plain.execute(f"LISTEN {BARE}")
            async with pgrouter.psycopg3.PoolManager(dsn) as pm:
                await pm.ready(timeout=30)
                async with listen(pm, OURS) as items:
                    results.append(
                        await compare(
                            "psycopg",
                            bare_psycopg(plain, sender),
                            through_listen(items, sender),
                            rounds,
                            batch,
                        )
                    )
            await plain.close()

            blocking = psycopg.connect(primary, autocommit=True)
            blocking.execute(f"LISTEN {BARE}")

            def take_bare(count: int) -> None:
                for received, _ in enumerate(blocking.notifies(timeout=ROUND_TIMEOUT), 1):
                    if received == count:
                        return
                raise TimeoutError("the bare blocking listener missed notifications")

            with pgrouter.sync.psycopg.PoolManager(dsn) as sync_pm:
                sync_pm.ready(timeout=30)
                with listen(sync_pm, OURS) as sync_items:

                    def take_ours(count: int) -> None:
                        for _ in range(count):
                            item = sync_items.get(ROUND_TIMEOUT)
                            if type(item) is not Notification:
                                raise RuntimeError(f"listen() lost notifications: {item}")

                    results.append(
                        await compare(
                            "sync psycopg",
                            in_thread(take_bare, sender, BARE),
                            in_thread(take_ours, sender, OURS),
                            rounds,
                            batch,
                        )
                    )
            blocking.close()
        finally:
            await sender.close()
    return results


def report(results: list[dict[str, Any]], rounds: int, batch: int) -> None:
    print(f"# listen(): {rounds} rounds of {batch} notifications ({platform.python_version()})")
    print(
        "| library | bare / s | pgrouter listen() / s | ratio (q1-q3) |"
        " CPU µs/notification bare, pgrouter | CPU ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in results:
        print(
            f"| {row['library']} | {row['bare_per_s']:,.0f} | {row['pgrouter_per_s']:,.0f} |"
            f" {row['ratio']:.2f}x ({row['ratio_q1']:.2f}-{row['ratio_q3']:.2f}) |"
            f" {row['bare_cpu_us']:.2f}, {row['pgrouter_cpu_us']:.2f} |"
            f" {row['cpu_ratio']:.2f}x |"
        )
    rows = {row["library"]: row for row in results}
    if {"psycopg", "sync psycopg"} <= rows.keys():
        reader, blocking = rows["psycopg"], rows["sync psycopg"]
        print(
            f"\nblocking face: its reader (async psycopg, bare) {reader['bare_cpu_us']:.2f} µs"
            f" against the blocking bare listener's {blocking['bare_cpu_us']:.2f}: at best"
            f" {blocking['bare_cpu_us'] / reader['bare_cpu_us']:.2f}x of CPU; the hop to the"
            f" consumer's thread {blocking['pgrouter_cpu_us'] - reader['pgrouter_cpu_us']:+.2f} µs"
            " (blocking listen() minus async psycopg listen())"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20 000")
    parser.add_argument("--json", help="also write the results and versions to this file")
    options = parser.parse_args()
    if options.quick:
        options.rounds, options.batch = 3, 20_000
    figures = asyncio.run(main(options.rounds, options.batch))
    report(figures, options.rounds, options.batch)
    if options.json:
        with open(options.json, "w") as out:
            json.dump({"results": figures, "versions": package_versions()}, out, indent=1)
