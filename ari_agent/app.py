"""The Stasis application: ARI events -> call sessions, reconcile, limits."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from ari_agent.ari.client import AriClient, AriError, AriNotFound
from ari_agent.ari.events import (
    ApplicationReplaced,
    BridgeDestroyed,
    CallBroadcast,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    Event,
    StasisEnd,
    StasisStart,
)
from ari_agent.ari.tls import UNVERIFIED_WARNING, client_ssl
from ari_agent.ari.websocket import EventListener
from ari_agent.calltable import CallTable, Phase, Verdict
from ari_agent.config import Settings, load_settings
from ari_agent.consoledata import AgentConsole
from ari_agent.conversation.records import STATUS_FOR, CallRecord, EndReason, RecordWriter, utc_now
from ari_agent.conversation.session import CallSession, ProfileProviders, SessionDeps
from ari_agent.errors import AgentError, ConfigError
from ari_agent.knowledge.answer import knowledge_search
from ari_agent.leads.handoff import LeadHandoff
from ari_agent.media.audiosocket_leg import AudioSocketServer
from ari_agent.media.listener_tls import settings_ssl
from ari_agent.media.transport import PortPool
from ari_agent.media.ws_listener import WebSocketMediaServer
from ari_agent.observability.http import HttpServer, http_token, make_http_app
from ari_agent.observability.logs import call_id_var
from ari_agent.observability.looplag import watch_loop_lag
from ari_agent.observability.metrics import Metrics
from ari_agent.observability.tasks import report_failure
from ari_agent.observability.tracing import make_tracer
from ari_agent.ops.audit import AuditError, AuditLog
from ari_agent.pool import BEAT_INTERVAL, PeerWatch, beat_variable, claim_delay, peer_instance
from ari_agent.profiles import ProfileConfig
from ari_agent.profiles.build import ProfileUnavailable, build_embedder, build_providers
from ari_agent.profiles.catalogue import all_problems, plan_all, plan_profile
from ari_agent.store import CallStore, StoredCall, StoreError
from ari_agent.store.crypto import data_cipher
from ari_agent.toolservers import ToolHub

log = logging.getLogger(__name__)

# Every bridge and channel the agent creates has an id starting with this,
# followed by the instance id: reconcile touches only its own instance's leftovers.
RESOURCE_MARK = "aia-"
# StasisStart events already on the wire when we list parked channels get
# this long to claim them before reconcile hands the rest back.
RECONCILE_GRACE = 1.0


class AgentApp:
    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
        config_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sleep = sleep  # the drain timer; tests pass one that needs no waiting
        self.clock = clock
        self.tool_hub = ToolHub()  # MCP servers, each connected once for the process
        self.config_file = config_file
        self.metrics = Metrics()
        self.metrics.jitter_buffer_depth.set(settings.media.jitter_buffer_ms / 1000)
        self.metrics.instance_info.labels(
            instance=settings.instance_id, app=settings.stasis_app, pool=str(settings.pool.enabled).lower()
        ).set(1)
        # Read at scrape time, so the readiness alert sees what /readyz would answer.
        self.metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)
        self.prefix = f"{RESOURCE_MARK}{settings.instance_id}."
        tls = client_ssl(settings.ari.url, settings.ari.ca_file, settings.ari.tls_verify)
        if tls is False:
            log.warning("%s", UNVERIFIED_WARNING)
        self.ari = AriClient(
            settings.ari.url, settings.ari.username, settings.ari.password.get_secret_value(), ssl=tls
        )
        self.listener = EventListener(
            settings.ari.url,
            settings.ari.username,
            settings.ari.password.get_secret_value(),
            settings.stasis_app,
            self._on_event,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_error=self._count_error,
            ssl=tls,
        )
        self.ports = PortPool(settings.media.port_min, settings.media.port_max)
        self.audiosocket: AudioSocketServer | None = None
        if settings.media.transport == "audiosocket":
            sock = settings.media.audiosocket
            self.audiosocket = AudioSocketServer(
                settings.media.audiosocket_listen_host, sock.listen_port, hello_timeout=sock.hello_timeout
            )
            refused = self.metrics.rtp_dropped
            self.audiosocket.on_reject = lambda reason: refused.labels(reason, "audiosocket").inc()
        self.ws_listener: WebSocketMediaServer | None = None
        if settings.media.transport == "websocket" and settings.media.websocket.connection_type == "client":
            wsc = settings.media.websocket
            self.ws_listener = WebSocketMediaServer(
                settings.media.websocket_listen_host,
                wsc.listen_port,
                hello_timeout=wsc.connect_timeout,
                credentials=(
                    (wsc.username, wsc.password.get_secret_value())
                    if wsc.username is not None and wsc.password is not None
                    else None
                ),
                # Unreadable or mismatched files raise ConfigError here (checked at start too).
                ssl_context=settings_ssl(wsc.tls_cert_file, wsc.tls_key_file),
            )
            refused_ws = self.metrics.rtp_dropped
            self.ws_listener.on_reject = lambda reason: refused_ws.labels(reason, "websocket").inc()
        # Bad or unreadable keys raise ConfigError here: better no start than plaintext.
        self.cipher = data_cipher(settings.store)
        self.records = RecordWriter(settings.records.dir, self.cipher) if settings.records.dir else None
        # OTLP traces when an endpoint is configured (the otel extra): one per call, at its end.
        self.tracer = make_tracer(settings.otel, settings.instance_id)
        if self.tracer is not None:
            log.info("call traces to %s", self.tracer.endpoint)
        self.store: CallStore | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self.profiles: dict[str, ProfileConfig] = settings.all_profiles()
        # Completed leads: the store and the webhook (made at start, once the store is open).
        self.leads: LeadHandoff | None = None
        self._providers: dict[str, ProfileProviders] = {}
        self._unavailable: dict[str, str] = {}
        # Every caller from StasisStart to hand-back; routes events to its session.
        self.calls: CallTable[CallSession] = CallTable(settings.calls.max_concurrent)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registered = False
        self._no_calls = asyncio.Event()
        # Set when the agent must stop by itself (the CLI then exits non-zero).
        self.fatal = asyncio.Event()
        self._http: HttpServer | None = None
        # Pool (StasisBroadcast): the peers' beats, and the task that beats and watches them.
        self.peers = PeerWatch(settings.pool.dead_after)
        self._pool_task: asyncio.Task[None] | None = None
        self._pool_trouble: str | None = None

    # ------------------------------------------------------------------
    # Start and stop

    async def start(self) -> None:
        if self.audiosocket is not None:
            # Before ARI: a call admitted now needs Asterisk able to connect (MediaError if not).
            await self.audiosocket.start()
            log.info("AudioSocket on %s:%d", self.audiosocket.host, self.audiosocket.port)
        if self.ws_listener is not None:
            await self.ws_listener.start()
            listener = self.ws_listener
            log.info("chan_websocket listener on %s://%s:%d", listener.scheme, listener.host, listener.port)
        await self._open_store()
        self.leads = LeadHandoff(self.settings.leads, self.store)
        await self.leads.resume()
        await self._prepare_profiles()
        conf = self.settings.http
        http_app = make_http_app(
            self.metrics,
            lambda: self.ready,
            self.active_calls,
            token=http_token(conf) or "",
            host=conf.host,
            instance=self.settings.instance_id,
            console=AgentConsole(self),
        )
        self._http = HttpServer(
            http_app,
            conf.host,
            conf.port,
            idle_timeout=conf.idle_timeout,
            max_connections=conf.max_connections,
        )
        await self._http.start()
        log.info("HTTP on %s:%d", conf.host, conf.port)
        # Apart from _tasks: it never ends, and stop() waits for those.
        self._lag_task = asyncio.create_task(watch_loop_lag(self.metrics.event_loop_lag), name="loop-lag")
        self._lag_task.add_done_callback(lambda task: self._task_ended(task, "loop_lag"))
        self.listener.start()
        if self.settings.pool.enabled:
            self._pool_task = asyncio.create_task(self._pool_loop(), name="pool")
            self._pool_task.add_done_callback(lambda task: self._task_ended(task, "pool"))

    @property
    def sessions(self) -> list[CallSession]:
        return self.calls.sessions()

    async def drain(self) -> None:
        """SIGTERM: stop taking calls at once, let active ones finish, then hand the rest back.

        A caller still in admission counts as a call: its admission sees the drain and
        hands it back rather than starting a session nobody would wait for.
        """
        self.calls.start_drain()
        await self.audit("drain", signal="SIGTERM", active_calls=self.calls.holding)
        if not self.calls.idle:
            timeout = self.settings.calls.drain_timeout
            log.info("draining: %d call(s), up to %.0f s", self.calls.holding, timeout)
            self._no_calls.clear()
            finished = asyncio.create_task(self._no_calls.wait())
            timer = asyncio.create_task(self.sleep(timeout))
            await asyncio.wait({finished, timer}, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            timer.cancel()
        await self.stop()

    async def stop(self) -> None:
        """Stop taking calls, hand the active ones back to the dialplan, shut down."""
        self.calls.start_drain()
        await asyncio.gather(*(s.hand_back("drained") for s in self.sessions))
        # Admissions still running hand their callers back themselves (the drain refuses
        # their sessions); sessions end and write their records: wait for all of it.
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        if self._pool_task is not None:
            self._pool_task.cancel()
        if self.audiosocket is not None:
            await self.audiosocket.close()
        if self.ws_listener is not None:
            await self.ws_listener.close()
        await self.listener.stop()
        await self.ari.close()
        if self._http is not None:
            await self._http.stop()
        if self._purge_task is not None:
            self._purge_task.cancel()
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self.leads is not None:
            await self.leads.close()
        if self.store is not None:
            await self.store.close()
        await self.tool_hub.close()
        if self.tracer is not None:
            await self.tracer.close()

    async def _open_store(self) -> None:
        conf = self.settings.store
        if not conf.enabled:
            return
        store = CallStore(conf.path, retention_days=conf.retention_days, cipher=self.cipher)
        try:
            await store.open()
        except StoreError as exc:
            # Calls matter more than their history: answer them, say loudly what is wrong.
            log.error("call store disabled: %s", exc)
            return
        self.store = store
        self._purge_task = asyncio.create_task(store.purge_forever(conf.purge_interval), name="store-purge")
        self._purge_task.add_done_callback(lambda task: self._task_ended(task, "store_purge"))

    async def call_ended(self, record: CallRecord, profile_text: bool | None) -> None:
        """The one place an ended call goes: the outcome metric, calls.jsonl and the store.

        Sessions and hand-backs without a session (busy, drained, parked, no profile)
        both end here, so every sink sees the same record.
        """
        assert record.end_reason is not None and record.ended_at is not None
        self.metrics.calls.labels(record.end_reason).inc()
        if self.tracer is not None:
            try:
                self.tracer.export_call(record)
            except Exception:
                log.exception("could not trace call %s", record.call_id)
                self._count_error("trace")
        if self.records is not None:
            await self.records.write(record)
        if self.store is not None:
            store_text = self.settings.store.text if profile_text is None else profile_text
            try:
                await self.store.save_call(StoredCall.from_record(record, store_text=store_text))
            except StoreError as exc:
                log.error("could not store call %s: %s", record.call_id, exc)
        if self.leads is not None:
            await self.leads.call_ended(self.profiles.get(record.profile), record)

    async def reload(self) -> None:
        """SIGHUP: read the profiles again; calls in progress keep the ones they started with."""
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            log.error("reload refused, keeping the current profiles: %s", exc)
            await self.audit("reload", signal="SIGHUP", outcome="refused")
            return
        errors = [p for p in all_problems(plan_all(fresh)) if p.severity == "error"]
        if errors:
            log.error("reload refused, keeping the current profiles: %s", "; ".join(map(str, errors)))
            await self.audit("reload", signal="SIGHUP", outcome="refused")
            return
        profiles = fresh.all_profiles()
        providers: dict[str, ProfileProviders] = {}
        unavailable: dict[str, str] = {}
        for name, profile in profiles.items():
            try:
                providers[name] = await self._build_providers(name, profile)
            except Exception as exc:
                unavailable[name] = str(exc)
                self._profile_failed(name, exc)
        self.profiles, self._providers, self._unavailable = profiles, providers, unavailable
        self.metrics.turn_latency_threshold.clear()
        for name, profile in profiles.items():
            self.metrics.turn_latency_threshold.labels(name).set(profile.turn_latency_alert_s)
        log.info("profiles reloaded: %s", ", ".join(sorted(providers)) or "none usable")
        await self.audit(
            "reload",
            signal="SIGHUP",
            outcome="applied",
            profiles=sorted(providers),
            unavailable=sorted(unavailable),
        )

    async def audit(self, action: str, **details: Any) -> None:
        """An operator's action, in the audit log; a failure to write it is logged, never fatal."""
        if not self.settings.audit.enabled:
            return
        try:
            await asyncio.to_thread(AuditLog(self.settings.audit_path).record, action, **details)
        except AuditError as exc:
            log.error("%s", exc)

    @property
    def ready(self) -> bool:
        return self.listener.connected and self._registered and not self.calls.draining

    def active_calls(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self.sessions]

    async def _prepare_profiles(self) -> None:
        """Build each profile's providers and warm them (models, voices) before any call."""
        for name, profile in self.profiles.items():
            self.metrics.turn_latency_threshold.labels(name).set(profile.turn_latency_alert_s)
            try:
                self._providers[name] = await self._build_providers(name, profile)
            except Exception as exc:
                self._unavailable[name] = str(exc)
                self._profile_failed(name, exc)

    def _profile_failed(self, name: str, exc: Exception) -> None:
        # A boundary: one profile's providers failing must not stop the others taking calls.
        expected = isinstance(exc, ProfileUnavailable | AgentError)
        log.error("profile %s cannot take calls: %s", name, exc, exc_info=None if expected else exc)
        self._count_error("profile")

    async def _build_providers(self, name: str, profile: ProfileConfig) -> ProfileProviders:
        # The catalogue `check` reads: run builds exactly what check judged.
        plan = plan_profile(name, profile)
        providers = await build_providers(plan)
        if profile.realtime:
            return providers  # the search tool is offered to pipeline LLMs (realtime: not yet)
        # Documents added later are seen on the next reload (SIGHUP) or start.
        embedder = await build_embedder(plan)
        knowledge = await asyncio.to_thread(knowledge_search, self.settings, name, embedder)
        # Tool servers start once for the process; a reload reuses those configured alike.
        remote = await self.tool_hub.tools_for(name, profile)
        return dataclasses.replace(providers, knowledge=knowledge, remote_tools=remote)

    # ------------------------------------------------------------------
    # ARI events

    async def _on_connect(self) -> None:
        self._registered = True
        self.metrics.ari_connected.set(1)
        self.metrics.ari_reconnects.inc()
        log.info("connected to ARI as app %s", self.settings.stasis_app)
        self._spawn(self._reconcile(), "reconcile")

    def _on_disconnect(self) -> None:
        self._registered = False
        self.metrics.ari_connected.set(0)
        log.warning("ARI connection lost; reconnecting")

    async def _on_event(self, event: Event) -> None:
        # Keep this short: the dispatcher awaits it before the next event.
        try:
            self._dispatch(event)
        except Exception:
            self.metrics.ari_event_errors.inc()
            log.exception("could not handle %s", type(event).__name__)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            channel_id = event.channel.id
            if channel_id.startswith(self.prefix):
                session = self.calls.route(channel_id)
                if session is not None:
                    session.media_channel_started()
                else:
                    self._spawn(self._ignore_missing(self.ari.hangup(channel_id)), "hangup")
            elif channel_id.startswith(RESOURCE_MARK):
                pass  # another instance's media channel
            else:
                self._admit(event)
        elif isinstance(event, CallBroadcast):
            self._offered(event)
        elif isinstance(event, StasisEnd | ChannelDestroyed):
            session = self.calls.route(event.channel.id)
            if session is not None:
                session.channel_gone(event.channel.id)
        elif isinstance(event, BridgeDestroyed):
            session = self.calls.route(event.bridge.id)
            if session is not None:
                session.channel_gone(event.bridge.id)
        elif isinstance(event, ApplicationReplaced):
            self._replaced()
        elif isinstance(event, ChannelDtmfReceived):
            session = self.calls.route(event.channel.id)
            if session is not None and self.calls.is_caller(event.channel.id):
                session.dtmf(event.digit)

    def _replaced(self) -> None:
        # Asterisk now gives this app's calls to another connection: running on would
        # leave two agents each handling the other's callers' events.
        log.error(
            "ARI app %s was taken by another connection (ApplicationReplaced): another agent "
            "runs with the same AGENT_ARI__APP (and, in a pool, AGENT_INSTANCE_ID); handing calls back "
            "and stopping",
            self.settings.stasis_app,
        )
        self.calls.start_drain()
        self.fatal.set()

    def _admit(self, event: StasisStart) -> None:
        channel = event.channel
        verdict = self.calls.admit(channel.id, self.clock())
        if verdict is Verdict.DUPLICATE:
            return
        if verdict is Verdict.DRAINING:
            self._spawn(self._reject(channel, "-", "drained", "agent is shutting down"), "reject")
        elif verdict is Verdict.BUSY:
            self._spawn(self._reject(channel, "-", "busy", "concurrent call limit reached"), "reject")
        else:
            self._spawn(self._start_call(channel, event.args), "admission")

    async def _start_call(self, channel: Channel, args: tuple[str, ...]) -> None:
        call_id = uuid.uuid4().hex
        call_id_var.set(call_id)
        try:
            name = args[0] if args and args[0] else None
            if name is None:
                try:
                    name = await self.ari.get_variable(channel.id, "AI_AGENT_PROFILE") or None
                except AriError:
                    name = None
            name = name or self.settings.default_profile
            profile = self.profiles.get(name)
            providers = self._providers.get(name)
            if profile is None or providers is None:
                why = self._unavailable.get(name, "no such profile")
                self.calls.abandon(channel.id)
                await self._reject(channel, name, "failed", f"profile {name!r} unavailable: {why}", call_id)
                return
            session = CallSession(
                call_id=call_id,
                caller=channel,
                profile_name=name,
                profile=profile,
                providers=providers,
                deps=SessionDeps(
                    ari=self.ari,
                    settings=self.settings,
                    ports=self.ports,
                    metrics=self.metrics,
                    resource_prefix=self.prefix,
                    on_done=self._session_done,
                    sink=self,
                    audiosocket=self.audiosocket,
                    ws_listener=self.ws_listener,
                ),
            )
            if not self.calls.activate(channel.id, session, (session.media_channel_id, session.bridge_id)):
                await self._reject(channel, name, "drained", "agent is shutting down", call_id)
                return
            self.metrics.active_calls.set(len(self.sessions))
            log.info("call from channel %s, profile %s", channel.id, name)
            self._watch(session.start(), "call")
        except BaseException:
            # Never leave the caller answered-less in the app: hand it back, then let the
            # task's error be logged and counted.
            if self.calls.phase(channel.id) is Phase.ADMITTING:
                self.calls.abandon(channel.id)
                await asyncio.shield(self._reject(channel, "-", "failed", "admission failed", call_id))
            raise

    def _session_done(self, session: CallSession) -> None:
        if self.calls.route(session.caller.id) is session:
            self._released(session.caller.id)

    def _released(self, channel_id: str) -> None:
        self.calls.release(channel_id, self.clock())
        self.metrics.active_calls.set(len(self.sessions))
        if self.calls.idle:
            self._no_calls.set()

    async def _reject(
        self, channel: Channel, profile: str, reason: EndReason, why: str, call_id: str | None = None
    ) -> None:
        """Hand a call we won't serve straight back to the dialplan, and record it."""
        call_id = call_id or uuid.uuid4().hex
        call_id_var.set(call_id)
        log.warning("handing channel %s back (%s): %s", channel.id, reason, why)
        self.metrics.call_setups.labels("busy" if reason in ("busy", "drained") else "failed").inc()
        status = STATUS_FOR[reason] or "FAILED"
        try:
            try:
                await self.ari.set_variable(channel.id, "AI_AGENT_STATUS", status)
                await self.ari.continue_in_dialplan(channel.id)
            except AriNotFound:
                pass
            except AriError as exc:
                log.error("could not hand channel %s back: %s", channel.id, exc)
            record = CallRecord(
                call_id=call_id,
                channel_id=channel.id,
                caller={"number": channel.caller.number, "name": channel.caller.name},
                profile=profile,
                instance=self.settings.instance_id,
            )
            record.ended_at = utc_now()
            record.end_reason = reason
            await self.call_ended(record, None)
        finally:
            # Out of the table whatever failed: a stuck entry would keep a drain waiting.
            self._released(channel.id)

    # ------------------------------------------------------------------
    # Reconcile after every (re)connect

    async def _reconcile(self) -> None:
        # Calls admitted from here on are missing from the snapshot below, not gone.
        mark = self.calls.mark()
        try:
            app_info = await self.ari.get_application(self.settings.stasis_app)
            channels = {c.id: c for c in await self.ari.list_channels()}
            bridges = await self.ari.list_bridges()
        except AriError as exc:
            log.error("reconcile failed: %s", exc)
            return
        for bridge in bridges:
            if bridge.id.startswith(self.prefix) and self.calls.route(bridge.id) is None:
                log.info("destroying leftover bridge %s", bridge.id)
                await self._ignore_missing(self.ari.destroy_bridge(bridge.id))
        for channel_id in channels:
            if channel_id.startswith(self.prefix) and self.calls.route(channel_id) is None:
                log.info("hanging up leftover media channel %s", channel_id)
                await self._ignore_missing(self.ari.hangup(channel_id))
        for session in self.calls.sessions(before=mark):
            if session.caller.id not in channels:
                session.channel_gone(session.caller.id)
        parked = [
            cid
            for cid in app_info.get("channel_ids", [])
            if not cid.startswith(RESOURCE_MARK) and cid in channels
        ]
        handed = 0
        if parked:
            await asyncio.sleep(RECONCILE_GRACE)
        for channel_id in parked:
            # A claim fails for a caller admitted meanwhile, or one another reconcile
            # (an earlier connection's, still in its grace) handed back already.
            if self.calls.claim(channel_id, self.clock()):
                await self._reject(channels[channel_id], "-", "failed", "left in the app by a previous run")
                handed += 1
        log.info(
            "reconcile done: %d parked caller(s) handed back, %d taken care of", handed, len(parked) - handed
        )

    # ------------------------------------------------------------------
    # Pool: claim broadcast calls; beat; hand a dead peer's callers back

    def _offered(self, event: CallBroadcast) -> None:
        """StasisBroadcast offers a call: claim it after a delay that grows with our load."""
        if not self.settings.pool.enabled:
            return
        delay = None
        if self.ready:
            conf = self.settings
            delay = claim_delay(
                self.calls.holding, conf.calls.max_concurrent, conf.pool.claim_delay_max, random.random()
            )
        if delay is None:
            self.metrics.pool_claims.labels("skipped").inc()
            log.info("not claiming channel %s: %s", event.channel.id, self._why_not_claiming())
            return
        self._spawn(self._claim(event.channel.id, delay), "claim")

    def _why_not_claiming(self) -> str:
        if self.calls.draining:
            return "draining"
        if not self.ready:
            return "not ready"
        return f"at the limit ({self.calls.holding} of {self.settings.calls.max_concurrent})"

    async def _claim(self, channel_id: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        # The load, a drain or the connection may have changed while we waited.
        if not self.ready or not self.calls.reserve(channel_id, self.clock()):
            self.metrics.pool_claims.labels("skipped").inc()
            log.info("not claiming channel %s: %s", channel_id, self._why_not_claiming())
            return
        try:
            won = await self.ari.claim_channel(channel_id, self.settings.stasis_app)
        except AriError as exc:
            self.calls.unreserve(channel_id)
            log.warning("claiming channel %s failed: %s", channel_id, exc)
            return
        if won:
            self.metrics.pool_claims.labels("won").inc()
            log.info("claimed channel %s after %.0f ms", channel_id, delay * 1000)
        else:
            # Another agent was first (409) or the offer ended (404): normal in a pool.
            self.calls.unreserve(channel_id)
            self.metrics.pool_claims.labels("lost").inc()
            log.debug("channel %s went to another agent", channel_id)

    async def _pool_loop(self) -> None:
        """Beat every second (over REST, whatever the WebSocket does) and watch the peers' beats."""
        token = uuid.uuid4().hex[:8]
        beats = 0
        while True:
            beats += 1
            try:
                await self.ari.set_global(beat_variable(self.settings.instance_id), f"{token}.{beats}")
                await self._watch_peers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never stop beating over a bug in watching: peers would think this agent dead.
                unexpected = not isinstance(exc, AriError)
                if unexpected:
                    self._count_error("pool")
                if self._pool_trouble is None:
                    log.warning("pool: cannot beat or watch peers: %s", exc, exc_info=unexpected)
                self._pool_trouble = str(exc)
            else:
                if self._pool_trouble is not None:
                    log.info("pool: beating and watching peers again")
                self._pool_trouble = None
            await asyncio.sleep(BEAT_INTERVAL)

    async def _watch_peers(self) -> None:
        me = self.settings.instance_id
        peers: dict[str, list[str]] = {}
        for app_info in await self.ari.list_applications():
            instance = peer_instance(self.settings.ari.app, str(app_info.get("name", "")))
            if instance is not None and instance != me:
                ids = app_info.get("channel_ids") or []
                peers[instance] = [c for c in ids if isinstance(c, str)]
        self.peers.keep_only(set(peers))
        for instance in peers:
            self.peers.observe(instance, await self.ari.get_global(beat_variable(instance)), self.clock())
        now = self.clock()
        for instance, channel_ids in peers.items():
            if channel_ids and self.peers.is_dead(instance, now) and self.peers.takes_over(me, now):
                await self._take_over(instance, channel_ids)

    async def _take_over(self, instance: str, channel_ids: list[str]) -> None:
        """A dead peer's callers back to the dialplan (FAILED); its bridges and media channels away."""
        prefix = f"{RESOURCE_MARK}{instance}."
        channels = {c.id: c for c in await self.ari.list_channels()}
        callers = [
            cid
            for cid in channel_ids
            if not cid.startswith(RESOURCE_MARK) and cid in channels and self.calls.claim(cid, self.clock())
        ]
        if callers:
            log.warning(
                "pool peer %s is dead (no beat for %.0f s): handing its %d parked caller(s) back",
                instance,
                self.settings.pool.dead_after,
                len(callers),
            )
        for cid in callers:
            self.metrics.pool_takeovers.inc()
            await self._reject(channels[cid], "-", "failed", f"its agent {instance} died")
        for bridge in await self.ari.list_bridges():
            if bridge.id.startswith(prefix):
                await self._ignore_missing(self.ari.destroy_bridge(bridge.id))
        for cid in channel_ids:
            if cid.startswith(prefix):
                await self._ignore_missing(self.ari.hangup(cid))

    # ------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], where: str) -> None:
        self._watch(asyncio.create_task(coro, name=where), where)

    def _watch(self, task: asyncio.Task[Any], where: str) -> None:
        """Keep the task until it ends (stop() waits for it); its exception is logged and counted."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._task_ended(t, where))

    def _task_ended(self, task: asyncio.Task[Any], where: str) -> None:
        report_failure(task, where, self.metrics)

    def _count_error(self, where: str) -> None:
        self.metrics.errors.labels(where).inc()

    @staticmethod
    async def _ignore_missing(coro: Any) -> None:
        try:
            await coro
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("ARI call failed: %s", exc)
