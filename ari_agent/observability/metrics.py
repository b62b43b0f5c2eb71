"""Prometheus metrics, all prefixed ``ari_agent_``, with low-cardinality labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One registry per app, so tests can run several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("ari_agent_active_calls", "Calls in progress", registry=r)
        self.calls = Counter(
            "ari_agent_calls", "Ended calls by outcome (end_reason)", ["outcome"], registry=r
        )
        self.rtp_in = Counter("ari_agent_rtp_packets_in", "RTP packets accepted from Asterisk", registry=r)
        self.rtp_out = Counter("ari_agent_rtp_packets_out", "RTP packets sent to Asterisk", registry=r)
        self.rtp_dropped = Counter(
            "ari_agent_rtp_packets_dropped", "Inbound datagrams dropped, by reason", ["reason"], registry=r
        )
        self.ari_connected = Gauge("ari_agent_ari_connected", "1 while the ARI WebSocket is up", registry=r)
        self.ari_reconnects = Counter("ari_agent_ari_reconnects", "ARI WebSocket (re)connections", registry=r)
        self.ari_event_errors = Counter(
            "ari_agent_ari_event_errors", "ARI events that could not be handled", registry=r
        )
        self.provider_errors = Counter(
            "ari_agent_provider_errors", "Provider failures", ["stage", "provider"], registry=r
        )
        self.turn_latency = Histogram(
            "ari_agent_turn_latency_seconds",
            "End of caller speech to first agent audio handed to the pacer",
            ["profile"],
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
            registry=r,
        )
        self.barge_ins = Counter(
            "ari_agent_barge_ins", "Caller interrupted the agent", ["profile"], registry=r
        )
