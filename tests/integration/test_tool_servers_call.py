"""MCP tools during a real call through Asterisk: one that hangs (stdio), then two that answer (stdio, HTTP).

The OpenAI wire fake asks for the tools; the servers are real MCP servers written
with the SDK (tests/toolservers/clinic_server.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.fakes.openai_server import ChatReply, FakeOpenAI
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import AgentFactory, Lab

KEY = "sk-test-0123456789abcdefSECRETVALUE"
SERVER = Path(__file__).resolve().parents[1] / "toolservers" / "clinic_server.py"
FALLBACK = "Sorry, I could not check that just now."
FILLER = "One moment."
NOT_FOUND = "I do not know."


def slot_sentences(body: dict[str, Any]) -> str:
    """Repeat both servers' results as the model would, if they reached the model."""
    said = []
    for tool in ("clinic_http__next_free_slot:", "clinic__next_free_slot:"):
        for message in body["messages"]:
            content = message.get("content") or ""
            if tool in content:
                # Several results share one message: "<tool>: <result>; <tool>: <result>".
                said.append(content.split(tool, 1)[1].split("; clinic", 1)[0].strip())
                break
        else:
            said.append(NOT_FOUND)
    return " ".join(said)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_hung_tool_gets_filler_and_fallback_and_the_next_question_an_answer(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    port = free_port()
    http = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port), "--token", "tok-SECRET"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fake = FakeOpenAI(api_key=KEY)
    fake.chat_replies.extend(
        [
            ChatReply(text="", tool_calls=[("clinic__hang", {"question": "opening hours"})]),
            ChatReply(
                text="",
                tool_calls=[
                    ("clinic_http__next_free_slot", {"day": "Monday"}),
                    ("clinic__next_free_slot", {"day": "Tuesday"}),
                ],
            ),
            ChatReply(respond=slot_sentences),
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and http.poll() is None, "MCP HTTP server did not start"
                time.sleep(0.1)
        with serve_in_thread(fake.app) as url:
            config = agent_factory.workdir / "tools.toml"
            config.write_text(
                f"""
[profiles.tools]
greeting = "Hello, how can I help?"
stt = ["local"]
llm = ["openai"]
tts = ["local"]
filler_after_ms = 500
tool_timeout_ms = 1500
[[profiles.tools.intents]]
name = "hours"
examples = ["what time do you open"]
reply = "unused"
[[profiles.tools.intents]]
name = "reception"
examples = ["can i speak to someone"]
reply = "unused"
[profiles.tools.options.openai]
base_url = "{url}/v1"
[profiles.tools.tool_servers.clinic]
command = ["{sys.executable}", "{SERVER}"]
tools = ["hang", "next_free_slot"]
[profiles.tools.tool_servers.clinic_http]
url = "http://127.0.0.1:{port}/mcp"
headers = {{ Authorization = "Bearer ${{CLINIC_TOKEN}}" }}
tools = ["next_free_slot"]
""",
                encoding="utf-8",
            )
            agent = agent_factory.start(
                {"AGENT_CONFIG": str(config), "OPENAI_API_KEY": KEY, "CLINIC_TOKEN": "tok-SECRET"}
            )
            handle = lab.place_call(
                ["what time do you open", "can i speak to someone"],
                extension="tools",
                context="lab-profile",
                tail=2,
            )
            lab.wait_call_ended(handle, timeout=120)
    finally:
        http.terminate()
        http.wait(10)
    chats = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 3, agent.log_tail()
    # Only the allowed tools were offered: never delete_all_records, broken, or the other server's.
    offered = sorted(t["function"]["name"] for t in chats[0].body.get("tools", []))
    assert offered == ["clinic__hang", "clinic__next_free_slot", "clinic_http__next_free_slot", "hangup"]
    record = agent.record_for(handle.number)
    replies = [t for t in record["turns"] if t["role"] == "agent"]
    texts = [t["text"] for t in replies]
    monday = "The next free appointment on Monday is at half past ten."
    tuesday = "The next free appointment on Tuesday is at half past ten."
    # The hung tool: the filler while waiting, then the fallback; the next question: both
    # servers' results, spoken.
    assert texts == ["Hello, how can I help?", FILLER, FALLBACK, f"{monday} {tuesday}"], texts
    # The records directory is the transcript opt-in: the calls' arguments and results are there.
    assert replies[2]["tools"] == [
        {"tool": "clinic__hang", "status": "timeout", "arguments": '{"question": "opening hours"}'}
    ]
    assert replies[3]["tools"] == [
        {
            "tool": "clinic_http__next_free_slot",
            "status": "ok",
            "arguments": '{"day": "Monday"}',
            "result": monday,
        },
        {
            "tool": "clinic__next_free_slot",
            "status": "ok",
            "arguments": '{"day": "Tuesday"}',
            "result": tuesday,
        },
    ]
    log = agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert "tok-SECRET" not in log
