"""One call's lifecycle: set up media, run the conversation, hand the call back.

States: starting -> greeting -> listening <-> thinking -> ending -> ended
(the middle ones belong to the conversation engine). Everything that ends a
call funnels into ``_cleanup`` exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ari_agent.ari.client import AriClient, AriError, AriNotFound
from ari_agent.ari.events import Channel
from ari_agent.ari.tls import client_ssl
from ari_agent.config import Settings
from ari_agent.conversation.engine import CallParts
from ari_agent.conversation.pipeline import PipelineConversation
from ari_agent.conversation.realtime import RealtimeConversation
from ari_agent.conversation.records import STATUS_FOR, CallRecord, EndReason, utc_now
from ari_agent.conversation.speech import Speaker
from ari_agent.conversation.tools import Finish, Search, ToolRunner
from ari_agent.errors import MediaError
from ari_agent.media import audiosocket_leg, inbound, websocket_leg
from ari_agent.media.audiosocket_leg import AudioSocketLeg, AudioSocketServer
from ari_agent.media.codecs import wire_format
from ari_agent.media.leg import DropCounters, MediaLeg
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.quality import mos
from ari_agent.media.transport import (
    PortPool,
    RtpEndpoint,
    asterisk_hosts,
    is_unspecified,
    open_endpoint,
    rtp_address,
)
from ari_agent.media.websocket_leg import WebSocketLeg, media_base, media_url
from ari_agent.media.ws_listener import WebSocketMediaServer
from ari_agent.media.ws_outbound import WebSocketOutbound
from ari_agent.observability.logs import call_id_var
from ari_agent.observability.metrics import Metrics
from ari_agent.profiles import DestinationConfig, ProfileConfig
from ari_agent.profiles.template import render
from ari_agent.toolservers import RemoteTools
from providers.base import LLM, STT, TTS, Realtime

log = logging.getLogger(__name__)

MEDIA_CHANNEL_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProfileProviders:
    """Providers are built once per profile and shared by its calls.

    A speech-to-speech profile has ``realtime`` and no ``stt``/``llm``; its
    ``tts`` is only the apology voice.
    """

    tts: TTS
    stt: STT | None = None
    llm: LLM | None = None
    realtime: Realtime | None = None
    # Phrases spoken without any provider (apology, turn error), PCM16 at 16 kHz.
    canned: Mapping[str, bytes] = field(default_factory=dict)
    # The profile's knowledge base, when it has documents: its LLM is offered the search tool.
    knowledge: Search | None = None
    # The profile's allowed tools from its tool servers (MCP), connected once for the process.
    remote_tools: RemoteTools | None = None
    # A voice per language of the profile's ``languages`` (pipeline profiles).
    voices: Mapping[str, TTS] = field(default_factory=dict)


class Conversation(Protocol):
    """What runs between set-up and hand-back: a cascaded pipeline or a realtime provider."""

    state: str

    def on_audio(self, pcm: np.ndarray) -> None: ...

    def on_sent_audio(self, pcm8k: np.ndarray, at: float) -> None: ...

    def on_dtmf(self, digit: str) -> None: ...

    async def run(self) -> None: ...

    async def apologise(self) -> None: ...


class CallSink(Protocol):
    """Where an ended call's record goes (every sink: metric, records file, store)."""

    async def call_ended(self, record: CallRecord, profile_text: bool | None) -> None: ...


@dataclass(frozen=True)
class SessionDeps:
    ari: AriClient
    settings: Settings
    ports: PortPool
    metrics: Metrics
    resource_prefix: str
    on_done: Callable[[CallSession], None]
    sink: CallSink
    # The app's AudioSocket listener (media.transport = audiosocket), else None.
    audiosocket: AudioSocketServer | None = None
    # The app's chan_websocket listener (websocket with connection_type = client), else None.
    ws_listener: WebSocketMediaServer | None = None


class CallSession:
    def __init__(
        self,
        *,
        call_id: str,
        caller: Channel,
        profile_name: str,
        profile: ProfileConfig,
        providers: ProfileProviders,
        deps: SessionDeps,
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.profile_name = profile_name
        self.profile = profile
        self.providers = providers
        self.deps = deps
        self.bridge_id = f"{deps.resource_prefix}b-{call_id[:12]}"
        self.media_channel_id = f"{deps.resource_prefix}m-{call_id[:12]}"
        self._state = "starting"
        self.end_reason: EndReason | None = None
        self.record = CallRecord(
            call_id=call_id,
            channel_id=caller.id,
            caller={"number": caller.caller.number, "name": caller.caller.name},
            profile=profile_name,
            instance=deps.settings.instance_id,
        )
        media = deps.settings.media
        self.transport = media.transport
        if self.transport == "audiosocket":
            self._wire = audiosocket_leg.wire_for(media.format)
        elif self.transport == "websocket":
            self._wire = websocket_leg.wire_for(media.format)
        else:
            self._wire = wire_format(media.format)
        self._leg: MediaLeg | None = None
        self._pacer: OutboundPacer | None = None
        self._conversation: Conversation | None = None
        self._media_channel_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gone: asyncio.Task[None] | None = None
        self._cleaned = False
        self._started_mono = time.monotonic()

    # ------------------------------------------------------------------
    # Driven by the app

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"call-{self.call_id}")
        return self._task

    def media_channel_started(self) -> None:
        self._media_channel_up.set()

    def dtmf(self, digit: str) -> None:
        if self._conversation is not None:
            self._conversation.on_dtmf(digit)

    def channel_gone(self, resource_id: str) -> None:
        """The caller, our media channel or our bridge (``resource_id``) disappeared."""
        if self.end_reason is not None:
            return  # already ending (often this is the echo of our own hand-back)
        if resource_id != self.caller.id:
            # Our media channel or bridge went (e.g. Asterisk could not open a chan_websocket
            # client connection and hung the channel up) while the caller is still there:
            # the caller goes back to the dialplan as FAILED, not left in silence.
            log.warning("the call's media channel or bridge ended under it; handing the caller back")
            self._gone = asyncio.get_running_loop().create_task(
                self.hand_back("failed"), name=f"call-{self.call_id}-gone"
            )
            return
        self.end_reason = "hangup_by_caller"
        self._stop_task()

    async def hand_back(self, reason: EndReason) -> None:
        """Give the call back to the dialplan now (drain, reconcile)."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._stop_task()
        await self._release_caller(reason, None)

    @property
    def state(self) -> str:
        if self._state == "running" and self._conversation is not None:
            return self._conversation.state
        return self._state

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "channel_id": self.caller.id,
            "profile": self.profile_name,
            "state": self.state,
            "started_at": self.record.started_at,
            "instance": self.record.instance,
        }

    def live(self, *, text: bool) -> dict[str, Any]:
        """The console's view of the call in progress: ``text`` (the operator's opt-in, per
        profile or global) adds the caller's number and name and the turns' words."""
        view = self.summary()
        view["duration_s"] = round(time.monotonic() - self._started_mono, 1)
        view["transport"] = self.transport
        leg = self._leg
        if leg is not None and leg.stats.received:
            stats = leg.stats
            view["quality"] = {
                "loss": round(stats.fraction_lost, 4),
                "jitter_ms": round(stats.jitter_ms, 1),
                "mos": round(mos(stats.fraction_lost, stats.jitter_ms, 20.0), 2),
            }
        turns: list[dict[str, Any]] = []
        for turn in list(self.record.turns):
            item: dict[str, Any] = {"role": turn.role, "at": turn.at, "timings": turn.timings.to_json()}
            if turn.interrupted:
                item["interrupted"] = True
            if turn.ended_by is not None:
                item["ended_by"] = turn.ended_by
            if text:
                item["text"] = turn.text
            turns.append(item)
        view["turns"] = turns
        if text:
            view["caller"] = dict(self.record.caller)
        return view

    def _stop_task(self) -> None:
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()

    # ------------------------------------------------------------------
    # The call

    async def _run(self) -> None:
        call_id_var.set(self.call_id)
        setups = self.deps.metrics.call_setups
        try:
            await self._setup()
            setups.labels("ok").inc()
            self._state = "running"
            assert self._conversation is not None
            await self._conversation.run()
        except Finish as finish:
            if self._state == "starting":
                setups.labels("busy" if finish.reason == "busy" else "failed").inc()
            await self._finish(finish.reason, finish.target)
        except asyncio.CancelledError:
            if self._state == "starting":
                setups.labels("abandoned").inc()  # the caller hung up (or a drain) mid set-up
        except Exception:
            if self._state == "starting":
                setups.labels("failed").inc()
            log.exception("call failed")
            self.deps.metrics.errors.labels("call").inc()
            await self._finish("failed", None)
        finally:
            await self._cleanup()

    async def _setup(self) -> None:
        ari = self.deps.ari
        settings = self.deps.settings
        await ari.answer(self.caller.id)
        leg = self._leg = await self._open_leg()
        await ari.create_bridge(self.bridge_id, "mixing", name=self.bridge_id)
        await ari.add_channel(self.bridge_id, self.caller.id)
        try:
            if isinstance(leg, AudioSocketLeg):
                host, port = settings.media.audiosocket_advertised
                # Asterisk connects while it creates the channel and sends leg.uuid first.
                media = await ari.external_media(
                    self.media_channel_id,
                    settings.stasis_app,
                    rtp_address(host, port),
                    self._wire.name,
                    encapsulation="audiosocket",
                    transport="tcp",
                    data=str(leg.uuid),
                )
            elif isinstance(leg, WebSocketLeg):
                wsc = settings.media.websocket
                # server: Asterisk waits for us on its HTTP server at /media/<connection id>.
                # client: Asterisk dials websocket_client.conf's section; the listener hands
                # the connection whose MEDIA_START names our channel id to the leg.
                media = await ari.external_media(
                    self.media_channel_id,
                    settings.stasis_app,
                    wsc.client_name if wsc.connection_type == "client" else None,
                    self._wire.name,
                    encapsulation="none",
                    transport="websocket",
                    connection_type=wsc.connection_type,
                )
            else:
                assert isinstance(leg, RtpEndpoint)
                media = await ari.external_media(
                    self.media_channel_id,
                    settings.stasis_app,
                    rtp_address(settings.media.advertised, leg.port),
                    self._wire.name,
                )
        except AriError as exc:
            log.warning("ExternalMedia channel refused: %s", exc)
            raise Finish("busy") from None
        if isinstance(leg, RtpEndpoint):
            await self._lock_rtp_source(leg, media)
        if isinstance(leg, WebSocketLeg):
            if settings.media.websocket.connection_type == "client":
                await self._wait_websocket(leg)
            else:
                await self._connect_websocket(leg, media)
        instructions = await self._instructions()
        # Asterisk refuses to bridge the media channel until it is in Stasis itself.
        try:
            await asyncio.wait_for(self._media_channel_up.wait(), MEDIA_CHANNEL_TIMEOUT)
        except TimeoutError:
            log.error("ExternalMedia channel never entered the app")
            raise Finish("failed") from None
        await ari.add_channel(self.bridge_id, self.media_channel_id)
        frames_out = self.deps.metrics.rtp_out.labels(self.transport)

        def send(data: bytes) -> None:
            leg.send(data)
            frames_out.inc()

        if isinstance(leg, WebSocketLeg):
            # Asterisk paces what it is sent; the pacer's interface follows its play-out.
            self._pacer = leg.make_outbound(on_audio_sent=self._on_sent_audio, on_frames_sent=frames_out.inc)
        else:
            self._pacer = OutboundPacer(
                send, self._wire, on_audio_sent=self._on_sent_audio, rtp=leg.rtp_framing
            )
        self._pacer.start()
        self._conversation = self._make_conversation(self._pacer, instructions)
        # A greeting over a path that isn't flowing yet gets its first words cut.
        try:
            await asyncio.wait_for(leg.first_packet.wait(), settings.calls.first_media_timeout)
        except TimeoutError:
            log.info("no inbound audio yet; greeting anyway")

    async def _open_leg(self) -> MediaLeg:
        """The call's media leg on the configured transport (Finish("busy") when there is none)."""
        settings = self.deps.settings
        metrics = self.deps.metrics
        counters = DropCounters(on_drop=self._count_drop)
        frames_in = metrics.rtp_in.labels(self.transport)
        if self.transport == "websocket":
            ws_leg = WebSocketLeg(
                self._wire,
                self._on_audio,
                counters,
                jitter_ms=settings.media.jitter_buffer_ms,
                on_event=self._count_event,
                on_accepted=frames_in.inc,
            )
            if settings.media.websocket.connection_type == "client":
                listener = self.deps.ws_listener
                if listener is None:
                    log.error("media.websocket.connection_type is client but its listener is not running")
                    raise Finish("busy")
                # Before ExternalMedia: Asterisk may connect before the request returns.
                listener.expect(self.media_channel_id, ws_leg)
            return ws_leg
        if self.transport == "audiosocket":
            server = self.deps.audiosocket
            if server is None:
                log.error("media.transport is audiosocket but the AudioSocket server is not running")
                raise Finish("busy")
            return server.expect(
                self._wire,
                self._on_audio,
                counters,
                jitter_ms=settings.media.jitter_buffer_ms,
                on_event=self._count_event,
                on_accepted=frames_in.inc,
            )
        try:
            return await open_endpoint(
                self.deps.ports,
                settings.media.bind_host,
                self._wire,
                self._on_audio,
                counters,
                jitter_ms=settings.media.jitter_buffer_ms,
                on_event=self._count_event,
                on_accepted=frames_in.inc,
            )
        except MediaError as exc:
            log.warning("no RTP port for the call: %s", exc)
            raise Finish("busy") from None

    async def _wait_websocket(self, leg: WebSocketLeg) -> None:
        """connection_type=client: Asterisk connects after ExternalMedia has returned."""
        wsc = self.deps.settings.media.websocket
        try:
            await asyncio.wait_for(leg.connected.wait(), wsc.connect_timeout)
        except TimeoutError:
            # With TLS the usual cause is Asterisk not trusting the agent's certificate, which
            # only Asterisk's log shows (it hangs up after the handshake).
            tls = (
                ", tls_enabled, ca_list_file (the CA of AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE)"
                if wsc.tls_cert_file is not None
                else ""
            )
            log.error(
                "Asterisk did not open the media WebSocket to the agent within %g s (check "
                "websocket_client.conf's [%s] uri%s and Asterisk's log)",
                wsc.connect_timeout,
                wsc.client_name,
                tls,
            )
            raise Finish("failed") from None

    async def _connect_websocket(self, leg: WebSocketLeg, media: Channel) -> None:
        settings = self.deps.settings
        connection_id = media.channelvars.get(
            "MEDIA_WEBSOCKET_CONNECTION_ID"
        ) or await self.deps.ari.get_variable(self.media_channel_id, "MEDIA_WEBSOCKET_CONNECTION_ID")
        if not connection_id:
            log.error("the WebSocket media channel did not report its connection id")
            raise Finish("failed")
        base = settings.media.websocket.url or media_base(settings.ari.url)
        url = media_url(base, connection_id)
        ari = settings.ari
        try:
            await leg.connect(
                url,
                ssl=client_ssl(url.replace("wss://", "https://", 1), ari.ca_file, ari.tls_verify),
                connect_timeout=settings.media.websocket.connect_timeout,
            )
        except MediaError as exc:
            # The connection id is in the URL: say where, not the URL.
            log.error("media WebSocket to Asterisk failed: %s", exc)
            raise Finish("failed") from None

    async def _lock_rtp_source(self, endpoint: RtpEndpoint, media: Channel) -> None:
        ari = self.deps.ari
        host = media.channelvars.get("UNICASTRTP_LOCAL_ADDRESS") or await ari.get_variable(
            self.media_channel_id, "UNICASTRTP_LOCAL_ADDRESS"
        )
        port = media.channelvars.get("UNICASTRTP_LOCAL_PORT") or await ari.get_variable(
            self.media_channel_id, "UNICASTRTP_LOCAL_PORT"
        )
        if not host or not port:
            log.error("ExternalMedia channel did not report its RTP address")
            raise Finish("failed")
        expected: frozenset[str] = frozenset()
        if is_unspecified(host):
            # Asterisk did not say which address it sends from: only its own may take the lock.
            expected = await asterisk_hosts(self.deps.settings.ari.url)
        endpoint.lock_source(host, int(port), expected_hosts=expected)

    def _make_conversation(self, pacer: OutboundPacer, instructions: Mapping[str, str]) -> Conversation:
        providers = self.providers
        parts = CallParts(
            profile_name=self.profile_name,
            profile=self.profile,
            speaker=Speaker(pacer, providers.tts, self.record.turns),
            tools=ToolRunner(
                self.profile,
                self._set_variable,
                self.record.fields,
                self.record.variables,
                search=None if providers.realtime is not None else providers.knowledge,
                remote=None if providers.realtime is not None else providers.remote_tools,
            ),
            record=self.record,
            metrics=self.deps.metrics,
            instructions=instructions[self.profile.language],
            canned=providers.canned,
            instructions_by_language=instructions,
            voices=providers.voices,
        )
        if providers.realtime is not None:
            conversation = RealtimeConversation(
                parts, realtime=providers.realtime, pacer=pacer, wire_name=self._wire.name
            )
            if conversation.raw and self._leg is not None:
                self._leg.on_payload = conversation.on_payload
            return conversation
        assert providers.stt is not None and providers.llm is not None
        pipeline = PipelineConversation(parts, stt=providers.stt, llm=providers.llm)
        if self._leg is not None:
            self._leg.on_retract = pipeline.on_retract
        return pipeline

    async def _instructions(self) -> dict[str, str]:
        """The instructions per language of the profile, with the call's details filled in."""
        profile = self.profile
        texts = {tag: profile.instructions_for(tag) for tag in (profile.language, *profile.languages)}
        if not any(texts.values()):
            return texts
        values: dict[str, str] = {
            "caller_number": self.caller.caller.number,
            "caller_name": self.caller.caller.name,
            "extension": self.caller.dialplan.exten if self.caller.dialplan else "",
            "context": self.caller.dialplan.context if self.caller.dialplan else "",
        }
        for name in profile.template_variables:
            try:
                values[name] = await self.deps.ari.get_variable(self.caller.id, name) or ""
            except AriError:
                values[name] = ""
        # Only the known names are filled; any other brace reaches the model as written.
        return {tag: render(text, values) if text else "" for tag, text in texts.items()}

    def _on_audio(self, pcm: np.ndarray) -> None:
        # Runs in the datagram callback and on the receive clock's tick: the stream is
        # continuous whether or not packets come.
        if self._conversation is not None:
            self._conversation.on_audio(pcm)

    def _on_sent_audio(self, pcm: np.ndarray, at: float) -> None:
        if self._conversation is not None:
            self._conversation.on_sent_audio(pcm, at)

    def _observe_quality(self, endpoint: MediaLeg) -> None:
        quality = endpoint.inbound.quality()
        stats = endpoint.stats
        if stats.received:
            loss = stats.fraction_lost
            # Latency unknown from one leg: a LAN-ish 20 ms one way stands in.
            score = mos(loss, stats.jitter_ms, 20.0)
            quality["mos"] = round(score, 2)
            metrics = self.deps.metrics
            metrics.call_rtp_loss.observe(loss)
            metrics.call_rtp_jitter.observe(stats.jitter_ms / 1000)
            metrics.call_mos.observe(score)
            p95 = endpoint.inbound.buffer.delay_percentile_ms(95)
            if p95 is not None:
                metrics.call_jitter_buffer_delay.observe(p95 / 1000)
        self.record.media = quality

    def _count_drop(self, reason: str) -> None:
        self.deps.metrics.rtp_dropped.labels(reason, self.transport).inc()

    def _count_event(self, kind: str) -> None:
        metrics = self.deps.metrics
        if kind == inbound.GAP:
            metrics.rtp_gaps.labels(self.transport).inc()
        else:
            metrics.rtp_events.labels(kind, self.transport).inc()

    async def _set_variable(self, name: str, value: str) -> None:
        try:
            await self.deps.ari.set_variable(self.caller.id, name, value)
        except AriError as exc:
            log.warning("could not set %s on the caller's channel: %s", name, exc)

    # ------------------------------------------------------------------
    # Ending

    async def _finish(self, reason: EndReason, target: DestinationConfig | None) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._state = "ending"
        if reason == "failed" and self._conversation is not None:
            try:
                async with asyncio.timeout(8):
                    await self._conversation.apologise()
            except Exception as exc:
                # The call is already failing: hand it back whatever the apology did.
                log.warning("could not play the apology: %r", exc, exc_info=True)
                self.deps.metrics.errors.labels("apology").inc()
        await self._release_caller(reason, target)

    async def _release_caller(self, reason: EndReason, target: DestinationConfig | None) -> None:
        """Set the outcome variables, then hang up or continue in the dialplan."""
        ari = self.deps.ari
        status = STATUS_FOR[reason]
        if status is None:
            return
        try:
            await ari.set_variable(self.caller.id, "AI_AGENT_STATUS", status)
            if reason in ("hangup_by_agent", "operator_hangup"):
                await ari.hangup(self.caller.id)
            elif target is not None:
                context = target.context or (self.caller.dialplan.context if self.caller.dialplan else None)
                await ari.continue_in_dialplan(
                    self.caller.id, context=context, extension=target.extension, priority=target.priority
                )
            else:
                await ari.continue_in_dialplan(self.caller.id)
        except AriNotFound:
            log.info("caller already gone while handing back (%s)", reason)
        except AriError as exc:
            log.error("could not hand the call back (%s): %s", reason, exc)

    async def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        self._state = "ending"
        if self.end_reason is None:
            self.end_reason = "failed"
        try:
            await self._release_media()
            self.record.ended_at = utc_now()
            self.record.end_reason = self.end_reason
            try:
                await self.deps.sink.call_ended(self.record, self.profile.store_text)
            except Exception:
                log.exception("could not write the call record")
                self.deps.metrics.errors.labels("call_sink").inc()
            log.info("call ended: %s after %.1f s", self.end_reason, time.monotonic() - self._started_mono)
        finally:
            # Whatever failed above, the call leaves the app's table: a call stuck there would
            # hold a slot of the limit and keep a drain waiting.
            self._state = "ended"
            self.deps.on_done(self)

    async def _release_media(self) -> None:
        metrics = self.deps.metrics
        if self._pacer is not None:
            self._pacer.flush()
            await self._pacer.stop()
            # The pacer and the endpoint survive their callbacks' failures and count them.
            metrics.errors.labels("rtp_send").inc(self._pacer.send_errors)
        if self._leg is not None:
            self._leg.close()
            if isinstance(self._leg, WebSocketLeg):
                await self._leg.closed_io()
            self._observe_quality(self._leg)
            if isinstance(self._pacer, WebSocketOutbound):
                self.record.media.update({f"ws_{k}": v for k, v in self._pacer.summary().items()})
            metrics.errors.labels("rtp_consumer").inc(self._leg.callback_errors)
        ari = self.deps.ari
        try:
            await ari.destroy_bridge(self.bridge_id)
        except AriError as exc:
            if not isinstance(exc, AriNotFound):
                log.warning("cleanup of the bridge failed: %s", exc)
        try:
            await ari.hangup(self.media_channel_id)
        except AriError as exc:
            if not isinstance(exc, AriNotFound):
                log.warning("cleanup of the media channel failed: %s", exc)
