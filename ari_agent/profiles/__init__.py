"""Call profiles: what the agent says and does, chosen per call in the dialplan.

Built-in profiles ship inside the package as TOML, so the demo works from any
directory with no config file.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from providers.base import Intent, ProviderContext


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntentConfig(_Model):
    name: str
    examples: list[str] = Field(min_length=1)
    reply: str
    action: Literal["none", "hangup", "transfer"] = "none"
    destination: str | None = None
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]$")


class DestinationConfig(_Model):
    """A dialplan target for transfers; no context means the caller's own context."""

    context: str | None = None
    extension: str
    priority: int = Field(1, ge=1)


class ProfileConfig(_Model):
    greeting: str = ""
    instructions: str = ""
    language: str = "en-US"
    voice: str | None = None
    # Providers per stage, in failover order.
    stt: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    llm: list[str] = Field(default_factory=lambda: ["scripted"], min_length=1)
    tts: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    # Speech-to-speech instead of the three stages, when set (failover order).
    realtime: list[str] = []
    # Per provider name: its own settings (model, base_url, voice...), e.g.
    # [profiles.x.options.openai] model = "gpt-4o-mini"
    options: dict[str, dict[str, Any]] = {}
    intents: list[IntentConfig] = []
    fallback_reply: str = "Sorry, I did not catch that."
    apology: str = "Sorry, I cannot help right now. Please hold."
    destinations: dict[str, DestinationConfig] = {}
    # Turn-taking
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    end_of_turn_ms: int = Field(600, ge=100, le=5000)
    min_speech_ms: int = Field(120, ge=20, le=2000)
    barge_in: bool = True
    barge_in_min_ms: int = Field(150, ge=20, le=2000)
    # After the agent's last word, wait this long before acting (hang up, transfer).
    action_delay_ms: int = Field(200, ge=0, le=5000)
    max_duration_s: float = Field(900, gt=0)

    @model_validator(mode="after")
    def _destinations_known(self) -> ProfileConfig:
        for i, intent in enumerate(self.intents):
            if intent.action == "transfer" and intent.destination not in self.destinations:
                known = ", ".join(sorted(self.destinations)) or "none defined"
                raise ValueError(
                    f"intents[{i}] ({intent.name}) transfers to '{intent.destination}', "
                    f"which is not in destinations ({known})"
                )
        return self

    def provider_context(self, name: str, provider: str | None = None) -> ProviderContext:
        """What a provider factory needs for this profile (``provider``: whose options)."""
        intents = tuple(
            Intent(
                name=i.name,
                examples=tuple(i.examples),
                reply=i.reply,
                action=i.action,
                destination=i.destination,
                dtmf=i.dtmf,
            )
            for i in self.intents
        )
        hints = tuple(dict.fromkeys(e for i in self.intents for e in i.examples))
        return ProviderContext(
            profile=name,
            language=self.language,
            voice=self.voice,
            instructions=self.instructions,
            hints=hints,
            intents=intents,
            fallback_reply=self.fallback_reply,
            options=self.options.get(provider, {}) if provider else {},
        )

    def known_phrases(self) -> list[str]:
        """Everything the agent may say from the script, to synthesise ahead."""
        phrases = [self.greeting, self.fallback_reply, self.apology, *(i.reply for i in self.intents)]
        return [p for p in dict.fromkeys(phrases) if p]


def builtin_profiles() -> dict[str, ProfileConfig]:
    result: dict[str, ProfileConfig] = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            result[entry.name.removesuffix(".toml")] = ProfileConfig.model_validate(data)
    return result
