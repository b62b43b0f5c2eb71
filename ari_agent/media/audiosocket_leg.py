"""AudioSocket as a media leg: the agent's TCP server, one connection per call.

Asterisk (ExternalMedia ``encapsulation=audiosocket``, ``transport=tcp``)
connects to the server while the channel is created and sends the UUID the
agent put in the request's ``data`` first; the server hands the connection
to the leg waiting for that UUID. A connection with no UUID, an unknown one
or one already taken is closed: the UUID is a fresh random one per call, so
a stranger reaching the port cannot take a call's audio.

Inbound audio is cut into 20 ms frames and fed, numbered like RTP packets,
to the same :class:`InboundStream` as RTP (so TCP's coalesced and split
reads, and a silent leg that sends nothing, are handled on the agent's
clock exactly as on RTP). Outbound frames come from the same pacer, every
20 ms, each as one audio message; between the pacer's talkspurts the leg
sends silence on the receive clock's beat (see ``KEEP_FED_S``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from ari_agent.errors import MediaError
from ari_agent.media import audiosocket as wire_codec
from ari_agent.media import inbound
from ari_agent.media.audiosocket import AudioSocketError, Decoder
from ari_agent.media.clock import ReceiveClock
from ari_agent.media.codecs import HOST_SLIN8, HOST_SLIN16, Pcm, WireFormat
from ari_agent.media.leg import DEFAULT_JITTER_MS, DropCounters, ReceiveSide

log = logging.getLogger(__name__)

# Reasons AudioSocket input is dropped (metric labels beside RTP's).
DROP_GARBAGE = "not_audiosocket"  # a malformed or unknown message
DROP_RATE = "sample_rate"  # audio at another rate than the call's
# Why a connection was refused before it carried a call.
REJECT_NO_UUID = "no_uuid"
REJECT_UNKNOWN = "unknown_uuid"
REJECT_TAKEN = "taken"
REJECT_TIMEOUT = "timeout"

# Outbound bytes Asterisk has not read yet beyond which frames are dropped, not queued:
# 1 s of slin16 (a stalled reader must not grow the agent's memory).
MAX_WRITE_BUFFER = 32000

# Asterisk's AudioSocket channel reads a message by polling until one has arrived
# (res_audiosocket's ast_audiosocket_receive_frame), inside the channel's read. Read with nothing
# pending, it waits there until the agent next sends: on a quiet connection, seconds, and the
# likely cause of doctor's AudioSocket check failing on CI (one channel's addChannel unanswered
# for 5.5 s, the agent's ARI socket dropped meanwhile, until doctor closed the connection). So a
# connection never stays quiet: silence goes out once nothing was sent for this long.
KEEP_FED_S = 0.04


SLIN8 = HOST_SLIN8
# 16 kHz in (speech recognition gets the bandwidth), 8 kHz back as on RTP: Asterisk takes
# any slin rate on the socket, and the echo references are 8 kHz (what the pacer reports).
SLIN16 = replace(HOST_SLIN16, send_as=HOST_SLIN8)


def wire_for(media_format: str) -> WireFormat:
    """The AudioSocket format for ``media.format``: slin16 stays wideband; AudioSocket has no µ-law."""
    return SLIN16 if media_format == "slin16" else SLIN8


class AudioSocketLeg(ReceiveSide):
    """One call's AudioSocket connection, as a :class:`MediaLeg`. Get it from the server's ``expect``."""

    transport = "audiosocket"
    rtp_framing = False

    def __init__(
        self,
        server: AudioSocketServer,
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
        self.server = server
        self.uuid = uuid.uuid4()
        self.connected = asyncio.Event()
        self.disconnected = False
        self.packets_out = 0  # the pacer's frames; the keep-fed silence is counted apart
        self.silence_out = 0
        self._last_sent = -math.inf
        self.send_errors = 0
        self.asterisk_errors = 0
        self._conn: _Connection | None = None
        self._out_rate = wire.outbound.sample_rate
        # One message, made once: it goes out every 20 ms of every quiet call.
        self._silence = wire_codec.encode_audio(bytes(wire.outbound.bytes_per_frame), self._out_rate)

    # -- from the connection

    def attach(self, conn: _Connection) -> bool:
        if self._conn is not None or self._closed:
            return False
        self._conn = conn
        self._start_receiving()
        self.connected.set()
        self._send_silence(time.monotonic())
        return True

    def detach(self) -> None:
        self._conn = None
        self.disconnected = True

    def on_message(self, message: wire_codec.Message | AudioSocketError) -> None:
        if isinstance(message, wire_codec.Audio):
            self._audio(message)
        elif isinstance(message, wire_codec.Dtmf):
            # One digit reaches the call through ARI's ChannelDtmfReceived; this copy is only counted.
            self.inbound.note(inbound.TELEPHONE_EVENT)
        elif isinstance(message, wire_codec.ErrorReport):
            self.asterisk_errors += 1
            if self.asterisk_errors == 1:
                log.warning("Asterisk reported an AudioSocket error (code %s)", message.code.hex() or "none")
        elif isinstance(message, wire_codec.Hangup):
            pass  # Asterisk does not send it; its hang-up arrives through ARI
        else:
            # Malformed, unknown kinds, a second UUID: skipped whole, the call goes on.
            self.counters.add(DROP_GARBAGE)

    def _audio(self, message: wire_codec.Audio) -> None:
        # Before the per-rate kinds (Asterisk 20.17, 21.12, 22.7, 23.1) every rate came as
        # kind 0x10: there, 0x10 carries the call's own format. Asterisk writes the channel's
        # format, so 0x10 on a slin16 leg means such an Asterisk, not 8 kHz audio.
        rate = message.sample_rate
        if rate != self.wire.sample_rate and rate != wire_codec.AUDIO_KINDS[wire_codec.KIND_AUDIO]:
            self.counters.add(DROP_RATE)
            return
        self._feed(message.pcm)

    # -- MediaLeg

    def send(self, data: bytes) -> bool:
        """Send one frame of outbound wire audio; False when it could not go (counted)."""
        if not self._write(wire_codec.encode_audio(data, self._out_rate), time.monotonic()):
            self.send_errors += 1
            return False
        self.packets_out += 1
        return True

    def tick(self, now: float) -> None:
        super().tick(now)
        if now - self._last_sent >= KEEP_FED_S:
            self._send_silence(now)

    def _send_silence(self, now: float) -> None:
        if self._write(self._silence, now):
            self.silence_out += 1

    def _write(self, message: bytes, now: float) -> bool:
        conn = self._conn  # None once closed
        if conn is None or not conn.writable():
            return False
        conn.write(message)
        self._last_sent = now
        return True

    def close(self) -> None:
        """Stop receiving, forget the UUID, ask Asterisk to hang the leg up and close; safe twice."""
        if self._closed:
            return
        self._stop_receiving()
        self.server.forget(self)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close(hangup=True)


class _Connection(asyncio.Protocol):
    """One TCP connection from Asterisk; carries one call once its UUID matched a leg."""

    def __init__(self, server: AudioSocketServer) -> None:
        self.server = server
        self.decoder = Decoder()
        self.leg: AudioSocketLeg | None = None
        self._transport: asyncio.Transport | None = None
        self._hello_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # 20 ms frames must leave as they are written, not wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(self.server.hello_timeout, self._no_hello)

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        if self.leg is None and not self._hello():
            return
        leg = self.leg
        assert leg is not None
        for message in self.decoder.messages():
            leg.on_message(message)

    def _hello(self) -> bool:
        """The first message must be the call's UUID; True once the connection has its leg."""
        try:
            first = self.decoder.next_message()
        except AudioSocketError:
            first = None
            reason = REJECT_NO_UUID
        else:
            if first is None:
                return False  # the header is still on its way
            reason = REJECT_NO_UUID
        if isinstance(first, wire_codec.Uuid):
            leg = self.server.leg_for(first.value)
            reason = REJECT_UNKNOWN if leg is None else REJECT_TAKEN
            if leg is not None and leg.attach(self):
                self.leg = leg
                self._cancel_timer()
                return True
        self.server.reject(reason)
        self.close(hangup=False)
        return False

    def _no_hello(self) -> None:
        if self.leg is None:
            self.server.reject(REJECT_TIMEOUT)
            self.close(hangup=False)

    def writable(self) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        # Asterisk stopped reading: drop rather than queue without bound.
        return transport.get_write_buffer_size() < MAX_WRITE_BUFFER

    def write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def close(self, *, hangup: bool) -> None:
        self._cancel_timer()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if hangup:
            transport.write(wire_codec.encode_hangup())
        transport.close()

    def _cancel_timer(self) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.server.connection_closed(self)
        if self.leg is not None:
            self.leg.detach()


class AudioSocketServer:
    """The agent's one AudioSocket listener; legs wait on it by UUID."""

    def __init__(self, host: str, port: int, *, hello_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.hello_timeout = hello_timeout
        self.rejected: dict[str, int] = {}
        self.on_reject: Callable[[str], None] | None = None
        self._legs: dict[uuid.UUID, AudioSocketLeg] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: self._track(_Connection(self)), self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            raise MediaError(f"cannot listen for AudioSocket on {self.host}:{self.port}: {exc}") from exc
        sockets = self._server.sockets
        if self.port == 0 and sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._connections):
            conn.close(hangup=False)
        if server is not None:
            await server.wait_closed()

    def expect(
        self,
        wire: WireFormat,
        on_audio: Callable[[Pcm], None],
        counters: DropCounters | None = None,
        *,
        jitter_ms: int = DEFAULT_JITTER_MS,
        clock: ReceiveClock | None = None,
        on_event: Callable[[str], None] | None = None,
        on_accepted: Callable[[], None] | None = None,
    ) -> AudioSocketLeg:
        """A leg waiting for Asterisk's connection with its (fresh, random) UUID."""
        leg = AudioSocketLeg(
            self,
            wire,
            on_audio,
            counters,
            jitter_ms=jitter_ms,
            clock=clock,
            on_event=on_event,
            on_accepted=on_accepted,
        )
        self._legs[leg.uuid] = leg
        return leg

    def leg_for(self, value: uuid.UUID) -> AudioSocketLeg | None:
        return self._legs.get(value)

    def forget(self, leg: AudioSocketLeg) -> None:
        self._legs.pop(leg.uuid, None)

    @property
    def waiting(self) -> int:
        return len(self._legs)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self.on_reject is not None:
            self.on_reject(reason)

    def _track(self, conn: _Connection) -> _Connection:
        self._connections.add(conn)
        return conn

    def connection_closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)
