"""What the call sees of its media leg, whatever carries the audio (RTP, AudioSocket).

Everything above this line (session, conversation, records, metrics,
barge-in, transfer) talks to a :class:`MediaLeg` and the pacer; only the
setup in the session knows which transport it opened. Both transports share
:class:`ReceiveSide`: inbound frames go through one :class:`InboundStream`
on the agent's 20 ms clock, so a silent leg that sends nothing is filled
with silence the same way on every transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ari_agent.media import inbound as inbound_kinds
from ari_agent.media.clock import ReceiveClock, shared_clock
from ari_agent.media.codecs import FRAME_MS, SESSION_SAMPLE_RATE, Pcm, WireFormat
from ari_agent.media.inbound import InboundStream
from ari_agent.media.resample import StreamResampler
from ari_agent.media.rtp import RtpPacket, SourceStats

log = logging.getLogger(__name__)

DEFAULT_JITTER_MS = 40
_STREAM_SSRC = 0x41534F43  # a constant: a stream transport's connection is one source


class DropCounters:
    """Dropped input by reason; ``on_drop`` lets the app mirror them into its metrics."""

    def __init__(self, on_drop: Callable[[str], None] | None = None) -> None:
        self.counts: dict[str, int] = {}
        self.on_drop = on_drop

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.on_drop is not None:
            self.on_drop(reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class MediaLeg(Protocol):
    """One call's two-way audio with Asterisk, as the session uses it."""

    transport: str  # "rtp" | "audiosocket" | "websocket": the metrics' label
    # True: the pacer hands send() whole RTP packets; False: bare 20 ms frames of wire audio.
    rtp_framing: bool
    wire: WireFormat
    inbound: InboundStream
    first_packet: asyncio.Event
    on_payload: Callable[[bytes], None] | None
    on_retract: Callable[[int], None] | None
    callback_errors: int

    @property
    def stats(self) -> SourceStats: ...

    def send(self, data: bytes) -> bool: ...

    def close(self) -> None: ...


class ReceiveSide:
    """The inbound half shared by every transport: stream, clock, decode, resample, deliver."""

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
        self.wire = wire
        self.on_audio = on_audio
        # Optional: the raw payload as received, for consumers that take the
        # call's own encoding (no decode and resample round trip).
        self.on_payload: Callable[[bytes], None] | None = None
        # Optional: told (in ms) when the silence just delivered stood for audio that came late.
        self.on_retract: Callable[[int], None] | None = None
        self.counters = counters if counters is not None else DropCounters()
        self.jitter_ms = jitter_ms
        self.on_event = on_event
        self.on_accepted = on_accepted
        self._clock = clock if clock is not None else shared_clock()
        self._unsubscribe: Callable[[], None] | None = None
        self.inbound = InboundStream(wire, jitter_ms, time.monotonic(), self._event)
        self.first_packet = asyncio.Event()
        self.callback_errors = 0
        self._resampler = StreamResampler(wire.sample_rate, SESSION_SAMPLE_RATE)
        self._closed = False
        # Stream transports (AudioSocket, WebSocket): audio short of a whole frame, and the
        # numbering that makes their frames look like RTP packets to the inbound stream.
        self.packets_in = 0
        self._pending = b""
        self._seq = 0
        self._ts = 0

    @property
    def stats(self) -> SourceStats:
        return self.inbound.stats

    @property
    def closed(self) -> bool:
        return self._closed

    def _start_receiving(self) -> None:
        """Start the stream's clock now (before this nothing could arrive); once per leg."""
        if self._unsubscribe is None and not self._closed:
            self.inbound = InboundStream(self.wire, self.jitter_ms, time.monotonic(), self._event)
            self._unsubscribe = self._clock.subscribe(self.tick)

    def _stop_receiving(self) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()

    def tick(self, now: float) -> None:
        """The receive clock's 20 ms beat: hand on what is due, fill what nobody sent."""
        if self._closed:
            return
        self._deliver(self.inbound.tick(now))

    def _feed(self, data: bytes) -> None:
        """Audio from a stream transport, any length: cut into 20 ms frames, numbered like
        RTP packets, through the same inbound stream as RTP (so split and coalesced reads,
        and a silent leg that sends nothing, are handled on the agent's clock alike)."""
        if self._pending:
            data = self._pending + data
        size = self.wire.bytes_per_frame
        whole = len(data) // size
        self._pending = data[whole * size :]
        if not whole:
            return
        now = time.monotonic()
        spf = self.wire.samples_per_frame
        payloads: list[bytes] = []
        for i in range(whole):
            packet = RtpPacket(
                payload_type=self.wire.send_payload_type,
                sequence=self._seq,
                timestamp=self._ts,
                ssrc=_STREAM_SSRC,
                payload=data[i * size : (i + 1) * size],
            )
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + spf) & 0xFFFF_FFFF
            kind, out = self.inbound.receive(packet, now)
            if kind == inbound_kinds.AUDIO:
                self.packets_in += 1
                if self.on_accepted is not None:
                    self.on_accepted()
            else:
                self.counters.add(kind)
            payloads.extend(out)
        if not self.first_packet.is_set():
            self.first_packet.set()
        self._deliver(payloads)

    def _event(self, kind: str) -> None:
        if self.on_event is not None:
            self._call_quietly(self.on_event, kind)

    def _deliver(self, payloads: list[bytes]) -> None:
        retract = self.inbound.take_retraction()
        if retract and self.on_retract is not None:
            # Before the late audio itself: the fill it replaces is the tail of what was delivered.
            self._call_quietly(self.on_retract, retract * FRAME_MS)
        if not payloads:
            return
        payload = payloads[0] if len(payloads) == 1 else b"".join(payloads)
        if self.on_payload is not None:
            self._call_quietly(self.on_payload, payload)
        pcm = self._resampler.process(self.wire.decode(payload))
        if pcm.size:
            self._call_quietly(self.on_audio, pcm)

    def _call_quietly(self, callback: Callable[[Any], None], arg: object) -> None:
        try:
            callback(arg)
        except Exception:
            # An exception escaping here would make asyncio close the socket: the call would go deaf.
            self.callback_errors += 1
            if self.callback_errors == 1:
                log.exception("audio consumer failed (further failures counted)")
