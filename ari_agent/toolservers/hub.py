"""MCP servers held open for the agent's life, and the tools of a profile drawn from them.

A server is connected once (a stdio server is one child process) and shared
by every call and every profile that names the same server the same way.
The SDK's client lives in one task for its whole life (its cancel scopes must
be entered and left by one task); calls from the calls' tasks go through it.
The ``mcp`` package is an optional extra: imported only when a profile names
a server, and ``check`` says when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ari_agent.errors import AgentError
from ari_agent.profiles import ProfileConfig, ToolServerConfig
from providers.base import ToolSpec
from providers.secrets import get_secret

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
SEPARATOR = "__"  # <server>__<tool>: the name the LLM sees
_SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolServerError(AgentError):
    """A tool server could not be reached, or a tool call failed."""


def mcp_missing() -> str | None:
    """Why tool servers cannot be used here, or None."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        return "tool servers need the mcp extra: pip install 'ari-agent[mcp]'"
    return None


def resolve_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header values with ${NAME} replaced by the secret NAME; a missing secret is an error."""

    def secret(match: re.Match[str]) -> str:
        value = get_secret(match.group(1))
        if value is None:
            raise ToolServerError(f"secret {match.group(1)} is not set (nor {match.group(1)}_FILE)")
        return value.reveal()

    return {name: _SECRET.sub(secret, value) for name, value in headers.items()}


def _text(result: Any) -> str:
    """A tool result as the text the model reads (text parts; structured content otherwise)."""
    parts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    if parts:
        return "\n".join(parts)
    structured = getattr(result, "structured_content", None)
    return json.dumps(structured) if structured is not None else ""


class ToolServer:
    """One MCP server's connection, opened by ``start`` and held until ``stop``."""

    def __init__(self, name: str, config: ToolServerConfig) -> None:
        self.name = name
        self.config = config
        self.tools: dict[str, Any] = {}  # name -> the server's Tool (description, input schema)
        self._client: Any = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        timeout = CONNECT_TIMEOUT_S
        self._task = asyncio.create_task(self._hold(), name=f"tool-server-{self.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise ToolServerError(f"tool server {self.name}: no answer within {timeout:g} s") from None
        if self._error is not None:
            raise ToolServerError(f"tool server {self.name}: {self._error}") from self._error

    async def _hold(self) -> None:
        from mcp import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(Client(await self._transport(stack)))
                listed = await client.list_tools()
                self.tools = {t.name: t for t in listed.tools}
                self._client = client
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # reported by start(), or logged if the server goes away later
            self._error = exc
            if self._ready.is_set():
                log.error("tool server %s went away: %s", self.name, exc)
        finally:
            self._client = None
            self._ready.set()

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        if self.config.command:
            from mcp.client.stdio import StdioServerParameters

            program, *args = self.config.command
            return StdioServerParameters(command=program, args=args)
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        assert self.config.url is not None
        http = create_mcp_http_client(headers=resolve_headers(self.config.headers))
        stack.push_async_callback(http.aclose)  # the transport leaves a client it was given open
        return streamable_http_client(self.config.url, http_client=http)

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """The tool's result text; ToolServerError when the server is gone or the tool failed."""
        client = self._client
        if client is None:
            raise ToolServerError(f"tool server {self.name} is not connected")
        try:
            result = await client.call_tool(tool, arguments)
        except Exception as exc:
            raise ToolServerError(f"{self.name}{SEPARATOR}{tool} failed: {type(exc).__name__}") from exc
        if result.is_error:
            raise ToolServerError(f"{self.name}{SEPARATOR}{tool} returned an error")
        return _text(result)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()


@dataclass(frozen=True)
class RemoteTools:
    """A profile's allowed tools from its servers, as the LLM sees them and as they are called."""

    specs: tuple[ToolSpec, ...]
    routes: Mapping[str, tuple[ToolServer, str]]  # offered name -> (server, the server's name)

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        server, tool = self.routes[name]
        return await server.call(tool, arguments)


class ToolHub:
    """The agent's tool servers: each started once, shared by profiles that name it alike."""

    def __init__(self) -> None:
        self._servers: dict[str, ToolServer] = {}
        self._lock = asyncio.Lock()

    async def server(self, name: str, config: ToolServerConfig) -> ToolServer:
        # The same server is the same name and transport; each profile's allow-list is its own.
        key = json.dumps([name, config.model_dump(exclude={"tools"})], sort_keys=True)
        async with self._lock:
            server = self._servers.get(key)
            if server is None:
                server = ToolServer(name, config)
                await server.start()
                self._servers[key] = server
                log.info("tool server %s: connected, %d tool(s)", name, len(server.tools))
            return server

    async def tools_for(self, profile_name: str, profile: ProfileConfig) -> RemoteTools | None:
        """The profile's allowed tools; a tool the server lacks is logged and left out."""
        if not profile.tool_servers:
            return None
        specs: list[ToolSpec] = []
        routes: dict[str, tuple[ToolServer, str]] = {}
        for server_name, config in profile.tool_servers.items():
            server = await self.server(server_name, config)
            for tool in config.tools:
                found = server.tools.get(tool)
                if found is None:
                    log.warning("profile %s: tool server %s has no tool %r", profile_name, server_name, tool)
                    continue
                offered = f"{server_name}{SEPARATOR}{tool}"
                schema = dict(found.input_schema or {"type": "object", "properties": {}})
                specs.append(ToolSpec(offered, found.description or tool, schema))
                routes[offered] = (server, tool)
        return RemoteTools(tuple(specs), routes)

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            await server.stop()
