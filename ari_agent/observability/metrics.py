"""Prometheus metrics, all prefixed ``ari_agent_``, with low-cardinality labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    """One registry per app, so tests can run several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, resident memory, open fds: `ari-agent load` reads the agent's
        # CPU per call from here, which works where the agent's pid is not visible (a container).
        ProcessCollector(registry=r)
        self.active_calls = Gauge("ari_agent_active_calls", "Calls in progress", registry=r)
        self.calls = Counter(
            "ari_agent_calls", "Ended calls by outcome (end_reason)", ["outcome"], registry=r
        )
        # The media metrics carry the call's transport (rtp, audiosocket); the names keep
        # "rtp" for the dashboards that read them. On AudioSocket a "packet" is a 20 ms frame.
        self.rtp_in = Counter(
            "ari_agent_rtp_packets_in",
            "Media packets (AudioSocket: 20 ms frames) accepted from Asterisk",
            ["transport"],
            registry=r,
        )
        self.rtp_out = Counter(
            "ari_agent_rtp_packets_out",
            "Media packets (AudioSocket: 20 ms frames) sent to Asterisk",
            ["transport"],
            registry=r,
        )
        self.rtp_dropped = Counter(
            "ari_agent_rtp_packets_dropped",
            "Inbound media dropped, by reason",
            ["reason", "transport"],
            registry=r,
        )
        self.rtp_events = Counter(
            "ari_agent_rtp_inbound_events",
            "Inbound media events that are not drops (comfort noise, telephone-events, SSRC changes, "
            "concealed frames, gaps, late fills: silence filled for packets that were only late)",
            ["kind", "transport"],
            registry=r,
        )
        self.rtp_gaps = Counter(
            "ari_agent_rtp_inbound_gaps",
            "Inbound silences of 1 s or more with no media at all (silence suppression, DTX, a stalled leg)",
            ["transport"],
            registry=r,
        )
        self.jitter_buffer_depth = Gauge(
            "ari_agent_jitter_buffer_depth_seconds",
            "Receive jitter buffer window (media.jitter_buffer_ms; 0 = off)",
            registry=r,
        )
        # Set-up: from admission to the conversation running (answer, bridge, media channel).
        # "failed" is the agent's or Asterisk's fault; "busy" a limit (calls, ports); a caller who
        # hangs up during set-up is "abandoned". The set-up failure alert reads failed / all.
        self.call_setups = Counter(
            "ari_agent_call_setups",
            "Calls by how their set-up ended (ok, failed, busy, abandoned)",
            ["outcome"],
            registry=r,
        )
        self.ready = Gauge("ari_agent_ready", "1 while /readyz answers ready", registry=r)
        self.ari_connected = Gauge("ari_agent_ari_connected", "1 while the ARI WebSocket is up", registry=r)
        # Which agent this is (a pool's agents share one Asterisk): 1, labelled.
        self.instance_info = Gauge(
            "ari_agent_instance_info",
            "This agent: its AGENT_INSTANCE_ID, Stasis app and whether it is in a pool (value 1)",
            ["instance", "app", "pool"],
            registry=r,
        )
        self.ari_reconnects = Counter("ari_agent_ari_reconnects", "ARI WebSocket (re)connections", registry=r)
        self.pool_claims = Counter(
            "ari_agent_pool_claims",
            "Pool: broadcast calls by what this agent did (won, lost, skipped: draining or at the limit)",
            ["outcome"],
            registry=r,
        )
        self.pool_takeovers = Counter(
            "ari_agent_pool_takeovers",
            "Pool: callers of a dead peer this agent handed back to the dialplan",
            registry=r,
        )
        self.ari_event_errors = Counter(
            "ari_agent_ari_event_errors", "ARI events that could not be handled", registry=r
        )
        self.errors = Counter(
            "ari_agent_errors",
            "Exceptions caught where the agent carries on (logged with their traceback), by where: "
            "a background task that failed, a handler or callback that survived one",
            ["where"],
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "ari_agent_event_loop_lag_seconds",
            "How late the event loop ran a 100 ms timer (every call's media clock shares the loop)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.provider_errors = Counter(
            "ari_agent_provider_errors", "Provider failures", ["stage", "provider"], registry=r
        )
        self.turn_latency = Histogram(
            "ari_agent_turn_latency_seconds",
            "End of the caller's speech to the first packet of the agent's reply sent",
            ["profile"],
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
            registry=r,
        )
        # What the alert rule compares turn latency with, per profile (profile turn_latency_alert_s).
        self.turn_latency_threshold = Gauge(
            "ari_agent_turn_latency_threshold_seconds",
            "Turn latency above which the profile's alert fires (its turn_latency_alert_s)",
            ["profile"],
            registry=r,
        )
        self.turn_ends = Counter(
            "ari_agent_turn_ends",
            "Caller turns by what ended them (model, silence, provider, max_wait, max_length)",
            ["profile", "reason"],
            registry=r,
        )
        self.turn_model_seconds = Histogram(
            "ari_agent_turn_model_seconds",
            "Turn model inference (has the caller finished?), queueing in the thread pool included",
            buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=r,
        )
        self.early_starts = Counter(
            "ari_agent_early_starts",
            "Replies started on an interim transcript: used (the final said the same) or wasted",
            ["profile", "outcome"],
            registry=r,
        )
        self.barge_ins = Counter(
            "ari_agent_barge_ins",
            "Caller really interrupted the agent: words, the rest of its speech dropped",
            ["profile"],
            registry=r,
        )
        self.agent_pauses = Counter(
            "ari_agent_agent_pauses",
            "Agent's audio held for caller sound over it (a barge-in or a false interruption)",
            ["profile"],
            registry=r,
        )
        self.agent_resumes = Counter(
            "ari_agent_agent_resumes",
            "Agent's held audio went on: the sound over it was no interruption",
            ["profile"],
            registry=r,
        )
        self.false_interruptions = Counter(
            "ari_agent_false_interruptions",
            "Caller sound over the agent that was no turn: noise (no words) or a backchannel",
            ["profile", "kind"],
            registry=r,
        )
        fast = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)
        # Per call, observed once when it ends: inbound RTP from Asterisk.
        self.call_rtp_loss = Histogram(
            "ari_agent_call_rtp_loss_ratio",
            "Share of inbound RTP packets lost, per call",
            buckets=(0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
            registry=r,
        )
        self.call_rtp_jitter = Histogram(
            "ari_agent_call_rtp_jitter_seconds",
            "Inbound RTP interarrival jitter (RFC 3550) at the end of the call",
            buckets=(0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1),
            registry=r,
        )
        self.call_jitter_buffer_delay = Histogram(
            "ari_agent_call_jitter_buffer_delay_seconds",
            "Delay the receive jitter buffer added, 95th percentile of the call's frames, per call",
            buckets=(0.0005, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2),
            registry=r,
        )
        self.call_mos = Histogram(
            "ari_agent_call_mos",
            "E-model MOS estimate of the inbound leg, per call (a planning proxy)",
            buckets=(1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5),
            registry=r,
        )
        self.barge_in_reaction = Histogram(
            "ari_agent_barge_in_reaction_seconds",
            "Caller speech onset to the agent's audio stopping (held or flushed), per real barge-in",
            ["profile"],
            buckets=fast,
            registry=r,
        )
        self.stt_latency = Histogram(
            "ari_agent_stt_final_latency_seconds",
            "Local end of the caller's turn to the final transcript",
            ["provider", "profile"],
            buckets=fast,
            registry=r,
        )
        self.llm_first_token = Histogram(
            "ari_agent_llm_first_token_seconds",
            "LLM request to its first token",
            ["provider", "profile"],
            buckets=fast,
            registry=r,
        )
        self.tts_first_audio = Histogram(
            "ari_agent_tts_first_audio_seconds",
            "Text handed to TTS to its first audio",
            ["provider", "profile"],
            buckets=fast,
            registry=r,
        )
