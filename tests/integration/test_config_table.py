"""Every config `check` passes in tests/unit/config_table.py starts an agent that answers a real call."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.lab import AgentFactory, Lab
from tests.unit.config_table import GOOD, Case

GREETING = "Thank you for calling Riverside Dental. How can I help you?"


@pytest.mark.parametrize("case", GOOD, ids=[c.id for c in GOOD])
def test_good_config_answers_a_call_with_the_greeting(
    case: Case, lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    toml, env = case.render(port="1", ari_url=lab.ari_url)
    args: tuple[str, ...] = ("run",)
    if toml:
        config = tmp_path / "agent.toml"
        config.write_text(toml, encoding="utf-8")
        args = ("--config", str(config), "run")
    agent = agent_factory.start(env, args=args)
    handle = lab.place_call([], via="local", tail=0.5)
    lab.wait_call_ended(handle, timeout=60)
    record = agent.record_for(handle.number)
    said = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert said[:1] == [GREETING], record
    assert record["end_reason"] != "failed", record
    heard = {e.fields.get("n") for e in lab.dialplan_events(handle.number) if e.kind == "caller-heard-start"}
    assert "0" in heard  # the caller really heard the greeting
