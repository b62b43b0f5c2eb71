"""The console's access rules without a token: read-only on loopback, absent elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from ari_agent.observability.console import Action
from ari_agent.observability.http import make_http_app
from ari_agent.observability.metrics import Metrics


class Source:
    """A console source over plain lists: the HTTP layer under test is real."""

    instance = "agent-1"

    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []
        self.audited: list[tuple[str, dict[str, Any]]] = []

    def live_calls(self) -> list[dict[str, Any]]:
        return [{"call_id": "c1", "profile": "frontdesk", "state": "listening", "turns": []}]

    async def recent_calls(self, *, day: date | None, outcome: str | None) -> list[dict[str, Any]]:
        return [{"call_id": "old-call-<b>", "end_reason": "hangup_by_caller", "turns": 2}]

    async def stored_call(self, call_id: str) -> dict[str, Any] | None:
        return None

    def provider_health(self) -> dict[str, str]:
        return {}

    async def operator_action(self, call_id: str, action: Action) -> bool:
        self.actions.append((call_id, action))
        return True

    async def audit(self, action: str, **details: Any) -> None:
        self.audited.append((action, details))


async def _client(host: str, source: Source) -> TestClient:  # type: ignore[type-arg]
    app = make_http_app(Metrics(), lambda: True, lambda: [], token="", host=host, console=source)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_no_token_on_loopback_is_read_only() -> None:
    source = Source()
    client = await _client("127.0.0.1", source)
    try:
        page = await client.get("/")
        text = await page.text()
        assert page.status == 200 and "read-only" in text and 'name="token"' not in text
        # Server-rendered values are escaped.
        assert "old-call-&lt;b&gt;" in text and "old-call-<b>" not in text
        assert page.headers["X-Frame-Options"] == "DENY"
        assert (await client.get("/console/recent")).status == 200
        origin = {"Origin": str(client.make_url("")).rstrip("/")}
        refused = await client.post("/console/calls/c1/hangup", headers=origin)
        assert refused.status == 403
        login = await client.post("/console/login", data={"token": ""}, headers=origin)
        assert login.status == 403
        assert source.actions == []
    finally:
        await client.close()


async def test_no_token_off_loopback_has_no_console() -> None:
    client = await _client("0.0.0.0", Source())
    try:
        for path in ("/", "/console/events", "/console/recent"):
            assert (await client.get(path)).status == 404, path
    finally:
        await client.close()


async def test_an_open_event_stream_does_not_hold_up_shutdown() -> None:
    """The feed never ends by itself: stopping the server must end it, not wait out aiohttp's
    shutdown timeout (60 s) for it."""
    import aiohttp

    from ari_agent.observability.http import HttpServer

    app = make_http_app(Metrics(), lambda: True, lambda: [], token="", host="127.0.0.1", console=Source())
    server = HttpServer(app, "127.0.0.1", 0, idle_timeout=5, max_connections=4)
    await server.start()
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        stream = await session.get(f"http://127.0.0.1:{port}/console/events")
        assert (await stream.content.readline()).startswith(b"data: ")
        await asyncio.wait_for(server.stop(), 20)
        # The stream was ended by the server (cut mid-chunk, as it never ends by itself), not
        # left open: reading it to the end returns or fails at once, never times out.
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await asyncio.wait_for(stream.content.read(), 5)
