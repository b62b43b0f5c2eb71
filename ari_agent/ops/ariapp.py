"""ARI for the operator commands: a private Stasis app of their own, never the agent's.

``doctor`` and ``call`` register their own application name (``<app>-doctor-<id>``,
``<app>-call-<id>``) so they can own channels and see their events without
disturbing the running agent or being mistaken for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ari_agent.ari.client import AriClient, AriError
from ari_agent.ari.events import Event
from ari_agent.ari.tls import SslArg, client_ssl
from ari_agent.ari.websocket import EventListener
from ari_agent.config import Settings

CONNECT_TIMEOUT = 5.0


class OpsAri(AriClient):
    """The agent's ARI client plus raw JSON access for fields the typed models leave out."""

    async def raw(self, method: str, path: str, params: dict[str, object | None] | None = None) -> Any:
        """One ARI request; the decoded JSON (or None). Raises the client's AriError subclasses."""
        return await self._request(method, path, params=params)


def ops_client(settings: Settings, timeout: float = 5.0) -> OpsAri:
    return OpsAri(
        settings.ari.url,
        settings.ari.username,
        settings.ari.password.get_secret_value(),
        timeout=timeout,
        ssl=ari_ssl(settings),
    )


def ari_ssl(settings: Settings) -> SslArg:
    return client_ssl(settings.ari.url, settings.ari.ca_file, settings.ari.tls_verify)


def private_app_name(settings: Settings, role: str) -> str:
    return f"{settings.ari.app}-{role}-{uuid.uuid4().hex[:8]}"


class PrivateApp:
    """A Stasis app registered for the duration of a command; its events on a queue."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.name = private_app_name(settings, role)
        self.seen: list[Event] = []  # every event of the app, oldest first
        self._arrived = asyncio.Condition()
        self._connected = asyncio.Event()
        self._listener = EventListener(
            settings.ari.url,
            settings.ari.username,
            settings.ari.password.get_secret_value(),
            self.name,
            self._on_event,
            on_connect=self._on_connect,
            backoff_initial=0.2,
            backoff_max=1.0,
            ssl=ari_ssl(settings),
        )

    async def _on_event(self, event: Event) -> None:
        self.seen.append(event)
        async with self._arrived:
            self._arrived.notify_all()

    async def _on_connect(self) -> None:
        self._connected.set()

    async def __aenter__(self) -> PrivateApp:
        self._listener.start()
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            await self._listener.stop()
            raise AriError(
                f"the ARI events WebSocket for app {self.name} did not connect within {CONNECT_TIMEOUT:g} s"
            ) from None
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._listener.stop()

    def find(self, predicate: Callable[[Event], bool]) -> Event | None:
        return next((e for e in self.seen if predicate(e)), None)

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float) -> Event | None:  # noqa: ASYNC109
        """The first event so far or to come matching ``predicate``, or None after ``timeout``."""
        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: self.find(predicate) is not None), timeout
                )
            except TimeoutError:
                return None
        return self.find(predicate)
