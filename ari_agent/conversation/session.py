"""One call, top to bottom: set up media, greet, listen-think-speak, hand back.

States: starting -> greeting -> listening <-> thinking <-> speaking -> ending -> ended.
Everything that ends a call funnels into ``_cleanup`` exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ari_agent.ari.client import AriClient, AriError, AriNotFound
from ari_agent.ari.events import Channel
from ari_agent.audio.vad import SpeechEnded, SpeechStarted, VoiceActivityDetector
from ari_agent.config import Settings
from ari_agent.conversation.records import STATUS_FOR, CallRecord, EndReason, RecordWriter, Turn, utc_now
from ari_agent.errors import MediaError
from ari_agent.media.codecs import wire_format
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.transport import DropCounters, PortPool, RtpEndpoint, open_endpoint
from ari_agent.observability.logs import call_id_var
from ari_agent.observability.metrics import Metrics
from ari_agent.profiles import DestinationConfig, ProfileConfig
from providers.base import LLM, STT, TTS, Message, ProviderError, TextDelta, ToolCall

log = logging.getLogger(__name__)

SESSION_RATE = 16000
FRAME_BYTES = SESSION_RATE // 50 * 2  # 20 ms of PCM16
MEDIA_CHANNEL_TIMEOUT = 5.0

State = Literal["starting", "greeting", "listening", "thinking", "speaking", "ending", "ended"]


@dataclass(frozen=True)
class ProfileProviders:
    """Providers are built once per profile and shared by its calls."""

    stt: STT
    llm: LLM
    tts: TTS


@dataclass(frozen=True)
class SessionDeps:
    ari: AriClient
    settings: Settings
    ports: PortPool
    metrics: Metrics
    records: RecordWriter | None
    resource_prefix: str
    on_done: Callable[[CallSession], None]


@dataclass(frozen=True)
class _Utterance:
    pcm: bytes
    ended_at: float


@dataclass(frozen=True)
class _Digit:
    digit: str


class _Finish(Exception):
    """Leave the conversation: hand the call back (or hang up) with this outcome."""

    def __init__(self, reason: EndReason, target: DestinationConfig | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.target = target


class CallSession:
    def __init__(
        self,
        *,
        call_id: str,
        caller: Channel,
        profile_name: str,
        profile: ProfileConfig,
        providers: ProfileProviders,
        deps: SessionDeps,
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.profile_name = profile_name
        self.profile = profile
        self.providers = providers
        self.deps = deps
        self.bridge_id = f"{deps.resource_prefix}b-{call_id[:12]}"
        self.media_channel_id = f"{deps.resource_prefix}m-{call_id[:12]}"
        self.state: State = "starting"
        self.end_reason: EndReason | None = None
        self.record = CallRecord(
            call_id=call_id,
            channel_id=caller.id,
            caller={"number": caller.caller.number, "name": caller.caller.name},
            profile=profile_name,
        )
        self._wire = wire_format(deps.settings.media.format)
        self._endpoint: RtpEndpoint | None = None
        self._pacer: OutboundPacer | None = None
        self._vad = VoiceActivityDetector(
            sample_rate=SESSION_RATE,
            aggressiveness=profile.vad_aggressiveness,
            onset_ms=min(profile.min_speech_ms, profile.barge_in_min_ms),
            hangover_ms=profile.end_of_turn_ms,
            min_speech_ms=profile.min_speech_ms,
        )
        self._pending = bytearray()
        self._inbox: asyncio.Queue[_Utterance | _Digit] = asyncio.Queue()
        self._media_channel_up = asyncio.Event()
        self._speaking_tag: object | None = None
        self._interrupted = False
        self._history: list[Message] = []
        if profile.instructions:
            self._history.append(Message("system", profile.instructions))
        self._task: asyncio.Task[None] | None = None
        self._cleaned = False
        self._started_mono = time.monotonic()

    # ------------------------------------------------------------------
    # Lifecycle driven by the app

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"call-{self.call_id}")
        return self._task

    def media_channel_started(self) -> None:
        self._media_channel_up.set()

    def dtmf(self, digit: str) -> None:
        self._inbox.put_nowait(_Digit(digit))

    def channel_gone(self) -> None:
        """The caller, our media channel or our bridge disappeared."""
        if self.end_reason is not None:
            return  # already ending (often this is the echo of our own hand-back)
        self.end_reason = "hangup_by_caller"
        self._stop_task()

    async def hand_back(self, reason: EndReason) -> None:
        """Called by the app (drain, reconcile): give the call back to the dialplan."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._stop_task()
        await self._release_caller(reason, None)

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "channel_id": self.caller.id,
            "profile": self.profile_name,
            "state": self.state,
            "started_at": self.record.started_at,
        }

    def _stop_task(self) -> None:
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()

    # ------------------------------------------------------------------
    # The call

    async def _run(self) -> None:
        call_id_var.set(self.call_id)
        try:
            await self._setup()
            await self._converse()
        except _Finish as finish:
            await self._finish(finish.reason, finish.target)
        except asyncio.CancelledError:
            pass  # ended from outside; end_reason is already set
        except Exception:
            log.exception("call failed")
            await self._finish("failed", None)
        finally:
            await self._cleanup()

    async def _setup(self) -> None:
        ari = self.deps.ari
        settings = self.deps.settings
        await ari.answer(self.caller.id)
        try:
            self._endpoint = await open_endpoint(
                self.deps.ports,
                settings.media.bind_host,
                self._wire,
                self._on_audio,
                DropCounters(on_drop=self._count_drop),
            )
        except MediaError as exc:
            log.warning("no RTP port for the call: %s", exc)
            raise _Finish("busy") from None
        await ari.create_bridge(self.bridge_id, "mixing", name=self.bridge_id)
        await ari.add_channel(self.bridge_id, self.caller.id)
        try:
            media = await ari.external_media(
                self.media_channel_id,
                settings.ari.app,
                f"{settings.media.advertised}:{self._endpoint.port}",
                self._wire.name,
            )
        except AriError as exc:
            log.warning("ExternalMedia channel refused: %s", exc)
            raise _Finish("busy") from None
        host = media.channelvars.get("UNICASTRTP_LOCAL_ADDRESS") or await ari.get_variable(
            self.media_channel_id, "UNICASTRTP_LOCAL_ADDRESS"
        )
        port = media.channelvars.get("UNICASTRTP_LOCAL_PORT") or await ari.get_variable(
            self.media_channel_id, "UNICASTRTP_LOCAL_PORT"
        )
        if not host or not port:
            log.error("ExternalMedia channel did not report its RTP address")
            raise _Finish("failed")
        self._endpoint.lock_source(host, int(port))
        # Asterisk refuses to bridge the media channel until it is in Stasis itself.
        try:
            await asyncio.wait_for(self._media_channel_up.wait(), MEDIA_CHANNEL_TIMEOUT)
        except TimeoutError:
            log.error("ExternalMedia channel never entered the app")
            raise _Finish("failed") from None
        await ari.add_channel(self.bridge_id, self.media_channel_id)
        endpoint = self._endpoint

        def send(data: bytes) -> None:
            endpoint.send(data)
            self.deps.metrics.rtp_out.inc()

        self._pacer = OutboundPacer(send, self._wire)
        self._pacer.start()
        # Greeting over a path that isn't flowing yet gets its first words cut.
        try:
            await asyncio.wait_for(endpoint.first_packet.wait(), settings.calls.first_media_timeout)
        except TimeoutError:
            log.info("no inbound RTP yet; greeting anyway")

    async def _converse(self) -> None:
        try:
            async with asyncio.timeout(self.profile.max_duration_s):
                self.state = "greeting"
                await self._say(self.profile.greeting)
                while True:
                    self.state = "listening"
                    item = await self._inbox.get()
                    await self._turn(item)
        except TimeoutError:
            log.info("maximum call duration reached")
            raise _Finish("hangup_by_agent") from None

    async def _turn(self, item: _Utterance | _Digit) -> None:
        self.state = "thinking"
        ended_at = time.monotonic()
        if isinstance(item, _Digit):
            text = f"caller pressed {item.digit}"
            self.record.turns.append(Turn("user", text, utc_now()))
        else:
            ended_at = item.ended_at
            try:
                transcript = await self.providers.stt.recognize(item.pcm, SESSION_RATE)
            except ProviderError as exc:
                self._provider_failed("stt", exc)
                raise _Finish("failed") from exc
            text = transcript.text.strip()
            if text:
                self.record.turns.append(Turn("user", text, utc_now()))
        self._history.append(Message("user", text))
        reply: list[str] = []
        tools: list[ToolCall] = []
        try:
            async for event in self.providers.llm.chat(self._history):
                if isinstance(event, TextDelta):
                    reply.append(event.text)
                else:
                    tools.append(event)
        except ProviderError as exc:
            self._provider_failed("llm", exc)
            raise _Finish("failed") from exc
        text_out = "".join(reply).strip()
        if text_out:
            heard = await self._say(text_out, turn_ended_at=ended_at)
            self._history.append(Message("assistant", heard))
        for tool in tools:
            await self._run_tool(tool)

    async def _run_tool(self, tool: ToolCall) -> None:
        if tool.name == "hangup":
            await asyncio.sleep(self.profile.action_delay_ms / 1000)
            raise _Finish("hangup_by_agent")
        if tool.name == "transfer":
            name = str(tool.arguments.get("destination", ""))
            target = self.profile.destinations.get(name)
            if target is None:
                log.warning("transfer to unknown destination %r ignored", name)
                return
            await asyncio.sleep(self.profile.action_delay_ms / 1000)
            raise _Finish("transferred", target)
        log.warning("unknown tool %r ignored", tool.name)

    # ------------------------------------------------------------------
    # Speaking and listening

    async def _say(self, text: str, turn_ended_at: float | None = None) -> str:
        """Speak ``text``; return the part the caller heard (all of it unless barged in)."""
        if not text or self._pacer is None:
            return ""
        pacer = self._pacer
        turn = Turn("agent", text, utc_now())
        self.record.turns.append(turn)
        tag = object()
        self._speaking_tag = tag
        self._interrupted = False
        self.state = "speaking"
        total_samples = 0
        try:
            async for chunk in self.providers.tts.synthesize(text, SESSION_RATE):
                if self._interrupted:
                    break
                if total_samples == 0 and turn_ended_at is not None:
                    self.deps.metrics.turn_latency.labels(self.profile_name).observe(
                        time.monotonic() - turn_ended_at
                    )
                pacer.enqueue(chunk, tag)
                total_samples += len(chunk) // 2
            if not self._interrupted:
                await pacer.wait_idle()
        except ProviderError as exc:
            self._provider_failed("tts", exc)
            raise _Finish("failed") from exc
        finally:
            self._speaking_tag = None
        if not self._interrupted or total_samples == 0:
            return text
        sent_samples = pacer.frames_sent(tag) * SESSION_RATE // 50
        words = text.split()
        heard = " ".join(words[: round(len(words) * min(1.0, sent_samples / total_samples))])
        turn.text = heard
        turn.interrupted = True
        return heard

    def _on_audio(self, pcm: np.ndarray) -> None:
        # Runs in the datagram callback, once per accepted packet: keep it to VAD-sized work.
        self.deps.metrics.rtp_in.inc()
        self._pending += pcm.astype("<i2", copy=False).tobytes()
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            event = self._vad.process(frame)
            if isinstance(event, SpeechStarted):
                self._on_speech_start()
            elif isinstance(event, SpeechEnded):
                self._inbox.put_nowait(_Utterance(self._vad.utterance(), time.monotonic()))

    def _on_speech_start(self) -> None:
        if self._speaking_tag is None or not self.profile.barge_in or self._pacer is None:
            return
        self._interrupted = True
        dropped = self._pacer.flush()
        self.deps.metrics.barge_ins.labels(self.profile_name).inc()
        log.info("barge-in: caller spoke over the agent (%d frames dropped)", dropped)

    def _count_drop(self, reason: str) -> None:
        self.deps.metrics.rtp_dropped.labels(reason).inc()

    def _provider_failed(self, stage: str, exc: ProviderError) -> None:
        self.deps.metrics.provider_errors.labels(stage, exc.provider).inc()
        log.error("%s provider failed: %s", stage, exc)

    # ------------------------------------------------------------------
    # Ending

    async def _finish(self, reason: EndReason, target: DestinationConfig | None) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.state = "ending"
        if reason == "failed" and self._pacer is not None:
            await self._apologise()
        await self._release_caller(reason, target)

    async def _apologise(self) -> None:
        try:
            async with asyncio.timeout(8):
                await self._say(self.profile.apology)
        except (TimeoutError, _Finish, ProviderError):
            log.warning("could not play the apology")

    async def _release_caller(self, reason: EndReason, target: DestinationConfig | None) -> None:
        """Set the outcome variables, then hang up or continue in the dialplan."""
        ari = self.deps.ari
        status = STATUS_FOR[reason]
        if status is None:
            return
        try:
            await ari.set_variable(self.caller.id, "AI_AGENT_STATUS", status)
            if reason == "hangup_by_agent":
                await ari.hangup(self.caller.id)
            elif target is not None:
                context = target.context or (self.caller.dialplan.context if self.caller.dialplan else None)
                await ari.continue_in_dialplan(
                    self.caller.id, context=context, extension=target.extension, priority=target.priority
                )
            else:
                await ari.continue_in_dialplan(self.caller.id)
        except AriNotFound:
            log.info("caller already gone while handing back (%s)", reason)
        except AriError as exc:
            log.error("could not hand the call back (%s): %s", reason, exc)

    async def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        self.state = "ending"
        if self.end_reason is None:
            self.end_reason = "failed"
        if self._pacer is not None:
            self._pacer.flush()
            await self._pacer.stop()
        if self._endpoint is not None:
            self._endpoint.close()
        ari = self.deps.ari
        try:
            await ari.destroy_bridge(self.bridge_id)
        except AriError as exc:
            if not isinstance(exc, AriNotFound):
                log.warning("cleanup of the bridge failed: %s", exc)
        try:
            await ari.hangup(self.media_channel_id)
        except AriError as exc:
            if not isinstance(exc, AriNotFound):
                log.warning("cleanup of the media channel failed: %s", exc)
        self.record.ended_at = utc_now()
        self.record.end_reason = self.end_reason
        self.deps.metrics.calls.labels(self.end_reason).inc()
        if self.deps.records is not None:
            await self.deps.records.write(self.record)
        self.state = "ended"
        log.info("call ended: %s after %.1f s", self.end_reason, time.monotonic() - self._started_mono)
        self.deps.on_done(self)
