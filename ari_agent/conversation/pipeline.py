"""The cascaded conversation: caller audio -> STT -> LLM (+tools) -> TTS -> caller.

Listening is the turn engine's (``turns.py``): every inbound frame goes
through the echo guard and the voice detector into the engine, and the
pipeline performs what it decides (push audio to STT, finalize, ask the turn
model, barge in, start thinking early, say a filler, answer a turn). The
pipeline itself keeps no turn state: it only does the IO. Thinking and
speaking run one turn at a time; the reply streams: the LLM's text is cut
into sentences, each synthesised while the previous one plays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ari_agent.audio.echo import EchoGuard
from ari_agent.audio.frontend import front_end_for
from ari_agent.audio.vad import VoiceActivityDetector
from ari_agent.conversation.backchannel import Backchannels
from ari_agent.conversation.chunker import SentenceChunker
from ari_agent.conversation.engine import CallParts, ConversationBase
from ari_agent.conversation.records import ToolUse, Turn, TurnTimings, utc_now
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
from ari_agent.conversation.tools import Finish
from ari_agent.conversation.turns import (
    Action,
    BargeIn,
    CallerTurn,
    CancelEarly,
    FalseInterruption,
    Finalize,
    Frame,
    PauseAgent,
    PredictTurn,
    PushAudio,
    ResumeAgent,
    RetractAudio,
    SayFiller,
    StartEarly,
    TurnEngine,
    TurnOver,
    TurnSettings,
)
from ari_agent.observability.tasks import report_failure
from providers.base import (
    LLM,
    STT,
    EndOfTurn,
    FinalTranscript,
    InterimTranscript,
    LLMEvent,
    Message,
    ProviderError,
    SpeechStream,
    TextDelta,
    ToolCall,
)

log = logging.getLogger(__name__)

SESSION_RATE = 16000
FRAME_BYTES = SESSION_RATE // 50 * 2  # 20 ms of PCM16
FRAME_S = 0.02
SILENT_FRAME = bytes(FRAME_BYTES)
MAX_TOOL_ROUNDS = 3
MAX_TURN_ERRORS = 2


class TurnPredictor(Protocol):
    """The turn model: probability that the caller has finished (blocking; run in a thread)."""

    def predict(self, pcm: np.ndarray) -> float: ...


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class RecogniserLost:
    """The STT stream ended for good: the caller can no longer be heard."""


@dataclass
class _Early:
    """A reply thought of before the turn was known to be over (an early start)."""

    text: str
    started_at: float
    events: asyncio.Queue[LLMEvent | BaseException | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


@dataclass
class _Round:
    """One round of a reply: what the LLM said and did, and when."""

    speech_end_at: float
    ended_at: float
    llm_started: float
    timings: TurnTimings
    notes: list[str] = field(default_factory=list)
    passages: list[tuple[str, str]] = field(default_factory=list)  # found by searches this round
    answer_from: bool = False  # a tool result the model must answer from (a search)
    remote: list[ToolUse] = field(default_factory=list)  # tool server calls
    finish: Finish | None = None
    spoken: Spoken | None = None
    first_piece_at: float | None = None


def with_instructions(history: list[Message], instructions: str) -> list[Message]:
    """The history with its system message (first, if any) replaced by ``instructions`` (or none)."""
    rest = history[1:] if history and history[0].role == "system" else history
    return [Message("system", instructions), *rest] if instructions else list(rest)


def turn_settings(parts: CallParts, stt: STT) -> TurnSettings:
    profile = parts.profile
    return TurnSettings(
        end_of_turn=profile.end_of_turn,
        end_of_turn_ms=profile.end_of_turn_ms,
        turn_pause_ms=profile.turn_pause_ms,
        turn_threshold=profile.turn_threshold,
        turn_max_wait_ms=profile.turn_max_wait_ms,
        min_speech_ms=profile.min_speech_ms,
        barge_in=profile.barge_in,
        barge_in_min_ms=profile.barge_in_min_ms,
        false_interruptions=profile.false_interruptions,
        hold_after_ms=profile.hold_after_ms,
        false_interruption_ms=profile.false_interruption_ms,
        backchannel_max_ms=profile.backchannel_max_ms,
        backchannels=Backchannels.of(profile.backchannels),
        provider_endpointing=profile.provider_endpointing and stt.capabilities.endpointing,
        finalize_at_pause=stt.capabilities.segments,
        turn_prepare_ms=profile.turn_prepare_ms,
        early_start=profile.early_start,
        early_start_ms=profile.early_start_ms,
        filler_after_ms=profile.filler_after_ms,
    )


class PipelineConversation(ConversationBase):
    def __init__(
        self, parts: CallParts, *, stt: STT, llm: LLM, turn_model: TurnPredictor | None = None
    ) -> None:
        super().__init__(parts)
        self.stt = stt
        self.llm = llm
        profile = parts.profile
        self._specs = parts.tools.specs()
        self._history: list[Message] = [Message("system", self.instructions)] if self.instructions else []
        # Only its per-frame verdict is used: onset, hangover and the rest are the engine's.
        self._vad = VoiceActivityDetector(sample_rate=SESSION_RATE, aggressiveness=profile.vad_aggressiveness)
        self._engine = TurnEngine(turn_settings(parts, stt))
        if profile.end_of_turn == "model" and turn_model is None:
            from ari_agent.audio.turn_model import shared_turn_model

            turn_model = shared_turn_model()
        self._turn_model = turn_model
        # Echo cancellation and noise suppression, before the echo guard (ConfigError if missing).
        self._frontend = front_end_for(profile, parts.profile_name)
        self._echo = EchoGuard() if profile.echo_guard else None
        self._pending = bytearray()
        self._inbox: asyncio.Queue[CallerTurn | Digit | RecogniserLost] = asyncio.Queue()
        self._stream: SpeechStream | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._turn_errors = 0
        self._early: dict[int, _Early] = {}

    # ------------------------------------------------------------------
    # Listening: called for every inbound chunk, so no awaits and no I/O.

    def on_audio(self, pcm: np.ndarray) -> None:
        self._pending += pcm.astype("<i2", copy=False).tobytes()
        whole = len(self._pending) // FRAME_BYTES
        if not whole:
            return
        now = time.monotonic()
        frames = [bytes(self._pending[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]) for i in range(whole)]
        # Taken out first: a frame that fails must not come back with the next chunk.
        del self._pending[: whole * FRAME_BYTES]
        for i, frame in enumerate(frames):
            # A chunk of several frames (the receive clock catching up) ends now.
            self._on_frame(frame, now - (whole - 1 - i) * FRAME_S)

    def on_retract(self, ms: int) -> None:
        """The receive clock filled ``ms`` of silence for audio that came late (see InboundStream)."""
        frames = round(ms / 1000 / FRAME_S)
        if frames:
            self._perform(self._engine.retract(frames))

    def on_sent_audio(self, pcm8k: np.ndarray, at: float) -> None:
        if self._frontend is not None:
            self._frontend.sent(pcm8k, at)
        if self._echo is not None:
            self._echo.sent(pcm8k, at)

    def on_dtmf(self, digit: str) -> None:
        if self.speaker.interrupt():
            self._cancel_reply()
        self._inbox.put_nowait(Digit(digit))

    def _on_frame(self, frame: bytes, at: float) -> None:
        voice = frame  # what the voice detector judges: noise-suppressed when the profile says so
        if self._frontend is not None:
            frame, voice = self._frontend.process(frame, at)
        heard = frame
        if self._echo is not None and self._echo.is_echo(np.frombuffer(frame, dtype=np.int16), at):
            heard = voice = SILENT_FRAME  # our own voice coming back: neither a turn nor a barge-in
        speaker = self.speaker
        self._perform(
            self._engine.frame(
                Frame(at, heard, self._vad.is_voiced(voice), speaker.interruptible, speaker.audible)
            )
        )

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, PushAudio):
                if self._stream is not None:
                    self._stream.push(action.audio)
            elif isinstance(action, RetractAudio):
                if self._stream is not None:
                    self._stream.retract(action.size)
            elif isinstance(action, Finalize):
                self._spawn(self._finalize())
            elif isinstance(action, PredictTurn):
                self._spawn(self._predict(action))
            elif isinstance(action, PauseAgent):
                if self.speaker.pause():
                    self.metrics.agent_pauses.labels(self.profile_name).inc()
            elif isinstance(action, ResumeAgent):
                if self.speaker.resume():
                    self.metrics.agent_resumes.labels(self.profile_name).inc()
            elif isinstance(action, FalseInterruption):
                self.metrics.false_interruptions.labels(self.profile_name, action.kind).inc()
                log.info("false interruption (%s): the agent goes on", action.kind)
            elif isinstance(action, BargeIn):
                self._barge_in(action)
            elif isinstance(action, StartEarly):
                self._start_early(action)
            elif isinstance(action, CancelEarly):
                self._drop_early(action.ticket, wasted=True)
            elif isinstance(action, SayFiller):
                if not self.speaker.audible:
                    self._spawn(self._say_filler())
            elif isinstance(action, TurnOver):
                self.metrics.turn_ends.labels(self.profile_name, action.turn.reason).inc()
                if action.turn.stt_ms is not None:
                    self.metrics.stt_latency.labels(self.stt.name, self.profile_name).observe(
                        action.turn.stt_ms / 1000
                    )
                self._inbox.put_nowait(action.turn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: report_failure(t, "pipeline", self.metrics))

    def _barge_in(self, barge: BargeIn) -> None:
        if not self.speaker.interrupt():
            return
        self._cancel_reply()
        # What the caller hears: their onset -> the agent's audio stopping (held, or cut now).
        stopped_at = barge.stopped_at if barge.stopped_at is not None else time.monotonic()
        reaction = stopped_at - barge.onset_at
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

    async def _predict(self, ask: PredictTurn) -> None:
        model = self._turn_model
        if model is None:
            return
        pcm = np.frombuffer(ask.audio, dtype=np.int16)
        started = time.monotonic()
        try:
            probability = await asyncio.get_running_loop().run_in_executor(None, model.predict, pcm)
        except Exception as exc:
            # No verdict: the engine's maximum wait still ends the turn.
            log.warning("turn model failed: %r", exc)
            return
        self.metrics.turn_model_seconds.observe(time.monotonic() - started)
        self._perform(self._engine.prediction(ask.ticket, probability, time.monotonic()))

    async def _say_filler(self) -> None:
        await self.speaker.say(Filler, self.profile.filler)

    # ------------------------------------------------------------------
    # Thinking early

    def _start_early(self, start: StartEarly) -> None:
        early = _Early(start.text, time.monotonic())
        history = [*self._history, Message("user", start.text)]

        async def think() -> None:
            try:
                async for event in self.llm.chat(history, self._specs):
                    early.events.put_nowait(event)
                early.events.put_nowait(None)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                early.events.put_nowait(exc)

        early.task = asyncio.get_running_loop().create_task(think(), name="llm-early")
        self._early[start.ticket] = early

    def _drop_early(self, ticket: int, *, wasted: bool) -> _Early | None:
        early = self._early.pop(ticket, None)
        if early is None:
            return None
        if wasted:
            if early.task is not None:
                early.task.cancel()
            self.metrics.early_starts.labels(self.profile_name, "wasted").inc()
        else:
            self.metrics.early_starts.labels(self.profile_name, "used").inc()
        return early

    async def _read_stt(self, stream: SpeechStream) -> None:
        async for event in stream.events():
            now = time.monotonic()
            if isinstance(event, FinalTranscript):
                self._perform(self._engine.final(event.text, now, event.language))
            elif isinstance(event, InterimTranscript):
                self._perform(self._engine.interim(event.text, now))
            elif isinstance(event, EndOfTurn):
                self._perform(self._engine.provider_end(now))

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
            for ticket in list(self._early):
                self._drop_early(ticket, wasted=True)
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
                if self._engine.caller_active:
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
        try:
            await self._answer(item)
        finally:
            self._engine.reply_finished()

    async def _answer(self, item: CallerTurn | Digit) -> None:
        early: _Early | None = None
        if isinstance(item, Digit):
            now = time.monotonic()
            self._engine.reply_started(now)
            text, speech_end_at, ended_at, stt_ms = f"caller pressed {item.digit}", now, now, None
        else:
            text, speech_end_at, ended_at, stt_ms = item.text, item.speech_end_at, item.ended_at, item.stt_ms
            # Before the model is asked: this very turn is answered in the caller's language (a
            # reply thought of early, with the instructions of the language before, is dropped).
            switched = self._heard_language(item.language)
            if item.early_ticket is not None:
                early = self._drop_early(item.early_ticket, wasted=switched)
                early = None if switched else early
        if not text:
            # Speech nobody could make out (or out of the dialog's scope).
            await self.speaker.say(Reply, self.profile.fallback_reply)
            return
        turn = Turn("user", text, utc_now())
        if isinstance(item, CallerTurn):
            turn.ended_by, turn.silence_frames = item.reason, item.silence_frames
        self.record.turns.append(turn)
        self._history.append(Message("user", text))
        reply = self._reply(speech_end_at, ended_at, stt_ms, early)
        self._reply_task = asyncio.create_task(reply, name="reply")
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

    def _heard_language(self, reported: str | None) -> bool:
        """Switch instructions and voice when the caller speaks another of the profile's languages."""
        tag = self.language.reported(reported)
        if self.language.heard is not None:
            self.record.language = self.language.heard
        if tag is None:
            return False
        self.instructions = self.instructions_by_language.get(tag, self.instructions)
        self._history = with_instructions(self._history, self.instructions)
        self.speaker.tts = self.voices.get(tag, self.default_voice)
        self.metrics.language_switches.labels(self.profile_name, tag).inc()
        log.info("the caller speaks %s: instructions and voice switched", tag)
        return True

    async def _reply(
        self, speech_end_at: float, ended_at: float, stt_ms: float | None, early: _Early | None
    ) -> None:
        """Answer one caller turn: stream LLM -> sentences -> TTS -> pacer; then act."""
        found: list[tuple[str, str]] = []  # passages given to the model, for the reply that follows
        remote: list[ToolUse] = []  # tool server calls, for the next reply spoken
        for _ in range(MAX_TOOL_ROUNDS):
            started = early.started_at if early is not None else time.monotonic()
            round_ = _Round(speech_end_at, ended_at, started, TurnTimings(stt_ms=stt_ms))
            await self._reply_round(round_, early)
            early = None  # later rounds answer tool results, thought of now
            stt_ms = None
            spoken = round_.spoken
            remote.extend(round_.remote)
            if spoken is not None and spoken.turn.text:
                self._history.append(Message("assistant", spoken.turn.text))
                if remote:
                    spoken.turn.tools = remote
                    remote = []
                if found:
                    # This reply was thought with those passages in hand: the record names them.
                    spoken.turn.sources = list(dict.fromkeys(found))
                    found = []
            found.extend(round_.passages)
            if round_.finish is not None:
                await self._act_delay()
                raise round_.finish
            said = spoken is not None and bool(spoken.turn.text)
            # "Let me check" said with a search: the model still has to answer from what it found.
            if not round_.notes or (said and not round_.answer_from):
                return
            # Tools ran but nothing was said: let the model answer with their results.
            self._history.append(Message("tool", "; ".join(round_.notes)))

    async def _llm_events(self, early: _Early | None) -> AsyncIterator[LLMEvent]:
        if early is None:
            async for event in self.llm.chat(self._history, self._specs):
                yield event
            return
        # Thought of early, for exactly these words: its events (maybe all of them) are waiting.
        while (item := await early.events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _reply_round(self, r: _Round, early: _Early | None) -> None:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        timings = r.timings

        async def produce() -> None:
            chunker = SentenceChunker()
            try:
                async for event in self._llm_events(early):
                    if timings.llm_first_token_ms is None:
                        ttft = time.monotonic() - r.llm_started
                        timings.llm_first_token_ms = ttft * 1000
                        self.metrics.llm_first_token.labels(self.llm.name, self.profile_name).observe(ttft)
                    if isinstance(event, TextDelta):
                        for piece in chunker.push(event.text):
                            r.first_piece_at = r.first_piece_at or time.monotonic()
                            pieces.put_nowait(piece)
                    elif isinstance(event, ToolCall):
                        outcome = await self.tools.run(event)
                        r.notes.append(f"{event.name}: {outcome.output}")
                        r.passages.extend(outcome.passages)
                        r.answer_from = r.answer_from or outcome.answer_from
                        if outcome.remote is not None:
                            r.remote.append(outcome.remote)
                        if outcome.fallback:
                            # Never dead air: the caller hears why there is no answer.
                            r.first_piece_at = r.first_piece_at or time.monotonic()
                            pieces.put_nowait(outcome.fallback)
                        if outcome.finish is not None:
                            r.finish = outcome.finish
                            if r.spoken is not None:
                                r.spoken.kind = Farewell  # the call ends after it: say it in full
                for piece in chunker.flush():
                    r.first_piece_at = r.first_piece_at or time.monotonic()
                    pieces.put_nowait(piece)
                timings.llm_total_ms = (time.monotonic() - r.llm_started) * 1000
            except ProviderError as exc:
                self._count_failure("llm", exc)  # the session apologises or says turn_error_reply
                raise
            finally:
                pieces.put_nowait(None)

        async def texts() -> AsyncIterator[str]:
            while (piece := await pieces.get()) is not None:
                yield piece

        def first_audio(spoken: Spoken) -> None:
            r.spoken = spoken
            at = spoken.first_audio_at
            if at is None:
                return
            # Our own pipeline: turn taken as ended -> first audio handed to the pacer.
            timings.end_to_audio_ms = (at - r.ended_at) * 1000
            timings.llm_start_to_audio_ms = (at - r.llm_started) * 1000
            if r.first_piece_at is not None:
                tts_s = at - r.first_piece_at
                timings.tts_first_audio_ms = tts_s * 1000
                self.metrics.tts_first_audio.labels(self.speaker.tts.name, self.profile_name).observe(tts_s)

        producer = asyncio.create_task(produce(), name="llm")
        try:
            try:
                spoken = await self.speaker.say(Reply, texts(), on_first_audio=first_audio)
            except ProviderError as exc:
                self._count_failure("tts", exc)
                raise
            await producer
        finally:
            producer.cancel()
        if r.finish is not None:
            spoken.kind = Farewell
        if spoken.first_packet_at is not None:
            latency = spoken.first_packet_at - r.speech_end_at
            timings.turn_latency_ms = latency * 1000
            self.metrics.turn_latency.labels(self.profile_name).observe(latency)
        spoken.turn.timings = timings
        r.spoken = spoken if spoken.pieces else None

    async def _say_canned(self, kind: type[Utterance], text: str) -> Spoken:
        return await self.speaker.say(kind, text, audio=self.canned.get(text))

    async def apologise(self) -> None:
        """Before handing a failed call back: a short apology that needs no provider."""
        self.speaker.interrupt()
        self._cancel_reply()
        await self._say_canned(Apology, self.profile.apology)

    async def _act_delay(self) -> None:
        await asyncio.sleep(self.profile.action_delay_ms / 1000)

    def _count_failure(self, stage: str, exc: ProviderError) -> None:
        # Failures that reached the call: the chain's retries and failovers could not hide them.
        self.metrics.provider_errors.labels(stage, exc.provider).inc()

    def _failed(self, stage: str, exc: ProviderError) -> None:
        self._count_failure(stage, exc)
        log.error("%s provider failed: %s", stage, exc)
