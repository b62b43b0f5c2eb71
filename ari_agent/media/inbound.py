"""The receive side of one call on the agent's clock, sans-IO: packets in, a continuous stream out.

Callers' legs are often silent on the wire between words (silence
suppression, Opus DTX, an Asterisk leg without ``transmit_silence``), and
Asterisk's two-party bridge forwards that nothing as it is. So the stream
handed to VAD and speech recognition never waits for packets: ``tick(now)``,
called every 20 ms, fills time nobody sent with silence, and everything
that does arrive goes through the jitter buffer (reordering, duplicates,
loss concealment), per source (a new SSRC restarts the statistics).

Output is wire-format payloads (the call's own encoding), so consumers that
take the call's encoding and those that take decoded PCM see the same
stream. Every packet is classified; the class names are the metric labels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ari_agent.media.codecs import COMFORT_NOISE_PT, FRAME_MS, WireFormat
from ari_agent.media.jitter import JitterBuffer, Slot
from ari_agent.media.rtp import RtpPacket, SourceStats

# What receive() made of a packet. "audio" is played; the drops are never played;
# the rest are played as silence.
AUDIO = "audio"
COMFORT_NOISE = "comfort_noise"  # RFC 3389: the sender's silence
TELEPHONE_EVENT = "telephone_event"  # RFC 4733: DTMF reaches us through ARI, not as audio
DROP_PAYLOAD_TYPE = "payload_type"
DROP_BAD_PAYLOAD = "bad_payload"  # empty, or not decodable (odd-length L16)
DROP_SEQUENCE = "sequence"  # RFC 3550 A.1 rejected it (wild sequence jump)
DROP_DUPLICATE = "duplicate"
DROP_LATE = "late"  # arrived after its turn to play had passed
# Events that are not tied to one packet's class.
SSRC_CHANGE = "ssrc_change"
CONCEALED = "concealed"  # a lost frame filled in
GAP = "gap"  # nothing arrived for GAP_SECONDS

GAP_SECONDS = 1.0
_FRAME_S = FRAME_MS / 1000
# A loop stall longer than this is not filled frame by frame (the time is gone either way).
_MAX_FILL_FRAMES = 250


def _looks_like_event(packet: RtpPacket) -> bool:
    # RFC 4733 payloads are 4-byte event blocks on a dynamic payload type.
    size = len(packet.payload)
    return 96 <= packet.payload_type <= 127 and 0 < size <= 16 and size % 4 == 0


class InboundStream:
    """One call's inbound audio as a gapless stream of wire payloads.

    ``depth_ms`` is the jitter buffer's window (0: no reordering is waited
    for). ``now`` is any monotonic clock in seconds; nothing here reads a
    clock itself.
    """

    def __init__(
        self, wire: WireFormat, depth_ms: int, now: float, on_event: Callable[[str], None] | None = None
    ) -> None:
        self.wire = wire
        self.on_event = on_event
        self.stats = SourceStats()
        self.buffer = JitterBuffer(depth_ms)
        # Fill starts only once a packet is overdue by more than the window.
        self._hold_s = depth_ms / 1000 + _FRAME_S
        self._last_arrival = now
        self._covered = now  # wall time the output stream has reached
        self._in_gap = False
        self._last_audio: bytes | None = None
        self._concealing = False
        self._silence = bytes([wire.silence_byte]) * wire.bytes_per_frame
        self._late_stragglers = 0
        self.events: dict[str, int] = {}
        self.frames_filled = 0

    # ------------------------------------------------------------------ input

    def receive(self, packet: RtpPacket, now: float) -> tuple[str, list[bytes]]:
        """Account one RTP packet from the locked source; return its class and what may play now."""
        out: list[bytes] = []
        stats = self.stats
        if stats.is_new_source(packet.ssrc):
            if stats.current is not None:
                # A new source (re-INVITE, media server switch): play what the old one left, then start over.
                self._count(SSRC_CHANGE)
                out.extend(self._play(self.buffer.flush(), now))
        elif packet.ssrc != stats.current:
            # A straggler of the previous source: it counts there, but its turn has passed.
            stats.update(packet, now, self.wire.sample_rate)
            self._late_stragglers += 1
            return DROP_LATE, out
        verdict = stats.update(packet, now, self.wire.sample_rate)
        if verdict == "rejected":
            return DROP_SEQUENCE, out
        if verdict == "duplicate":
            return DROP_DUPLICATE, out
        self._last_arrival = now
        self._in_gap = False
        kind, slot = self._classify(packet)
        placed = self.buffer.put(packet.sequence, slot, now)
        if placed == "late":
            kind = DROP_LATE
        elif placed == "duplicate":
            kind = DROP_DUPLICATE
        if kind in (COMFORT_NOISE, TELEPHONE_EVENT):
            self._count(kind)
        out.extend(self._play(self.buffer.pop(now), now))
        return kind, out

    def tick(self, now: float) -> list[bytes]:
        """Called on the agent's 20 ms clock: frames whose wait ran out, and silence for time nobody sent."""
        out = self._play(self.buffer.pop(now), now)
        idle = now - self._last_arrival
        if idle >= GAP_SECONDS and not self._in_gap:
            self._in_gap = True
            self._count(GAP)
        if self.buffer.holding == 0 and idle >= self._hold_s:
            behind = int((now - self._covered) / _FRAME_S)
            if behind > _MAX_FILL_FRAMES:
                self._covered = now - _MAX_FILL_FRAMES * _FRAME_S
                behind = _MAX_FILL_FRAMES
            if behind > 0:
                out.extend([self._silence] * behind)
                self._covered += behind * _FRAME_S
                self.frames_filled += behind
                self._concealing = False
        return out

    # ------------------------------------------------------------------ internals

    def _classify(self, packet: RtpPacket) -> tuple[str, Slot]:
        pt = packet.payload_type
        if pt == COMFORT_NOISE_PT:
            return COMFORT_NOISE, Slot(None)
        if self._is_audio_pt(packet):
            payload = packet.payload
            if not payload or len(payload) % self.wire.bytes_per_sample:
                return DROP_BAD_PAYLOAD, Slot(None)
            return AUDIO, Slot(payload)
        if _looks_like_event(packet):
            return TELEPHONE_EVENT, Slot(None)
        return DROP_PAYLOAD_TYPE, Slot(None)

    def _is_audio_pt(self, packet: RtpPacket) -> bool:
        if self.wire.receive_payload_types is not None:
            return self.wire.accepts_payload_type(packet.payload_type)
        # Asterisk picks a dynamic payload type for slin16 and there is no SDP to say which,
        # so events are told apart by shape: a few 4-byte blocks are never 16 kHz audio.
        return not _looks_like_event(packet)

    def _play(self, slots: list[Slot], now: float) -> list[bytes]:
        out: list[bytes] = []
        for slot in slots:
            if slot.payload is not None:
                payload = slot.payload
                self._last_audio = payload
                self._concealing = False
            elif slot.lost:
                if self._covered > now:
                    # The clock already filled this time with silence (a long outage):
                    # concealing it again would push the stream ahead of real time.
                    continue
                payload = self._conceal()
                self._count(CONCEALED)
            else:
                payload = self._silence
                self._concealing = False
            out.append(payload)
            seconds = len(payload) / self.wire.bytes_per_sample / self.wire.sample_rate
            self._covered = max(self._covered + seconds, now)
        return out

    def _conceal(self) -> bytes:
        # The first lost frame repeats the last one at half level (keeps a word whole for
        # VAD and STT); a longer run fades to silence rather than buzzing.
        last = self._last_audio
        if self._concealing or last is None:
            return self._silence
        self._concealing = True
        pcm = self.wire.decode(last)
        return self.wire.encode((pcm // 2).astype(np.int16))

    def note(self, kind: str) -> None:
        """Count an event that came outside the packets (AudioSocket's DTMF messages)."""
        self._count(kind)

    def _count(self, kind: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1
        if self.on_event is not None:
            self.on_event(kind)

    # ------------------------------------------------------------------ figures

    def quality(self) -> dict[str, float | int | None]:
        """The call's inbound figures, for its record."""
        stats = self.stats
        return {
            "received": stats.received,
            "expected": stats.expected,
            "lost": stats.lost,
            "loss": round(stats.fraction_lost, 5),
            "duplicates": stats.duplicates,
            "reordered": stats.reordered,
            "late": self.buffer.late + self._late_stragglers,
            "jitter_ms": round(stats.jitter_ms, 2),
            "ssrc_changes": stats.changes,
            "comfort_noise": self.events.get(COMFORT_NOISE, 0),
            "telephone_events": self.events.get(TELEPHONE_EVENT, 0),
            "concealed": self.events.get(CONCEALED, 0),
            "gaps": self.events.get(GAP, 0),
            "silence_filled_ms": self.frames_filled * FRAME_MS,
            "jitter_buffer_p50_ms": self.buffer.delay_percentile_ms(50),
            "jitter_buffer_p95_ms": self.buffer.delay_percentile_ms(95),
        }
