"""Speech-to-text: live over a Realtime transcription session, or one utterance at a time.

Live (``stream()``, the default): audio goes to a Realtime WebSocket opened
with ``intent=transcription``; the server's VAD cuts the caller's speech
into turns (ProviderSpeechStarted when it hears speech, interim text as the
transcription model writes it, then FinalTranscript and EndOfTurn). µ-law
8 kHz calls send their audio as is (``audio/pcmu``); 16 kHz PCM is
resampled to the 24 kHz the API takes. With ``stt_turn_detection = "none"``
the server does not endpoint: ``finalize`` commits the audio pushed since
the last turn and the transcript of exactly that comes back.

Batch (``recognize()``, and ``stt_streaming = false``, which makes
``stream()`` buffer a turn and recognise it on ``finalize``): the turn is
uploaded as a WAV built in memory to ``audio.transcriptions``. This is also
what an OpenAI-compatible server without the Realtime API (e.g. a local
whisper server) supports.

Languages: a profile with ``languages`` does not pin the transcription to
one language. Models that say which language they heard report it with each
final: a whisper model asked for ``verbose_json`` (``language``, a name such
as "spanish"), and ``gpt-transcribe``/``gpt-live-transcribe`` (``languages``,
codes, also on the live session's ``completed`` event).
"""

from __future__ import annotations

import io
import logging
import wave
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import numpy as np

from ari_agent.media.resample import StreamResampler
from providers.base import (
    MULAW_8K,
    PCM16_16K,
    STT,
    AudioSpec,
    EndOfTurn,
    FinalTranscript,
    InterimTranscript,
    ProviderContext,
    ProviderSpeechStarted,
    SpeechEvent,
    SpeechStream,
    STTCapabilities,
    Transcript,
)
from providers.openai._client import OpenAISettings, check, provider_error
from providers.openai._socket import RealtimeSocket, error_from_event, open_socket
from providers.openai.languages import first_listed, language_tag
from providers.openai.options import OpenAIOptions

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini-transcribe"
API_RATE = 24000  # the Realtime API's PCM rate


# Models whose answers list the languages heard (``languages: [{"code"}]``), live and batch.
LISTING_MODELS = ("gpt-transcribe", "gpt-live-transcribe")


def names_language(model: str) -> bool:
    """Whisper models name the language in ``verbose_json`` (batch only)."""
    return "whisper" in model.lower()


def reports_language(model: str, *, streaming: bool) -> bool:
    return model in LISTING_MODELS or (not streaming and names_language(model))


def stt_capabilities(model: str, *, streaming: bool, turn_detection: str) -> STTCapabilities:
    if not streaming:
        return STTCapabilities(reports_language=reports_language(model, streaming=False))
    return STTCapabilities(
        streaming=True,
        endpointing=turn_detection != "none",
        input_specs=(MULAW_8K, PCM16_16K, AudioSpec("pcm16", API_RATE)),
        reports_language=reports_language(model, streaming=True),
    )


def language_code(language: str) -> str:
    """ISO-639-1 from a locale ("en-US" -> "en"), as the transcription API wants."""
    return language.split("-")[0].split("_")[0].lower()


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


class TranscriptionEvents:
    """Server events of a transcription session -> our speech events (pure, no IO)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.in_speech = False
        self._partial: dict[str, str] = {}

    def __call__(self, event: dict[str, Any]) -> Sequence[SpeechEvent]:
        kind = event.get("type")
        item_id = str(event.get("item_id", ""))
        if kind == "input_audio_buffer.speech_started":
            self.in_speech = True
            return [ProviderSpeechStarted()]
        if kind == "input_audio_buffer.speech_stopped":
            self.in_speech = False
            return []
        if kind == "conversation.item.input_audio_transcription.delta":
            text = self._partial.get(item_id, "") + str(event.get("delta") or "")
            self._partial[item_id] = text
            return [InterimTranscript(text.strip())] if text.strip() else []
        if kind == "conversation.item.input_audio_transcription.completed":
            self._partial.pop(item_id, None)
            text = str(event.get("transcript") or "").strip()
            return [FinalTranscript(text, language=first_listed(event.get("languages"))), EndOfTurn()]
        if kind == "conversation.item.input_audio_transcription.failed":
            # One utterance lost: the turn ends with nothing heard and the call goes on.
            self._partial.pop(item_id, None)
            log.warning("%s: transcription of one utterance failed", self.provider)
            return [FinalTranscript(""), EndOfTurn()]
        if kind == "error":
            error = error_from_event(self.provider, event)
            if error is not None:
                raise error
        return []


class RealtimeSpeechStream(SpeechStream):
    def __init__(
        self,
        provider: str,
        spec: AudioSpec,
        socket: RealtimeSocket[SpeechEvent],
        mapper: TranscriptionEvents,
        *,
        server_vad: bool,
    ) -> None:
        super().__init__(provider, spec)
        self._socket = socket
        self._mapper = mapper
        self._server_vad = server_vad
        self._pending_bytes = 0  # pushed since the last commit
        self._resampler = StreamResampler(spec.sample_rate, API_RATE) if spec.encoding == "pcm16" else None

    def _push(self, audio: bytes) -> None:
        self._pending_bytes += len(audio)
        if self._resampler is not None and not self._resampler.passthrough:
            pcm = self._resampler.process(np.frombuffer(audio, dtype="<i2").astype(np.int16))
            audio = pcm.tobytes()
        self._socket.append_audio(audio)

    async def _finalize(self) -> None:
        if self._server_vad:
            # The server commits at its own end of speech; force it only while
            # it still thinks the caller is talking.
            if self._mapper.in_speech:
                self._socket.send({"type": "input_audio_buffer.commit"})
            return
        if self._pending_bytes:
            self._pending_bytes = 0
            self._socket.send({"type": "input_audio_buffer.commit"})
        else:
            # Nothing to commit: answer at once, as a turn with nothing heard.
            self._socket.deliver(FinalTranscript(""), EndOfTurn())

    def _events(self) -> AsyncIterator[SpeechEvent]:
        return self._socket.events()

    async def _aclose(self) -> None:
        await self._socket.close()


class OpenAISTT(STT):
    name = "openai"
    Options = OpenAIOptions

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        model: str = DEFAULT_MODEL,
        language: str = "en-US",
        hints: Sequence[str] = (),
        streaming: bool = True,
        turn_detection: str = "server_vad",
        silence_ms: int | None = None,
        languages: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.model = model
        self.language = language
        self.hints = tuple(hints)
        self.streaming = streaming
        self.turn_detection = turn_detection
        self.silence_ms = silence_ms
        # The profile's other languages: the transcription is not pinned to ``language``.
        self.languages = tuple(languages)
        self.capabilities = stt_capabilities(model, streaming=streaming, turn_detection=turn_detection)
        self._client = settings.client()

    def __repr__(self) -> str:
        return f"OpenAISTT(model={self.model!r}, streaming={self.streaming}, settings={self.settings!r})"

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        options = ctx.options
        silence = options.get("silence_duration_ms")
        return cls(
            OpenAISettings.from_context(ctx),
            model=str(options.get("stt_model", DEFAULT_MODEL)),
            language=ctx.language,
            hints=ctx.hints,
            streaming=bool(options.get("stt_streaming", True)),
            turn_detection=str(options.get("stt_turn_detection", "server_vad")),
            silence_ms=int(silence) if silence is not None else None,
            languages=ctx.languages,
        )

    @classmethod
    def capabilities_for(cls, ctx: ProviderContext) -> STTCapabilities:
        options = ctx.options
        return stt_capabilities(
            str(options.get("stt_model", DEFAULT_MODEL)),
            streaming=bool(options.get("stt_streaming", True)),
            turn_detection=str(options.get("stt_turn_detection", "server_vad")),
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        problems = check(ctx, websocket=bool(ctx.options.get("stt_streaming", True)))
        mode = ctx.options.get("stt_turn_detection", "server_vad")
        if mode not in ("server_vad", "none"):
            problems.append(f"options.openai.stt_turn_detection is {mode!r}; use 'server_vad' or 'none'")
        return problems

    async def _aclose(self) -> None:
        await self._client.close()

    def _prompt(self) -> str:
        # Expected phrases steer the model toward the words callers use.
        return ", ".join(self.hints)[:800]

    async def _recognize(self, pcm: bytes, sample_rate: int) -> Transcript:
        if not pcm:
            return Transcript("")
        params: dict[str, Any] = {
            "model": self.model,
            "file": ("turn.wav", wav_bytes(pcm, sample_rate), "audio/wav"),
            **self._language_params(),
        }
        if names_language(self.model) and self.languages:
            params["response_format"] = "verbose_json"  # the only answer that names the language
        if self.hints:
            params["prompt"] = self._prompt()
        try:
            result = await self._client.audio.transcriptions.create(**params)
        except Exception as exc:
            raise provider_error(self.name, exc, self.settings) from None
        if isinstance(result, str):
            return Transcript(result.strip())
        heard = language_tag(getattr(result, "language", None)) or first_listed(
            getattr(result, "languages", None)
        )
        return Transcript(str(getattr(result, "text", "")).strip(), language=heard)

    def _language_params(self) -> dict[str, Any]:
        """Pinned to the profile's language, or left to detect among the profile's languages.

        A model that would not say which language it heard stays pinned: unpinned, it could only
        transcribe the default language worse, since no switch can follow."""
        if not self.languages or not reports_language(self.model, streaming=self.streaming):
            return {"language": language_code(self.language)}
        if self.model in LISTING_MODELS:
            codes = [language_code(code) for code in (self.language, *self.languages)]
            return {"languages": list(dict.fromkeys(codes))}
        return {}

    async def _open_stream(self, spec: AudioSpec) -> SpeechStream:
        if not self.streaming:
            return await super()._open_stream(spec)
        audio_format: dict[str, Any] = (
            {"type": "audio/pcmu"} if spec.encoding == "mulaw" else {"type": "audio/pcm", "rate": API_RATE}
        )
        transcription: dict[str, Any] = {"model": self.model, **self._language_params()}
        if self.hints:
            transcription["prompt"] = self._prompt()
        turn: dict[str, Any] | None = None
        if self.turn_detection != "none":
            turn = {"type": "server_vad"}
            if self.silence_ms is not None:
                turn["silence_duration_ms"] = self.silence_ms
        session = {
            "type": "transcription",
            "audio": {
                "input": {"format": audio_format, "transcription": transcription, "turn_detection": turn}
            },
        }
        mapper = TranscriptionEvents(self.name)
        socket: RealtimeSocket[SpeechEvent] = await open_socket(
            self.name, self.settings, mapper, session, extra_query={"intent": "transcription"}
        )
        return RealtimeSpeechStream(self.name, spec, socket, mapper, server_vad=turn is not None)
