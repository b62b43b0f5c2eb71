"""An LLM profile answers from a document added with ``ari-agent knowledge add``, through a real Asterisk.

The OpenAI wire fake asks for the search tool, then repeats back the sentence of
the passage it was sent: the caller hears it only if the passage reached the model.
A second question the document does not answer gets "nothing found" back, and
the agent says it does not know. The profile searches by words and meaning
(``embeddings = "openai"``): the passages are embedded at ``knowledge add`` and
each question during the call, both through the fake's ``/v1/embeddings``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ari_agent.knowledge.passages import split_document, vector_texts
from tests.fakes.openai_server import ChatReply, FakeOpenAI
from tests.fakes.threaded import serve_in_thread
from tests.integration.lab import AgentFactory, Lab, voiced_segments
from tests.knowledge.questions import DOCUMENT

KEY = "sk-test-0123456789abcdefSECRETVALUE"
REPO = Path(__file__).resolve().parents[2]
NOT_FOUND = "I do not know."
DONT_KNOW = "I am sorry, I do not know that."


def tool_result(body: dict[str, Any]) -> str:
    """The search result the agent sent with this request ("" when there is none)."""
    notes = [m["content"] for m in body["messages"] if "search_knowledge:" in (m.get("content") or "")]
    return notes[-1] if notes else ""


def say_if_nothing_found(body: dict[str, Any]) -> str:
    """What a model told "nothing found" says; anything else would be a guess."""
    return DONT_KNOW if "nothing in the knowledge base answers this" in tool_result(body) else "A guess."


def repeat_key_sentence(body: dict[str, Any]) -> str:
    """The passage's sentence on Saturdays, as a model answering from it would say it."""
    for line in tool_result(body).splitlines():
        for sentence in re.split(r"(?<=\.)\s+", line):
            if "Saturdays" in sentence:
                return sentence
    return NOT_FOUND


def test_llm_answers_from_a_document_and_the_record_names_the_passage(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    fake = FakeOpenAI(api_key=KEY)
    fake.chat_replies.extend(
        [
            ChatReply(text="", tool_calls=[("search_knowledge", {"query": "opening hours on Saturday"})]),
            ChatReply(respond=repeat_key_sentence),
            # A question the document does not answer: nothing comes back, the agent says so.
            ChatReply(text="", tool_calls=[("search_knowledge", {"query": "discounts for pensioners"})]),
            ChatReply(respond=say_if_nothing_found),
        ]
    )
    records = agent_factory.workdir / "records-knowledge"
    records.mkdir()
    with serve_in_thread(fake.app) as url:
        config = agent_factory.workdir / "knowledge.toml"
        config.write_text(
            f"""
[profiles.vet]
greeting = "Hello, how can I help?"
stt = ["local"]
llm = ["openai"]
tts = ["local"]
embeddings = "openai"
filler_after_ms = 0
[[profiles.vet.intents]]
name = "hours"
examples = ["what time do you open"]
reply = "unused"
[[profiles.vet.intents]]
name = "other"
examples = ["can i speak to someone"]
reply = "unused"
[profiles.vet.options.openai]
base_url = "{url}/v1"
""",
            encoding="utf-8",
        )
        env = {
            "AGENT_CONFIG": str(config),
            "OPENAI_API_KEY": KEY,
            # The shipped similarity floor is measured for all-MiniLM-L6-v2; the fake's bag-of-words
            # vectors have their own scale (the README says to measure one's own embedder).
            "AGENT_KNOWLEDGE__MIN_SIMILARITY": "0.1",
        }
        # The operator's command, as documented, into the file the agent will read.
        added = subprocess.run(
            [sys.executable, "-m", "ari_agent.cli", "knowledge", "add", "vet", str(DOCUMENT)],
            env={**os.environ, **agent_factory.base_env(records), **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        assert f"added {DOCUMENT.name} to vet" in added.stdout
        assert "embedded 28 passage(s) with openai:text-embedding-3-small" in added.stdout
        at_add = [r for r in fake.requests if r.path.endswith("/embeddings")]
        # Each passage whole, by heading and by sentence (passages.vector_texts), in requests of
        # at most the embedder's batch size.
        passages = split_document(DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8"))
        texts = [t for p in passages for t in vector_texts(p.heading, p.text)]
        assert [t for r in at_add for t in r.body["input"]] == texts
        assert len(at_add) > 1 and all(len(r.body["input"]) <= 64 for r in at_add)
        agent = agent_factory.start(env, records_dir=records)
        handle = lab.place_call(
            ["what time do you open", "can i speak to someone"],
            extension="vet",
            context="lab-profile",
            tail=2,
        )
        lab.wait_call_ended(handle, timeout=90)
    chats = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 4, agent.log_tail()
    # Each question was embedded during the call: the search was hybrid.
    asked = [r.body["input"] for r in fake.requests if r.path.endswith("/embeddings")][len(at_add) :]
    assert asked == [["opening hours on Saturday"], ["discounts for pensioners"]], agent.log_tail()
    # Offered the tool, and the second request carried the passage's text back.
    assert "search_knowledge" in [t["function"]["name"] for t in chats[0].body.get("tools", [])]
    assert "on Saturdays from 9 until 1" in tool_result(chats[1].body)
    record = agent.record_for(handle.number)
    replies = [t for t in record["turns"] if t["role"] == "agent"]
    key = (
        "The clinic is open Monday to Friday from 8 in the morning until 7 in the evening, "
        "and on Saturdays from 9 until 1."
    )
    assert [t["text"] for t in replies] == ["Hello, how can I help?", key, DONT_KNOW]
    assert replies[1]["sources"][0] == {"source": DOCUMENT.name, "heading": "Opening hours"}
    assert "sources" not in replies[0] and "sources" not in replies[2]
    # The caller heard the greeting, then a reply as long as the key sentence (seconds of speech),
    # not a short "I do not know".
    heard = voiced_segments(handle.recording_path)
    assert len(heard) >= 2 and max(b - a for a, b in heard[1:]) > 3.0, heard
    # The store names the passage too (written when the call ends, beside the record).
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(records / "calls.db") as db:
            rows = db.execute(
                "SELECT sources FROM turns WHERE call_id = ? AND sources IS NOT NULL", (record["call_id"],)
            ).fetchall()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [json.loads(r[0])[0] for r in rows] == [{"source": DOCUMENT.name, "heading": "Opening hours"}]
