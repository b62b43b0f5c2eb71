"""The tools a profile gives its dialog or LLM: hang up, transfer, capture, set a variable, search.

Terminal tools (hang up, transfer) end the conversation after the reply has
been heard; the others act at once and report back to the model.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ari_agent.conversation.records import EndReason, ToolUse
from ari_agent.knowledge.answer import SEARCH_SPEC, TOOL_NAME, Found
from ari_agent.leads.fields import Invalid, parse
from ari_agent.profiles import DestinationConfig, ProfileConfig
from ari_agent.toolservers import RemoteTools, ToolServerError
from providers.base import ToolCall, ToolSpec

log = logging.getLogger(__name__)

_FIELD_NAME = re.compile(r"[^A-Za-z0-9]+")


class Finish(Exception):
    """Leave the conversation: hand the call back (or hang up) with this outcome."""

    def __init__(self, reason: EndReason, target: DestinationConfig | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.target = target


def field_variable(field: str) -> str:
    """The channel variable of a captured field: AI_FIELD_<NAME>, name upper-cased."""
    return "AI_FIELD_" + _FIELD_NAME.sub("_", field).strip("_").upper()


def tool_specs(profile: ProfileConfig, *, knowledge: bool = False) -> tuple[ToolSpec, ...]:
    """The tools offered; ``knowledge``: the profile has documents, so its LLM may search them."""
    specs: list[ToolSpec] = [SEARCH_SPEC] if knowledge else []
    for name in profile.tools:
        if name == "hangup":
            specs.append(ToolSpec("hangup", "End the call after saying goodbye."))
        elif name == "transfer" and profile.destinations:
            specs.append(
                ToolSpec(
                    "transfer",
                    "Transfer the caller to a destination after telling them so.",
                    _object({"destination": {"type": "string", "enum": sorted(profile.destinations)}}),
                )
            )
        elif name == "capture" and profile.capture_fields:
            specs.append(
                ToolSpec(
                    "capture",
                    "Store a detail the caller gave (for example their name or callback number)."
                    + _field_guide(profile),
                    _object(
                        {
                            "field": {"type": "string", "enum": profile.field_names},
                            "value": {"type": "string"},
                        }
                    ),
                )
            )
        elif name == "set_variable" and profile.variables:
            specs.append(
                ToolSpec(
                    "set_variable",
                    "Set a result the phone system uses after the call (for example AI_AGENT_RESULT).",
                    _object(
                        {
                            "name": {"type": "string", "enum": list(profile.variables)},
                            "value": {"type": "string"},
                        }
                    ),
                )
            )
    return tuple(specs)


def _field_guide(profile: ProfileConfig) -> str:
    """The typed fields, so the model asks for each in turn and knows what is valid."""
    if all(isinstance(entry, str) for entry in profile.capture_fields):
        return ""  # names only: free text, described as before
    lines = []
    for f in profile.fields:
        kind = f.type + (f" ({', '.join(f.options)})" if f.options else "")
        need = "required" if f.required else "optional"
        lines.append(f"- {f.name}: {kind}, {need}; ask: {f.prompt}")
    done = ""
    if profile.lead is not None and profile.lead.result and "set_variable" in profile.tools:
        # The core takes a call that ends with this result as a completed lead (hand-off).
        done = f" Once the caller confirmed, call set_variable AI_AGENT_RESULT={profile.lead.result}."
    return (
        " Ask for each required field until it is valid, read them back and have the caller "
        f"confirm before finishing.{done} Fields:\n" + "\n".join(lines)
    )


def _object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(properties)}


@dataclass
class ToolOutcome:
    output: str  # what the model is told
    finish: Finish | None = None
    # (source, heading) of the knowledge passages the model was given: the reply names them.
    passages: tuple[tuple[str, str], ...] = ()
    # The model must read this result and answer from it, even if it already spoke this round.
    answer_from: bool = False
    # Said to the caller instead of the model's answer (a tool that failed or timed out).
    fallback: str | None = None
    # A tool server's call, for the record.
    remote: ToolUse | None = None


Search = Callable[[str], Awaitable[Found]]


class ToolRunner:
    """Runs tool calls for one call; variables go to the channel at once."""

    def __init__(
        self,
        profile: ProfileConfig,
        set_variable: Callable[[str, str], Awaitable[None]],
        fields: dict[str, str],
        variables: dict[str, str],
        search: Search | None = None,
        remote: RemoteTools | None = None,
    ) -> None:
        self.profile = profile
        self._set_variable = set_variable
        self.fields = fields
        self.variables = variables
        self._search = search
        self._remote = remote

    def specs(self) -> tuple[ToolSpec, ...]:
        """Every tool offered to the LLM: the profile's own, the search, the allowed remote ones."""
        own = tool_specs(self.profile, knowledge=self.searches)
        return own + (self._remote.specs if self._remote is not None else ())

    @property
    def searches(self) -> bool:
        """Whether the profile's knowledge base is searchable (the LLM is offered the tool)."""
        return self._search is not None

    async def run(self, call: ToolCall) -> ToolOutcome:
        allowed = set(self.profile.tools)
        args = call.arguments
        if self._remote is not None and call.name in self._remote.routes:
            return await self._run_remote(call)
        if call.name == TOOL_NAME and self._search is not None:
            query = str(args.get("query", "")).strip()
            if not query:
                return ToolOutcome("error: give the caller's question as query", answer_from=True)
            try:
                found = await self._search(query)
            except Exception as exc:  # a locked or broken knowledge.db must not end the call
                log.warning("knowledge search failed (%s); the model is told so", type(exc).__name__)
                return ToolOutcome(
                    "error: the documents cannot be searched now: say you cannot look it up",
                    answer_from=True,
                )
            return ToolOutcome(found.output, passages=found.passages, answer_from=True)
        if call.name not in allowed:
            log.warning("tool %r is not enabled for this profile", call.name)
            return ToolOutcome(f"error: tool {call.name} is not available")
        if call.name == "hangup":
            return ToolOutcome("ok", Finish("hangup_by_agent"))
        if call.name == "transfer":
            name = str(args.get("destination", ""))
            target = self.profile.destinations.get(name)
            if target is None:
                return ToolOutcome(f"error: unknown destination {name!r}")
            return ToolOutcome("ok", Finish("transferred", target))
        if call.name == "capture":
            field, value = str(args.get("field", "")), str(args.get("value", "")).strip()
            definition = next((f for f in self.profile.fields if f.name == field), None)
            if definition is None or not value:
                return ToolOutcome(f"error: cannot capture {field!r}")
            parsed = parse(definition, value, today=dt.date.today())
            if isinstance(parsed, Invalid):
                # The model asks again; the caller's words are not repeated in the error.
                return ToolOutcome(f"error: not a valid {definition.type}: {parsed.reason}")
            value = parsed.value
            self.fields[field] = value
            await self._set(field_variable(field), value)
            return ToolOutcome("ok")
        if call.name == "set_variable":
            name, value = str(args.get("name", "")), str(args.get("value", ""))
            if name not in self.profile.variables:
                return ToolOutcome(f"error: variable {name!r} may not be set")
            await self._set(name, value)
            return ToolOutcome("ok")
        return ToolOutcome(f"error: unknown tool {call.name}")

    async def _run_remote(self, call: ToolCall) -> ToolOutcome:
        assert self._remote is not None
        timeout = self.profile.tool_timeout_ms / 1000
        arguments = json.dumps(dict(call.arguments), ensure_ascii=False)
        try:
            text = await asyncio.wait_for(self._remote.call(call.name, dict(call.arguments)), timeout)
        except TimeoutError:
            # Arguments and results are the caller's business: the log names the tool only.
            log.warning("tool %s timed out after %g s", call.name, timeout)
            use = ToolUse(call.name, "timeout", arguments)
            return ToolOutcome("error: timed out", fallback=self.profile.tool_fallback, remote=use)
        except ToolServerError as exc:
            log.warning("tool %s failed: %s", call.name, exc)
            use = ToolUse(call.name, "error", arguments)
            return ToolOutcome("error: failed", fallback=self.profile.tool_fallback, remote=use)
        return ToolOutcome(text, answer_from=True, remote=ToolUse(call.name, "ok", arguments, text))

    async def _set(self, name: str, value: str) -> None:
        self.variables[name] = value
        await self._set_variable(name, value)
