"""Options of the Deepgram adapters, ``[profiles.<name>.options.deepgram]`` (STT and TTS share it)."""

from __future__ import annotations

from pydantic import Field

from providers.options import ProviderOptions


class DeepgramOptions(ProviderOptions):
    url: str | None = Field(None, pattern=r"^wss?://", description="WebSocket base, ws:// or wss://")
    model: str | None = Field(None, description="STT model")
    # bool first: TOML `false` turns endpointing off; a number is milliseconds.
    endpointing: bool | int | None = Field(None, description="ms of silence that finalises speech, or false")
    utterance_end_ms: int | None = Field(None, ge=1000, description="word gap that sends UtteranceEnd")
    smart_format: bool | None = Field(None, description="punctuation and number formatting")
    keepalive_s: float | None = Field(None, gt=0, description="idle seconds before a KeepAlive")
    tts_model: str | None = Field(None, description="TTS voice model")
