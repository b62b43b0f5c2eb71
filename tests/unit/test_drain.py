"""Drain on SIGTERM with an injected timer: no test waits out a real drain timeout."""

from __future__ import annotations

import os

import pytest

from ari_agent.app import AgentApp
from ari_agent.config import load_settings


class _Call:
    def __init__(self) -> None:
        self.handed_back: list[str] = []

    async def hand_back(self, reason: str) -> None:
        self.handed_back.append(reason)


@pytest.fixture
def app(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> AgentApp:
    for key in list(os.environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENT_STORE__ENABLED", "false")
    monkeypatch.setenv("AGENT_CALLS__DRAIN_TIMEOUT", "300")

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    return AgentApp(load_settings(), sleep=no_wait)


slept: list[float] = []


async def test_drain_hands_back_what_is_left_after_the_timeout(app: AgentApp) -> None:
    calls = [_Call(), _Call()]
    for i, call in enumerate(calls):
        app.calls.admit(f"c{i}", now=0)
        app.calls.activate(f"c{i}", call)  # type: ignore[arg-type]
    assert not app.ready
    slept.clear()
    await app.drain()
    assert slept == [300.0]  # the whole drain timeout, on the injected timer
    assert [c.handed_back for c in calls] == [["drained"], ["drained"]]
    assert app.ready is False


async def test_drain_with_no_calls_stops_at_once(app: AgentApp) -> None:
    slept.clear()
    await app.drain()
    assert slept == []
