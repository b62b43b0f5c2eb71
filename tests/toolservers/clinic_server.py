"""A clinic's MCP server: one quick tool, one that hangs, one that fails, one never allowed.

    python -m tests.toolservers.clinic_server [--starts FILE]            stdio
    python -m tests.toolservers.clinic_server --http PORT [--token TOKEN] streamable HTTP

``--starts FILE`` appends the process id at each start, so a test can count
how many times the agent started it. ``--token`` makes the HTTP server refuse
requests without ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from mcp.server.mcpserver import MCPServer

# Plain logging before the SDK configures its own: with rich installed (sentence-transformers
# brings it, through transformers and typer) the SDK logs a tool's error with a rich traceback,
# which took longer to render than the tests' 300 ms tool timeout: a failed tool looked hung.
logging.basicConfig(level=logging.WARNING, format="%(message)s")
server = MCPServer("clinic")


@server.tool()
def next_free_slot(day: str) -> str:
    """The next free appointment on a day."""
    return f"The next free appointment on {day} is at half past ten."


@server.tool()
async def hang(question: str) -> str:
    """Looks something up in a system that never answers."""
    await asyncio.sleep(3600)
    return "too late"


@server.tool()
def broken(question: str) -> str:
    """Always fails."""
    raise RuntimeError("the booking system is down")


@server.tool()
def delete_all_records() -> str:
    """A tool no profile should ever offer."""
    return "deleted"


def http_app(token: str | None) -> Any:
    app = server.streamable_http_app()
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts")
    parser.add_argument("--http", type=int)
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.starts:
        with open(args.starts, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    if args.http is None:
        server.run()
        return
    import uvicorn

    uvicorn.run(http_app(args.token), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
