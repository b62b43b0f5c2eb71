"""Deepgram: live speech-to-text (``listen`` v1) and streaming speech (``speak`` v1), over WebSockets.

Both go through the official ``deepgram-sdk`` (an optional extra). Options
shared by both, from the profile's ``[options.deepgram]``: ``url`` (the
WebSocket base, default ``wss://api.deepgram.com``; a self-hosted Deepgram or
a test fake) and the timeouts of the base classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError

from providers.base import ProviderError
from providers.secrets import get_secret, missing_key

KEY_NAME = "DEEPGRAM_API_KEY"
DEFAULT_URL = "wss://api.deepgram.com"


def check_key() -> list[str]:
    return [] if get_secret(KEY_NAME) else [missing_key(KEY_NAME)]


def environment(url: str) -> DeepgramClientEnvironment:
    """Every Deepgram endpoint at one base URL (``ws[s]://host[:port]``)."""
    url = url.rstrip("/")
    if url.startswith("wss://"):
        http = "https://" + url.removeprefix("wss://")
    elif url.startswith("ws://"):
        http = "http://" + url.removeprefix("ws://")
    else:
        raise ValueError(f"deepgram url must start with ws:// or wss://, got {url!r}")
    return DeepgramClientEnvironment(base=http, production=url, agent=url, agent_rest=http)


def make_client(options: Mapping[str, Any]) -> Any:
    secret = get_secret(KEY_NAME)
    if secret is None:
        raise ProviderError(missing_key(KEY_NAME), provider="deepgram", retryable=False)
    return AsyncDeepgramClient(
        api_key=secret.reveal(), environment=environment(str(options.get("url", DEFAULT_URL)))
    )


def connect_error(provider: str, exc: ApiError) -> ProviderError:
    # Only the status and body: the SDK's error also carries the request headers.
    body = exc.body if isinstance(exc.body, str) else type(exc.body).__name__
    if exc.status_code is None:
        return ProviderError(f"connection failed: {body}", provider=provider, retryable=True)
    return ProviderError.from_status(provider, exc.status_code, body)
