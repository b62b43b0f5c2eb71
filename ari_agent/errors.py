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

    @property
    def problems(self) -> list[ConfigError]:
        """Every problem found (this one alone, unless several were)."""
        return [self]


class ConfigErrors(ConfigError):
    """Several settings are wrong: the first is the error's own field, all are in ``problems``."""

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.field, first.problem, first.fix)
        self._all = list(problems)

    @property
    def problems(self) -> list[ConfigError]:
        return list(self._all)


class MediaError(AgentError):
    """The media plane cannot serve a call (no port, no socket)."""
