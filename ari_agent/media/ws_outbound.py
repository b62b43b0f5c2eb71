"""The outbound half on chan_websocket: Asterisk paces, the agent sends as fast as audio is made.

It keeps the pacer's interface (enqueue, pause, resume, flush, frames_sent,
wait_idle, on_sent, on_audio_sent), so the speaker, the realtime
conversation and the session do not know which transport they drive, but:

- frames leave in batches as soon as they are queued, each batch followed
  by ``MARK_MEDIA``; Asterisk plays them one per 20 ms;
- ``MEDIA_XOFF`` stops sending (what is queued waits here) until
  ``MEDIA_XON``; as a last guard no more than ``IN_FLIGHT_MAX`` frames are
  ever in Asterisk's queue (a message sent to a full queue is dropped whole);
- pause, resume and flush are PAUSE_MEDIA, CONTINUE_MEDIA and FLUSH_MEDIA;
- what the caller heard (``frames_sent``, ``on_sent``, ``on_audio_sent``,
  ``wait_idle``) follows Asterisk's play-out (:mod:`playout`), not the
  moment a frame left the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Protocol

from ari_agent.media import wsmedia
from ari_agent.media.codecs import FRAME_MS, Pcm, WireFormat
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.playout import Played, Playout
from ari_agent.media.resample import StreamResampler

log = logging.getLogger(__name__)

BATCH_FRAMES = 5  # 100 ms per message and mark: the heard part is known to about a frame
IN_FLIGHT_MAX = wsmedia.QUEUE_MAX - 2 * BATCH_FRAMES
_PERIOD = FRAME_MS / 1000.0
_REFERENCE_RATE = 8000  # the echo references are 8 kHz on every transport
# The echo references go to the echo guard this far ahead of the reckoned play-out. The
# reckoning runs up to a frame behind Asterisk (a mark is read after the frame behind it
# started) and is looked at once a frame; a reference that arrives after its own echo is
# no use. On RTP a frame's reference leaves with it, a bridge hop before the caller hears it.
REFERENCE_LEAD_S = 0.06


class MediaLink(Protocol):
    """The WebSocket, as the outbound half writes to it (in order)."""

    async def send_media(self, data: bytes) -> None: ...

    async def send_command(self, line: str) -> None: ...


class WebSocketOutbound(OutboundPacer):
    def __init__(
        self,
        link: MediaLink,
        wire: WireFormat,
        *,
        on_audio_sent: Callable[[Pcm, float], None] | None = None,
        on_frames_sent: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(_unused, wire, clock=clock, on_audio_sent=on_audio_sent, rtp=False)
        self._link = link
        self.on_frames_sent = on_frames_sent
        self.playout = Playout(_PERIOD)
        self._commands: list[str] = []
        self.xoff = False
        self.xoffs = 0  # MEDIA_XOFF seen
        self.marks_sent = 0
        self.commands_sent: dict[str, int] = {}  # PAUSE_MEDIA, CONTINUE_MEDIA, FLUSH_MEDIA
        self._broken = False
        self._sending = False  # a batch is on its way (not yet counted as sent)
        rate = self.wire.sample_rate
        self._reference = None if rate == _REFERENCE_RATE else StreamResampler(rate, _REFERENCE_RATE)
        # Frames sent, not yet given to on_audio_sent (index of the first: references_done).
        self._unreferenced: deque[bytes] = deque()
        self._references_done = 0

    # -- the pacer's interface

    def pause(self) -> None:
        if self._paused:
            return
        self._paused = True
        self._emit_played(self.playout.pause(self._clock()))
        self._command(wsmedia.PAUSE_MEDIA)

    def resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self.playout.resume(self._clock())
        self._command(wsmedia.CONTINUE_MEDIA)

    def flush(self) -> int:
        was_paused = self._paused
        now = self._clock()
        self._emit_references(now, lead=0.0)
        played, dropped = self.playout.flush(now)
        self._emit_played(played)
        self._unreferenced.clear()
        self._references_done = 0
        local = super().flush()  # the local queue, the resampler; un-pauses
        if dropped or was_paused or self._sending:
            self._command(wsmedia.FLUSH_MEDIA)
        if was_paused:
            # FLUSH_MEDIA leaves Asterisk's queue paused: the next utterance must play.
            self._command(wsmedia.CONTINUE_MEDIA)
        return local + dropped

    @property
    def queued_ms(self) -> int:
        return (len(self._frames) + self.playout.in_flight) * FRAME_MS

    @property
    def speaking(self) -> bool:
        return bool(self._frames) or self.playout.in_flight > 0

    def frames_sent(self, tag: Hashable) -> int:
        """Frames of ``tag`` the caller has heard so far (Asterisk's play-out, reckoned)."""
        self._emit_played(self.playout.advance(self._clock()))
        return super().frames_sent(tag)

    # -- from the leg

    def on_event(self, event: wsmedia.Event) -> None:
        if isinstance(event, wsmedia.MediaXoff):
            if not self.xoff:
                self.xoffs += 1
                log.info("Asterisk's media queue is full (MEDIA_XOFF): holding %d ms", self.queued_ms)
            self.xoff = True
        elif isinstance(event, wsmedia.MediaXon):
            self.xoff = False
            self._wake.set()
        elif isinstance(event, wsmedia.MarkProcessed):
            self._emit_played(self.playout.on_mark(event.mark, self._clock()))
            self._wake.set()

    def link_lost(self) -> None:
        """The WebSocket is gone: nothing more can be sent or heard."""
        self._broken = True
        self._emit_played(self.playout.advance(self._clock()))
        self.playout.flush(self._clock())
        self._unreferenced.clear()
        self._references_done = 0
        self._frames.clear()
        self._wake.set()

    # -- the task

    def _command(self, command: str) -> None:
        self._commands.append(wsmedia.encode_command(command))
        self._wake.set()

    async def _send_commands(self) -> None:
        while self._commands:
            line = self._commands.pop(0)
            await self._link.send_command(line)
            self.commands_sent[line] = self.commands_sent.get(line, 0) + 1

    def summary(self) -> dict[str, int]:
        """For the call record: how Asterisk's play-out was driven."""
        return {
            "marks_sent": self.marks_sent,
            "marks_processed": self.playout.marks_seen,
            "xoffs": self.xoffs,
            "pauses": self.commands_sent.get(wsmedia.PAUSE_MEDIA, 0),
            "continues": self.commands_sent.get(wsmedia.CONTINUE_MEDIA, 0),
            "flushes": self.commands_sent.get(wsmedia.FLUSH_MEDIA, 0),
        }

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._send_commands()
                if self._broken:
                    self._frames.clear()
                elif self._frames and not self.xoff and self.playout.in_flight < IN_FLIGHT_MAX:
                    await self._send_batch()
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                self.send_errors += 1
                if self.send_errors == 1:
                    log.exception("media send over WebSocket failed (further failures only counted)")
                self.link_lost()
            now = self._clock()
            self._emit_played(self.playout.advance(now))
            self._emit_references(now)
            if not self._frames and self.playout.in_flight == 0:
                self._idle.set()
                await self._wake.wait()
            elif self._paused or self._broken:
                await self._wake.wait()
            else:
                # Follow the play-out a frame at a time (marks correct it as they come).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _PERIOD)

    async def _send_batch(self) -> None:
        room = IN_FLIGHT_MAX - self.playout.in_flight
        count = min(BATCH_FRAMES, room, len(self._frames))
        batch = [self._frames.popleft() for _ in range(count)]
        epoch = self.playout.epoch
        self._sending = True
        try:
            await self._link.send_media(b"".join(frame for frame, _ in batch))
        finally:
            self._sending = False
        if self.playout.epoch != epoch:
            return  # flushed while it was on its way: FLUSH_MEDIA follows it, nobody hears it
        self.playout.on_sent(batch, self._clock())
        self._unreferenced.extend(frame for frame, _ in batch)
        self.packets_sent += count
        if self.on_frames_sent is not None:
            self.on_frames_sent(count)
        await self._link.send_command(wsmedia.encode_command(wsmedia.MARK_MEDIA, self.playout.mark_id()))
        self.marks_sent += 1

    def _emit_played(self, played: list[Played]) -> None:
        for item in played:
            if item.tag is not None:
                self._sent_by_tag[item.tag] = self._sent_by_tag.get(item.tag, 0) + 1
            if self.on_sent is not None:
                try:
                    self.on_sent(item.tag)
                except Exception:
                    log.exception("on_sent callback failed")

    def _emit_references(self, now: float, lead: float = REFERENCE_LEAD_S) -> None:
        """Hand the echo guard and canceller each frame as it is about to play, stamped with
        when it plays (reckoned)."""
        if self.on_audio_sent is None:
            self._unreferenced.clear()
            return
        playout = self.playout
        due = playout.position(now + lead) if not playout.paused else playout.played
        anchor_at = now
        while self._references_done < due and self._unreferenced:
            frame = self._unreferenced.popleft()
            index = self._references_done
            self._references_done += 1
            at = anchor_at + (index - playout.played) * _PERIOD if index >= playout.played else now
            try:
                pcm = self.wire.decode(frame)
                if self._reference is not None:
                    pcm = self._reference.process(pcm)
                self.on_audio_sent(pcm, at)
            except Exception:
                log.exception("on_audio_sent callback failed")


def _unused(data: bytes) -> None:
    raise AssertionError("WebSocketOutbound sends through its link")
