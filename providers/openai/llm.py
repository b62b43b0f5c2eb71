"""Language model over streaming chat completions (OpenAI or any OpenAI-compatible server).

Text deltas are yielded as they arrive; tool calls arrive as fragments
(name first, JSON arguments in pieces, keyed by index) and are yielded whole
once the stream ends, in index order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from providers.base import (
    LLM,
    LLMEvent,
    Message,
    ProviderContext,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from providers.openai._client import OpenAISettings, check, provider_error
from providers.openai.options import OpenAIOptions

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def to_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our history as chat messages.

    Our ``tool`` messages carry no call id, and the API accepts a ``tool``
    message only as the answer to an assistant ``tool_calls`` entry, so a
    tool result travels as a system note instead.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "system", "content": f"Tool result: {m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def to_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
        }
        for t in tools
    ]


def parse_arguments(provider: str, name: str, raw: str) -> dict[str, Any]:
    """A tool call's JSON arguments; a model that wrote bad JSON will write it again."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ProviderError(
            f"tool call {name!r} has arguments that are not JSON", provider=provider, retryable=False
        ) from None
    if not isinstance(value, dict):
        raise ProviderError(
            f"tool call {name!r} arguments are not an object", provider=provider, retryable=False
        )
    return value


class OpenAILLM(LLM):
    name = "openai"
    Options = OpenAIOptions

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        model: str = DEFAULT_MODEL,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = settings.client()

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, settings={self.settings!r})"

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        settings = OpenAISettings.from_context(ctx)
        temperature = ctx.options.get("temperature")
        max_tokens = ctx.options.get("max_tokens")
        return cls(
            settings,
            model=str(ctx.options.get("model", DEFAULT_MODEL)),
            temperature=float(temperature) if temperature is not None else None,
            max_tokens=int(max_tokens) if max_tokens is not None else None,
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        return check(ctx)

    async def _aclose(self) -> None:
        await self._client.close()

    async def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LLMEvent]:
        params: dict[str, Any] = {"model": self.model, "messages": to_messages(messages), "stream": True}
        if tools:
            params["tools"] = to_tools(tools)
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        calls: dict[int, _PartialCall] = {}
        try:
            stream = await self._client.chat.completions.create(**params)
            async with stream:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    if delta.content:
                        yield TextDelta(delta.content)
                    for fragment in delta.tool_calls or ():
                        call = calls.setdefault(fragment.index, _PartialCall())
                        call.call_id = fragment.id or call.call_id
                        if fragment.function is not None:
                            call.name = fragment.function.name or call.name
                            if fragment.function.arguments:
                                call.arguments.append(fragment.function.arguments)
        except Exception as exc:
            raise provider_error(self.name, exc, self.settings) from None
        for index in sorted(calls):
            call = calls[index]
            if not call.name:
                raise ProviderError("tool call without a name", provider=self.name, retryable=False)
            arguments = parse_arguments(self.name, call.name, "".join(call.arguments))
            yield ToolCall(call.name, arguments, call.call_id)
