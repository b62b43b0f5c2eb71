"""One error hierarchy for the whole package (the providers share it)."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AgentError):
    """A setting is wrong; the message names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem} Fix: {fix}")


class MediaError(AgentError):
    """The media plane cannot serve a call (no port, no socket)."""
