"""Which of its profile's languages a call is in (sans-IO: reported languages in, switches out).

A recogniser that reports the caller's language tags each final transcript
with it (``FinalTranscript.language``). A language the profile lists, other
than the one the call is in, switches the rest of the call to it: the LLM's
instructions and the TTS voice. A language the profile does not list changes
nothing: the agent has no voice or instructions for it.
"""

from __future__ import annotations

from collections.abc import Iterable


def primary(tag: str) -> str:
    """A language tag's primary subtag, lower case: "es-MX" -> "es" (what recognisers report)."""
    return tag.replace("_", "-").split("-")[0].lower()


class CallLanguage:
    def __init__(self, default: str, others: Iterable[str] = ()) -> None:
        self.current = default  # a configured tag
        self.configured = (default, *others)
        self.heard: str | None = None  # the configured tag the recogniser last reported, if any

    def reported(self, language: str | None) -> str | None:
        """A transcript's language: the configured tag to switch to, or None to stay as is."""
        if not language:
            return None
        wanted = primary(language)
        tag = next((t for t in self.configured if primary(t) == wanted), None)
        if tag is None:
            return None
        self.heard = tag
        if tag == self.current:
            return None
        self.current = tag
        return tag
