"""Call traces over OTLP/HTTP, through the real Asterisk: a loopback collector decodes them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.integration.lab import AgentFactory, Lab, metric

STAGES = {"end_of_turn", "stt", "llm_first_token", "tts_first_audio"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Collector:
    """An OTLP/HTTP traces endpoint (protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.requests = 0

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests += 1
        for resource_spans in message.resource_spans:
            self.resources.append({a.key: _value(a.value) for a in resource_spans.resource.attributes})
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield received, port
    finally:
        await runner.cleanup()


def attrs(span: Span) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


async def test_one_trace_per_call_with_a_span_per_turn_and_stage(
    lab: Lab, agent_factory: AgentFactory, collector: tuple[Collector, int]
) -> None:
    received, port = collector
    agent = agent_factory.start(
        {
            # A base URL: the agent appends /v1/traces.
            "AGENT_OTEL__ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    handle = lab.place_call(["what time do you open", "goodbye"], via="local")
    await lab.wait_call_ended_async(handle, timeout=90)
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "hangup_by_agent"
    for _ in range(100):
        if any(s.name == "call" for s in received.spans):
            break
        await asyncio.sleep(0.1)

    calls = [s for s in received.spans if s.name == "call"]
    assert len(calls) == 1, [s.name for s in received.spans]
    root = calls[0]
    assert attrs(root)["call.id"] == record["call_id"]
    assert attrs(root)["call.profile"] == "frontdesk"
    assert attrs(root)["call.end_reason"] == "hangup_by_agent"
    trace = [s for s in received.spans if s.trace_id == root.trace_id]
    assert len(trace) == len(received.spans)  # one call, one trace
    assert root.end_time_unix_nano > root.start_time_unix_nano

    turns = [s for s in trace if s.name == "turn"]
    agent_turns = [t for t in record["turns"] if t["role"] == "agent"]
    assert len(turns) == len(agent_turns) >= 3  # greeting, the hours, goodbye
    assert all(t.parent_span_id == root.span_id for t in turns)
    by_index = {attrs(t)["turn.index"]: t for t in turns}
    assert sorted(by_index) == list(range(1, len(agent_turns) + 1))
    # The reply to the question measured every stage: a child span each, inside its turn.
    for index, turn in enumerate(agent_turns, 1):
        span = by_index[index]
        children = [s for s in trace if s.parent_span_id == span.span_id]
        timings = turn.get("timings", {})
        if "turn_latency_ms" in timings and "stt_ms" in timings:
            assert {c.name for c in children} == STAGES, (index, timings)
            for child in children:
                assert span.start_time_unix_nano <= child.start_time_unix_nano
                assert child.start_time_unix_nano <= child.end_time_unix_nano
            eot = next(c for c in children if c.name == "end_of_turn")
            assert eot.start_time_unix_nano == span.start_time_unix_nano
            assert attrs(span)["turn.turn_latency_ms"] == timings["turn_latency_ms"]
    replies = [t for t in agent_turns if "stt_ms" in t.get("timings", {})]
    assert replies, agent_turns
    assert {s.name for s in trace} == {"call", "turn"} | STAGES

    # Nothing personal leaves the host: no caller number or name, no turn text.
    values = [str(v) for s in trace for v in attrs(s).values()]
    values += [str(v) for r in received.resources for v in r.values()]
    private = [handle.number] + [t["text"] for t in record["turns"] if t["text"]]
    for text in private:
        assert not any(text in v for v in values), text
    assert {r.get("service.name") for r in received.resources} == {"ari-agent"}
    # The set-up went through: counted, and nothing failed.
    assert metric(agent, "ari_agent_call_setups_total", outcome="ok") == 1
    assert metric(agent, "ari_agent_call_setups_total", outcome="failed") == 0
