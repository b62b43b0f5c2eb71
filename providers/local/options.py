"""Options of the offline providers, ``[profiles.<name>.options.local]`` (STT and TTS share it)."""

from __future__ import annotations

from pydantic import Field

from providers.options import ProviderOptions


class LocalOptions(ProviderOptions):
    phone_penalty: float | None = Field(None, description="STT: grammar decoder phone insertion penalty")
    prewarm: int | None = Field(None, ge=0, description="STT: decoder processes started ahead of calls")
    max_decoders: int | None = Field(None, ge=1, description="STT: most decoder processes at once")
    fillers: list[str] | None = Field(
        None, description="STT: politeness phrases allowed around a key phrase (greetings, 'please')"
    )
    filler_exponent: float | None = Field(None, gt=0, description="STT: how much fillers cost in the grammar")
    min_score: float | None = Field(None, description="STT: per-frame fit below which a decode is rejected")
    min_coverage: float | None = Field(
        None, ge=0, le=1, description="STT: share of the loud audio the decoded words must cover"
    )
    min_frames_per_phone: float | None = Field(
        None, ge=0, description="STT: frames (10 ms) per phone below which a key phrase is too quick"
    )
    rate: int | None = Field(None, ge=80, le=500, description="TTS: espeak-ng speed, words per minute")
