"""Health, readiness, metrics and the active-call list over HTTP.

``/healthz`` and ``/readyz`` are always open (probes carry no secrets).
``/metrics`` and ``/calls`` need ``Authorization: Bearer <token>`` when a
token is set: ``AGENT_HTTP_TOKEN``, ``AGENT_HTTP_TOKEN_FILE`` or
``/run/secrets/agent_http_token``. The server binds 127.0.0.1 by default;
bound anywhere else without a token, it says so in the log once.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ari_agent.observability.metrics import Metrics
from providers.secrets import get_secret

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "AGENT_HTTP_TOKEN"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_token() -> str | None:
    """The bearer token from the environment, a ``_FILE`` or ``/run/secrets``; None if unset."""
    secret = get_secret(TOKEN_VARIABLE)
    return secret.reveal() if secret else None


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
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
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
) -> web.Application:
    """``token`` None reads it from the environment (see module doc); ``host`` only for the warning."""
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
        return web.json_response(list(active_calls()))

    app = web.Application(middlewares=[_token_middleware(token)] if token else [])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/calls", calls)
    if host is not None:
        warning = exposure_warning(host, token)
        if warning:
            log.warning(warning)
    return app
