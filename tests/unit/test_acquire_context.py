"""AcquireContext: awaitable and async context manager, with no coroutine of its own."""

from __future__ import annotations

import pytest

from pgrouter.acquire import AcquireContext


class Recorder:
    """Stands in for the manager: hands out numbered connections, records releases."""

    def __init__(self) -> None:
        self.handed_out = 0
        self.released: list[tuple[object, BaseException | None, bool]] = []

    async def acquire(self, context: AcquireContext[int] | None) -> int:
        self.handed_out += 1
        if context is not None:
            context.connection = self.handed_out
        return self.handed_out

    async def release(
        self, connection: object, error: BaseException | None, block_exit: bool
    ) -> None:
        self.released.append((connection, error, block_exit))

    def context(self) -> AcquireContext[int]:
        return AcquireContext(self.acquire, self.release)


async def test_async_with_releases_the_connection_it_entered_with() -> None:
    manager = Recorder()
    async with manager.context() as first, manager.context() as second:
        assert (first, second) == (1, 2)
    assert manager.released == [(2, None, True), (1, None, True)]


async def test_the_error_that_ended_the_body_reaches_the_release() -> None:
    manager = Recorder()
    with pytest.raises(KeyError):
        async with manager.context():
            raise KeyError("boom")
    [(connection, error, block_exit)] = manager.released
    assert connection == 1 and isinstance(error, KeyError) and block_exit


async def test_await_style_leaves_the_release_to_the_caller() -> None:
    manager = Recorder()
    context = manager.context()
    assert await context == 1
    assert context.connection is None
    assert manager.released == []


async def test_a_context_cannot_be_entered_twice_at_once() -> None:
    manager = Recorder()
    context = manager.context()
    async with context:
        with pytest.raises(RuntimeError, match="already in use"):
            await context.__aenter__()
    async with context as again:  # once left, it can be entered again
        assert again == 2
