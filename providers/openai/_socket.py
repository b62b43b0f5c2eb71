"""One Realtime WebSocket (speech-to-speech or transcription) driven from the call's loop.

``push``-style callers must never wait on the network, so outgoing events
go into an outbox drained by one writer task (which also keeps them in
order and joins consecutive audio chunks into one append). A reader task
turns server events into ours through a pure mapping function and queues
them for ``events``. The server closing the socket when we did not ask
(the service ends sessions at their maximum duration) is a retryable
ProviderError: the caller's session reconnects or fails over.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from providers.base import ProviderError
from providers.openai._client import OpenAISettings, provider_error

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.resources.realtime.realtime import AsyncRealtimeConnection

log = logging.getLogger(__name__)

E = TypeVar("E")

# Errors the service reports for requests that simply came too late (the
# response had already finished, the audio was already committed): harmless.
BENIGN_ERRORS = frozenset(
    {
        "response_cancel_not_active",
        "input_audio_buffer_commit_empty",
        "conversation_already_has_active_response",
    }
)
# Errors after which trying again (a new session) may work.
RETRYABLE_ERRORS = frozenset({"session_expired", "rate_limit_exceeded", "server_error"})

_END = object()


class _RedactAuthorization(logging.Filter):
    """websockets logs the handshake's headers at DEBUG, the Authorization header included."""

    _BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "bearer" in message.lower():
            record.msg = self._BEARER.sub(r"\1********", message)
            record.args = None
        return True


# The WebSocket library logs through this logger instead of its own, so the
# key is masked before any handler (ours or the operator's) sees it.
wire_log = logging.getLogger(__name__ + ".wire")
wire_log.addFilter(_RedactAuthorization())


def error_from_event(provider: str, event: dict[str, Any]) -> ProviderError | None:
    """A server ``error`` event as a ProviderError, or None when it is harmless."""
    error = event.get("error") or {}
    code = str(error.get("code") or "")
    kind = str(error.get("type") or "")
    if code in BENIGN_ERRORS:
        log.debug("%s: ignoring server error %s", provider, code)
        return None
    message = str(error.get("message") or "error")[:200]
    retryable = code in RETRYABLE_ERRORS or kind == "server_error"
    return ProviderError(f"server error {code or kind}: {message}", provider=provider, retryable=retryable)


class RealtimeSocket(Generic[E]):
    def __init__(
        self,
        provider: str,
        settings: OpenAISettings,
        connection: AsyncRealtimeConnection,
        mapper: Callable[[dict[str, Any]], Sequence[E]],
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.provider = provider
        self._client = client
        self.settings = settings
        self._conn = connection
        self._mapper = mapper
        self._outbox: collections.deque[dict[str, Any] | bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[E | ProviderError | object] = asyncio.Queue()
        self._closing = False
        self._writer = asyncio.create_task(self._write())
        self._reader = asyncio.create_task(self._read())

    # -- out

    def send(self, event: dict[str, Any]) -> None:
        if not self._closing:
            self._outbox.append(event)
            self._wake.set()

    def append_audio(self, audio: bytes) -> None:
        if not self._closing and audio:
            self._outbox.append(audio)
            self._wake.set()

    def deliver(self, *events: E) -> None:
        """Queue events of our own making (answers that need no round trip)."""
        for event in events:
            self._inbox.put_nowait(event)

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    item = self._outbox.popleft()
                    if isinstance(item, bytes):
                        chunks = [item]
                        while self._outbox and isinstance(self._outbox[0], bytes):
                            chunks.append(self._outbox.popleft())  # type: ignore[arg-type]
                        audio = base64.b64encode(b"".join(chunks)).decode("ascii")
                        await self._conn.input_audio_buffer.append(audio=audio)
                    else:
                        await self._conn.send(item)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closing:
                self._inbox.put_nowait(provider_error(self.provider, exc, self.settings))

    # -- in

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                raw = await self._conn.recv_bytes()
                try:
                    event = json.loads(raw)
                except ValueError:
                    log.warning("%s: server sent a message that is not JSON", self.provider)
                    continue
                if not isinstance(event, dict):
                    continue
                for item in self._mapper(event):
                    self._inbox.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except ConnectionClosed as exc:
            if self._closing:
                self._inbox.put_nowait(_END)
            else:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                self._inbox.put_nowait(
                    ProviderError(
                        f"server closed the session (code {code})", provider=self.provider, retryable=True
                    )
                )
        except ProviderError as exc:
            self._inbox.put_nowait(exc)
        except Exception as exc:
            self._inbox.put_nowait(provider_error(self.provider, exc, self.settings))

    async def events(self) -> AsyncIterator[E]:
        while True:
            item = await self._inbox.get()
            if item is _END:
                return
            if isinstance(item, ProviderError):
                raise item
            yield item  # type: ignore[misc]

    async def close(self) -> None:
        self._closing = True
        self._writer.cancel()
        try:
            await asyncio.wait_for(self._conn.close(), 2.0)
        except Exception as exc:  # closing a dead socket: nothing left to do
            log.debug("%s: close: %s", self.provider, type(exc).__name__)
        self._reader.cancel()
        for task in (self._writer, self._reader):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._inbox.put_nowait(_END)
        if self._client is not None:
            await self._client.close()


async def open_socket(
    provider: str,
    settings: OpenAISettings,
    mapper: Callable[[dict[str, Any]], Sequence[E]],
    session: dict[str, Any],
    **connect: Any,
) -> RealtimeSocket[E]:
    """Connect and send ``session.update`` with ``session``; SDK failures become ProviderErrors."""
    client = settings.client()
    try:
        # No SDK-side reconnect: a new session has no memory of this one, so
        # the decision belongs to the caller's session (reconnect or fail over).
        options: Any = {"logger": wire_log}
        connection = await client.realtime.connect(websocket_connection_options=options, **connect).enter()
    except BaseException as exc:
        await client.close()
        if isinstance(exc, Exception):
            raise provider_error(provider, exc, settings) from None
        raise
    socket = RealtimeSocket(provider, settings, connection, mapper, client)
    socket.send({"type": "session.update", "session": session})
    return socket
