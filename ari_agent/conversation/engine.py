"""What a conversation engine (cascaded pipeline or realtime provider) gets from its call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ari_agent.conversation.languages import CallLanguage
from ari_agent.conversation.records import CallRecord
from ari_agent.conversation.speech import Speaker
from ari_agent.conversation.tools import ToolRunner
from ari_agent.observability.metrics import Metrics
from ari_agent.profiles import ProfileConfig
from providers.base import TTS


@dataclass(frozen=True)
class CallParts:
    profile_name: str
    profile: ProfileConfig
    speaker: Speaker
    tools: ToolRunner
    record: CallRecord
    metrics: Metrics
    instructions: str  # the profile's, with the call's details filled in
    canned: Mapping[str, bytes]  # phrases ready as audio, needing no provider
    # Per language of the profile's ``languages``: its instructions (filled in) and its voice.
    instructions_by_language: Mapping[str, str] = field(default_factory=dict)
    voices: Mapping[str, TTS] = field(default_factory=dict)


class ConversationBase:
    """The parts every engine keeps; ``state`` is what /calls shows."""

    def __init__(self, parts: CallParts) -> None:
        self.profile_name = parts.profile_name
        self.profile = parts.profile
        self.speaker = parts.speaker
        self.tools = parts.tools
        self.record = parts.record
        self.metrics = parts.metrics
        self.instructions = parts.instructions
        self.canned = parts.canned
        self.instructions_by_language = parts.instructions_by_language
        self.voices = parts.voices
        self.default_voice = parts.speaker.tts
        self.language = CallLanguage(parts.profile.language, parts.profile.languages)
        self.state = "starting"
