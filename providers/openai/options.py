"""Options of the OpenAI adapters, ``[profiles.<name>.options.openai]`` (every stage shares it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from providers.options import ProviderOptions


class OpenAIOptions(ProviderOptions):
    base_url: str | None = Field(None, pattern=r"^https?://", description="an OpenAI-compatible server")
    websocket_base_url: str | None = Field(
        None, pattern=r"^(wss?|https?)://", description="where the Realtime WebSocket lives"
    )
    api_key_required: bool | None = Field(None, description="whether check insists on OPENAI_API_KEY")
    model: str | None = Field(None, description="chat model (LLM)")
    temperature: float | None = Field(None, ge=0, le=2, description="LLM sampling temperature")
    max_tokens: int | None = Field(None, ge=1, description="LLM reply length limit")
    tts_model: str | None = Field(None, description="speech model")
    voice: str | None = Field(None, description="TTS and Realtime voice")
    stt_model: str | None = Field(None, description="transcription model")
    stt_streaming: bool | None = Field(None, description="false: each turn is uploaded once it ends")
    stt_turn_detection: Literal["server_vad", "none"] | None = Field(
        None, description="live STT: the server ends turns, or our VAD does"
    )
    silence_duration_ms: int | None = Field(None, ge=0, description="server VAD: silence that ends a turn")
    realtime_model: str | None = Field(None, description="speech-to-speech model")
    transcription_model: str | None = Field(None, description="Realtime: model writing down the caller")
    eagerness: Literal["low", "medium", "high", "auto"] | None = Field(
        None, description="Realtime with semantic_vad"
    )
    embedding_model: str | None = Field(None, description="embeddings model (knowledge search by meaning)")
    embedding_dimensions: int | None = Field(
        None, ge=1, description="embeddings: shorter vectors, where the model can (text-embedding-3)"
    )
