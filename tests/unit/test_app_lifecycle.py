"""The app's admission, reconcile and drain against a scripted ARI, with the races pinned by gates.

The sessions are stand-ins (the real one needs media): what is checked is what
the app decides and tells Asterisk. The same races run through a real Asterisk
in tests/integration/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from ari_agent import app as app_module
from ari_agent.app import AgentApp
from ari_agent.ari.events import ApplicationReplaced, Caller, Channel, StasisStart
from ari_agent.config import load_settings


def _channel(channel_id: str) -> Channel:
    return Channel(channel_id, f"PJSIP/x-{channel_id}", "Up", Caller("100", "Lab"), None)


class FakeAri:
    """Records what the app asks; ``gates`` hold chosen calls until set."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self.app_channels: list[str] = []
        self.variables: dict[str, dict[str, str]] = {}
        self.profile_variable: str | None = None
        self.continued: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.reached: dict[str, asyncio.Event] = {}

    async def _pass(self, name: str) -> None:
        self.reached.setdefault(name, asyncio.Event()).set()
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()

    async def get_application(self, app: str) -> dict[str, Any]:
        await self._pass("get_application")
        return {"name": app, "channel_ids": list(self.app_channels)}

    async def list_channels(self) -> list[Channel]:
        snapshot = list(self.channels)  # taken now, seen by the app when the gate opens
        await self._pass("list_channels")
        return snapshot

    async def list_bridges(self) -> list[Any]:
        return []

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        await self._pass("get_variable")
        return self.profile_variable

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        self.variables.setdefault(channel_id, {})[name] = value

    async def continue_in_dialplan(self, channel_id: str, **kw: Any) -> None:
        self.continued.append(channel_id)

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        pass

    async def destroy_bridge(self, bridge_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeSession:
    """Stands in for CallSession: the app only starts, routes to and hands back sessions."""

    made: ClassVar[list[FakeSession]] = []

    def __init__(self, *, call_id: str, caller: Channel, profile_name: str, deps: Any, **_: Any) -> None:
        self.call_id = call_id
        self.caller = caller
        self.profile_name = profile_name
        self.deps = deps
        self.bridge_id = f"{deps.resource_prefix}b-{call_id[:12]}"
        self.media_channel_id = f"{deps.resource_prefix}m-{call_id[:12]}"
        self.started = False
        self.gone = False
        self.handed_back: str | None = None
        FakeSession.made.append(self)

    def start(self) -> asyncio.Task[None]:
        self.started = True
        return asyncio.create_task(asyncio.sleep(0))

    def channel_gone(self) -> None:
        self.gone = True

    async def hand_back(self, reason: str) -> None:
        self.handed_back = reason
        self.deps.on_done(self)

    def summary(self) -> dict[str, Any]:
        return {"call_id": self.call_id}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentApp]:
    for key in list(os.environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENT_STORE__ENABLED", "false")
    monkeypatch.setenv("AGENT_CALLS__DRAIN_TIMEOUT", "300")
    monkeypatch.setattr(app_module, "RECONCILE_GRACE", 0.0)
    monkeypatch.setattr(app_module, "CallSession", FakeSession)
    FakeSession.made = []

    async def no_wait(seconds: float) -> None:
        pass

    agent = AgentApp(load_settings(), sleep=no_wait)
    agent.ari = FakeAri()  # type: ignore[assignment]
    agent._providers = {name: object() for name in agent.profiles}  # type: ignore[misc]
    yield agent


def _fake(app: AgentApp) -> FakeAri:
    assert isinstance(app.ari, FakeAri)
    return app.ari


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_reconcile_leaves_alone_a_call_admitted_after_its_channel_snapshot(app: AgentApp) -> None:
    ari = _fake(app)
    ari.gates["list_channels"] = asyncio.Event()
    reconcile = asyncio.create_task(app._reconcile())
    await ari.reached.setdefault("list_channels", asyncio.Event()).wait()
    # The snapshot is taken (no calls yet); a caller arrives and is admitted before it is read.
    caller = _channel("c-new")
    ari.channels.append(caller)
    await app._on_event(StasisStart("ai-agent", caller, ("frontdesk",)))
    await _settle()
    assert [s.started for s in FakeSession.made] == [True]
    ari.gates["list_channels"].set()
    await reconcile
    assert FakeSession.made[0].gone is False
    assert ari.continued == []


async def test_drain_hands_back_a_caller_that_was_still_in_admission(app: AgentApp) -> None:
    ari = _fake(app)
    ari.profile_variable = "frontdesk"
    ari.gates["get_variable"] = asyncio.Event()
    await app._on_event(StasisStart("ai-agent", _channel("c-late"), ()))
    await ari.reached.setdefault("get_variable", asyncio.Event()).wait()
    drain = asyncio.create_task(app.drain())
    await _settle()
    assert not drain.done()  # the caller in admission is a call to wait for
    ari.gates["get_variable"].set()
    await asyncio.wait_for(drain, 10)
    assert ari.variables == {"c-late": {"AI_AGENT_STATUS": "DRAINING"}}
    assert ari.continued == ["c-late"]
    assert not any(s.started for s in FakeSession.made)
    assert app.calls.idle
    # A caller turned away by a drain is no set-up failure (the alert reads "failed").
    setups = "ari_agent_call_setups_total"
    assert app.metrics.registry.get_sample_value(setups, {"outcome": "busy"}) == 1
    assert app.metrics.registry.get_sample_value(setups, {"outcome": "failed"}) is None


async def test_two_reconciles_in_one_grace_hand_a_parked_caller_back_once(app: AgentApp) -> None:
    ari = _fake(app)
    parked = _channel("c-parked")
    ari.channels.append(parked)
    ari.app_channels.append(parked.id)
    ari.gates["get_application"] = asyncio.Event()
    first = asyncio.create_task(app._reconcile())
    second = asyncio.create_task(app._reconcile())
    await _settle()
    ari.gates["get_application"].set()
    await asyncio.gather(first, second)
    assert ari.continued == ["c-parked"]
    assert app.metrics.calls.labels("failed")._value.get() == 1
    assert app.metrics.registry.get_sample_value("ari_agent_call_setups_total", {"outcome": "failed"}) == 1


async def test_application_replaced_stops_the_agent_and_says_why(
    app: AgentApp, caplog: pytest.LogCaptureFixture
) -> None:
    await app._on_event(ApplicationReplaced("ai-agent"))
    assert app.fatal.is_set()
    assert app.calls.draining  # no new calls while it stops
    assert any("ApplicationReplaced" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def test_a_background_task_that_fails_is_logged_with_its_traceback_and_counted(
    app: AgentApp, caplog: pytest.LogCaptureFixture
) -> None:
    ari = _fake(app)

    async def broken(app_name: str) -> dict[str, Any]:
        raise RuntimeError("reconcile bug")

    ari.get_application = broken  # type: ignore[method-assign]
    await app._on_connect()  # spawns the reconcile
    await _settle()
    failures = [r for r in caplog.records if r.exc_info and "reconcile bug" in str(r.exc_info[1])]
    assert failures and failures[0].levelname == "ERROR"
    assert app.metrics.registry.get_sample_value("ari_agent_errors_total", {"where": "reconcile"}) == 1
