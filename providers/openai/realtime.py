"""Speech-to-speech over the OpenAI Realtime API (GA events, WebSocket).

Audio crosses as the call has it when the API takes that format: µ-law
calls use ``audio/pcmu`` both ways with no resampling; anything else is PCM16
at 24 kHz (``audio/pcm``), resampled by the call's session. The server's VAD
(``server_vad`` or ``semantic_vad``, by profile) detects the caller's turns
and starts responses by itself; it also says when the caller starts
talking, which the call's session turns into barge-in: flush what is
queued for the caller, then ``interrupt(item_id, heard_ms)`` here cancels
the response and truncates the agent's item at what was actually heard.

Session length: the service ends a session at its maximum duration (60
minutes today) with an error event and a close. Both surface from
``events()`` as a retryable ProviderError; a new session has no memory of
the old one, so reconnecting (or failing over) is the caller's decision.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

from providers.base import (
    MULAW_8K,
    AgentAudio,
    AgentTranscript,
    AudioSpec,
    CallerSpeechStarted,
    CallerTranscript,
    ProviderContext,
    ProviderError,
    Realtime,
    RealtimeCapabilities,
    RealtimeConfig,
    RealtimeEvent,
    RealtimeSession,
    ResponseDone,
    ToolCall,
)
from providers.openai._client import OpenAISettings, check
from providers.openai._socket import RealtimeSocket, error_from_event, open_socket
from providers.openai.llm import parse_arguments
from providers.openai.options import OpenAIOptions
from providers.openai.stt import DEFAULT_MODEL as DEFAULT_TRANSCRIPTION_MODEL
from providers.openai.stt import language_code

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
PCM16_24K = AudioSpec("pcm16", 24000)


def audio_format(spec: AudioSpec) -> dict[str, Any]:
    if spec == MULAW_8K:
        return {"type": "audio/pcmu"}
    if spec == PCM16_24K:
        return {"type": "audio/pcm", "rate": 24000}
    raise ValueError(f"the Realtime API takes µ-law 8 kHz or PCM16 24 kHz, not {spec}")


def greeting_instructions(greeting: str) -> str:
    return f"Say exactly the following words, and nothing else: {greeting}"


class RealtimeEvents:
    """Server events of a Realtime session -> our events (pure, no IO)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.responding = False

    def __call__(self, event: dict[str, Any]) -> Sequence[RealtimeEvent]:
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            try:
                audio = base64.b64decode(str(event.get("delta") or ""), validate=True)
            except binascii.Error:
                raise ProviderError(
                    "audio delta is not base64", provider=self.provider, retryable=True
                ) from None
            return [AgentAudio(audio, str(event.get("item_id", "")))] if audio else []
        if kind == "response.created":
            self.responding = True
            return []
        if kind == "response.output_audio_transcript.done":
            return [AgentTranscript(str(event.get("transcript") or ""), str(event.get("item_id", "")))]
        if kind == "input_audio_buffer.speech_started":
            return [CallerSpeechStarted()]
        if kind == "conversation.item.input_audio_transcription.completed":
            text = str(event.get("transcript") or "").strip()
            return [CallerTranscript(text)] if text else []
        if kind == "response.function_call_arguments.done":
            name = str(event.get("name") or "")
            arguments = parse_arguments(self.provider, name, str(event.get("arguments") or ""))
            return [ToolCall(name, arguments, str(event.get("call_id") or ""))]
        if kind == "response.done":
            self.responding = False
            return [ResponseDone()]
        if kind == "error":
            error = error_from_event(self.provider, event)
            if error is not None:
                raise error
        return []


def session_config(config: RealtimeConfig, options: dict[str, Any], voice: str) -> dict[str, Any]:
    """The ``session.update`` body for one call."""
    turn: dict[str, Any] = {
        "type": config.turn_detection,
        "create_response": True,
        "interrupt_response": True,
    }
    if config.turn_detection == "server_vad" and options.get("silence_duration_ms") is not None:
        turn["silence_duration_ms"] = int(options["silence_duration_ms"])
    if config.turn_detection == "semantic_vad" and options.get("eagerness"):
        turn["eagerness"] = str(options["eagerness"])
    fmt = audio_format(config.audio)
    session: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": config.instructions,
        "audio": {
            "input": {
                "format": fmt,
                "turn_detection": turn,
                # Without it the caller's words never come back as text (history, logs).
                "transcription": {
                    "model": str(options.get("transcription_model", DEFAULT_TRANSCRIPTION_MODEL)),
                    "language": language_code(config.language),
                },
            },
            "output": {"format": fmt, "voice": voice},
        },
    }
    if config.tools:
        session["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            }
            for t in config.tools
        ]
        session["tool_choice"] = "auto"
    return session


class OpenAIRealtimeSession(RealtimeSession):
    def __init__(
        self,
        provider: str,
        config: RealtimeConfig,
        socket: RealtimeSocket[RealtimeEvent],
        mapper: RealtimeEvents,
    ) -> None:
        super().__init__(provider, config)
        self._socket = socket
        self._mapper = mapper
        self._interrupted: set[str] = set()

    def _push(self, audio: bytes) -> None:
        self._socket.append_audio(audio)

    async def _events(self) -> AsyncIterator[RealtimeEvent]:
        async for event in self._socket.events():
            # Deltas already in flight when the caller barged in must not play.
            if isinstance(event, AgentAudio) and event.item_id in self._interrupted:
                continue
            yield event

    async def _interrupt(self, item_id: str, heard_ms: int) -> None:
        self._interrupted.add(item_id)
        if self._mapper.responding:
            self._socket.send({"type": "response.cancel"})
        if item_id:
            # The model's memory of its own words stops where the caller stopped hearing them.
            self._socket.send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": max(0, int(heard_ms)),
                }
            )

    async def _tool_result(self, call_id: str, output: str) -> None:
        self._socket.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        self._socket.send({"type": "response.create"})

    async def _aclose(self) -> None:
        await self._socket.close()


class OpenAIRealtime(Realtime):
    name = "openai"
    Options = OpenAIOptions
    capabilities = RealtimeCapabilities(
        audio_specs=(MULAW_8K, PCM16_24K), turn_detection=("server_vad", "semantic_vad")
    )

    def __init__(
        self, settings: OpenAISettings, *, model: str = DEFAULT_MODEL, voice: str = DEFAULT_VOICE
    ) -> None:
        self.settings = settings
        self.model = model
        self.voice = voice

    def __repr__(self) -> str:
        return f"OpenAIRealtime(model={self.model!r}, voice={self.voice!r}, settings={self.settings!r})"

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        voice = ctx.options.get("voice") or ctx.voice or DEFAULT_VOICE
        return cls(
            OpenAISettings.from_context(ctx),
            model=str(ctx.options.get("realtime_model", DEFAULT_MODEL)),
            voice=str(voice),
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check(ctx, websocket=True)

    async def _connect(self, config: RealtimeConfig) -> RealtimeSession:
        if config.turn_detection not in self.capabilities.turn_detection:
            raise ProviderError(
                f"turn detection {config.turn_detection!r} not supported", provider=self.name, retryable=False
            )
        options = {**(self.settings.options or {}), **config.options}
        session = session_config(config, options, config.voice or self.voice)
        mapper = RealtimeEvents(self.name)
        socket: RealtimeSocket[RealtimeEvent] = await open_socket(
            self.name, self.settings, mapper, session, model=self.model
        )
        if config.greeting:
            socket.send(
                {
                    "type": "response.create",
                    "response": {"instructions": greeting_instructions(config.greeting)},
                }
            )
        return OpenAIRealtimeSession(self.name, config, socket, mapper)
