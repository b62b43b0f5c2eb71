"""What the OpenAI adapters share: settings from the profile, the SDK client, error mapping.

Settings come from the profile's ``[profiles.<name>.options.openai]`` table;
the key from ``OPENAI_API_KEY`` (or its secret file). A ``base_url`` points
every adapter at an OpenAI-compatible server (Ollama, vLLM, llama.cpp
server); such servers usually want no key, so with a ``base_url`` the key is
optional unless ``api_key_required = true``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Imported at once, not lazily: without the package the registry reports
# the provider as needing it (with the pip command), before any call.
import openai
from openai import AsyncOpenAI, Timeout

from providers.base import ProviderContext, ProviderError, ProviderTimeout
from providers.secrets import Secret, get_secret, missing_key

KEY_NAME = "OPENAI_API_KEY"
# The SDK refuses to build a client without a key; keyless servers ignore this one.
_NO_KEY = "no-key"
DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True, repr=False)
class OpenAISettings:
    key: Secret | None
    base_url: str | None = None
    websocket_base_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    options: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        # The key never shows, not even masked: there is nothing to learn from it.
        return f"OpenAISettings(base_url={self.base_url!r}, key={'set' if self.key else 'unset'})"

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> OpenAISettings:
        options = dict(ctx.options)
        base_url = options.get("base_url") or None
        return cls(
            key=get_secret(KEY_NAME),
            base_url=str(base_url) if base_url else None,
            websocket_base_url=str(options["websocket_base_url"])
            if options.get("websocket_base_url")
            else None,
            timeout=float(options.get("timeout", DEFAULT_TIMEOUT)),
            options=options,
        )

    def option(self, name: str, default: Any = None) -> Any:
        return (self.options or {}).get(name, default)

    def client(self) -> AsyncOpenAI:
        # Our resilience layer retries (with its own budget and breaker): the
        # SDK's hidden retries would multiply the delays a caller hears.
        return AsyncOpenAI(
            api_key=self.key.reveal() if self.key else _NO_KEY,
            base_url=self.base_url,
            websocket_base_url=self.websocket_base_url,
            # A server that does not even accept the connection is down: fail over fast.
            timeout=Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT)),
            max_retries=0,
        )

    def scrub(self, text: str) -> str:
        """``text`` with the key, should any error quote it, masked."""
        if self.key:
            text = text.replace(self.key.reveal(), "********")
        return text


def check(ctx: ProviderContext, *, websocket: bool = False) -> list[str]:
    """The problems that stop an OpenAI adapter from running for this profile."""
    problems: list[str] = []
    if websocket and importlib.util.find_spec("websockets") is None:
        problems.append(
            "the Realtime API needs the websockets package; install it: pip install 'openai[realtime]'"
        )
    options = ctx.options
    required = bool(options.get("api_key_required", not options.get("base_url")))
    if required and get_secret(KEY_NAME) is None:
        problems.append(missing_key(KEY_NAME))
    return problems


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:200]
    return type(exc).__name__


def provider_error(name: str, exc: BaseException, settings: OpenAISettings | None = None) -> ProviderError:
    """An SDK or socket failure as our ProviderError, retryable by its kind."""
    if isinstance(exc, ProviderError):
        return exc
    scrub = settings.scrub if settings is not None else (lambda text: text)
    if isinstance(exc, openai.APIStatusError):
        return ProviderError.from_status(name, exc.status_code, scrub(_status_message(exc)))
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(name, "request", settings.timeout if settings else DEFAULT_TIMEOUT)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"connection failed: {scrub(str(exc))}", provider=name, retryable=True)
    status = _handshake_status(exc)
    if status is not None:
        return ProviderError.from_status(name, status, "WebSocket upgrade rejected")
    if isinstance(exc, (OSError, EOFError)):
        return ProviderError(f"connection failed: {type(exc).__name__}", provider=name, retryable=True)
    return ProviderError(f"{type(exc).__name__}: {scrub(str(exc))[:200]}", provider=name, retryable=True)


def _handshake_status(exc: BaseException) -> int | None:
    # websockets raises InvalidStatus (with .response.status_code) when the
    # server answers the upgrade with an HTTP error.
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if type(exc).__name__ == "InvalidStatus" and isinstance(status, int):
        return status
    return None
