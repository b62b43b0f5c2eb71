"""Call profiles: what the agent says and does, chosen per call in the dialplan.

Built-in profiles ship inside the package as TOML, so the demo works from any
directory with no config file.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ari_agent.conversation.backchannel import DEFAULT_BACKCHANNELS
from ari_agent.conversation.languages import primary
from ari_agent.leads.dialog import LeadSpec
from ari_agent.leads.fields import FieldDef, field_defs
from providers.base import Intent, ProviderContext


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntentConfig(_Model):
    name: str
    examples: list[str] = Field(min_length=1)
    # Extra key phrases (synonyms), found inside longer sentences too:
    # "opening hours" picks this intent in "could you tell me your opening hours".
    synonyms: list[str] = []
    reply: str
    action: Literal["none", "hangup", "transfer"] = "none"
    destination: str | None = None
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]$")
    # Sets AI_AGENT_RESULT so the dialplan can branch after the call comes back.
    result: str | None = None
    # The caller's next answer is captured into this field (AI_FIELD_<NAME>).
    capture: str | None = None


class LeadConfig(_Model):
    """Lead capture to completion: the required capture_fields are asked for until valid.

    The scripted dialog drives it (an LLM profile is told the fields through the capture tool).
    """

    # The intent whose reply starts the lead (its first question follows the reply);
    # none: the call starts in the lead, the greeting asking the first question.
    intent: str | None = None
    confirm: str = "I have {summary}. Is that right?"
    ask_correction: str = "Which one should I change: {labels}?"
    retry: str = "Sorry, {reason}. {question}"
    complete_reply: str = "Thank you, I have everything I need."
    failed_reply: str = "Sorry, I could not get those details."
    max_attempts: int = Field(3, ge=1, le=10)
    # After the read-back is confirmed; a failed lead ends with on_failed.
    on_complete: Literal["none", "hangup", "transfer"] = "hangup"
    on_failed: Literal["none", "hangup", "transfer"] = "hangup"
    destination: str | None = None  # for a transfer (either way)
    result: str | None = "lead"  # AI_AGENT_RESULT of a completed lead
    failed_result: str | None = "lead_incomplete"


class DestinationConfig(_Model):
    """A dialplan target for transfers; no context means the caller's own context."""

    context: str | None = None
    extension: str
    priority: int = Field(1, ge=1)


class ToolServerConfig(_Model):
    """An MCP server whose tools a profile's LLM may call: a local command (stdio) or a URL.

    A stdio server is started once per agent process and shared by the calls (and by the
    profiles naming the same one); only the tools in ``tools`` are offered.
    """

    command: list[str] = []  # e.g. ["python", "-m", "clinic_tools"]: spoken to over stdin/stdout
    url: str | None = None  # streamable HTTP, e.g. "https://tools.example.com/mcp"
    # HTTP headers; ${NAME} in a value is the secret NAME (environment, NAME_FILE, /run/secrets).
    headers: dict[str, str] = {}
    tools: list[str] = Field(min_length=1)  # the allow-list: nothing else is offered

    @model_validator(mode="after")
    def _one_transport(self) -> ToolServerConfig:
        if bool(self.command) == bool(self.url):
            raise ValueError("give either command (a stdio server) or url (streamable HTTP), not both")
        if self.headers and not self.url:
            raise ValueError("headers are sent to an HTTP server only; this one is a command")
        return self


def invalid_at(problem: str, at: tuple[str, ...], fix: str) -> PydanticCustomError:
    """A profile error naming its field below the profile and its fix (config.invalid's shape)."""
    return PydanticCustomError("config", "{problem}", {"problem": problem, "fix": fix, "at": ".".join(at)})


_TAG_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class LanguageConfig(_Model):
    """One more language of a profile: its voice, and what the LLM is told in it."""

    voice: str | None = None  # the TTS voice (None: the profile's voice)
    # The instructions, written in this language; or a hint added to the profile's own
    # instructions (e.g. "The caller speaks Spanish: answer in Spanish."). One of the two.
    instructions: str | None = None
    hint: str | None = None

    @model_validator(mode="after")
    def _one_text(self) -> LanguageConfig:
        if (self.instructions is None) == (self.hint is None):
            raise ValueError(
                "give either instructions (the profile's instructions in this language) or hint "
                "(added to the profile's instructions), exactly one"
            )
        if not (self.instructions or self.hint or "").strip():
            raise ValueError("instructions or hint is empty")
        return self


class ProfileConfig(_Model):
    greeting: str = ""
    instructions: str = ""
    language: str = "en-US"
    voice: str | None = None
    # Other languages callers may speak, by BCP-47 tag ("es", "fr-CA"): when the recogniser
    # reports one, the rest of the call uses its instructions and voice (README: Languages).
    languages: dict[str, LanguageConfig] = {}
    # Providers per stage, in failover order.
    stt: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    llm: list[str] = Field(default_factory=lambda: ["scripted"], min_length=1)
    tts: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    # Speech-to-speech instead of the three stages, when set (failover order).
    realtime: list[str] = []
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"  # realtime only
    # An embeddings provider ("local", "openai"): the knowledge base is then searched by meaning
    # as well as by words (hybrid). None: by words only. Documents are embedded at
    # `knowledge add`; after changing it, `ari-agent knowledge reindex PROFILE`.
    embeddings: str | None = None
    # Per provider name: its own settings (model, base_url, voice...), e.g.
    # [profiles.x.options.openai] model = "gpt-4o-mini"
    options: dict[str, dict[str, Any]] = {}
    intents: list[IntentConfig] = []
    fallback_reply: str = "Sorry, I did not catch that."
    apology: str = "Sorry, I cannot help right now. Please hold."
    destinations: dict[str, DestinationConfig] = {}
    # Tools the dialog or the LLM may call.
    tools: list[Literal["hangup", "transfer", "capture", "set_variable"]] = ["hangup", "transfer"]
    # What the capture tool (and a lead) accepts: names (optional text fields, e.g.
    # "callback_number") or typed definitions ({name, type, question, required, ...}).
    capture_fields: list[str | FieldDef] = []
    lead: LeadConfig | None = None
    variables: list[str] = ["AI_AGENT_RESULT"]  # channel variables set_variable may set
    # MCP servers by name (letters, digits, _ and -): their allowed tools are offered to the LLM
    # as <server>__<tool>. A call to one that takes longer than tool_timeout_ms is abandoned
    # and tool_fallback is said instead (the filler covers the wait before that).
    tool_servers: dict[str, ToolServerConfig] = {}
    tool_timeout_ms: int = Field(4000, ge=100, le=60000)
    tool_fallback: str = "Sorry, I could not check that just now."
    # Channel variables templated into the instructions as {NAME} (besides
    # {caller_number}, {caller_name}, {extension}, {context}).
    template_variables: list[str] = []
    # Turn-taking
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    # How the end of the caller's turn is found: "silence" (end_of_turn_ms of it) or "model"
    # (after turn_pause_ms of silence the turn model is asked; if it says the caller has not
    # finished, wait up to turn_max_wait_ms). "model" needs the turn extra (`check` says).
    end_of_turn: Literal["silence", "model"] = "silence"
    end_of_turn_ms: int = Field(600, ge=100, le=5000)
    turn_pause_ms: int = Field(200, ge=60, le=2000)
    turn_threshold: float = Field(0.5, gt=0, lt=1)  # the model's probability of "finished"
    turn_max_wait_ms: int = Field(2500, ge=200, le=10000)
    # Start the LLM on a stable interim transcript while the end of turn is being decided
    # (providers with interim results); the reply is spoken only if the final says the same.
    early_start: bool = False
    early_start_ms: int = Field(100, ge=20, le=2000)  # caller silence before thinking early
    # Caller silence after which the end of the turn is prepared (at the latest at
    # turn_pause_ms): a recogniser that gives finals by segment is asked for its final and, with
    # "model", the turn model for its verdict; both are acted on only at turn_pause_ms.
    turn_prepare_ms: int = Field(100, ge=20, le=2000)
    min_speech_ms: int = Field(120, ge=20, le=2000)
    # Take the STT provider's own end-of-turn when it has one and it comes first.
    provider_endpointing: bool = True
    barge_in: bool = True
    # Caller sound over the agent holds its audio at once; words (other than a backchannel)
    # make it a barge-in, and false_interruption_ms of silence with none lets it go on.
    # Off: barge_in_min_ms of continuous sound stops the agent for good.
    false_interruptions: bool = True
    # Measured (bench_interruptions): 100/150 gave a shorter hold for coughs and backchannels
    # than 60/200 (p50 381 vs 448 ms), the stop on a real barge-in still p95 81 ms.
    hold_after_ms: int = Field(100, ge=20, le=1000)  # continuous caller sound that holds the agent
    false_interruption_ms: int = Field(150, ge=0, le=3000)
    backchannel_max_ms: int = Field(800, ge=0, le=5000)  # longer speech waits for its words
    backchannels: list[str] = list(DEFAULT_BACKCHANNELS)
    barge_in_min_ms: int = Field(150, ge=20, le=2000)
    echo_guard: bool = True
    # The audio front end, before the echo guard, VAD and STT (pipeline profiles; needs the
    # audio extra, `check` says): WebRTC's echo canceller, fed what the agent sent, run while
    # the agent has spoken in the last second; and its noise suppressor, on every frame.
    echo_cancellation: bool = False
    noise_suppression: bool = False
    # No dead air
    filler_after_ms: int = Field(1200, ge=0, le=10000)  # after the end of the turn; 0: no filler
    filler: str = "One moment."
    turn_error_reply: str = "Sorry, I had a problem with that. Could you say it again?"
    idle_timeout_s: float = Field(10, gt=0)
    idle_reprompt: str = "Are you still there?"
    max_reprompts: int = Field(2, ge=0)
    idle_goodbye: str = "I will end the call now. Goodbye."
    max_duration_s: float = Field(900, gt=0)
    max_duration_goodbye: str = "We have reached the time limit for this call. Goodbye."
    # The alert rule's line (deploy/prometheus/alerts.yml): this profile's turn latency above it,
    # sustained, alerts. Exported as ari_agent_turn_latency_threshold_seconds{profile}.
    turn_latency_alert_s: float = Field(1.5, gt=0, le=30)
    # After the agent's last word, wait this long before acting (hang up, transfer).
    action_delay_ms: int = Field(200, ge=0, le=5000)
    # Store turn text in the call store for this profile (None: the global AGENT_STORE__TEXT).
    store_text: bool | None = None
    # Speaks the apology and error replies, synthesised at start-up, so they
    # never depend on the TTS that failed.
    apology_tts: str = "local"

    @model_validator(mode="after")
    def _tool_server_names(self) -> ProfileConfig:
        for name in self.tool_servers:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,24}", name) or "__" in name:
                raise ValueError(
                    f"tool server name '{name}': use 1-24 letters, digits, '_' or '-' (no '__'), "
                    "it prefixes the tool names the LLM sees"
                )
        return self

    @model_validator(mode="after")
    def _languages_distinct(self) -> ProfileConfig:
        seen = {primary(self.language): f"language ({self.language})"}
        for tag in self.languages:
            if not _TAG_RE.fullmatch(tag):
                raise invalid_at(
                    f"'{tag}' is not a language tag",
                    ("languages", tag),
                    'use a BCP-47 tag such as "es" or "fr-CA"',
                )
            other = seen.get(primary(tag))
            if other is not None:
                raise invalid_at(
                    f"'{tag}' is the same language as {other}: recognisers report only the language, "
                    "so the two cannot be told apart",
                    ("languages", tag),
                    "keep one of them",
                )
            seen[primary(tag)] = f"languages.{tag}"
        return self

    def voice_for(self, tag: str) -> str | None:
        lang = self.languages.get(tag)
        return lang.voice if lang is not None and lang.voice else self.voice

    def instructions_for(self, tag: str) -> str:
        """The instructions for a configured language, before the call's details are filled in."""
        lang = self.languages.get(tag)
        if lang is None:
            return self.instructions
        if lang.instructions is not None:
            return lang.instructions
        return f"{self.instructions}\n\n{lang.hint}".strip()

    @property
    def fields(self) -> tuple[FieldDef, ...]:
        return field_defs(self.capture_fields)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def lead_spec(self) -> LeadSpec | None:
        lead = self.lead
        if lead is None:
            return None
        return LeadSpec(
            fields=self.fields,
            intent=lead.intent,
            confirm=lead.confirm,
            ask_correction=lead.ask_correction,
            retry=lead.retry,
            complete_reply=lead.complete_reply,
            failed_reply=lead.failed_reply,
            max_attempts=lead.max_attempts,
            on_complete=lead.on_complete,
            on_failed=lead.on_failed,
            destination=lead.destination,
            result=lead.result,
            failed_result=lead.failed_result,
        )

    @model_validator(mode="after")
    def _lead_consistent(self) -> ProfileConfig:
        names = self.field_names
        if len(set(names)) != len(names):
            raise ValueError("capture_fields names a field twice")
        lead = self.lead
        if lead is None:
            return self
        if not any(f.required for f in self.fields):
            raise ValueError("lead needs at least one required field in capture_fields")
        if lead.intent is not None and lead.intent not in {i.name for i in self.intents}:
            raise ValueError(f"lead.intent '{lead.intent}' is not one of the intents")
        if "transfer" in (lead.on_complete, lead.on_failed) and lead.destination not in self.destinations:
            raise ValueError(f"lead transfers to '{lead.destination}', which is not in destinations")
        if "capture" not in self.tools:
            raise ValueError("lead needs the capture tool in tools (it sets AI_FIELD_<NAME>)")
        return self

    @model_validator(mode="after")
    def _captures_known(self) -> ProfileConfig:
        for i, intent in enumerate(self.intents):
            if intent.capture and intent.capture not in self.field_names:
                raise ValueError(
                    f"intents[{i}] ({intent.name}) captures '{intent.capture}', "
                    "which is not in capture_fields"
                )
        return self

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

    def provider_context(
        self, name: str, provider: str | None = None, *, language: str | None = None
    ) -> ProviderContext:
        """What a provider factory needs for this profile (``provider``: whose options).

        ``language``: one of ``languages``, for the voice that speaks it.
        """
        intents = tuple(
            Intent(
                name=i.name,
                examples=tuple(i.examples),
                reply=i.reply,
                action=i.action,
                destination=i.destination,
                dtmf=i.dtmf,
                result=i.result,
                capture=i.capture,
                synonyms=tuple(i.synonyms),
            )
            for i in self.intents
        )
        lead = self.lead_spec()
        said = [p for i in self.intents for p in (*i.examples, *i.synonyms)]
        hints = tuple(dict.fromkeys([*said, *(lead.phrases() if lead else [])]))
        tag = language if language is not None else self.language
        return ProviderContext(
            profile=name,
            language=tag,
            voice=self.voice_for(tag),
            instructions=self.instructions_for(tag),
            hints=hints,
            intents=intents,
            fallback_reply=self.fallback_reply,
            lead=lead,
            options=self.options.get(provider, {}) if provider else {},
            languages=tuple(self.languages),
        )

    def shared_phrases(self, name: str) -> list[str]:
        """Warnings for key phrases (examples or synonyms) that two intents share.

        Compared as callers' words (case, punctuation and contractions
        aside): the dialog can only give such a phrase to one of them.
        """
        owners: dict[str, list[str]] = {}
        for intent in self.intents:
            for phrase in dict.fromkeys(_words(p) for p in (*intent.examples, *intent.synonyms)):
                if phrase:
                    owners.setdefault(phrase, []).append(intent.name)
        return [
            f"intents {', '.join(who)} share the key phrase '{phrase}'; "
            "only one of them can be picked by it, keep it in one"
            for phrase, who in owners.items()
            if len(who) > 1
        ]

    def known_phrases(self) -> list[str]:
        """Everything the agent may say from the script, to synthesise ahead."""
        phrases = [
            self.greeting,
            self.fallback_reply,
            self.filler,
            self.idle_reprompt,
            self.idle_goodbye,
            self.max_duration_goodbye,
            self.tool_fallback if self.tool_servers else "",
            *(i.reply for i in self.intents),
        ]
        return [p for p in dict.fromkeys(phrases) if p]

    def canned_phrases(self) -> list[str]:
        """Said by the apology voice, prepared at start-up: they must work when the providers don't."""
        return [self.apology, self.turn_error_reply]


_WORD_RE = re.compile(r"[a-z0-9']+")
_APOSTROPHES = str.maketrans("", "", "'\u2019")


def _words(phrase: str) -> str:
    """A phrase as callers' words: lower case, no punctuation, apostrophes dropped."""
    words = _WORD_RE.findall(phrase.lower().replace("\u2019", "'"))
    return " ".join(w.translate(_APOSTROPHES) for w in words)


def builtin_profiles() -> dict[str, ProfileConfig]:
    result: dict[str, ProfileConfig] = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            result[entry.name.removesuffix(".toml")] = ProfileConfig.model_validate(data)
    return result
