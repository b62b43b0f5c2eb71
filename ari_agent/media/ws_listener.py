"""The agent's chan_websocket listener (``connection_type=client``): Asterisk connects out to it.

ExternalMedia with ``connection_type=client`` and ``external_host`` = a
``websocket_client.conf`` section makes Asterisk open a WebSocket to that
section's ``uri`` once per call. Seen on Asterisk 22.10.1: it connects to the
URI exactly as configured (nothing per call appended), offers the ``media``
subprotocol, connects after the ExternalMedia request has returned and
answers the channel once connected; its first message is ``MEDIA_START``,
whose ``connection_id`` is the section's name (the same for every call) and
whose ``channel_id`` is the channel id the agent chose in the request. So a
leg waits here under its media channel's id and the connection whose
MEDIA_START names it is handed to it; anything else is closed.

With a certificate (``listener_tls``) the port serves ``wss://`` only; Asterisk
verifies it when websocket_client.conf says ``tls_enabled = yes`` (the uri's
scheme alone does not turn TLS on in 22.10.1) and trusts its CA (``ca_list_file``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from ari_agent.errors import MediaError
from ari_agent.media import wsmedia
from ari_agent.media.websocket_leg import WebSocketLeg, read_start

log = logging.getLogger(__name__)

SUBPROTOCOL = "media"
# Why a connection was refused before it carried a call (metric labels).
REJECT_NO_START = "no_media_start"  # the first message was not MEDIA_START
REJECT_UNKNOWN = "unknown_channel"  # no call waits for MEDIA_START's channel_id
REJECT_TAKEN = "taken"  # the call has its connection already
REJECT_FORMAT = "format"  # the channel's format or frame size is not the call's
REJECT_TIMEOUT = "timeout"
REJECT_AUTH = "auth"  # the configured username and password were not presented


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a connection goes: to ``leg`` (with its MEDIA_START), or refused for ``reason``."""

    leg: WebSocketLeg | None
    reason: str = ""
    start: wsmedia.MediaStart | None = None


def route(first: aiohttp.WSMessage, waiting: dict[str, WebSocketLeg]) -> Routed:
    """The leg a new connection's first message names, or why it is refused (no I/O)."""
    try:
        start = read_start(first)
    except wsmedia.WebSocketMediaError:
        return Routed(None, REJECT_NO_START)
    leg = waiting.get(start.channel_id)
    if leg is None:
        return Routed(None, REJECT_UNKNOWN)
    if leg.start is not None or leg.closed:
        return Routed(None, REJECT_TAKEN)
    try:
        leg.check_start(start)
    except wsmedia.WebSocketMediaError:
        return Routed(None, REJECT_FORMAT)
    return Routed(leg, start=start)


def authorized(header: str, credentials: tuple[str, str]) -> bool:
    """True when ``header`` (an Authorization value) is HTTP Basic with exactly these credentials."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return False
    expected = f"{credentials[0]}:{credentials[1]}".encode()
    return hmac.compare_digest(given, expected)


class WebSocketMediaServer:
    """One aiohttp listener for every call's chan_websocket connection; legs wait on it by channel id."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        hello_timeout: float = 5.0,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self._credentials = credentials
        # With a context the port speaks TLS only: a plain connection fails its handshake.
        self._ssl = ssl_context
        self.port = port
        self.hello_timeout = hello_timeout
        self.rejected: dict[str, int] = {}
        self.on_reject: Callable[[str], None] | None = None
        self._legs: dict[str, WebSocketLeg] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        # At stop the calls have ended (or been handed back): a connection still open then is
        # not worth waiting aiohttp's default minute for.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True, ssl_context=self._ssl)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise MediaError(f"cannot listen for chan_websocket on {self.host}:{self.port}: {exc}") from exc
        self._runner = runner
        if self.port == 0:
            server = site._server  # aiohttp exposes the bound port nowhere else
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    @property
    def scheme(self) -> str:
        return "ws" if self._ssl is None else "wss"

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def expect(self, channel_id: str, leg: WebSocketLeg) -> None:
        """``leg`` takes the connection whose MEDIA_START says ``channel_id``."""
        self._legs[channel_id] = leg
        leg.on_close = lambda closed: self.forget(channel_id, closed)

    def forget(self, channel_id: str, leg: WebSocketLeg) -> None:
        if self._legs.get(channel_id) is leg:
            del self._legs[channel_id]

    @property
    def waiting(self) -> int:
        return len(self._legs)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self.on_reject is not None:
            self.on_reject(reason)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._credentials is not None and not authorized(
            request.headers.get(aiohttp.hdrs.AUTHORIZATION, ""), self._credentials
        ):
            self.reject(REJECT_AUTH)
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="ari-agent media"'})
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), autoping=True, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            self.reject(REJECT_NO_START)
            return web.Response(status=426, text="a chan_websocket media connection is expected here\n")
        await ws.prepare(request)
        try:
            async with asyncio.timeout(self.hello_timeout):
                first = await ws.receive()
        except TimeoutError:
            self.reject(REJECT_TIMEOUT)
            await ws.close()
            return ws
        routed = route(first, self._legs)
        leg, start = routed.leg, routed.start
        if leg is None or start is None or not leg.attach(ws, start):
            self.reject(routed.reason or REJECT_TAKEN)
            with contextlib.suppress(Exception):
                await ws.close()
            return ws
        await leg.served()
        with contextlib.suppress(Exception):
            await ws.close()
        return ws
