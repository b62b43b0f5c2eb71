"""Run an aiohttp fake server on loopback, in the test's loop or in a thread of its own.

Unit tests (async) use ``serve(app)``: the server shares the test's loop.
Integration tests are synchronous and the agent runs in another process, so
they use ``serve_in_thread(app_factory)``: the server gets a thread and an
event loop of its own and lives as long as the ``with`` block::

    with serve_in_thread(lambda: fake.app()) as url:   # "http://127.0.0.1:PORT"
        ...

The factory is called inside the server's loop (an aiohttp Application
should be built in the loop that runs it). State a test wants to inspect
belongs to an object the factory closes over; keep it to simple appends and
reads, which are safe across threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from aiohttp import web

AppFactory = Callable[[], web.Application | Awaitable[web.Application]]


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    # No graceful-shutdown wait: a test's fake must stop at once, even with sockets open.
    runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` in the running loop; yields its base URL (port 0: a free port)."""
    runner, url = await _start(app, host, port)
    try:
        yield url
    finally:
        await runner.cleanup()


class ServerThread:
    """One fake server in a daemon thread with its own event loop."""

    def __init__(self, app_factory: AppFactory, host: str = "127.0.0.1", port: int = 0) -> None:
        self._factory = app_factory
        self._host = host
        self._port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fake-server", daemon=True)
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fake server did not start")
        if self._error is not None:
            raise RuntimeError(f"fake server failed to start: {self._error!r}") from self._error
        return self.url

    def call(self, fn: Callable[[], Awaitable[object]], timeout: float = 10.0) -> object:
        """Run a coroutine function in the server's loop (e.g. to push an event to a socket)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_await(fn), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        made = self._factory()
        app = made if isinstance(made, web.Application) else await made
        runner, self.url = await _start(app, self._host, self._port)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


async def _await(fn: Callable[[], Awaitable[object]]) -> object:
    return await fn()


@contextmanager
def serve_in_thread(app_factory: AppFactory, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the factory's app in a background thread; yields its base URL."""
    server = ServerThread(app_factory, host, port)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
