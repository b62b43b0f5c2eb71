"""The speech-to-speech conversation: caller audio <-> one realtime provider.

The provider hears, thinks and speaks; we pace its audio to the caller, cut
it on barge-in (telling the provider how much was heard), run its tool
calls, keep the record, and guard against our own voice coming back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ari_agent.audio.echo import EchoGuard
from ari_agent.conversation.engine import CallParts, ConversationBase
from ari_agent.conversation.records import Turn, utc_now
from ari_agent.conversation.speech import Apology
from ari_agent.conversation.tools import Finish, tool_specs
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.resample import StreamResampler
from providers.base import (
    MULAW_8K,
    PCM16_16K,
    AgentAudio,
    AgentTranscript,
    AudioSpec,
    CallerSpeechStarted,
    CallerTranscript,
    ProviderError,
    Realtime,
    RealtimeConfig,
    RealtimeSession,
    ResponseDone,
    ToolCall,
)

log = logging.getLogger(__name__)

SESSION_RATE = 16000
FRAME_MS = 20
_ULAW_SILENCE = b"\xff"


@dataclass
class _Item:
    """One response item of the agent's: its audio as paced, for the heard position."""

    item_id: str
    samples: int = 0  # at the provider's rate
    turn: Turn | None = None
    interrupted: bool = False
    heard_ms: int | None = None
    text_parts: list[str] = field(default_factory=list)


class RealtimeConversation(ConversationBase):
    def __init__(self, parts: CallParts, *, realtime: Realtime, pacer: OutboundPacer, wire_name: str) -> None:
        super().__init__(parts)
        self.realtime = realtime
        self.pacer = pacer  # provider audio goes straight to the pacer; the speaker only apologises
        profile = parts.profile
        self.spec = self._pick_spec(wire_name)
        # The call's own µ-law goes through untouched; otherwise resample both ways.
        self.raw = self.spec == MULAW_8K
        self._to_provider = StreamResampler(SESSION_RATE, self.spec.sample_rate)
        self._from_provider = StreamResampler(self.spec.sample_rate, SESSION_RATE)
        self._echo = EchoGuard() if profile.echo_guard else None
        self._session: RealtimeSession | None = None
        self._items: dict[str, _Item] = {}
        self._current: _Item | None = None
        self._speech_started_at = 0.0
        self._echo_now = False

    def _pick_spec(self, wire_name: str) -> AudioSpec:
        specs = self.realtime.capabilities.audio_specs
        if wire_name == "ulaw" and MULAW_8K in specs:
            return MULAW_8K
        if PCM16_16K in specs:
            return PCM16_16K
        pcm = [s for s in specs if s.encoding == "pcm16"]
        if not pcm:
            raise ProviderError("no usable audio format", provider=self.realtime.name, retryable=False)
        return pcm[0]

    # ------------------------------------------------------------------
    # Audio in (every packet: no awaits)

    def on_audio(self, pcm: np.ndarray) -> None:
        echo = self._echo is not None and self._echo.is_echo(pcm, time.monotonic())
        self._echo_now = echo
        if self._session is None or self.raw:
            return  # µ-law calls go through on_payload, untouched
        if echo:
            pcm = np.zeros_like(pcm)  # the provider's VAD must not hear our own voice
        self._session.push(self._to_provider.process(pcm).astype("<i2").tobytes())

    def on_payload(self, payload: bytes) -> None:
        """The call's µ-law as received (called before on_audio for the same packet)."""
        if self._session is None:
            return
        # The echo verdict of this packet comes with on_audio, right after; the
        # previous packet's verdict is a 20 ms-late but cheap stand-in.
        self._session.push(_ULAW_SILENCE * len(payload) if self._echo_now else payload)

    def on_sent_audio(self, pcm8k: np.ndarray, at: float) -> None:
        if self._echo is not None:
            self._echo.sent(pcm8k, at)

    def on_dtmf(self, digit: str) -> None:
        log.info("DTMF %s ignored: the realtime provider has no text input here", digit)

    # ------------------------------------------------------------------

    async def run(self) -> None:
        config = RealtimeConfig(
            instructions=self.instructions,
            voice=self.profile.voice,
            language=self.profile.language,
            tools=tool_specs(self.profile),
            turn_detection=self.profile.turn_detection,
            audio=self.spec,
            greeting=self.profile.greeting,
        )
        try:
            async with asyncio.timeout(self.profile.max_duration_s):
                while True:
                    try:
                        self._session = await self.realtime.connect(config)
                    except ProviderError as exc:
                        self._failed(exc)
                        raise Finish("failed") from exc
                    self.state = "listening"
                    try:
                        await self._events(self._session)
                        return
                    except ProviderError as exc:
                        self._failed(exc)
                        if not exc.retryable:
                            raise Finish("failed") from exc
                        # The provider ended the session (e.g. its length limit): a
                        # fresh one carries on without greeting again.
                        log.info("realtime session ended by the provider; reconnecting")
                        config = RealtimeConfig(**{**config.__dict__, "greeting": ""})
                    finally:
                        await self._session.aclose()
                        self._session = None
        except TimeoutError:
            log.info("maximum call duration reached")
            raise Finish("hangup_by_agent") from None

    async def _events(self, session: RealtimeSession) -> None:
        async for event in session.events():
            if isinstance(event, AgentAudio):
                self._play(event)
            elif isinstance(event, CallerSpeechStarted):
                self._speech_started_at = time.monotonic()
                if self.pacer.speaking and self.profile.barge_in and self._current is not None:
                    await self._barge_in(session, self._current)
            elif isinstance(event, CallerTranscript):
                if event.text.strip():
                    self.record.turns.append(Turn("user", event.text.strip(), utc_now()))
            elif isinstance(event, AgentTranscript):
                self._transcript(event)
            elif isinstance(event, ToolCall):
                outcome = await self.tools.run(event)
                if outcome.finish is not None:
                    await self.pacer.wait_idle()
                    await asyncio.sleep(self.profile.action_delay_ms / 1000)
                    raise outcome.finish
                await session.tool_result(event.call_id, outcome.output)
            elif isinstance(event, ResponseDone):
                self.state = "listening"

    def _play(self, event: AgentAudio) -> None:
        item = self._items.get(event.item_id)
        if item is None:
            item = self._items[event.item_id] = _Item(event.item_id)
            self._current = item
        if item.interrupted:
            return  # audio still in flight from a cancelled response
        self.state = "speaking"
        if self.raw:
            item.samples += len(event.audio)
            self.pacer.enqueue_encoded(event.audio, item.item_id)
        else:
            pcm = np.frombuffer(event.audio, dtype="<i2")
            item.samples += pcm.size
            self.pacer.enqueue(self._from_provider.process(pcm), item.item_id, final=False)

    async def _barge_in(self, session: RealtimeSession, item: _Item) -> None:
        self.pacer.flush()
        item.interrupted = True
        item.heard_ms = self.pacer.frames_sent(item.item_id) * FRAME_MS
        reaction = time.monotonic() - self._speech_started_at
        self.metrics.barge_ins.labels(self.profile_name).inc()
        self.metrics.barge_in_reaction.labels(self.profile_name).observe(reaction)
        log.info("caller barged in; %d ms of the reply were heard", item.heard_ms)
        if item.turn is None:
            # Its transcript may come later, or never for a cancelled response: hold its place.
            item.turn = Turn("agent", "", utc_now(), interrupted=True, heard_ms=item.heard_ms)
            self.record.turns.append(item.turn)
        else:
            self._cut(item)
        await session.interrupt(item.item_id, item.heard_ms)

    def _transcript(self, event: AgentTranscript) -> None:
        item = self._items.setdefault(event.item_id, _Item(event.item_id))
        if item.turn is None:
            item.turn = Turn("agent", event.text, utc_now())
            self.record.turns.append(item.turn)
        else:
            item.turn.text = event.text
        if item.interrupted:
            self._cut(item)

    def _cut(self, item: _Item) -> None:
        assert item.turn is not None and item.heard_ms is not None
        total_ms = item.samples * 1000 // self.spec.sample_rate
        words = item.turn.text.split()
        share = min(1.0, item.heard_ms / total_ms) if total_ms else 0.0
        item.turn.text = " ".join(words[: round(len(words) * share)])
        item.turn.interrupted = True
        item.turn.heard_ms = item.heard_ms

    async def apologise(self) -> None:
        self.pacer.flush()
        await self.speaker.say(Apology, self.profile.apology, audio=self.canned.get(self.profile.apology))

    def _failed(self, exc: ProviderError) -> None:
        self.metrics.provider_errors.labels("realtime", exc.provider).inc()
        log.error("realtime provider failed: %s", exc)
