"""Options of the Azure adapters, ``[profiles.<name>.options.azure]`` (STT and TTS share it)."""

from __future__ import annotations

from pydantic import Field

from providers.options import ProviderOptions


class AzureOptions(ProviderOptions):
    region: str | None = Field(None, min_length=1, description="e.g. westeurope")
    endpoint: str | None = Field(None, pattern=r"^(wss?|https?)://", description="a full endpoint URL")
    host: str | None = Field(None, pattern=r"^(wss?|https?)://", description="a Speech container's address")
    segmentation_silence_ms: int | None = Field(None, ge=100, le=5000, description="pause that ends a phrase")
    voice: str | None = Field(None, description="TTS voice, e.g. en-US-JennyNeural")
