"""What the agent says, and the one place that turns it into paced audio.

Interruptibility is a property of the kind of utterance, not a flag set here
and there: a barge-in cuts what the caller may talk over (a reply, a filler,
a reprompt, the greeting) and never what must be heard in full before the
call ends (a farewell, the apology). Tool actions are not utterances at all,
so a barge-in never cancels them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ari_agent.conversation.records import Turn, utc_now
from ari_agent.media.codecs import FRAME_MS
from ari_agent.media.pacer import OutboundPacer
from providers.base import TTS

log = logging.getLogger(__name__)

SESSION_RATE = 16000
_EMPTY = np.zeros(0, dtype=np.int16)


class Utterance:
    interruptible: ClassVar[bool] = True


class Greeting(Utterance):
    pass


class Reply(Utterance):
    pass


class Filler(Utterance):
    pass


class Reprompt(Utterance):
    pass


class Farewell(Utterance):
    """Said right before the agent acts (hang up, transfer): heard in full."""

    interruptible = False


class Apology(Utterance):
    interruptible = False


@dataclass
class Spoken:
    """How one utterance went."""

    kind: type[Utterance]
    turn: Turn
    pieces: list[tuple[str, Hashable, int]] = field(default_factory=list)  # (text, pacer tag, samples)
    interrupted: bool = False
    first_audio_at: float | None = None  # first audio handed to the pacer
    first_packet_at: float | None = None  # first packet of it sent to Asterisk

    def heard_text(self, frames_sent: Callable[[Hashable], int]) -> str:
        """The words the caller heard: whole pieces sent, then a share of the piece cut."""
        words: list[str] = []
        for text, tag, samples in self.pieces:
            sent = frames_sent(tag) * SESSION_RATE // 50
            piece_words = text.split()
            if samples and sent < samples:
                words += piece_words[: round(len(piece_words) * sent / samples)]
                break
            words += piece_words
        return " ".join(words)


class Speaker:
    """Speaks utterances through the pacer; one at a time, cut at once on barge-in."""

    def __init__(self, pacer: OutboundPacer, tts: TTS, turns: list[Turn]) -> None:
        self.pacer = pacer
        self.tts = tts
        self.turns = turns
        # Utterances under way: a reply may be synthesised while a filler still plays.
        self.active: list[Spoken] = []
        self.last: Spoken | None = None  # the most recent utterance that ended, cut or not
        self._by_tag: dict[Hashable, Spoken] = {}
        pacer.on_sent = self._on_sent

    @property
    def speaking(self) -> bool:
        return bool(self.active) or self.pacer.speaking

    @property
    def audible(self) -> bool:
        """Audio is playing or queued (an utterance still waiting for its words is not)."""
        return self.pacer.speaking or any(s.first_audio_at is not None for s in self.active)

    @property
    def interruptible(self) -> bool:
        """Something the caller may talk over is being said."""
        return any(s.kind.interruptible and s.first_audio_at is not None for s in self.active)

    async def say(
        self,
        kind: type[Utterance],
        text: str | AsyncIterator[str],
        *,
        audio: bytes | None = None,
        on_first_audio: Callable[[Spoken], None] | None = None,
    ) -> Spoken:
        """Speak text (or a stream of text pieces) and wait until it has been sent.

        ``audio`` is ready-made PCM for ``text`` (canned phrases). Cancelling
        the caller of ``say`` (barge-in) leaves the result marked interrupted.
        """
        spoken = Spoken(kind, Turn("agent", "", utc_now()))
        self.active.append(spoken)
        try:
            pieces = _one(text) if isinstance(text, str) else text
            async for piece in pieces:
                spoken.turn.text = f"{spoken.turn.text} {piece}".strip()
                tag = object()
                spoken.pieces.append((piece, tag, 0))
                self._by_tag[tag] = spoken
                if audio is not None:
                    self._enqueue(spoken, audio, on_first_audio)
                    continue
                async for chunk in self.tts.synthesize(piece, SESSION_RATE):
                    if spoken.interrupted:
                        break  # cut while synthesising: stop asking for more
                    self._enqueue(spoken, chunk, on_first_audio)
                if spoken.interrupted:
                    break
            if spoken.pieces and not spoken.interrupted:
                # Pad the last partial frame: the utterance ends here.
                self.pacer.enqueue(_EMPTY, spoken.pieces[-1][1], final=True)
            await self.pacer.wait_idle()
        except asyncio.CancelledError:
            spoken.interrupted = True
            self.pacer.flush()
            raise
        finally:
            self.active.remove(spoken)
            if not self.active:
                self.pacer.resume()  # a hold outlives nothing it was for: the next utterance plays
            self.last = spoken
            if spoken.interrupted:
                self._record_heard(spoken)
            for _, tag, _ in spoken.pieces:
                self._by_tag.pop(tag, None)
        return spoken

    def pause(self) -> bool:
        """Hold the agent's audio for a caller who may be interrupting. False if it may not be."""
        if not self.interruptible or any(not s.kind.interruptible for s in self.active):
            return False
        if not self.pacer.speaking:
            return False  # all of it is out: nothing to hold (a hold now would catch the next utterance)
        self.pacer.pause()
        return True

    def resume(self) -> bool:
        """Go on from where ``pause`` held it; False if nothing was held (cut meanwhile)."""
        if not self.pacer.paused:
            return False
        self.pacer.resume()
        return True

    def interrupt(self) -> bool:
        """Barge-in: stop what may be interrupted, now. False if nothing could be."""
        cut = [s for s in self.active if s.kind.interruptible and not s.interrupted]
        if not cut or any(not s.kind.interruptible for s in self.active):
            return False
        for spoken in cut:
            spoken.interrupted = True
        dropped = self.pacer.flush()
        log.info("barge-in: %s cut (%d frames dropped)", ", ".join(s.kind.__name__ for s in cut), dropped)
        return True

    def _enqueue(self, spoken: Spoken, chunk: bytes, on_first_audio: Callable[[Spoken], None] | None) -> None:
        if spoken.interrupted:
            return
        text, tag, samples = spoken.pieces[-1]
        spoken.pieces[-1] = (text, tag, samples + len(chunk) // 2)
        if spoken.first_audio_at is None:
            spoken.first_audio_at = time.monotonic()
            # In the record from its first sound: a filler that played first comes first.
            spoken.turn.at = utc_now()
            self.turns.append(spoken.turn)
            if on_first_audio is not None:
                on_first_audio(spoken)
        self.pacer.enqueue(chunk, tag, final=False)

    def _record_heard(self, spoken: Spoken) -> None:
        spoken.turn.text = spoken.heard_text(self.pacer.frames_sent)
        spoken.turn.heard_ms = sum(self.pacer.frames_sent(tag) for _, tag, _ in spoken.pieces) * FRAME_MS
        spoken.turn.interrupted = True

    def _on_sent(self, tag: Hashable | None) -> None:
        spoken = self._by_tag.get(tag)
        if spoken is not None and spoken.first_packet_at is None:
            spoken.first_packet_at = time.monotonic()


async def _one(text: str) -> AsyncIterator[str]:
    yield text
