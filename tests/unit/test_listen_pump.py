"""ListenPump's decisions, on a real TopologyBoard with a fake listening connection.

What a real cluster cannot isolate: a connection that stops answering while
the monitor still sees its host as the primary (the liveness NOTIFY alone must
notice), the board turning the host away (the connection is cut at once), and
the order of items (a gap first, then the new connection's notifications).
The real-cluster behaviour is in tests/integration/test_listen.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from pgrouter import ListenGap, NoHostAvailableError, Notification
from pgrouter.driver import ListenConnection
from pgrouter.dsn import HostDsn, split_dsn
from pgrouter.interactions.listen import Listener, ListenItem, ListenPump
from pgrouter.interactions.listen_backlog import Backlog, Ending
from pgrouter.topology import HostRole, TopologyBoard


class FakeMonitor:
    def __init__(self, board: TopologyBoard) -> None:
        self.board = board
        self.checks: list[int] = []
        self.work: list[int] = []

    def request_check(self, index: int) -> None:
        self.checks.append(index)

    def work_started(self, index: int) -> None:
        self.work.append(index)


class FakeConnection(ListenConnection):
    """Answers its liveness NOTIFYs (echoes them) unless ``frozen``; ``abort()`` breaks it."""

    def __init__(self, dsn: HostDsn, frozen: bool = False) -> None:
        self.dsn = dsn
        self.frozen = frozen
        self.channels: list[str] = []
        self.inbox: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        self.broken = asyncio.Event()
        self.aborted = False
        self.unlistened = False

    async def listen(self, channel: str) -> None:
        self.channels.append(channel)

    async def unlisten_all(self) -> None:
        self.unlistened = True

    async def notify(self, channel: str, payload: str) -> None:
        if self.frozen:
            await self.broken.wait()  # hangs until cut, like a frozen server
            raise ConnectionError("cut")
        self.inbox.put_nowait((channel, payload, 1))

    async def receive(self, timeout: float) -> list[tuple[str, str, int]]:
        getter = asyncio.ensure_future(self.inbox.get())
        breaker = asyncio.ensure_future(self.broken.wait())
        try:
            await asyncio.wait(
                {getter, breaker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            breaker.cancel()
        if getter.done():
            batch = [getter.result()]
            while not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            return batch
        getter.cancel()
        if self.broken.is_set():
            raise ConnectionError("the connection was cut")
        return []

    def abort(self) -> None:
        self.aborted = True
        self.broken.set()

    async def close(self) -> None:
        self.broken.set()


def primary(board: TopologyBoard, index: int) -> None:
    for host in board.current:
        role = HostRole.PRIMARY if host.index == index else HostRole.REPLICA
        board.publish(
            replace(host, role=role, healthy=True, check_count=host.check_count + 1, timeline=1)
        )


async def pump_with(
    frozen_first: bool, ping_timeout: float = 0.3
) -> tuple[ListenPump, TopologyBoard, list[FakeConnection], asyncio.Queue[Any]]:
    board = TopologyBoard(split_dsn("postgresql://u@h1:5432,h2:5432/db"))
    primary(board, 0)
    connections: list[FakeConnection] = []

    async def connect(dsn: HostDsn, timeout: float) -> ListenConnection:
        connection = FakeConnection(dsn, frozen=frozen_first and not connections)
        connections.append(connection)
        return connection

    items: asyncio.Queue[ListenItem | BaseException | None] = asyncio.Queue()

    def wake() -> None:  # the backlog's items, moved to a queue the test awaits
        while backlog.items:
            item = backlog.items.popleft()
            if isinstance(item, Ending):
                items.put_nowait(item.error)
            else:
                items.put_nowait(item if isinstance(item, ListenGap) else Notification(*item))

    backlog = Backlog(10_000, wake)
    pump = ListenPump(
        FakeMonitor(board),  # type: ignore[arg-type]
        connect,
        ("jobs",),
        backlog,
        ping_interval=0.05,
        ping_timeout=ping_timeout,
    )
    pump.start()
    await asyncio.wait_for(pump.listening.wait(), 5)
    return pump, board, connections, items


async def test_an_unanswered_liveness_notify_alone_ends_the_connection() -> None:
    pump, _, connections, items = await pump_with(frozen_first=True)
    try:
        gap = await asyncio.wait_for(items.get(), 5)
        assert isinstance(gap, ListenGap)
        assert "no answer to the liveness NOTIFY within 0.3 s" in gap.reason
        assert gap.since <= gap.until
        assert connections[0].aborted  # cut, not left hanging
        assert len(connections) == 2 and connections[1].channels[0] == "jobs"
        # The new connection delivers; a private-channel echo never reaches the consumer.
        connections[1].inbox.put_nowait(("jobs", "after", 7))
        assert await asyncio.wait_for(items.get(), 5) == Notification("jobs", "after", 7)
    finally:
        await pump.stop()
    assert connections[1].unlistened  # stop() UNLISTENs the live connection
    assert await items.get() is None  # and the consumer sees the end


async def test_the_board_turning_the_host_away_cuts_the_connection_at_once() -> None:
    pump, board, connections, items = await pump_with(frozen_first=False, ping_timeout=30)
    try:
        connections[0].inbox.put_nowait(("jobs", "one", 1))
        assert await asyncio.wait_for(items.get(), 5) == Notification("jobs", "one", 1)
        primary(board, 1)  # a failover: host 1 is the primary now
        gap = await asyncio.wait_for(items.get(), 5)
        assert isinstance(gap, ListenGap) and "no longer the primary" in gap.reason, gap
        assert connections[0].aborted
        assert connections[1].dsn.address == board.current.hosts[1].address
    finally:
        await pump.stop()


@pytest.mark.parametrize("count", [1, 500])
async def test_items_keep_their_order(count: int) -> None:
    pump, _, connections, items = await pump_with(frozen_first=False, ping_timeout=30)
    try:
        for number in range(count):
            connections[0].inbox.put_nowait(("jobs", str(number), 1))
        got = [await asyncio.wait_for(items.get(), 5) for _ in range(count)]
        assert [item.payload for item in got] == [str(n) for n in range(count)]
    finally:
        await pump.stop()


async def test_no_primary_at_the_start_is_a_bounded_error_naming_hosts_not_the_password() -> None:
    import pgrouter.asyncpg

    pm = pgrouter.asyncpg.PoolManager(
        "postgresql://app:hunter2secret@127.0.0.1:1,127.0.0.1:2/db", acquire_timeout=0.1
    )
    try:
        with pytest.raises(NoHostAvailableError, match=r"127\.0\.0\.1:2") as caught:
            async with pm.listen("jobs"):
                pass
        assert "hunter2secret" not in str(caught.value)
        assert "within 3.1 s" in str(caught.value)
    finally:
        await pm.close()


async def test_the_listener_hands_out_a_batch_in_order_and_a_cancelled_consumer_costs_no_item() -> (
    None
):
    board = TopologyBoard(split_dsn("postgresql://u@h1:5432,h2:5432/db"))
    primary(board, 0)
    connections: list[FakeConnection] = []

    async def connect(dsn: HostDsn, timeout: float) -> ListenConnection:
        connections.append(FakeConnection(dsn))
        return connections[-1]

    listener = Listener(FakeMonitor(board), connect, ("jobs",))  # type: ignore[arg-type]
    try:
        await listener.ready(5)
        cancelled = asyncio.ensure_future(listener.__anext__())
        waiting = asyncio.ensure_future(listener.__anext__())
        await asyncio.sleep(0.01)  # both wait on the one wake-up
        cancelled.cancel()
        for number in range(3):
            connections[0].inbox.put_nowait(("jobs", str(number), 7))
        assert await asyncio.wait_for(waiting, 5) == Notification("jobs", "0", 7)
        assert cancelled.cancelled()
        rest = [await asyncio.wait_for(listener.__anext__(), 5) for _ in range(2)]
        assert rest == [Notification("jobs", "1", 7), Notification("jobs", "2", 7)]
        assert type(rest[0]) is Notification and listener.received == 3
    finally:
        await listener.aclose()
    with pytest.raises(StopAsyncIteration):
        await listener.__anext__()


# -- the backlog's bound (Backlog alone: the real-cluster side is in test_listen.py) --


def test_a_full_backlog_is_dropped_for_one_gap_and_what_follows_is_kept() -> None:
    start = time.time()
    wakes: list[int] = []
    backlog = Backlog(5, lambda: wakes.append(len(backlog.items)))
    backlog.put([("jobs", "0", 1), ("jobs", "1", 1)], now=start + 100)
    backlog.items.popleft()  # the consumer takes one, then falls behind
    backlog.put([("jobs", str(n), 1) for n in range(2, 5)], now=start + 101)
    backlog.put([("jobs", "5", 1), ("jobs", "6", 1)], now=start + 102)  # 4 + 2 > 5
    backlog.put([("jobs", "7", 1)], now=start + 103)
    gap, after = list(backlog.items)
    assert isinstance(gap, ListenGap) and gap.reason.startswith("consumer too slow")
    assert "6 notifications pending, max_pending=5" in gap.reason
    # The consumer had taken all that arrived by the creation of the backlog,
    # not all of the first batch: since is no later than that.
    assert start <= gap.since < start + 100 and gap.until == start + 102
    assert after == ("jobs", "7", 1)
    assert (backlog.received, backlog.dropped) == (8, 6)
    assert wakes == [2, 4, 1, 2]  # one wake-up per batch


def test_a_dropped_reconnect_gap_keeps_its_since_and_reason() -> None:
    start = time.time()
    backlog = Backlog(3, lambda: None)
    backlog.put([("jobs", "0", 1)], now=start + 100)
    backlog.items.clear()  # taken
    backlog.put([("jobs", "1", 1)], now=start + 200)
    backlog.put_gap(ListenGap(start + 150, start + 201, "h1:5432: connection lost"))
    backlog.put([("jobs", "2", 1), ("jobs", "3", 1)], now=start + 202)
    (gap,) = backlog.items
    assert isinstance(gap, ListenGap)
    assert gap.since == start + 100 and gap.until == start + 202  # the older of the two
    assert "(after a gap: h1:5432: connection lost)" in gap.reason
    assert backlog.dropped == 3
    backlog.items.clear()
    backlog.put([("jobs", "4", 1)], now=start + 300)  # caught up: a fresh start
    assert list(backlog.items) == [("jobs", "4", 1)]


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (True, TypeError), (1.5, TypeError)])
def test_max_pending_is_checked_by_name(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_pending"):
        Backlog(bad, lambda: None)  # type: ignore[arg-type]
