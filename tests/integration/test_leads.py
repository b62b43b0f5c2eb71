"""Lead capture to completion through a real Asterisk, with the offline scripted dialog."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from ari_agent.leads.models import Lead
from ari_agent.leads.webhook import KEY_HEADER, SIGNATURE_HEADER, verify
from ari_agent.store import CallStore
from tests.integration.lab import AgentFactory, Lab

SECRET = "lab-webhook-secret"


class Receiver:
    """A webhook receiver on its own loop and thread: it processes the first attempt, then drops its reply."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((dict(request.headers), await request.read()))
        if len(self.seen) == 1 and request.transport is not None:
            request.transport.close()  # the lead is in; the agent never hears so
        return web.Response()

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return runner

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def wait(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


LEAD = """
[profiles.lead]
greeting = "Hello, this is the callback line. Please key in your number, then press hash."
tools = ["hangup", "capture", "set_variable"]
filler_after_ms = 0

[[profiles.lead.capture_fields]]
name = "callback_number"
type = "digits"
min_digits = 7
max_digits = 10
question = "Please key in your number, then press hash."

[[profiles.lead.capture_fields]]
name = "day"
type = "one_of"
options = ["monday", "tuesday", "friday"]
question = "Which day suits you, monday, tuesday or friday?"

[[profiles.lead.capture_fields]]
name = "new_patient"
type = "yes_no"
label = "new patient"
question = "Are you a new patient?"

[profiles.lead.lead]
complete_reply = "Thank you, we will call you back. Goodbye."
"""


def test_a_lead_is_completed_over_several_turns_with_keys_and_a_correction(
    lab: Lab, agent_factory: AgentFactory, receiver: Receiver
) -> None:
    path = Path(agent_factory.workdir) / "lead.toml"
    path.write_text(LEAD, encoding="utf-8")
    env = {
        "AGENT_CONFIG": str(path),
        "AGENT_LEADS__WEBHOOK_URL": receiver.url,
        "AGENT_LEADS__WEBHOOK_SECRET": SECRET,
        "AGENT_LEADS__BACKOFF_S": "0.2",  # the test's own: seconds, not the default's minutes
    }
    agent = agent_factory.start(env)
    # Spoken: the yes/no answers. The day is keyed (3: friday; after "no", 2: the second
    # field, day, and 1: its first option, monday): over this path the offline recogniser
    # heard "friday please" in one run and rejected it in the next, and "on monday", "no"
    # and "day" were rejected, while "yes that is right" and "no that is wrong" were heard.
    said = ["dtmf:5551234#", "dtmf:3", "yes that is right", "no that is wrong", "dtmf:2", "dtmf:1"]
    said.append("yes that is right")
    handle = lab.place_call(said, context="lab-lead")
    event = lab.wait_dialplan_event(handle.number, "hangup", timeout=150)
    record = agent.record_for(handle.number)
    turns = [(t["role"], t["text"]) for t in record["turns"]]
    assert event.fields["AI_AGENT_STATUS"] == "COMPLETED", "\n".join(map(str, turns)) + str(
        record.get("end_reason")
    )
    assert event.fields["AI_AGENT_RESULT"] == "lead"
    assert event.fields["AI_FIELD_CALLBACK_NUMBER"] == "5551234"
    assert event.fields["AI_FIELD_DAY"] == "monday"  # the correction, not the first answer
    assert event.fields["AI_FIELD_NEW_PATIENT"] == "yes"
    assert record["fields"] == {"callback_number": "5551234", "day": "monday", "new_patient": "yes"}
    agent_said = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    read_backs = [t for t in agent_said if t.startswith("I have")]
    assert read_backs == [
        "I have callback number 5 5 5 1 2 3 4, day friday and new patient yes. Is that right?",
        "I have callback number 5 5 5 1 2 3 4, day monday and new patient yes. Is that right?",
    ]
    assert agent_said[-1] == "Thank you, we will call you back. Goodbye."
    assert record["end_reason"] == "hangup_by_agent"
    # The hand-off: two attempts (the first's reply lost), one key, both signed.
    receiver.wait(2)
    assert len(receiver.seen) == 2
    keys = {headers[KEY_HEADER] for headers, _ in receiver.seen}
    assert len(keys) == 1
    for headers, body in receiver.seen:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=time.time())
        lead = json.loads(body)
        assert lead["id"] in keys and lead["call_id"] == record["call_id"]
        assert lead["fields"] == {"callback_number": "5551234", "day": "monday", "new_patient": "yes"}
    # The store has it, delivered on the second attempt.
    leads = _stored_leads(
        agent.records_dir / "calls.db", until=lambda ls: bool(ls) and ls[0].status != "pending"
    )
    assert [(x.lead_id, x.status, x.attempts, x.fields["day"]) for x in leads] == [
        (keys.pop(), "delivered", 2, "monday")
    ]
    assert SECRET not in agent.log_path.read_text(errors="replace")


def _stored_leads(path: Path, until: Callable[[list[Lead]], bool], timeout: float = 10.0) -> list[Lead]:
    async def read() -> list[Lead]:
        async with CallStore(path, retention_days=None) as store:
            return await store.list_leads()

    deadline = time.monotonic() + timeout
    while not until(leads := asyncio.run(read())) and time.monotonic() < deadline:
        time.sleep(0.2)
    return leads
