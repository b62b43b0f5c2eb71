"""ARI REST client on aiohttp.

Every method maps to one ARI endpoint (Asterisk 22). ARI takes most arguments as
query parameters; only ``variables`` travel in a JSON body. Errors are mapped to
:class:`AriError` subclasses whose messages carry the method, the path (never the
query, which may hold channel-variable values) and Asterisk's own message, but
never the credentials.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from ari_agent.ari.events import Bridge, Channel, bridge_from_json, channel_from_json
from ari_agent.ari.tls import SslArg, tls_problem
from ari_agent.errors import AgentError

__all__ = [
    "AriClient",
    "AriError",
    "AriHttpError",
    "AriNotFound",
    "AriTlsError",
    "AriUnavailable",
    "basic_auth_header",
    "normalize_ari_url",
]

log = logging.getLogger(__name__)

_MAX_MESSAGE = 300


class AriError(AgentError):
    """Any failure talking to ARI."""


class AriHttpError(AriError):
    """Asterisk answered with an HTTP error status."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        super().__init__(f"ARI {method} {path} failed with HTTP {status}: {message}")


class AriNotFound(AriHttpError):
    """HTTP 404: the channel, bridge, variable or application does not exist (any more)."""


class AriUnavailable(AriError):
    """Asterisk could not be reached: connection refused, reset or timed out."""


class AriTlsError(AriUnavailable):
    """The TLS connection was refused: a certificate that does not verify, or no TLS there."""


def normalize_ari_url(url: str) -> str:
    """Return the ARI root (``http://host:port/ari``) for an operator-given base URL.

    ``http://h:8088``, ``http://h:8088/``, ``http://h:8088/ari`` and
    ``http://h:8088/ari/`` all give ``http://h:8088/ari``; a path prefix (a reverse
    proxy) is kept. Credentials in the URL are refused so they cannot leak into logs.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"ARI URL is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"ARI URL must start with http:// or https://, got scheme {parts.scheme or '(none)'!r}"
        )
    if not parts.hostname:
        raise ValueError("ARI URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("ARI URL must not contain credentials; set the ARI username and password instead")
    if parts.query or parts.fragment:
        raise ValueError("ARI URL must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("ARI URL has an invalid port") from None
    # Doubled slashes are a typo, never meaningful to Asterisk's HTTP server.
    path = re.sub("/+", "/", parts.path).rstrip("/")
    if not path.endswith("/ari"):
        path += "/ari"
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def basic_auth_header(username: str, password: str) -> str:
    """The ``Authorization`` value for HTTP basic auth (aiohttp's BasicAuth is deprecated in 3.14)."""
    if ":" in username:
        raise ValueError("ARI username must not contain ':'")
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _seg(value: str) -> str:
    """Quote one path segment (ids may hold characters like '/' or '@')."""
    if not value:
        raise ValueError("ARI id must not be empty")
    return quote(value, safe="")


def _query(params: Mapping[str, object | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def _error_message(body: bytes, reason: str | None) -> str:
    """Asterisk's JSON ``message`` (or ``error``) when present, else a short text."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])[:_MAX_MESSAGE]
    text = body.decode("utf-8", "replace").strip()
    return (text or reason or "no message")[:_MAX_MESSAGE]


class AriClient:
    """Async ARI REST client. Use one per process; it reuses one HTTP session."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 5.0,
        ssl: SslArg = True,
    ) -> None:
        self._root = normalize_ari_url(base_url)
        self._ssl = ssl
        self._username = username
        self._headers = {"Authorization": basic_auth_header(username, password)}
        self._session = session
        self._own_session = session is None
        self._timeout_s = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def url(self) -> str:
        """The normalised ARI root, e.g. ``http://127.0.0.1:8088/ari``."""
        return self._root

    def __repr__(self) -> str:
        return f"AriClient(url={self._root!r}, username={self._username!r})"

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp wants its session made inside the running loop.
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise AriError("the aiohttp session given to AriClient is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object | None] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Any:
        session = self._get_session()
        body = {"variables": dict(variables)} if variables else None
        try:
            async with session.request(
                method,
                self._root + path,
                params=_query(params or {}),
                json=body,
                headers=self._headers,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                reason = resp.reason
        except TimeoutError:
            raise AriUnavailable(f"ARI {method} {path}: no answer within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            problem = tls_problem(exc, self._root)
            if problem is not None:
                raise AriTlsError(f"ARI {method} {path}: {problem}") from None
            # The aiohttp message names host and port only; the auth header never appears in it.
            raise AriUnavailable(f"ARI {method} {path}: {type(exc).__name__}: {exc}") from None
        if status >= 400:
            message = _error_message(raw, reason)
            cls = AriNotFound if status == 404 else AriHttpError
            log.debug("ARI %s %s -> %d: %s", method, path, status, message)
            raise cls(status, method, path, message)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise AriError(f"ARI {method} {path}: HTTP {status} with a body that is not JSON") from None

    async def _channel(self, method: str, path: str, **kw: Any) -> Channel:
        data = await self._request(method, path, **kw)
        try:
            return channel_from_json(data)
        except ValueError as exc:
            raise AriError(f"ARI {method} {path}: unexpected reply: {exc}") from None

    async def _bridge(self, method: str, path: str, **kw: Any) -> Bridge:
        data = await self._request(method, path, **kw)
        try:
            return bridge_from_json(data)
        except ValueError as exc:
            raise AriError(f"ARI {method} {path}: unexpected reply: {exc}") from None

    async def _list(self, path: str) -> list[Any]:
        data = await self._request("GET", path)
        if not isinstance(data, list):
            raise AriError(f"ARI GET {path}: expected a JSON array")
        return data

    # ------------------------------------------------------------------ asterisk / applications

    async def asterisk_info(self) -> dict[str, Any]:
        """``GET /asterisk/info``: build, system, config and status."""
        data = await self._request("GET", "/asterisk/info")
        return dict(data) if isinstance(data, dict) else {}

    async def get_application(self, app: str) -> dict[str, Any]:
        """``GET /applications/{app}``: 404 (AriNotFound) until the app's WebSocket is up."""
        data = await self._request("GET", f"/applications/{_seg(app)}")
        return dict(data) if isinstance(data, dict) else {}

    async def list_applications(self) -> list[dict[str, Any]]:
        """``GET /applications``: every registered app, and apps gone whose channels are still parked."""
        return [a for a in await self._list("/applications") if isinstance(a, dict)]

    async def claim_channel(self, channel_id: str, app: str) -> bool:
        """``POST /events/claim``: True if ``app`` won the broadcast channel, False if it was
        claimed already (409) or is no longer offered (404: timed out, hung up)."""
        try:
            await self._request("POST", "/events/claim", params={"channelId": channel_id, "application": app})
        except AriNotFound:
            return False
        except AriHttpError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def set_global(self, name: str, value: str) -> None:
        """``POST /asterisk/variable``: set a global dialplan variable."""
        await self._request("POST", "/asterisk/variable", params={"variable": name, "value": value})

    async def get_global(self, name: str) -> str:
        """``GET /asterisk/variable``: a global variable's value ("" when unset)."""
        data = await self._request("GET", "/asterisk/variable", params={"variable": name})
        if not isinstance(data, dict) or not isinstance(data.get("value", ""), str):
            raise AriError("ARI GET /asterisk/variable: reply has no string 'value'")
        return str(data.get("value", ""))

    async def list_modules(self) -> list[dict[str, Any]]:
        """``GET /asterisk/modules``."""
        return [m for m in await self._list("/asterisk/modules") if isinstance(m, dict)]

    async def get_module(self, name: str) -> dict[str, Any]:
        """``GET /asterisk/modules/{name}``; AriNotFound if the module is not loaded."""
        data = await self._request("GET", f"/asterisk/modules/{_seg(name)}")
        return dict(data) if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ channels

    async def list_channels(self) -> list[Channel]:
        """``GET /channels``."""
        try:
            return [channel_from_json(c) for c in await self._list("/channels")]
        except ValueError as exc:
            raise AriError(f"ARI GET /channels: unexpected reply: {exc}") from None

    async def get_channel(self, channel_id: str) -> Channel:
        """``GET /channels/{id}``."""
        return await self._channel("GET", f"/channels/{_seg(channel_id)}")

    async def answer(self, channel_id: str) -> None:
        """``POST /channels/{id}/answer``."""
        await self._request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """``DELETE /channels/{id}?reason=``; AriNotFound if the channel is already gone."""
        await self._request("DELETE", f"/channels/{_seg(channel_id)}", params={"reason": reason})

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        """``POST /channels/{id}/continue``; with no target, the priority after ``Stasis()``."""
        params = {"context": context, "extension": extension, "priority": priority, "label": label}
        await self._request("POST", f"/channels/{_seg(channel_id)}/continue", params=params)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        """``POST /channels/{id}/variable?variable=&value=``."""
        params = {"variable": name, "value": value}
        await self._request("POST", f"/channels/{_seg(channel_id)}/variable", params=params)

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        """``GET /channels/{id}/variable``; None when Asterisk answers 404.

        Asterisk answers 404 both for an unset variable and for a missing channel.
        """
        try:
            data = await self._request(
                "GET", f"/channels/{_seg(channel_id)}/variable", params={"variable": name}
            )
        except AriNotFound:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            raise AriError(f"ARI GET /channels/{channel_id}/variable: reply has no string 'value'")
        return str(data["value"])

    async def external_media(
        self,
        channel_id: str,
        app: str,
        external_host: str | None,
        format: str,
        *,
        encapsulation: str = "rtp",
        transport: str = "udp",
        direction: str = "both",
        data: str | None = None,
        connection_type: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """``POST /channels/externalMedia`` with a pre-assigned ``channelId``.

        ``external_host`` is ``host:port`` where Asterisk sends the media; ``format``
        is the Asterisk format name (``slin16``, ``ulaw``...), used as is, no negotiation.
        ``data`` is the AudioSocket UUID (``encapsulation=audiosocket``, ``transport=tcp``).
        chan_websocket: ``transport=websocket``, ``encapsulation=none``, ``connection_type=server``
        and no ``external_host`` (the app connects to Asterisk's /media/<connection id>).
        """
        params = {
            "channelId": channel_id,
            "app": app,
            "format": format,
            "encapsulation": encapsulation,
            "transport": transport,
            "direction": direction,
        }
        if external_host is not None:
            params["external_host"] = external_host
        if data is not None:
            params["data"] = data
        if connection_type is not None:
            params["connection_type"] = connection_type
        return await self._channel("POST", "/channels/externalMedia", params=params, variables=variables)

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | None = None,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        channel_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        caller_id: str | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - ARI ring timeout (seconds), not a client timeout
    ) -> Channel:
        """``POST /channels``: either into a Stasis ``app`` or to a dialplan location."""
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "context": context,
            "extension": extension,
            "priority": priority,
            "channelId": channel_id,
            "callerId": caller_id,
            "timeout": timeout,
        }
        return await self._channel("POST", "/channels", params=params, variables=variables)

    async def play(self, channel_id: str, media: str, playback_id: str | None = None) -> dict[str, Any]:
        """``POST /channels/{id}/play?media=``; returns the Playback object."""
        params = {"media": media, "playbackId": playback_id}
        data = await self._request("POST", f"/channels/{_seg(channel_id)}/play", params=params)
        return dict(data) if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ bridges

    async def list_bridges(self) -> list[Bridge]:
        """``GET /bridges``."""
        try:
            return [bridge_from_json(b) for b in await self._list("/bridges")]
        except ValueError as exc:
            raise AriError(f"ARI GET /bridges: unexpected reply: {exc}") from None

    async def create_bridge(
        self, bridge_id: str, bridge_type: str = "mixing", name: str | None = None
    ) -> Bridge:
        """``POST /bridges/{id}?type=&name=`` (create with a chosen id)."""
        params = {"type": bridge_type, "name": name}
        return await self._bridge("POST", f"/bridges/{_seg(bridge_id)}", params=params)

    async def destroy_bridge(self, bridge_id: str) -> None:
        """``DELETE /bridges/{id}``; AriNotFound if the bridge is already gone."""
        await self._request("DELETE", f"/bridges/{_seg(bridge_id)}")

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        """``POST /bridges/{id}/addChannel?channel=``.

        Asterisk answers 422 if the channel is not (yet) in the Stasis app.
        """
        await self._request("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params={"channel": channel_id})
