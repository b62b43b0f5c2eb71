"""Provider options: each adapter declares the options it reads as a validated model.

A profile's ``[profiles.<name>.options.<provider>]`` table is checked against
its provider's model before anything is built, so ``check`` and ``run`` both
refuse a misspelt or mistyped option (``extra="forbid"``) instead of ignoring
it. Unset options stay unset: the adapters keep their own defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ProviderOptions(BaseModel):
    """The options every provider takes: the resilience layer's (providers.resilience)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_attempts: int | None = Field(None, ge=1, description="tries per provider, the first included")
    retry_base_delay: float | None = Field(None, ge=0, description="seconds before the first retry")
    retry_max_delay: float | None = Field(None, ge=0, description="cap on one retry delay")
    retry_jitter: float | None = Field(None, ge=0, le=1, description="random share of each delay")
    breaker_threshold: int | None = Field(None, ge=1, description="failures in a row that open the breaker")
    breaker_reset_s: float | None = Field(None, gt=0, description="seconds open before a trial call")
    connect_timeout: float | None = Field(None, gt=0, description="STT/Realtime: seconds to open a stream")
    timeout: float | None = Field(None, gt=0, description="seconds for one request or batch recognition")
    first_token_timeout: float | None = Field(None, gt=0, description="LLM: seconds to the first token")
    first_audio_timeout: float | None = Field(None, gt=0, description="TTS: seconds to the first audio")


def validated(model: type[ProviderOptions], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked and converted by ``model``, with only the options that were given.

    Raises pydantic's ValidationError; the profile catalogue turns it into field-named problems.
    """
    return model.model_validate(dict(options)).model_dump(exclude_unset=True)


def option_names(model: type[ProviderOptions]) -> list[str]:
    return sorted(model.model_fields)
