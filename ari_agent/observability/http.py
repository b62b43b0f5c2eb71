"""Health, readiness, metrics and the active-call list over HTTP.

``/healthz`` and ``/readyz`` are always open (probes carry no secrets).
``/metrics`` and ``/calls`` need ``Authorization: Bearer <token>`` when a
token is set: ``AGENT_HTTP__TOKEN`` (or the older ``AGENT_HTTP_TOKEN``), a
file named by ``AGENT_HTTP__TOKEN_FILE`` (or ``AGENT_HTTP_TOKEN_FILE``), or
``/run/secrets/agent_http_token``. A token file that is named but missing,
unreadable or empty is an error, never "no token". The server binds
127.0.0.1 by default; bound anywhere else without a token, it says so in the
log once. Connections are capped and idle ones closed (:class:`HttpServer`).
The live console (``/`` and ``/console/...``, :mod:`ari_agent.observability.console`) checks
its own login: a cookie set with the same token, or the bearer header.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ari_agent.config import HttpSettings
from ari_agent.observability.console import ConsoleSource, add_console, is_console_path
from ari_agent.observability.metrics import Metrics
from ari_agent.secretfile import read_secret

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "AGENT_HTTP__TOKEN"
# Before the settings had it, the token was AGENT_HTTP_TOKEN: still read, no longer documented.
_TOKEN_NAMES = (TOKEN_VARIABLE, "AGENT_HTTP_TOKEN")
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


INSTANCE_HEADER = "X-Agent-Instance"


def http_token(settings: HttpSettings | None = None) -> str | None:
    """The bearer token (see the module doc); None if none is configured.

    Raises ConfigError when a token file is named but gives no token.
    """
    conf = settings or HttpSettings()
    return read_secret(
        "http.token",
        conf.token.get_secret_value() if conf.token else None,
        conf.token_file,
        env_names=_TOKEN_NAMES,
        secrets_name="agent_http_token",
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """One log line's worth of warning when /metrics and /calls are reachable off this host unguarded."""
    if token or is_loopback(host):
        return None
    return (
        f"HTTP on {host}: /metrics and /calls (call ids, channels) are open to the network; "
        f"set {TOKEN_VARIABLE} or bind AGENT_HTTP__HOST to 127.0.0.1"
    )


def _token_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The console checks its own login (a cookie, or this same bearer token).
        if request.path in OPEN_PATHS or is_console_path(request.path):
            return await handler(request)
        # aiohttp keeps undecodable header bytes as surrogates: give them back as bytes so
        # a garbage header is a 401 like any wrong one, not a 500 with a traceback.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="ari-agent"'},
            )
        return await handler(request)

    return check


def make_http_app(
    metrics: Metrics,
    is_ready: Callable[[], bool],
    active_calls: Callable[[], Sequence[dict[str, Any]]],
    *,
    token: str | None = None,
    host: str | None = None,
    instance: str | None = None,
    console: ConsoleSource | None = None,
) -> web.Application:
    """``token`` None reads it from the environment (see module doc); ``host`` only for the warning;
    ``instance`` (AGENT_INSTANCE_ID) answers ``/calls`` in the ``X-Agent-Instance`` header, so even
    an empty list says which agent of a pool it came from. ``console``: the live console at ``/``
    (see :mod:`ari_agent.observability.console`)."""
    if token is None:
        token = http_token()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def calls(_: web.Request) -> web.Response:
        headers = {INSTANCE_HEADER: instance} if instance else None
        return web.json_response(list(active_calls()), headers=headers)

    app = web.Application(middlewares=[_token_middleware(token)] if token else [])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/calls", calls)
    if console is not None:
        add_console(app, console, token or None, loopback=is_loopback(host or "127.0.0.1"))
    if host is not None:
        warning = exposure_warning(host, token)
        if warning:
            log.warning(warning)
    return app


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed at once, so it never holds a descriptor for long."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class HttpServer:
    """The agent's HTTP server: idle connections closed, open connections capped."""

    def __init__(
        self, app: web.Application, host: str, port: int, *, idle_timeout: float, max_connections: int
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        # keepalive_timeout also runs from the moment a connection opens, so a client that
        # connects and sends nothing is closed after it too.
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout)
        self._server: asyncio.Server | None = None
        self.refused = 0

    async def start(self) -> None:
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(handlers.connections) >= self.max_connections:
                self.refused += 1
                return _Refused()
            return handlers()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._runner.cleanup()
        if server is not None:
            await server.wait_closed()
