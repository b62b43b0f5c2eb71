"""Options of the scripted dialog, ``[profiles.<name>.options.scripted]``."""

from __future__ import annotations

from pydantic import Field

from providers.options import ProviderOptions


class ScriptedOptions(ProviderOptions):
    threshold: float | None = Field(
        None, ge=0, le=1, description="similarity below which the fallback reply is given"
    )
