"""A fault-injecting TCP proxy between the manager and one test server.

:class:`FaultProxy` listens on a free loopback port and forwards every
connection to its node. Its mode is switched at run time, from any thread:

- :meth:`FaultProxy.pass_through`: forward as is;
- :meth:`FaultProxy.add_latency`: delay every chunk, in both directions;
- :meth:`FaultProxy.blackhole`: keep (and accept) connections but forward
  nothing, like a network that drops packets. Data held back is delivered
  when the mode changes again, as TCP would retransmit it;
- :meth:`FaultProxy.reset`: close every connection with an RST (``SO_LINGER``
  0) and reset new ones, until the next :meth:`~FaultProxy.pass_through`.

The proxy runs its own event loop in a background thread, so it keeps
working whatever the test's loop does (blocked in a subprocess call, say).
:class:`ProxiedCluster` puts one proxy in front of each node of a
:class:`~pgrouter.testing.cluster.LocalCluster` and builds the multi-host DSN
through them. Standard library only, like the rest of the harness.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import socket
import struct
import threading
import urllib.parse
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar

from pgrouter.testing.cluster import HOST, SUPERUSER, LocalCluster, Node

__all__ = ["FaultProxy", "ProxiedCluster", "ProxyMode"]

T = TypeVar("T")

_CHUNK = 65536
#: Seconds a mode switch may take before the caller gets an error.
_SWITCH_TIMEOUT = 10.0


class ProxyMode(enum.Enum):
    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    """Close now, with an RST instead of a FIN: SO_LINGER on, timeout 0."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: the client's side and, once connected, the node's."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def abort(self, *, cancel: bool = True) -> None:
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)
        if cancel and self.task is not None:
            self.task.cancel()


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults on demand."""

    def __init__(self, target_host: str, target_port: int, *, name: str = "proxy") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.name = name
        self._mode = ProxyMode.PASS
        self._latency = 0.0
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None  # set unless blackholed; loop-bound
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"pgrouter-{name}", daemon=True
        )
        self._thread.start()
        try:
            self.port: int = self._call(self._listen())
        except BaseException:
            self._stop_loop()
            raise

    def __repr__(self) -> str:
        return (
            f"<FaultProxy {self.name} {HOST}:{self.port} -> "
            f"{self.target_host}:{self.target_port} {self._mode.value}>"
        )

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- switching modes (any thread but the proxy's own) ---

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @property
    def connection_count(self) -> int:
        """Connections currently proxied (or held, when blackholed)."""
        return len(self._links)

    def pass_through(self) -> None:
        """Forward everything as is; releases what a blackhole held back."""
        self._call(self._switch(ProxyMode.PASS, 0.0))

    def add_latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds``, in both directions (chunks keep their order)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, got {seconds!r}")
        self._call(self._switch(ProxyMode.LATENCY, seconds))

    def blackhole(self) -> None:
        """Accept and keep connections, forward nothing, answer nothing."""
        self._call(self._switch(ProxyMode.BLACKHOLE, 0.0))

    def reset(self) -> None:
        """RST every current connection and every new one until :meth:`pass_through`."""
        self._call(self._switch(ProxyMode.RESET, 0.0))

    def close(self) -> None:
        """Stop listening, RST every connection, stop the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._stop_loop()

    # --- the proxy's loop ---

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self._thread.ident:
            coroutine.close()
            raise RuntimeError("FaultProxy methods cannot be called from the proxy's own thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(_SWITCH_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RuntimeError(f"{self!r} did not answer within {_SWITCH_TIMEOUT} s") from None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_SWITCH_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    async def _listen(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _switch(self, mode: ProxyMode, latency: float) -> None:
        assert self._flowing is not None
        self._mode, self._latency = mode, latency
        if mode is ProxyMode.RESET:
            for link in list(self._links):
                link.abort()
            self._links.clear()
        if mode is ProxyMode.BLACKHOLE:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            link.abort()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        # Whatever is still running (a pump stuck on a blackholed link, say) ends
        # here, while the loop still runs: a task left for the garbage collector
        # would run its clean-up on a closed loop.
        stragglers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in stragglers:
            task.cancel()
        if stragglers:
            await asyncio.wait(stragglers, timeout=1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode is ProxyMode.RESET:
            _abort_with_rst(writer)
            return
        link = _Link(writer)
        link.task = asyncio.current_task()
        self._links.add(link)
        try:
            await self._serve(link, reader)
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            self._links.discard(link)
            link.abort(cancel=False)

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        # Blackholed: the client's connect succeeds, nothing reaches the node.
        await self._flowing.wait()
        upstream_reader, link.upstream = await asyncio.open_connection(
            self.target_host, self.target_port
        )
        pumps = [
            asyncio.create_task(self._pump(client_reader, link.upstream)),
            asyncio.create_task(self._pump(upstream_reader, link.client)),
        ]
        try:
            # Either side closing ends the link (PostgreSQL connections are not half-closed).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; each chunk waits out the latency it was read under."""
        assert self._flowing is not None
        loop = asyncio.get_running_loop()
        # Reading goes on while writing waits, so latency delays but does not throttle.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read_all() -> None:
            try:
                while data := await reader.read(_CHUNK):
                    queue.put_nowait((loop.time() + self._latency, data))
            except OSError:
                pass
            queue.put_nowait((loop.time() + self._latency, b""))

        reading = asyncio.create_task(read_all())
        try:
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


class ProxiedCluster:
    """One :class:`FaultProxy` in front of each node of ``cluster``.

    The proxies point at the nodes' ports as they are when this is built.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.proxies: list[FaultProxy] = []
        try:
            for node in cluster.nodes:
                self.proxies.append(FaultProxy(node.host, node.port, name=f"proxy-{node.name}"))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ProxiedCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def proxy(self, node: Node) -> FaultProxy:
        """The proxy in front of ``node``."""
        return self.proxies[self.cluster.nodes.index(node)]

    def node(self, proxy_port: int) -> Node:
        """The node behind the proxy listening on ``proxy_port``."""
        for node, proxy in zip(self.cluster.nodes, self.proxies):
            if proxy.port == proxy_port:
                return node
        raise KeyError(f"no proxy listens on port {proxy_port}")

    def dsn(
        self,
        user: str = SUPERUSER,
        password: str | None = None,
        dbname: str = "postgres",
        query: Mapping[str, str] | None = None,
    ) -> str:
        """The multi-host URL of every node, each through its proxy."""
        credentials = urllib.parse.quote(user, safe="")
        if password is not None:
            credentials += ":" + urllib.parse.quote(password, safe="")
        hosts = ",".join(f"{HOST}:{proxy.port}" for proxy in self.proxies)
        url = f"postgresql://{credentials}@{hosts}/{urllib.parse.quote(dbname, safe='')}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def pass_through_all(self) -> None:
        for proxy in self.proxies:
            proxy.pass_through()

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
