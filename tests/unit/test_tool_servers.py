"""Tool servers (MCP): real servers written with the SDK, over stdio and streamable HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ari_agent.conversation.records import ToolUse
from ari_agent.conversation.tools import ToolRunner
from ari_agent.profiles import ProfileConfig
from ari_agent.profiles.catalogue import plan_profile
from ari_agent.toolservers import ToolHub, ToolServerError
from providers.base import ToolCall

SERVER = Path(__file__).resolve().parents[1] / "toolservers" / "clinic_server.py"


def stdio_profile(starts: Path, tools: list[str], **extra: object) -> ProfileConfig:
    return ProfileConfig.model_validate(
        {
            "llm": ["openai"],
            "tool_servers": {
                "clinic": {"command": [sys.executable, str(SERVER), "--starts", str(starts)], "tools": tools}
            },
            **extra,
        }
    )


async def no_variables(name: str, value: str) -> None:
    raise AssertionError("tool servers set no channel variables")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port), "--token", "tok-SECRET"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the MCP HTTP server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_stdio_offers_only_allowed_tools_and_runs_them(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    allowed = ["next_free_slot", "hang", "broken", "not_on_the_server"]
    profile = stdio_profile(starts, allowed, tool_timeout_ms=300)
    hub = ToolHub()
    try:
        remote = await hub.tools_for("vet", profile)
        assert remote is not None
        offered = [s.name for s in remote.specs]
        # The allow-list, in its order; a tool the server lacks is left out; the rest never offered.
        assert offered == ["clinic__next_free_slot", "clinic__hang", "clinic__broken"]
        assert remote.specs[0].parameters["properties"]["day"]["type"] == "string"
        runner = ToolRunner(profile, no_variables, {}, {}, remote=remote)
        assert [s.name for s in runner.specs()][-3:] == offered

        ok = await runner.run(ToolCall("clinic__next_free_slot", {"day": "Monday"}))
        assert ok.output == "The next free appointment on Monday is at half past ten."
        assert ok.remote == ToolUse("clinic__next_free_slot", "ok", '{"day": "Monday"}', ok.output)
        assert (ok.fallback, ok.answer_from) == (None, True)

        hung = await runner.run(ToolCall("clinic__hang", {"question": "anything"}))
        assert hung.remote == ToolUse("clinic__hang", "timeout", '{"question": "anything"}')
        assert hung.fallback == profile.tool_fallback and not hung.answer_from

        failed = await runner.run(ToolCall("clinic__broken", {"question": "x"}))
        assert failed.remote is not None and failed.remote.status == "error"
        assert failed.fallback == profile.tool_fallback

        # The hung call did not take the server down: the next question is answered.
        again = await runner.run(ToolCall("clinic__next_free_slot", {"day": "Friday"}))
        assert again.output.endswith("on Friday is at half past ten.")

        refused = await runner.run(ToolCall("clinic__delete_all_records", {}))
        assert refused.output == "error: tool clinic__delete_all_records is not available"
        assert refused.remote is None

        # A second profile naming the same server shares the process: started once.
        other = await hub.tools_for("other", stdio_profile(starts, ["next_free_slot"]))
        assert other is not None and [s.name for s in other.specs] == ["clinic__next_free_slot"]
        assert len(starts.read_text().split()) == 1
    finally:
        await hub.close()


async def test_http_sends_headers_from_secrets(http_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def profile(token_ref: str) -> ProfileConfig:
        return ProfileConfig.model_validate(
            {
                "llm": ["openai"],
                "tool_servers": {
                    "clinic": {
                        "url": http_server,
                        "headers": {"Authorization": f"Bearer {token_ref}"},
                        "tools": ["next_free_slot"],
                    }
                },
            }
        )

    monkeypatch.setenv("CLINIC_TOKEN", "tok-SECRET")
    hub = ToolHub()
    try:
        remote = await hub.tools_for("vet", profile("${CLINIC_TOKEN}"))
        assert remote is not None
        assert await remote.call("clinic__next_free_slot", {"day": "Tuesday"}) == (
            "The next free appointment on Tuesday is at half past ten."
        )
    finally:
        await hub.close()
    wrong = ToolHub()
    try:
        with pytest.raises(ToolServerError):
            await wrong.tools_for("vet", profile("not-the-token"))
    finally:
        await wrong.close()
    monkeypatch.delenv("CLINIC_TOKEN")
    monkeypatch.setenv("STATE_DIRECTORY", "/nonexistent")  # no /run/secrets file either, by name
    plan = plan_profile("vet", profile("${CLINIC_TOKEN_NOT_SET}"))
    assert [p.severity for p in plan.problems if "headers" in p.field] == ["unready"]
    assert "CLINIC_TOKEN_NOT_SET is not set" in str(plan.problems)


def test_a_server_is_a_command_or_a_url() -> None:
    with pytest.raises(ValueError, match="either command"):
        ProfileConfig.model_validate({"tool_servers": {"x": {"tools": ["a"]}}})
    with pytest.raises(ValueError, match="headers are sent to an HTTP server only"):
        ProfileConfig.model_validate(
            {"tool_servers": {"x": {"command": ["a"], "headers": {"A": "b"}, "tools": ["a"]}}}
        )
    with pytest.raises(ValueError, match="tool server name"):
        ProfileConfig.model_validate({"tool_servers": {"a__b": {"command": ["a"], "tools": ["a"]}}})
    with pytest.raises(ValueError):
        ProfileConfig.model_validate({"tool_servers": {"x": {"command": ["a"], "tools": []}}})


def test_check_starts_the_servers_and_lists_the_tools_offered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ari_agent.cli import main

    config = tmp_path / "tools.toml"
    config.write_text(
        f"""
[profiles.tools]
llm = ["scripted"]
[[profiles.tools.intents]]
name = "hours"
examples = ["what time do you open"]
reply = "Nine to five."
[profiles.tools.tool_servers.clinic]
command = ["{sys.executable}", "{SERVER}", "--starts", "{tmp_path / "starts"}"]
tools = ["next_free_slot", "not_there"]
""",
        encoding="utf-8",
    )
    assert main(["--config", str(config), "check"]) == 0
    err = capsys.readouterr().err
    assert "profile tools: tools offered from its servers: clinic__next_free_slot" in err
    assert "clinic__not_there is allowed but its server has no such tool" in err
    assert len((tmp_path / "starts").read_text().split()) == 1
