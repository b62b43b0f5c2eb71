"""Call traces from call records: the spans, their layout and what they never carry."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ari_agent.config import OtelSettings
from ari_agent.conversation.records import CallRecord, Turn, TurnTimings
from ari_agent.observability.tracing import CallTracer, make_tracer, stage_windows, traces_endpoint

MS = 1_000_000


def _record() -> CallRecord:
    record = CallRecord(
        call_id="c0ffee",
        channel_id="1700000000.1",
        caller={"number": "+15551234567", "name": "Ada Lovelace"},
        profile="frontdesk",
        started_at="2026-12-01T01:00:00.000Z",
    )
    record.turns = [
        Turn("agent", "Hello, how can I help?", "2026-12-01T01:00:00.100Z"),
        Turn("user", "what time do you open", "2026-12-01T01:00:03.000Z", ended_by="silence"),
        Turn(
            "agent",
            "We open at nine.",
            "2026-12-01T01:00:04.000Z",
            timings=TurnTimings(
                stt_ms=80,
                llm_first_token_ms=200,
                llm_total_ms=300,
                tts_first_audio_ms=50,
                end_to_audio_ms=400,
                llm_start_to_audio_ms=300,
                turn_latency_ms=1000,
            ),
        ),
    ]
    record.ended_at = "2026-12-01T01:00:09.000Z"
    record.end_reason = "hangup_by_agent"
    record.media = {"mos": 4.4, "loss": 0.0, "jitter_ms": 1.2}
    return record


def test_stages_laid_out_around_the_reply_start() -> None:
    t = _record().turns[2].timings
    anchor = 10_000 * MS
    (start, end), stages = stage_windows(anchor, t)
    # Turn over 100 ms before the LLM was asked (end_to_audio - llm_start_to_audio);
    # the caller stopped 600 ms before that (turn_latency - end_to_audio).
    assert stages["end_of_turn"] == (anchor - 700 * MS, anchor - 100 * MS)
    assert stages["stt"] == (anchor - 80 * MS, anchor)
    assert stages["llm_first_token"] == (anchor, anchor + 200 * MS)
    assert stages["tts_first_audio"] == (anchor + 250 * MS, anchor + 300 * MS)
    assert start == anchor - 700 * MS
    assert end == anchor + 300 * MS  # speech end + turn latency


def test_a_turn_without_timings_has_no_stages() -> None:
    (start, end), stages = stage_windows(5 * MS, TurnTimings())
    assert stages == {} and start == end == 5 * MS


def test_one_trace_a_span_per_turn_and_stage_nothing_private() -> None:
    exporter = InMemorySpanExporter()
    tracer = CallTracer("http://unused", instance="agent-1", exporter=exporter)
    record = _record()
    tracer.export_call(record)
    tracer._provider.force_flush()
    spans = exporter.get_finished_spans()
    names = sorted(s.name for s in spans)
    assert names == sorted(
        ["call", "turn", "turn", "end_of_turn", "stt", "llm_first_token", "tts_first_audio"]
    )
    assert len({s.context.trace_id for s in spans}) == 1
    root = next(s for s in spans if s.name == "call")
    assert root.attributes is not None and root.attributes["call.id"] == "c0ffee"
    assert root.attributes["call.media.mos"] == 4.4
    assert root.end_time is not None and root.start_time is not None
    assert root.end_time - root.start_time == 9000 * MS
    turns = [s for s in spans if s.name == "turn"]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in turns)
    reply = next(s for s in turns if s.attributes and s.attributes["turn.index"] == 2)
    stages = [s for s in spans if s.parent is not None and s.parent.span_id == reply.context.span_id]
    assert len(stages) == 4
    values = [str(v) for s in spans for v in (s.attributes or {}).values()]
    values += [str(v) for v in spans[0].resource.attributes.values()]
    for private in ("+15551234567", "Ada", "nine", "what time", "Hello"):
        assert not any(private in v for v in values), private


def test_endpoint_from_settings_or_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_endpoint(OtelSettings()) is None
    assert make_tracer(OtelSettings(), "a") is None
    assert traces_endpoint(OtelSettings(endpoint="http://c:4318/")) == "http://c:4318/v1/traces"
    assert traces_endpoint(OtelSettings(endpoint="http://c:4318/v1/traces")) == "http://c:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")
    assert traces_endpoint(OtelSettings()) == "http://base:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://full:4318/traces")
    assert traces_endpoint(OtelSettings()) == "http://full:4318/traces"
