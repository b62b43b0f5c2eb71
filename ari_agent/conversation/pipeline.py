"""The cascaded conversation: caller audio -> STT -> LLM (+tools) -> TTS -> caller.

Listening runs on every inbound frame (echo guard, VAD, STT push, barge-in);
thinking and speaking run one turn at a time. The end of a caller's turn is
the local VAD's silence or the STT provider's own endpointing, whichever
comes first; the reply streams: the LLM's text is cut into sentences, each
synthesised while the previous one plays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from ari_agent.audio.echo import EchoGuard
from ari_agent.audio.vad import SpeechEnded, SpeechStarted, VoiceActivityDetector
from ari_agent.conversation.chunker import SentenceChunker
from ari_agent.conversation.engine import CallParts, ConversationBase
from ari_agent.conversation.records import Turn, utc_now
from ari_agent.conversation.speech import (
    Apology,
    Farewell,
    Filler,
    Greeting,
    Reply,
    Reprompt,
    Spoken,
    Utterance,
)
from ari_agent.conversation.tools import Finish, tool_specs
from providers.base import (
    LLM,
    STT,
    EndOfTurn,
    FinalTranscript,
    Message,
    ProviderError,
    SpeechStream,
    TextDelta,
    ToolCall,
)

log = logging.getLogger(__name__)

SESSION_RATE = 16000
FRAME_BYTES = SESSION_RATE // 50 * 2  # 20 ms of PCM16
SILENT_FRAME = bytes(FRAME_BYTES)
FRAME_MS = 20
RUN_GAP_MS = 60  # unvoiced frames inside one stretch of speech (consonants, short pauses)
VAD_ONSET_MS = 60  # short: barge-in timing is judged on speech_ms, not on onset
MAX_TOOL_ROUNDS = 3
MAX_TURN_ERRORS = 2


@dataclass(frozen=True)
class CallerTurn:
    text: str
    speech_end_at: float  # monotonic: when the caller stopped speaking
    stt_ms: float | None  # local end of turn -> final transcript
    ended_at: float = 0.0  # monotonic: when the turn was taken as ended (transcript in hand)


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class RecogniserLost:
    """The STT stream ended for good: the caller can no longer be heard."""


class PipelineConversation(ConversationBase):
    def __init__(self, parts: CallParts, *, stt: STT, llm: LLM) -> None:
        super().__init__(parts)
        self.stt = stt
        self.llm = llm
        profile = parts.profile
        self._specs = tool_specs(profile)
        self._history: list[Message] = [Message("system", self.instructions)] if self.instructions else []
        self._vad = VoiceActivityDetector(
            sample_rate=SESSION_RATE,
            aggressiveness=profile.vad_aggressiveness,
            onset_ms=VAD_ONSET_MS,
            hangover_ms=profile.end_of_turn_ms,
            min_speech_ms=profile.min_speech_ms,
        )
        self._echo = EchoGuard() if profile.echo_guard else None
        self._pending = bytearray()
        self._inbox: asyncio.Queue[CallerTurn | Digit | RecogniserLost] = asyncio.Queue()
        self._stream: SpeechStream | None = None
        # Per caller utterance
        self._onset_at = 0.0
        self._last_voiced_at = 0.0
        self._pushing = False  # audio goes to STT once speech outlasts min_speech_ms
        self._run_ms = 0  # continuous speech so far (the barge-in and turn-start measure)
        self._gap_ms = 0
        self._barged = False
        self._utterance_done = False  # the provider already ended this utterance's turn
        # Per turn (may span utterances until an end of turn)
        self._texts: list[str] = []
        self._pushed = False
        self._provider_ended = False
        self._finalize_at: float | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._turn_errors = 0

    # ------------------------------------------------------------------
    # Listening: called for every inbound packet, so no awaits and no I/O.

    def on_audio(self, pcm: np.ndarray) -> None:
        self._pending += pcm.astype("<i2", copy=False).tobytes()
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            self._on_frame(frame)

    def on_sent_audio(self, pcm8k: np.ndarray, at: float) -> None:
        if self._echo is not None:
            self._echo.sent(pcm8k, at)

    def on_dtmf(self, digit: str) -> None:
        if self.speaker.interrupt():
            self._cancel_reply()
        self._inbox.put_nowait(Digit(digit))

    def _on_frame(self, frame: bytes) -> None:
        now = time.monotonic()
        heard = frame
        if self._echo is not None and self._echo.is_echo(np.frombuffer(frame, dtype=np.int16), now):
            heard = SILENT_FRAME  # our own voice coming back: neither a turn nor a barge-in
        event = self._vad.process(heard)
        if isinstance(event, SpeechStarted):
            self._onset_at = now - (self._vad.now_ms - event.at_ms) / 1000
            self._pushing = self._barged = self._utterance_done = False
            self._run_ms, self._gap_ms = VAD_ONSET_MS - FRAME_MS, 0  # the onset frames were speech
        if self._vad.speaking:
            # When the caller last made a sound (the end of speech, not of the end-of-turn wait).
            self._last_voiced_at = now - (self._vad.now_ms - self._vad.last_voiced_ms) / 1000
            # Continuous speech, not voiced frames summed over an utterance: three coughs
            # half a second apart are still three short noises.
            if self._vad.last_voiced_ms == self._vad.now_ms:
                self._run_ms += FRAME_MS
                self._gap_ms = 0
            else:
                self._gap_ms += FRAME_MS
                if self._gap_ms > RUN_GAP_MS:
                    self._run_ms = 0
            speech_ms = self._run_ms
            if not self._pushing and speech_ms >= self.profile.min_speech_ms:
                self._pushing = True
                self._push(self._vad.current_audio())
            elif self._pushing:
                self._push(heard)
            if (
                self.profile.barge_in
                and not self._barged
                and speech_ms >= self.profile.barge_in_min_ms
                and self.speaker.interruptible
            ):
                self._barge_in(now)
        else:
            self._run_ms = self._gap_ms = 0
        if isinstance(event, SpeechEnded):
            if self._pushing and not self._utterance_done:
                self._push(heard)
                self._finalize_at = now
                task = asyncio.get_running_loop().create_task(self._finalize())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            self._pushing = False

    def _push(self, audio: bytes) -> None:
        if self._stream is not None and audio:
            self._stream.push(audio)
            self._pushed = True

    def _barge_in(self, now: float) -> None:
        self._barged = True
        if not self.speaker.interrupt():
            return
        self._cancel_reply()
        reaction = time.monotonic() - self._onset_at
        self.metrics.barge_ins.labels(self.profile_name).inc()
        self.metrics.barge_in_reaction.labels(self.profile_name).observe(reaction)
        log.info("caller barged in (%.0f ms after speech onset)", reaction * 1000)

    def _cancel_reply(self) -> None:
        if self._reply_task is not None and not self._reply_task.done():
            self._reply_task.cancel()

    async def _finalize(self) -> None:
        if self._stream is None:
            return
        try:
            await self._stream.finalize()
        except ProviderError as exc:
            log.warning("STT finalize failed: %s", exc)

    async def _read_stt(self, stream: SpeechStream) -> None:
        async for event in stream.events():
            if isinstance(event, FinalTranscript):
                if event.text.strip():
                    self._texts.append(event.text.strip())
                if self._texts and (self._finalize_at is not None or self._provider_ended):
                    self._complete_turn()
            elif isinstance(event, EndOfTurn):
                self._on_provider_end()

    def _on_provider_end(self) -> None:
        if self._finalize_at is not None:
            # We asked for this turn's end: it is over, even with nothing made out.
            self._complete_turn()
            return
        trusted = self.profile.provider_endpointing and self.stt.capabilities.endpointing
        if not trusted or not self._pushed:
            return
        if self._texts:
            self._utterance_done = True  # the VAD's own end of this utterance is not a new turn
            self._complete_turn()
        else:
            self._provider_ended = True  # the transcript follows its end-of-turn

    def _complete_turn(self) -> None:
        now = time.monotonic()
        if self._vad.speaking:
            self._utterance_done = True
        text = " ".join(self._texts)
        stt_ms = (now - self._finalize_at) * 1000 if self._finalize_at is not None else None
        self._texts = []
        self._pushed = False
        self._provider_ended = False
        self._finalize_at = None
        if stt_ms is not None:
            self.metrics.stt_latency.labels(self.stt.name, self.profile_name).observe(stt_ms / 1000)
        self._inbox.put_nowait(CallerTurn(text, self._last_voiced_at or now, stt_ms, now))

    # ------------------------------------------------------------------
    # Thinking and speaking

    async def run(self) -> None:
        """The conversation; leaves only by raising Finish."""
        try:
            self._stream = await self.stt.stream()
        except ProviderError as exc:
            self._failed("stt", exc)
            raise Finish("failed") from exc
        reader = asyncio.create_task(self._read_stt(self._stream), name="stt-reader")
        reader.add_done_callback(self._reader_done)
        try:
            async with asyncio.timeout(self.profile.max_duration_s):
                self.state = "greeting"
                await self.speaker.say(Greeting, self.profile.greeting)
                while True:
                    self.state = "listening"
                    item = await self._next_input()
                    self.state = "thinking"
                    await self._turn(item)
        except TimeoutError:
            log.info("maximum call duration reached")
            self.speaker.interrupt()
            self._cancel_reply()
            await self._say_canned(Farewell, self.profile.max_duration_goodbye)
            raise Finish("hangup_by_agent") from None
        finally:
            reader.cancel()
            await self._stream.aclose()

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, ProviderError):
            self._failed("stt", exc)
        elif exc is not None:
            log.error("STT reader failed: %r", exc)
        # A dead recogniser leaves the caller unheard: end the turn loop with a failure.
        self._inbox.put_nowait(RecogniserLost())

    async def _next_input(self) -> CallerTurn | Digit | RecogniserLost:
        reprompts = 0
        while True:
            try:
                return await asyncio.wait_for(self._inbox.get(), self.profile.idle_timeout_s)
            except TimeoutError:
                if self._vad.speaking or self._finalize_at is not None:
                    continue  # the caller is talking or being transcribed: not idle
                reprompts += 1
                if reprompts > self.profile.max_reprompts:
                    await self.speaker.say(Farewell, self.profile.idle_goodbye)
                    await self._act_delay()
                    raise Finish("hangup_by_agent") from None
                await self.speaker.say(Reprompt, self.profile.idle_reprompt)

    async def _turn(self, item: CallerTurn | Digit | RecogniserLost) -> None:
        if isinstance(item, RecogniserLost):
            raise Finish("failed")
        if isinstance(item, Digit):
            text = f"caller pressed {item.digit}"
            speech_end_at = ended_at = time.monotonic()
            stt_ms = None
        else:
            text, speech_end_at, stt_ms, ended_at = item.text, item.speech_end_at, item.stt_ms, item.ended_at
        if not text:
            # Speech nobody could make out (or out of the dialog's scope).
            await self.speaker.say(Reply, self.profile.fallback_reply)
            return
        self.record.turns.append(Turn("user", text, utc_now()))
        self._history.append(Message("user", text))
        self._reply_task = asyncio.create_task(self._reply(speech_end_at, ended_at, stt_ms), name="reply")
        await asyncio.wait({self._reply_task})
        task, self._reply_task = self._reply_task, None
        if task.cancelled():
            # Barged in: the model must know what the caller actually heard.
            heard = self.speaker.last
            if heard is not None and heard.interrupted and heard.turn.text:
                self._history.append(Message("assistant", heard.turn.text))
            return
        exc = task.exception()
        if exc is None:
            self._turn_errors = 0
            return
        if isinstance(exc, ProviderError):
            self._turn_errors += 1
            if not exc.retryable or self._turn_errors >= MAX_TURN_ERRORS:
                raise Finish("failed") from exc
            await self._say_canned(Reply, self.profile.turn_error_reply)
            return
        raise exc

    async def _reply(self, speech_end_at: float, ended_at: float, stt_ms: float | None) -> None:
        """Answer one caller turn: stream LLM -> sentences -> TTS -> pacer; then act."""
        filler = asyncio.create_task(self._filler(ended_at)) if self.profile.filler_after_ms > 0 else None
        try:
            for _ in range(MAX_TOOL_ROUNDS):
                finish, tool_notes, spoken = await self._reply_round(speech_end_at, ended_at, stt_ms)
                stt_ms = None  # later rounds answer tool results, not the caller
                if filler is not None:
                    filler.cancel()
                if spoken is not None and spoken.turn.text:
                    self._history.append(Message("assistant", spoken.turn.text))
                if finish is not None:
                    await self._act_delay()
                    raise finish
                if not tool_notes or (spoken is not None and spoken.turn.text):
                    return
                # Tools ran but nothing was said: let the model answer with their results.
                self._history.append(Message("tool", "; ".join(tool_notes)))
        finally:
            if filler is not None:
                filler.cancel()

    async def _reply_round(
        self, speech_end_at: float, ended_at: float, stt_ms: float | None
    ) -> tuple[Finish | None, list[str], Spoken | None]:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        state: dict[str, object] = {}
        llm_started = time.monotonic()
        timings: dict[str, float] = {}
        if stt_ms is not None:
            timings["stt_ms"] = round(stt_ms, 1)
        notes: list[str] = []

        async def produce() -> None:
            chunker = SentenceChunker()
            try:
                async for event in self.llm.chat(self._history, self._specs):
                    if "llm_first_token_ms" not in timings:
                        ttft = time.monotonic() - llm_started
                        timings["llm_first_token_ms"] = round(ttft * 1000, 1)
                        self.metrics.llm_first_token.labels(self.llm.name, self.profile_name).observe(ttft)
                    if isinstance(event, TextDelta):
                        for piece in chunker.push(event.text):
                            state.setdefault("first_piece_at", time.monotonic())
                            pieces.put_nowait(piece)
                    elif isinstance(event, ToolCall):
                        outcome = await self.tools.run(event)
                        notes.append(f"{event.name}: {outcome.output}")
                        if outcome.finish is not None:
                            state["finish"] = outcome.finish
                            spoken = state.get("spoken")
                            if isinstance(spoken, Spoken):
                                spoken.kind = Farewell  # the call ends after it: say it in full
                for piece in chunker.flush():
                    state.setdefault("first_piece_at", time.monotonic())
                    pieces.put_nowait(piece)
                timings["llm_total_ms"] = round((time.monotonic() - llm_started) * 1000, 1)
            finally:
                pieces.put_nowait(None)

        async def texts() -> AsyncIterator[str]:
            while (piece := await pieces.get()) is not None:
                yield piece

        def first_audio(spoken: Spoken) -> None:
            state["spoken"] = spoken
            if spoken.first_audio_at is not None:
                # Our own pipeline: turn taken as ended -> first audio handed to the pacer.
                timings["end_to_audio_ms"] = round((spoken.first_audio_at - ended_at) * 1000, 1)
                timings["llm_start_to_audio_ms"] = round((spoken.first_audio_at - llm_started) * 1000, 1)
            first_piece = state.get("first_piece_at")
            if isinstance(first_piece, float) and spoken.first_audio_at is not None:
                tts_s = spoken.first_audio_at - first_piece
                timings["tts_first_audio_ms"] = round(tts_s * 1000, 1)
                self.metrics.tts_first_audio.labels(self.speaker.tts.name, self.profile_name).observe(tts_s)

        producer = asyncio.create_task(produce(), name="llm")
        try:
            spoken = await self.speaker.say(Reply, texts(), on_first_audio=first_audio)
            await producer
        finally:
            producer.cancel()
        if "finish" in state and isinstance(state["finish"], Finish):
            spoken.kind = Farewell
        if spoken.first_packet_at is not None:
            latency = spoken.first_packet_at - speech_end_at
            timings["turn_latency_ms"] = round(latency * 1000, 1)
            self.metrics.turn_latency.labels(self.profile_name).observe(latency)
        spoken.turn.timings = timings
        finish = state.get("finish")
        if not spoken.pieces:
            return (finish if isinstance(finish, Finish) else None), notes, None
        return (finish if isinstance(finish, Finish) else None), notes, spoken

    async def _filler(self, turn_ended_at: float) -> None:
        # Counted from the end of the caller's turn: the end-of-turn silence is not dead air.
        delay = self.profile.filler_after_ms / 1000 - (time.monotonic() - turn_ended_at)
        await asyncio.sleep(max(0.0, delay))
        if not self.speaker.audible:
            await self.speaker.say(Filler, self.profile.filler)

    async def _say_canned(self, kind: type[Utterance], text: str) -> Spoken:
        return await self.speaker.say(kind, text, audio=self.canned.get(text))

    async def apologise(self) -> None:
        """Before handing a failed call back: a short apology that needs no provider."""
        self.speaker.interrupt()
        self._cancel_reply()
        await self._say_canned(Apology, self.profile.apology)

    async def _act_delay(self) -> None:
        await asyncio.sleep(self.profile.action_delay_ms / 1000)

    def _failed(self, stage: str, exc: ProviderError) -> None:
        self.metrics.provider_errors.labels(stage, exc.provider).inc()
        log.error("%s provider failed: %s", stage, exc)
