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
from ari_agent.media.jitter import MAX_AHEAD, JitterBuffer, Slot
from ari_agent.media.rtp import RtpPacket, SourceStats, seq_diff, ts_diff

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
LATE_FILL = "late_fill"  # silence was filled for time the sender had sent audio for (it came late)

GAP_SECONDS = 1.0
_FRAME_S = FRAME_MS / 1000
# A loop stall longer than this is not filled frame by frame (the time is gone either way).
_MAX_FILL_FRAMES = 250
# The adaptive hold's ceiling. The soak of issue 12 saw packets 60-100 ms late under 1.5x
# load; 200 ms covers that with room, and its cost is bounded: a real silence (the end of a
# turn) is noticed at most 200 - 60 = 140 ms later while the hold is up.
MAX_HOLD_MS = 200
# Margin over the lateness seen: ticks land anywhere within a frame, and the next spike of an
# episode is rarely exactly as long (the soak's spread: 60-100 ms). Decay of the raised hold per
# second of audio that arrived on time: load that delays packets comes in episodes. Swept in
# tests/bench/bench_media.py (100 calls, spikes 60-100 ms late once per 10 s of speech; fixed
# hold: 184 of 1500 talkspurts with silence inside): margin 0/20/40 ms with a 2 ms/s decay ->
# 128/103/92 hit, a pause heard 19/35/53 ms later (median); a 2/5/10 ms/s decay with a 20 ms
# margin -> 103/128/156 hit, 35/11/0 ms. Most of what is left is each call's first spike,
# which nothing per call can foresee; 20 ms and 2 ms/s sit at the knee.
_HOLD_MARGIN_S = _FRAME_S
_HOLD_DECAY_PER_S = 0.002


def _looks_like_event(packet: RtpPacket) -> bool:
    # RFC 4733 payloads are 4-byte event blocks on a dynamic payload type.
    size = len(packet.payload)
    return 96 <= packet.payload_type <= 127 and 0 < size <= 16 and size % 4 == 0


class InboundStream:
    """One call's inbound audio as a gapless stream of wire payloads.

    ``depth_ms`` is the jitter buffer's window (0: no reordering is waited
    for). ``now`` is any monotonic clock in seconds; nothing here reads a
    clock itself. ``max_hold_ms`` caps the adaptive hold; None keeps the
    hold fixed (the behaviour before issue 12, kept for the benchmark).
    """

    def __init__(
        self,
        wire: WireFormat,
        depth_ms: int,
        now: float,
        on_event: Callable[[str], None] | None = None,
        *,
        max_hold_ms: int | None = MAX_HOLD_MS,
    ) -> None:
        self.wire = wire
        self.on_event = on_event
        self.stats = SourceStats()
        self.buffer = JitterBuffer(depth_ms)
        # Fill starts only once a packet is overdue by more than the window.
        self._base_hold_s = depth_ms / 1000 + _FRAME_S
        self._hold_s = self._base_hold_s
        self._max_hold_s = (
            self._base_hold_s if max_hold_ms is None else max(self._base_hold_s, max_hold_ms / 1000)
        )
        self.hold_max_s = self._hold_s
        self._max_owed_s = 0.0 if max_hold_ms is None else self._max_hold_s
        self._owed_s = 0.0
        # The previous in-order packet of the current source, to read the next one's lateness from.
        self._prev: tuple[int, int, float] | None = None  # sequence, timestamp, duration s
        self._filled_since_arrival = 0  # frames
        self.late_fill_frames = 0
        self._retract_frames = 0  # fill judged wrong, not yet taken back by the consumer
        self.retracted_frames = 0
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
            self._prev = None  # unrelated sequence numbers and timestamps
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
        if verdict == "new":
            self._check_fill(packet, now)
        self._last_arrival = now
        self._filled_since_arrival = 0
        self._in_gap = False
        kind, slot = self._classify(packet)
        placed = self.buffer.put(packet.sequence, slot, now)
        if placed == "late" and kind not in (COMFORT_NOISE, TELEPHONE_EVENT):
            # Comfort noise and events carry no audio to miss: late, they still count as what
            # they say (a new source's first packet can come after its second, and be comfort noise).
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
            owed = 0
            if idle >= self._max_hold_s and self._owed_s >= _FRAME_S:
                # Owed time is paid only once the wait is longer than any hold: by then this is
                # the sender's silence (or a stall the hold could not cover), not inside a word.
                owed = int(self._owed_s / _FRAME_S + 1e-9)
                self._owed_s -= owed * _FRAME_S
            if behind > 0:
                self._covered += behind * _FRAME_S
            filled = max(0, behind) + owed
            if filled:
                out.extend([self._silence] * filled)
                self.frames_filled += filled
                self._filled_since_arrival += filled
                self._concealing = False
        return out

    def take_retraction(self) -> int:
        """Frames of silence just handed on for time the sender had audio for (then 0 until the next)."""
        frames, self._retract_frames = self._retract_frames, 0
        self.retracted_frames += frames
        return frames

    @property
    def hold_ms(self) -> float:
        """How long nothing must arrive before silence is filled, now."""
        return self._hold_s * 1000

    # ------------------------------------------------------------------ internals

    def _check_fill(self, packet: RtpPacket, now: float) -> None:
        """Judge the fill (if any) before this in-order packet by its timestamp; adapt the hold."""
        prev = self._prev
        rate = self.wire.sample_rate
        duration = (
            len(packet.payload) / self.wire.bytes_per_sample / rate if self._is_audio_pt(packet) else 0.0
        )
        # Comfort noise and events carry no duration of their own: a nominal frame stands in.
        self._prev = (packet.sequence, packet.timestamp, duration if 0 < duration <= 0.2 else _FRAME_S)
        if prev is None:
            return
        prev_seq, prev_ts, prev_duration = prev
        # The sender's own time between the two packets (lost ones in between included): beyond
        # it, the wait was the network's or ours.
        sent_apart = ts_diff(prev_ts, packet.timestamp) / rate
        if not 0 < seq_diff(prev_seq, packet.sequence) <= MAX_AHEAD or sent_apart < 0:
            return  # a restart of the sender's numbering says nothing about lateness
        lateness = (now - self._last_arrival) - sent_apart
        if self._filled_since_arrival == 0:
            if lateness < _FRAME_S:
                # On time: the hold creeps back towards its base.
                self._hold_s = max(self._base_hold_s, self._hold_s - _HOLD_DECAY_PER_S * prev_duration)
            return
        # Silence was filled while we waited. The marker starts a talkspurt: whatever was
        # filled before it led up to a word, not into one, so only a continuation is judged.
        wrong = min(self._filled_since_arrival * _FRAME_S, lateness)
        if packet.marker or wrong < _FRAME_S - 1e-9:
            return  # the fill stood for the sender's silence or for lost packets: right
        self.late_fill_frames += round(wrong / _FRAME_S)
        self._count(LATE_FILL)
        # The fill is the tail of what was handed on (nothing plays while the buffer is empty),
        # and the audio it stood for follows now: the consumer may take the fill back, so a word
        # does not reach the recogniser with a stall's silence inside it.
        self._retract_frames += round(wrong / _FRAME_S)
        # Wait long enough next time: the packet's whole wait (its lateness plus the frame it
        # was due after) and a margin.
        wanted = lateness + prev_duration + _HOLD_MARGIN_S
        if wanted <= self._max_hold_s:
            # Beyond the cap (a stall, not jitter) a higher hold would not have saved the word,
            # it would only delay every pause: counted, not adapted to.
            self._hold_s = max(self._hold_s, wanted)
        self.hold_max_s = max(self.hold_max_s, self._hold_s)

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
            covered = self._covered + seconds
            if covered < now:
                # This frame came after a wait the clock did not fill (late, but within the
                # hold): a hole. The time is owed, up to the cap, and paid in the next pause (see
                # tick), so the stream keeps real time; the burst behind a late packet puts the
                # stream ahead by as much, which the next pause's fill absorbs. With the fixed
                # hold (before issue 12) the hole was forgotten and the stream ran short.
                self._owed_s = min(self._max_owed_s, self._owed_s + now - covered)
            self._covered = max(covered, now)
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
            "late_fills": self.events.get(LATE_FILL, 0),
            "late_fill_ms": self.late_fill_frames * FRAME_MS,
            "hold_max_ms": round(self.hold_max_s * 1000),
            # Handed back to the consumer; a turn engine between utterances has nothing to take.
            "late_fill_retracted_ms": self.retracted_frames * FRAME_MS,
            "jitter_buffer_p50_ms": self.buffer.delay_percentile_ms(50),
            "jitter_buffer_p95_ms": self.buffer.delay_percentile_ms(95),
        }
