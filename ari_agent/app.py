"""The Stasis application: ARI events -> call sessions, reconcile, limits."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from ari_agent.ari.client import AriClient, AriError, AriNotFound
from ari_agent.ari.events import (
    BridgeDestroyed,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    Event,
    StasisEnd,
    StasisStart,
)
from ari_agent.ari.websocket import EventListener
from ari_agent.config import Settings, load_settings
from ari_agent.conversation.records import STATUS_FOR, CallRecord, EndReason, RecordWriter, utc_now
from ari_agent.conversation.session import CallSession, ProfileProviders, SessionDeps
from ari_agent.errors import ConfigError
from ari_agent.media.transport import PortPool
from ari_agent.observability.http import make_http_app
from ari_agent.observability.logs import call_id_var
from ari_agent.observability.metrics import Metrics
from ari_agent.profiles import ProfileConfig
from ari_agent.profiles.build import build_providers
from ari_agent.profiles.catalogue import all_problems, plan_all, plan_profile
from ari_agent.store import CallStore, StoredCall, StoreError

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
    ) -> None:
        self.settings = settings
        self.sleep = sleep  # the drain timer; tests pass one that needs no waiting
        self.config_file = config_file
        self.metrics = Metrics()
        self.metrics.jitter_buffer_depth.set(settings.media.jitter_buffer_ms / 1000)
        self.prefix = f"{RESOURCE_MARK}{settings.instance_id}."
        self.ari = AriClient(
            settings.ari.url, settings.ari.username, settings.ari.password.get_secret_value()
        )
        self.listener = EventListener(
            settings.ari.url,
            settings.ari.username,
            settings.ari.password.get_secret_value(),
            settings.ari.app,
            self._on_event,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
        )
        self.ports = PortPool(settings.media.port_min, settings.media.port_max)
        self.records = RecordWriter(settings.records.dir) if settings.records.dir else None
        self.store: CallStore | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self.profiles: dict[str, ProfileConfig] = settings.all_profiles()
        self._providers: dict[str, ProfileProviders] = {}
        self._unavailable: dict[str, str] = {}
        self.sessions: dict[str, CallSession] = {}  # by call id
        self._by_channel: dict[str, CallSession] = {}  # caller and media channel ids
        self._by_bridge: dict[str, CallSession] = {}
        self._admitting: set[str] = set()  # caller channels between StasisStart and their session
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registered = False
        self._draining = False
        self._no_calls = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------
    # Start and stop

    async def start(self) -> None:
        await self._open_store()
        await self._prepare_profiles()
        http_app = make_http_app(self.metrics, lambda: self.ready, self.active_calls)
        self._runner = web.AppRunner(http_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http.host, self.settings.http.port)
        await site.start()
        log.info("HTTP on %s:%d", self.settings.http.host, self.settings.http.port)
        self.listener.start()

    async def drain(self) -> None:
        """SIGTERM: stop taking calls at once, let active ones finish, then hand the rest back."""
        self._draining = True
        if self.sessions:
            timeout = self.settings.calls.drain_timeout
            log.info("draining: %d active call(s), up to %.0f s", len(self.sessions), timeout)
            self._no_calls.clear()
            finished = asyncio.create_task(self._no_calls.wait())
            timer = asyncio.create_task(self.sleep(timeout))
            await asyncio.wait({finished, timer}, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            timer.cancel()
        await self.stop()

    async def stop(self) -> None:
        """Stop taking calls, hand the active ones back to the dialplan, shut down."""
        self._draining = True
        await asyncio.gather(*(s.hand_back("drained") for s in list(self.sessions.values())))
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await self.listener.stop()
        await self.ari.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._purge_task is not None:
            self._purge_task.cancel()
        if self.store is not None:
            await self.store.close()

    async def _open_store(self) -> None:
        conf = self.settings.store
        if not conf.enabled:
            return
        store = CallStore(conf.path, retention_days=conf.retention_days)
        try:
            await store.open()
        except StoreError as exc:
            # Calls matter more than their history: answer them, say loudly what is wrong.
            log.error("call store disabled: %s", exc)
            return
        self.store = store
        self._purge_task = asyncio.create_task(store.purge_forever(conf.purge_interval), name="store-purge")

    async def call_ended(self, session: CallSession) -> None:
        """The session's sink: keep the call in the store."""
        await self._store_record(session.record, session.profile.store_text)

    async def _store_record(self, record: CallRecord, profile_text: bool | None) -> None:
        if self.store is None:
            return
        store_text = self.settings.store.text if profile_text is None else profile_text
        stored = StoredCall.from_record(
            record,
            store_text=store_text,
            result=record.variables.get("AI_AGENT_RESULT"),
            fields=record.fields,
        )
        try:
            await self.store.save_call(stored)
        except StoreError as exc:
            log.error("could not store call %s: %s", record.call_id, exc)

    async def reload(self) -> None:
        """SIGHUP: read the profiles again; calls in progress keep the ones they started with."""
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            log.error("reload refused, keeping the current profiles: %s", exc)
            return
        errors = [p for p in all_problems(plan_all(fresh)) if p.severity == "error"]
        if errors:
            log.error("reload refused, keeping the current profiles: %s", "; ".join(map(str, errors)))
            return
        profiles = fresh.all_profiles()
        providers: dict[str, ProfileProviders] = {}
        unavailable: dict[str, str] = {}
        for name, profile in profiles.items():
            try:
                providers[name] = await self._build_providers(name, profile)
            except Exception as exc:
                unavailable[name] = str(exc)
                log.error("profile %s cannot take calls: %s", name, exc)
        self.profiles, self._providers, self._unavailable = profiles, providers, unavailable
        log.info("profiles reloaded: %s", ", ".join(sorted(providers)) or "none usable")

    @property
    def ready(self) -> bool:
        return self.listener.connected and self._registered and not self._draining

    def active_calls(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self.sessions.values()]

    async def _prepare_profiles(self) -> None:
        """Build each profile's providers and warm them (models, voices) before any call."""
        for name, profile in self.profiles.items():
            try:
                self._providers[name] = await self._build_providers(name, profile)
            except Exception as exc:
                self._unavailable[name] = str(exc)
                log.error("profile %s cannot take calls: %s", name, exc)

    async def _build_providers(self, name: str, profile: ProfileConfig) -> ProfileProviders:
        # The catalogue `check` reads: run builds exactly what check judged.
        return await build_providers(plan_profile(name, profile))

    # ------------------------------------------------------------------
    # ARI events

    async def _on_connect(self) -> None:
        self._registered = True
        self.metrics.ari_connected.set(1)
        self.metrics.ari_reconnects.inc()
        log.info("connected to ARI as app %s", self.settings.ari.app)
        self._spawn(self._reconcile())

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
                session = self._by_channel.get(channel_id)
                if session is not None:
                    session.media_channel_started()
                else:
                    self._spawn(self._ignore_missing(self.ari.hangup(channel_id)))
            elif channel_id.startswith(RESOURCE_MARK):
                pass  # another instance's media channel
            else:
                self._admit(event)
        elif isinstance(event, StasisEnd | ChannelDestroyed):
            session = self._by_channel.get(event.channel.id)
            if session is not None:
                session.channel_gone()
        elif isinstance(event, BridgeDestroyed):
            session = self._by_bridge.get(event.bridge.id)
            if session is not None:
                session.channel_gone()
        elif isinstance(event, ChannelDtmfReceived):
            session = self._by_channel.get(event.channel.id)
            if session is not None and event.channel.id == session.caller.id:
                session.dtmf(event.digit)

    def _admit(self, event: StasisStart) -> None:
        channel = event.channel
        if channel.id in self._by_channel or channel.id in self._admitting:
            return
        if self._draining:
            self._spawn(self._reject(channel, "-", "drained", "agent is shutting down"))
            return
        if len(self.sessions) + len(self._admitting) >= self.settings.calls.max_concurrent:
            self._spawn(self._reject(channel, "-", "busy", "concurrent call limit reached"))
            return
        self._admitting.add(channel.id)
        self._spawn(self._start_call(channel, event.args))

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
                    records=self.records,
                    resource_prefix=self.prefix,
                    on_done=self._session_done,
                    sink=self,
                ),
            )
            self.sessions[call_id] = session
            self._by_channel[channel.id] = session
            self._by_channel[session.media_channel_id] = session
            self._by_bridge[session.bridge_id] = session
            self.metrics.active_calls.set(len(self.sessions))
            log.info("call from channel %s, profile %s", channel.id, name)
            task = session.start()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        finally:
            self._admitting.discard(channel.id)

    def _session_done(self, session: CallSession) -> None:
        self.sessions.pop(session.call_id, None)
        for key in (session.caller.id, session.media_channel_id):
            if self._by_channel.get(key) is session:
                del self._by_channel[key]
        self._by_bridge.pop(session.bridge_id, None)
        self.metrics.active_calls.set(len(self.sessions))
        if not self.sessions:
            self._no_calls.set()

    async def _reject(
        self, channel: Channel, profile: str, reason: EndReason, why: str, call_id: str | None = None
    ) -> None:
        """Hand a call we won't serve straight back to the dialplan, and record it."""
        call_id = call_id or uuid.uuid4().hex
        call_id_var.set(call_id)
        log.warning("handing channel %s back (%s): %s", channel.id, reason, why)
        status = STATUS_FOR[reason] or "FAILED"
        try:
            await self.ari.set_variable(channel.id, "AI_AGENT_STATUS", status)
            await self.ari.continue_in_dialplan(channel.id)
        except AriNotFound:
            pass
        except AriError as exc:
            log.error("could not hand channel %s back: %s", channel.id, exc)
        self.metrics.calls.labels(reason).inc()
        record = CallRecord(
            call_id=call_id,
            channel_id=channel.id,
            caller={"number": channel.caller.number, "name": channel.caller.name},
            profile=profile,
        )
        record.ended_at = utc_now()
        record.end_reason = reason
        if self.records is not None:
            await self.records.write(record)
        await self._store_record(record, None)

    # ------------------------------------------------------------------
    # Reconcile after every (re)connect

    async def _reconcile(self) -> None:
        try:
            app_info = await self.ari.get_application(self.settings.ari.app)
            channels = {c.id: c for c in await self.ari.list_channels()}
            bridges = await self.ari.list_bridges()
        except AriError as exc:
            log.error("reconcile failed: %s", exc)
            return
        for bridge in bridges:
            if bridge.id.startswith(self.prefix) and bridge.id not in self._by_bridge:
                log.info("destroying leftover bridge %s", bridge.id)
                await self._ignore_missing(self.ari.destroy_bridge(bridge.id))
        for channel_id in channels:
            if channel_id.startswith(self.prefix) and channel_id not in self._by_channel:
                log.info("hanging up leftover media channel %s", channel_id)
                await self._ignore_missing(self.ari.hangup(channel_id))
        for session in list(self.sessions.values()):
            if session.caller.id not in channels:
                session.channel_gone()
        parked = [
            cid
            for cid in app_info.get("channel_ids", [])
            if not cid.startswith(RESOURCE_MARK) and cid in channels
        ]
        if not parked:
            return
        await asyncio.sleep(RECONCILE_GRACE)
        for channel_id in parked:
            if channel_id in self._by_channel or channel_id in self._admitting:
                continue
            await self._reject(channels[channel_id], "-", "failed", "left in the app by a previous run")

    # ------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _ignore_missing(coro: Any) -> None:
        try:
            await coro
        except AriNotFound:
            pass
        except AriError as exc:
            log.warning("ARI call failed: %s", exc)
