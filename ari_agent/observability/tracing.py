"""OpenTelemetry traces of calls (the ``otel`` extra), sent over OTLP/HTTP when an endpoint is set.

One trace per call, written when the call ends from its record: a ``call`` span from start to
end, a ``turn`` span per reply, and under each turn a span per stage it measured
(``end_of_turn``, ``stt``, ``llm_first_token``, ``tts_first_audio``). The stage durations are the
reply's :class:`TurnTimings`, exact; their positions are laid out around the reply's start (its
turn's ``at``, when the LLM was asked), from the same timings:

    speech end ──end_of_turn──> turn over ──> LLM asked ──llm_first_token──> ...
                                   stt ends at the LLM ask   tts_first_audio ends at first audio

Attributes carry ids, the profile, outcomes and milliseconds, never the caller's number or
name, nor any turn text, tool argument or captured field: traces leave the host.
Spans are queued to a batch processor whose thread does the exporting; the event loop only
builds them (microseconds per span).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ari_agent.conversation.records import CallRecord, Turn, TurnTimings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from ari_agent.config import OtelSettings

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
STAGES = ("end_of_turn", "stt", "llm_first_token", "tts_first_audio")


def traces_endpoint(settings: OtelSettings) -> str | None:
    """The OTLP/HTTP traces URL from the settings or the standard variables; None: no traces."""
    if settings.endpoint:
        return _with_path(settings.endpoint)
    full = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if full:
        return full
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return _with_path(base) if base else None


def _with_path(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(TRACES_PATH) else url + TRACES_PATH


def _ns(at: str) -> int:
    """A record timestamp (ISO 8601, ``Z``) in Unix nanoseconds."""
    return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1_000_000) * 1000


def _ms(value: float) -> int:
    return int(value * 1_000_000)


def stage_windows(anchor_ns: int, t: TurnTimings) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """The turn's (start, end) and each measured stage's, in ns, around ``anchor_ns`` (LLM asked)."""
    stages: dict[str, tuple[int, int]] = {}
    llm_at = anchor_ns
    ended_at = llm_at
    if t.end_to_audio_ms is not None and t.llm_start_to_audio_ms is not None:
        ended_at = llm_at - _ms(max(0.0, t.end_to_audio_ms - t.llm_start_to_audio_ms))
    first_audio = llm_at + _ms(t.llm_start_to_audio_ms) if t.llm_start_to_audio_ms is not None else None
    start = ended_at
    end = first_audio if first_audio is not None else llm_at
    if t.turn_latency_ms is not None and t.end_to_audio_ms is not None:
        speech_end = ended_at - _ms(max(0.0, t.turn_latency_ms - t.end_to_audio_ms))
        stages["end_of_turn"] = (speech_end, ended_at)
        start = speech_end
        end = max(end, speech_end + _ms(t.turn_latency_ms))
    if t.stt_ms is not None:
        stages["stt"] = (llm_at - _ms(t.stt_ms), llm_at)
        start = min(start, llm_at - _ms(t.stt_ms))
    if t.llm_first_token_ms is not None:
        stages["llm_first_token"] = (llm_at, llm_at + _ms(t.llm_first_token_ms))
        end = max(end, llm_at + _ms(t.llm_first_token_ms))
    if t.tts_first_audio_ms is not None and first_audio is not None:
        stages["tts_first_audio"] = (first_audio - _ms(t.tts_first_audio_ms), first_audio)
    return (start, end), stages


class CallTracer:
    """Turns ended calls' records into traces; ``exporter`` None: OTLP/HTTP to ``endpoint``."""

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str = "ari-agent",
        instance: str = "",
        exporter: SpanExporter | None = None,
    ) -> None:
        # Imported here: the otel extra is optional and the agent runs without it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": service_name, "service.instance.id": instance})
        self._provider: TracerProvider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter or OTLPSpanExporter(endpoint=endpoint, timeout=10))
        )
        self._tracer: Tracer = self._provider.get_tracer("ari_agent")
        self.endpoint = endpoint

    def export_call(self, record: CallRecord) -> None:
        from opentelemetry import trace

        started = _ns(record.started_at)
        ended = _ns(record.ended_at) if record.ended_at else started
        attributes: dict[str, Any] = {
            "call.id": record.call_id,
            "call.profile": record.profile,
            "call.end_reason": record.end_reason or "",
            "call.turns": sum(1 for t in record.turns if t.role == "agent"),
        }
        if record.instance:
            attributes["call.instance"] = record.instance
        for key in ("mos", "loss", "jitter_ms"):
            value = record.media.get(key)
            if isinstance(value, int | float):
                attributes[f"call.media.{key}"] = value
        root = self._tracer.start_span("call", start_time=started, attributes=attributes)
        context = trace.set_span_in_context(root)
        index = 0
        for turn in record.turns:
            if turn.role != "agent":
                continue
            index += 1
            self._turn(turn, index, context)
        root.end(end_time=max(ended, started))

    def _turn(self, turn: Turn, index: int, context: Any) -> None:
        from opentelemetry import trace

        (start, end), stages = stage_windows(_ns(turn.at), turn.timings)
        attributes: dict[str, Any] = {"turn.index": index, "turn.interrupted": turn.interrupted}
        attributes.update({f"turn.{k}": v for k, v in turn.timings.to_json().items()})
        span: Span = self._tracer.start_span("turn", context=context, start_time=start, attributes=attributes)
        inner = trace.set_span_in_context(span)
        for stage in STAGES:
            if stage in stages:
                s, e = stages[stage]
                self._tracer.start_span(stage, context=inner, start_time=s).end(end_time=max(s, e))
        span.end(end_time=max(start, end))

    async def close(self) -> None:
        """Send what is queued (the exporter's own timeout bounds it), then stop its thread."""
        await asyncio.to_thread(self._provider.shutdown)


def make_tracer(settings: OtelSettings, instance: str) -> CallTracer | None:
    """A tracer when an endpoint is configured and the otel extra is installed, else None."""
    endpoint = traces_endpoint(settings)
    if endpoint is None:
        return None
    try:
        return CallTracer(endpoint, service_name=settings.service_name, instance=instance)
    except ImportError:
        # Calls matter more than their traces: run, and say so loudly.
        log.error(
            "an OTLP endpoint is set but opentelemetry is not installed (pip install 'ari-agent[otel]')"
        )
        return None
