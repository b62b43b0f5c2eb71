"""The fake OpenAI server in a thread of its own, as integration tests (synchronous) run it."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai_server import ChatReply, FakeOpenAI, Fault
from tests.fakes.threaded import serve_in_thread


def test_sync_sdk_against_the_threaded_fake() -> None:
    fake = FakeOpenAI(api_key="sk-thread")
    fake.chat_replies.extend([ChatReply(fault=Fault(status=429)), ChatReply(text="From a thread.")])
    with serve_in_thread(fake.app) as url:
        client = openai.OpenAI(api_key="sk-thread", base_url=url + "/v1", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client.close()
    assert reply.choices[0].message.content == "From a thread."
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 2


def test_the_thread_stops_with_the_block() -> None:
    fake = FakeOpenAI()
    with serve_in_thread(fake.app) as url:
        pass
    client = openai.OpenAI(api_key="k", base_url=url + "/v1", max_retries=0, timeout=5)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    client.close()


def test_a_failing_factory_is_reported() -> None:
    def broken() -> object:
        raise ValueError("no app")

    with pytest.raises(RuntimeError, match="no app"), serve_in_thread(broken):  # type: ignore[arg-type]
        pass
