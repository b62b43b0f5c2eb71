"""``ari-agent test``: call-flow tests in TOML, run by the CLI through the lab's Asterisk and the real agent.

The shipped examples pass; a wrong expectation and an impossible ``max_reply_ms``
fail with the step, what was expected and what was heard, exit 1, and JUnit XML
that parses. Both runs use ``--parallel`` so the whole module stays short.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import junitparser

from tests.integration.lab import REPO, AgentFactory, AgentProcess, Lab

HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ari_agent", "test", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=timeout,
    )


def agent_env(agent_factory: AgentFactory, agent: AgentProcess) -> dict[str, str]:
    return agent_factory.base_env(agent.records_dir)


def test_the_shipped_examples_pass(
    lab: Lab, agent: AgentProcess, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    junit_path = tmp_path / "report.xml"
    started = time.monotonic()
    result = run_cli(
        "--examples", "--parallel", "3", "--junit", str(junit_path), env=agent_env(agent_factory, agent)
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr + agent.log_tail()
    assert "3 scenario(s): 3 passed, 0 failed" in out, out
    # Each step printed with what the agent said; the transfer seen where the call went.
    assert f"agent said:  {HOURS!r}" in out, out
    assert "went to 200@ai-agent-demo" in out, out
    assert "AI_AGENT_STATUS=TRANSFERRED" in out and "AI_AGENT_STATUS=COMPLETED" in out, out
    xml = junitparser.JUnitXml.fromfile(str(junit_path))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == 3 and all(case.is_passed for case in cases)
    assert {case.name for case in cases} == {
        "opening hours, then goodbye",
        "a pause, then the address",
        "press 0 for reception",
    }
    print(f"examples: {time.monotonic() - started:.1f} s")


WRONG = """
extension = "100@ai-agent-demo"

[[scenario]]
name = "a wrong expectation"
[[scenario.step]]
say = "what time do you open"
expect_reply = "closed on sundays"

[[scenario]]
name = "an impossible reply time"
[[scenario.step]]
say = "what time do you open"
expect_reply = "/nine in the morning/"
max_reply_ms = 1
"""


def test_a_wrong_expectation_fails_with_the_step_expected_and_heard(
    lab: Lab, agent: AgentProcess, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    flows = tmp_path / "wrong.toml"
    flows.write_text(WRONG)
    junit_path = tmp_path / "report.xml"
    result = run_cli(
        str(flows), "--parallel", "2", "--junit", str(junit_path), env=agent_env(agent_factory, agent)
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr + agent.log_tail()
    assert "2 scenario(s): 0 passed, 2 failed" in out, out
    assert f"expect_reply: expected 'closed on sundays', got {HOURS!r}" in out, out
    assert "max_reply_ms: expected <= 1 ms, got " in out, out
    # The second scenario's reply matched: only its reply time failed.
    assert "expect_reply: expected '/nine in the morning/'" not in out, out

    root = ET.parse(junit_path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "2"
    xml = junitparser.JUnitXml.fromfile(str(junit_path))
    by_name = {case.name: case for suite in xml for case in suite}
    assert set(by_name) == {"a wrong expectation", "an impossible reply time"}
    wrong = by_name["a wrong expectation"].result[0]
    assert isinstance(wrong, junitparser.Failure)
    assert "step 1 (say 'what time do you open')" in wrong.message
    assert "expected 'closed on sundays'" in wrong.message and "nine in the morning" in wrong.message
    slow = by_name["an impossible reply time"].result[0]
    assert isinstance(slow, junitparser.Failure) and "max_reply_ms" in slow.message
