"""chan_websocket as a media leg: the agent connects to Asterisk's ``/media/<connection_id>``.

ExternalMedia with ``transport=websocket`` and ``connection_type=server``
makes Asterisk wait for the app on its own HTTP server (the one ARI uses;
no ``websocket_client.conf``): the channel's ``MEDIA_WEBSOCKET_CONNECTION_ID``
names the URL. Seen on Asterisk 22.10.1: the URL takes no credentials (the
connection id, a fresh UUID per channel, is the secret), a second connection
to the same id gets 409, and Asterisk says ``MEDIA_START`` first.

Inbound audio (BINARY messages, the channel's format; slin in host byte
order) goes through the same inbound stream as RTP and AudioSocket, on the
agent's clock. Outbound audio goes through :class:`WebSocketOutbound`
(Asterisk paces it). DTMF arrives through ARI; ``DTMF_END`` here is only
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from ari_agent.ari.tls import SslArg
from ari_agent.errors import MediaError
from ari_agent.media import inbound, wsmedia
from ari_agent.media.clock import ReceiveClock
from ari_agent.media.codecs import HOST_SLIN8, HOST_SLIN16, ULAW, Pcm, WireFormat
from ari_agent.media.leg import DEFAULT_JITTER_MS, DropCounters, ReceiveSide
from ari_agent.media.ws_outbound import WebSocketOutbound

log = logging.getLogger(__name__)

DROP_GARBAGE = "not_websocket"  # a control message that could not be read, or text where audio goes
CONNECT_TIMEOUT = 5.0


# Asterisk plays what it is given at the channel's own rate, so slin16 is 16 kHz both ways.
SLIN16 = HOST_SLIN16
SLIN8 = HOST_SLIN8


def wire_for(media_format: str) -> WireFormat:
    """The WebSocket format for ``media.format``: slin16 (wideband both ways) or µ-law."""
    return ULAW if media_format == "ulaw" else SLIN16


def media_base(ari_url: str) -> str:
    """Asterisk's HTTP server root from the ARI URL: ``http://h:8088/ari`` -> ``http://h:8088``
    (a reverse proxy's path prefix kept: Asterisk's http.conf prefix covers /media too)."""
    parts = urlsplit(ari_url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/ari"):
        path = path[: -len("/ari")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def media_url(base: str, connection_id: str) -> str:
    """``ws[s]://host:port/media/<id>`` on Asterisk's HTTP server (``base``: its http[s]:// URL)."""
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base.rstrip('/')}/media/{connection_id}"


def read_start(first: aiohttp.WSMessage) -> wsmedia.MediaStart:
    """The connection's first message as MEDIA_START; WebSocketMediaError if it is anything else."""
    if first.type != aiohttp.WSMsgType.TEXT:
        raise wsmedia.WebSocketMediaError(f"Asterisk sent {first.type.name} before MEDIA_START")
    start = wsmedia.parse_event(first.data)
    if not isinstance(start, wsmedia.MediaStart):
        raise wsmedia.WebSocketMediaError(f"Asterisk sent {type(start).__name__} before MEDIA_START")
    return start


class MediaSocket(Protocol):
    """Either end's WebSocket as the leg uses it (aiohttp's client and server responses both fit)."""

    @property
    def closed(self) -> bool: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_str(self, data: str) -> None: ...

    async def close(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[aiohttp.WSMessage]: ...


class WebSocketLeg(ReceiveSide):
    """One call's chan_websocket connection, as a :class:`MediaLeg`."""

    transport = "websocket"
    rtp_framing = False

    def __init__(
        self,
        wire: WireFormat,
        on_audio: Callable[[Pcm], None],
        counters: DropCounters | None,
        *,
        jitter_ms: int = DEFAULT_JITTER_MS,
        clock: ReceiveClock | None = None,
        on_event: Callable[[str], None] | None = None,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            wire,
            on_audio,
            counters,
            jitter_ms=jitter_ms,
            clock=clock,
            on_event=on_event,
            on_accepted=on_accepted,
        )
        self.start: wsmedia.MediaStart | None = None
        self.outbound: WebSocketOutbound | None = None
        self.disconnected = False
        self.asterisk_errors = 0
        self.send_errors = 0
        self.packets_out = 0
        self._ws: MediaSocket | None = None
        self.connected = asyncio.Event()  # connection_type=client: Asterisk's connection arrived
        self.on_close: Callable[[WebSocketLeg], None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def connect(
        self, url: str, *, ssl: SslArg = True, connect_timeout: float = CONNECT_TIMEOUT
    ) -> wsmedia.MediaStart:
        """Open the WebSocket and read MEDIA_START; MediaError if it fails or does not fit the call."""
        self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(connect_timeout):
                ws = await self._session.ws_connect(url, ssl=ssl, autoping=True, max_msg_size=1 << 20)
                self._ws = ws
                first = await ws.receive()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._close_io()
            # Never the URL: its connection id is what gives access to the call's audio.
            if isinstance(exc, aiohttp.ClientResponseError):
                why = f"HTTP {exc.status} {exc.message}"
            elif isinstance(exc, aiohttp.ClientConnectorError):
                why = f"cannot connect ({exc.os_error.strerror or exc.os_error})"
            else:
                why = type(exc).__name__
            raise MediaError(f"cannot open the media WebSocket: {why}") from None
        try:
            start = read_start(first)
            self.check_start(start)
        except wsmedia.WebSocketMediaError as exc:
            await self._close_io()
            raise MediaError(f"the media WebSocket did not start: {exc}") from None
        self._begin(start)
        return start

    def check_start(self, start: wsmedia.MediaStart) -> None:
        """WebSocketMediaError unless MEDIA_START's format and frame size are the call's."""
        if start.format != self.wire.name or start.optimal_frame_size != self.wire.bytes_per_frame:
            raise wsmedia.WebSocketMediaError(
                f"Asterisk's channel is {start.format} in {start.optimal_frame_size}-byte frames; "
                f"the call needs {self.wire.name} in {self.wire.bytes_per_frame}-byte frames"
            )

    def attach(self, ws: MediaSocket, start: wsmedia.MediaStart) -> bool:
        """Take a connection Asterisk opened to the agent (connection_type=client) whose
        MEDIA_START named this leg's channel; False when the leg is closed or has one already."""
        if self._ws is not None or self._closed or self.start is not None:
            return False
        self._ws = ws
        self._begin(start)
        self.connected.set()
        return True

    async def served(self) -> None:
        """Until the attached connection is closed (its HTTP handler waits here)."""
        reader = self._reader
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(reader)

    def _begin(self, start: wsmedia.MediaStart) -> None:
        self.start = start
        self._start_receiving()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="websocket-media-read")

    def make_outbound(
        self,
        *,
        on_audio_sent: Callable[[Pcm, float], None] | None = None,
        on_frames_sent: Callable[[int], None] | None = None,
    ) -> WebSocketOutbound:
        """The call's pacer: its interface, Asterisk's clock."""
        self.outbound = WebSocketOutbound(
            self, self.wire, on_audio_sent=on_audio_sent, on_frames_sent=on_frames_sent
        )
        if self.disconnected:
            self.outbound.link_lost()
        return self.outbound

    # -- MediaLink

    async def send_media(self, data: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            self.send_errors += 1
            raise MediaError("the media WebSocket is closed")
        await ws.send_bytes(wsmedia.encode_media(data, self.wire.bytes_per_frame))
        self.packets_out += len(data) // self.wire.bytes_per_frame

    async def send_command(self, line: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            self.send_errors += 1
            raise MediaError("the media WebSocket is closed")
        await ws.send_str(line)

    # -- receiving

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    if len(message.data) % self.wire.bytes_per_sample:
                        self.counters.add(DROP_GARBAGE)
                        continue
                    self._feed(message.data)
                elif message.type == aiohttp.WSMsgType.TEXT:
                    self._control(message.data)
                else:
                    break
        except Exception:
            log.exception("media WebSocket read failed")
        finally:
            self.disconnected = True
            if self.outbound is not None:
                self.outbound.link_lost()

    def _control(self, text: str) -> None:
        try:
            event = wsmedia.parse_event(text)
        except wsmedia.WebSocketMediaError:
            self.counters.add(DROP_GARBAGE)
            return
        if isinstance(event, wsmedia.DtmfEnd):
            # One digit reaches the call through ARI's ChannelDtmfReceived; this copy is only counted.
            self.inbound.note(inbound.TELEPHONE_EVENT)
        elif isinstance(event, wsmedia.ErrorEvent):
            self.asterisk_errors += 1
            if self.asterisk_errors == 1:
                log.warning("Asterisk reported a media WebSocket error: %s", event.text[:200])
        elif isinstance(event, wsmedia.MediaStart):
            self.counters.add(DROP_GARBAGE)  # only once, first
        elif self.outbound is not None:
            self.outbound.on_event(event)

    # -- MediaLeg

    def send(self, data: bytes) -> bool:
        """One frame of outbound audio (the outbound half is the usual way; this queues there)."""
        if self.outbound is None or self.disconnected or self._closed:
            self.send_errors += 1
            return False
        self.outbound.enqueue_encoded(data)
        return True

    def close(self) -> None:
        """Stop receiving and close the WebSocket (Asterisk hangs the channel up); safe twice."""
        if self._closed:
            return
        self._stop_receiving()
        if self.on_close is not None:
            self.on_close(self)
        if self.outbound is not None:
            self.outbound.link_lost()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing left to close
            self._closing = asyncio.get_running_loop().create_task(
                self._close_io(), name="websocket-media-close"
            )

    async def closed_io(self) -> None:
        """Wait until close() has closed the WebSocket."""
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await self._closing

    async def _close_io(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
