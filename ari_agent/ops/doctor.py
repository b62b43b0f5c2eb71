"""``ari-agent doctor``: is this Asterisk ready for the agent? Each problem with its fix in one line.

Checks, in order; a failed check skips the ones that depend on it:

1. ``ari``: ARI answers at the configured URL.
2. ``credentials``: the configured user and password are accepted.
3. ``modules``: res_ari, res_http_websocket, res_stasis, app_stasis and the configured
   media transport's modules (chan_rtp; res_audiosocket and chan_audiosocket;
   res_websocket_client and chan_websocket) loaded.
4. ``app``: the agent's Stasis app is registered (a warning when the agent is
   not running at all: its /healthz does not answer).
5. ``media``: two-way audio between Asterisk and the advertised RTP address
   (on AudioSocket and WebSocket: the same over their connections, see audiosocket_probe
   and websocket_probe).
   Two ExternalMedia channels in one mixing bridge, each toward a UDP socket
   of ours bound like the agent's media: a prompt played into the bridge must
   reach us (Asterisk → advertised address), and a tone we send into one
   channel must come out of the other (our RTP → Asterisk → us).
6. ``extension`` (with ``--extension EXT@CONTEXT``): a Local channel
   originated to it must enter ``Stasis(<app>)``. ARI cannot read the
   dialplan, so the channel's running application is watched instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ari_agent.ari.client import AriError, AriHttpError, AriNotFound, AriTlsError, AriUnavailable
from ari_agent.ari.tls import CA_SETTING, UNVERIFIED_WARNING, is_tls
from ari_agent.config import Settings
from ari_agent.media.transport import rtp_address
from ari_agent.ops.ariapp import OpsAri, PrivateApp, ops_client
from ari_agent.ops.audiosocket_probe import audiosocket_loopback
from ari_agent.ops.loopback import HEARD_DBFS, STASIS_WAIT, prompt_until_heard, stasis_start_of
from ari_agent.ops.rtpprobe import RtpProbe, bind_in_range, tone
from ari_agent.ops.websocket_probe import websocket_loopback
from ari_agent.pool import POOL_MARK, broadcast_filter, filter_matches, peer_instance

Status = Literal["ok", "warn", "fail", "skip"]

REQUIRED_MODULES = ("res_ari.so", "res_http_websocket.so", "res_stasis.so", "app_stasis.so", "chan_rtp.so")
# What each media.transport needs beside the ARI stack (chan_rtp stays in the list for
# every transport: the agent's `call` and `test` tools speak over RTP).
TRANSPORT_MODULES: dict[str, tuple[str, ...]] = {
    "rtp": (),
    "audiosocket": ("res_audiosocket.so", "chan_audiosocket.so"),
    "websocket": ("res_websocket_client.so", "chan_websocket.so"),
}
EXTENSION_WAIT = 6.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def module_fix(module: str) -> str:
    return (
        f'asterisk -rx "module load {module}", and in modules.conf `load = {module}` '
        f"(remove any `noload = {module}`)"
    )


def _agent_running(settings: Settings, timeout: float = 1.0) -> bool:
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.http.port}/healthz", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # something answers there
    except (OSError, ValueError):
        return False


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url.strip()).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class Doctor:
    def __init__(self, settings: Settings, extension: str | None = None) -> None:
        self.settings = settings
        self.extension = extension
        self.ari: OpsAri = ops_client(settings)
        self.checks: list[Check] = []
        self.on_check: Callable[[Check], None] | None = None

    def _add(self, check: Check) -> Check:
        self.checks.append(check)
        if self.on_check is not None:
            self.on_check(check)
        return check

    def _skip(self, names: list[str], why: str) -> None:
        for name in names:
            self._add(Check(name, "skip", why))

    async def run(self) -> list[Check]:
        try:
            await self._run()
        finally:
            await self.ari.close()
        return self.checks

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    async def _run(self) -> None:
        later = ["modules", "app", "media"] + (["extension"] if self.extension else [])
        info = await self._check_ari()
        if info is None:
            self._skip(later, "ARI not usable")
            return
        modules_ok = await self._check_modules()
        app_registered = await self._check_app()
        if not modules_ok:
            self._skip(later[2:], "needs the modules above")
            return
        registered = False
        try:
            async with PrivateApp(self.settings, "doctor") as app:
                registered = True
                await self._check_media(app)
                if self.extension:
                    await self._check_extension(app, self.extension, app_registered)
        except AriError as exc:
            if registered:
                # Not the registration: ARI failed in the middle of a check (an answer that never came).
                check = Check(
                    "media",
                    "fail",
                    f"ARI failed during the check: {exc}",
                    "check Asterisk's log around this time for what held it up, then run doctor again",
                )
            else:
                check = Check(
                    "media",
                    "fail",
                    f"could not register doctor's own Stasis app: {exc}",
                    "check that res_http_websocket.so is loaded and nothing between here and "
                    "Asterisk blocks WebSocket upgrades",
                )
            self._add(check)

    # ------------------------------------------------------------------ 1-2

    async def _check_ari(self) -> dict[str, Any] | None:
        url = self.ari.url
        try:
            info = await self.ari.asterisk_info()
        except AriTlsError as exc:
            self._add(Check("ari", "ok", f"something answers at {url}"))
            self._add(
                Check(
                    "tls",
                    "fail",
                    str(exc),
                    f"set {CA_SETTING} to the CA that signed Asterisk's certificate, or check that "
                    "Asterisk serves TLS on that port (http.conf: tlsenable, tlsbindaddr)",
                )
            )
            self._skip(["credentials"], "no TLS connection")
            return None
        except AriUnavailable as exc:
            self._add(
                Check(
                    "ari",
                    "fail",
                    f"ARI not reachable at {url}: {exc}",
                    "start Asterisk, or set AGENT_ARI__URL to its HTTP server "
                    "(http.conf: enabled = yes, bindaddr, bindport)",
                )
            )
            self._skip(["credentials"], "ARI not reachable")
            return None
        except AriHttpError as exc:
            if exc.status == 401:
                self._add(Check("ari", "ok", f"ARI answers at {url}"))
                self._add(
                    Check(
                        "credentials",
                        "fail",
                        f"ARI rejected user {self.settings.ari.username!r} (HTTP 401)",
                        "set AGENT_ARI__USERNAME / AGENT_ARI__PASSWORD to a user of ari.conf "
                        "([name] type = user, password = ...), then `module reload res_ari.so`",
                    )
                )
                return None
            self._add(
                Check(
                    "ari",
                    "fail",
                    f"{url} answers HTTP {exc.status}, not ARI: {exc.message}",
                    "load res_ari.so and set `enabled = yes` in ari.conf; check the URL's port "
                    "and path prefix",
                )
            )
            self._skip(["credentials"], "ARI not reachable")
            return None
        version = (info.get("system") or {}).get("version", "?")
        self._add(Check("ari", "ok", f"ARI answers at {url} (Asterisk {version})"))
        self._add(self._tls_check())
        self._add(Check("credentials", "ok", f"user {self.settings.ari.username!r} accepted"))
        return info

    def _tls_check(self) -> Check:
        conf = self.settings.ari
        if not is_tls(conf.url):
            if _is_loopback_url(conf.url):
                return Check("tls", "ok", "plain HTTP on loopback (the ARI password stays on this host)")
            return Check(
                "tls",
                "warn",
                "plain HTTP to another host: the ARI password and call events cross the network in clear",
                "serve ARI over TLS (http.conf: tlsenable, tlsbindaddr, tlscertfile, tlsprivatekey) "
                "and use an https:// AGENT_ARI__URL",
            )
        if not conf.tls_verify:
            return Check(
                "tls", "warn", "TLS, certificate NOT verified", f"set {CA_SETTING}; {UNVERIFIED_WARNING}"
            )
        against = f"the CA in {conf.ca_file}" if conf.ca_file else "the system's CAs"
        return Check("tls", "ok", f"TLS, certificate verified against {against}")

    # ------------------------------------------------------------------ 3-4

    async def _check_modules(self) -> bool:
        missing: list[str] = []
        required = REQUIRED_MODULES + TRANSPORT_MODULES[self.settings.media.transport]
        for module in required:
            try:
                data = await self.ari.get_module(module)
            except AriNotFound:
                missing.append(module)
                continue
            if str(data.get("status", "Running")) != "Running":
                missing.append(module)
        transport = self.settings.media.transport
        if missing:
            for module in missing:
                why = f" (media.transport is {transport})" if module in TRANSPORT_MODULES[transport] else ""
                self._add(Check("modules", "fail", f"module {module} is not loaded{why}", module_fix(module)))
            return False
        self._add(Check("modules", "ok", "loaded: " + ", ".join(m.removesuffix(".so") for m in required)))
        return True

    async def _check_app(self) -> bool:
        app = self.settings.stasis_app
        try:
            await self.ari.get_application(app)
        except AriNotFound:
            if _agent_running(self.settings):
                self._add(
                    Check(
                        "app",
                        "fail",
                        f"the agent answers on port {self.settings.http.port} but app {app!r} is not "
                        "registered with this Asterisk",
                        "point the agent's AGENT_ARI__URL at this Asterisk and read its log for ARI errors",
                    )
                )
            else:
                self._add(
                    Check(
                        "app",
                        "warn",
                        f"app {app!r} is not registered: the agent is not running",
                        "start it: `ari-agent run` (or `make up`)",
                    )
                )
            return False
        self._add(Check("app", "ok", f"app {app!r} registered (the agent is connected)"))
        return True

    # ------------------------------------------------------------------ 5

    async def _check_media(self, app: PrivateApp) -> None:
        media = self.settings.media
        if media.transport in ("audiosocket", "websocket"):
            loopback = audiosocket_loopback if media.transport == "audiosocket" else websocket_loopback
            outcome = await loopback(self.ari, app, self.settings)
            self._add(Check("media", "ok" if outcome.ok else "fail", outcome.detail, outcome.fix))
            return
        advertised = media.advertised
        if _is_unspecified(advertised):
            self._add(
                Check(
                    "media",
                    "fail",
                    f"the agent would tell Asterisk to send RTP to {advertised}",
                    "set AGENT_MEDIA__ADVERTISE_HOST to this host's address as Asterisk sees it",
                )
            )
            return
        try:
            sock_a = bind_in_range(media.bind_host, media.port_min, media.port_max)
            sock_b = bind_in_range(media.bind_host, media.port_min, sock_a.getsockname()[1] - 1)
        except OSError as exc:
            self._add(
                Check(
                    "media",
                    "fail",
                    f"cannot bind RTP on {media.bind_host}: {exc}",
                    "set AGENT_MEDIA__BIND_HOST to an address of this host and free some of "
                    "AGENT_MEDIA__PORT_MIN..PORT_MAX",
                )
            )
            return
        probes = (RtpProbe(sock_a), RtpProbe(sock_b))
        tag = uuid.uuid4().hex[:8]
        bridge_id = f"doctor-{tag}"
        channel_ids = (f"doctor-{tag}-a", f"doctor-{tag}-b")
        try:
            for probe in probes:
                await probe.start()
            self._add(await self._loopback(app, bridge_id, channel_ids, probes, advertised))
        finally:
            for probe in probes:
                probe.close()
            for cid in channel_ids:
                await _quietly(self.ari.hangup(cid))
            await _quietly(self.ari.destroy_bridge(bridge_id))

    async def _loopback(
        self,
        app: PrivateApp,
        bridge_id: str,
        channel_ids: tuple[str, str],
        probes: tuple[RtpProbe, RtpProbe],
        advertised: str,
    ) -> Check:
        media = self.settings.media
        ports = f"{probes[0].port} and {probes[1].port}"
        try:
            await self.ari.create_bridge(bridge_id, "mixing", name="ari-agent doctor")
            for cid, probe in zip(channel_ids, probes, strict=True):
                await self.ari.external_media(cid, app.name, rtp_address(advertised, probe.port), "ulaw")
            for cid in channel_ids:
                started = await app.wait_for(stasis_start_of(cid), STASIS_WAIT)
                if started is None:
                    return Check(
                        "media",
                        "fail",
                        "the ExternalMedia channel never entered doctor's Stasis app",
                        "check Asterisk's log for chan_rtp errors",
                    )
                await self.ari.add_channel(bridge_id, cid)
            host = await self.ari.get_variable(channel_ids[0], "UNICASTRTP_LOCAL_ADDRESS")
            port = await self.ari.get_variable(channel_ids[0], "UNICASTRTP_LOCAL_PORT")
        except AriHttpError as exc:
            return Check(
                "media",
                "fail",
                f"Asterisk refused the ExternalMedia test: {exc}",
                "check that chan_rtp.so is loaded and Asterisk's log for the reason",
            )
        if not host or not port:
            return Check(
                "media",
                "fail",
                "the ExternalMedia channel did not report its RTP address",
                "upgrade Asterisk",
            )

        # Asterisk -> us: a prompt played into the bridge reaches both sockets.
        plays = await prompt_until_heard(self.ari, bridge_id, lambda: all(p.packets for p in probes))
        if not any(p.packets for p in probes):
            return Check(
                "media",
                "fail",
                f"no RTP from Asterisk arrived at {advertised}:{ports} (bound on {media.bind_host}; {plays})",
                f"set AGENT_MEDIA__ADVERTISE_HOST to an address of this host that Asterisk can reach, "
                f"and allow udp {media.port_min}-{media.port_max} from Asterisk in the firewall",
            )

        # Us -> Asterisk -> us: a tone sent into one channel comes out of the other.
        probes[0].remote = (host, int(port))
        probes[0].start_streaming()
        mark = len(probes[1].levels)
        await probes[0].play(tone(1.0))
        await asyncio.sleep(0.3)
        heard = probes[1].loudest(mark)
        if heard < HEARD_DBFS:
            return Check(
                "media",
                "fail",
                f"RTP sent to Asterisk at {host}:{port} never came back through the bridge "
                f"(loudest {heard:.0f} dBFS)",
                f"allow udp from this host to Asterisk's RTP ports (rtp.conf rtpstart-rtpend, here "
                f"{port}); behind NAT set AGENT_MEDIA__ADVERTISE_HOST to the address Asterisk sees",
            )
        return Check(
            "media",
            "ok",
            f"two-way audio with Asterisk at {host}:{port} via {advertised}:{ports} "
            f"(tone came back at {heard:.0f} dBFS)",
        )

    # ------------------------------------------------------------------ 6

    async def _check_extension(self, app: PrivateApp, target: str, app_registered: bool) -> None:
        self._add(await self._extension(app, target, app_registered))

    async def _extension(self, app: PrivateApp, target: str, app_registered: bool) -> Check:
        agent_app = self.settings.stasis_app
        pooled = self.settings.pool.enabled
        exten, _, context = target.partition("@")
        if not exten or not context:
            return Check("extension", "fail", f"{target!r} is not EXT@CONTEXT", "pass e.g. 100@ai-agent-demo")
        route = (
            f"StasisBroadcast(1000,^{self.settings.ari.app}{POOL_MARK},<profile>)"
            if pooled
            else f"Stasis({agent_app},<profile>)"
        )
        fix = (
            f"route it to the agent: in [{context}] `exten => {exten},1,{route}` "
            "(FreePBX: a Custom Destination to a custom context that does this)"
        )
        tag = uuid.uuid4().hex[:8]
        caller, callee = f"doctor-{tag}-1", f"doctor-{tag}-2"
        try:
            await self.ari.raw(
                "POST",
                "/channels",
                {
                    "endpoint": f"Local/{exten}@{context}/n",
                    "app": app.name,
                    "channelId": caller,
                    "otherChannelId": callee,
                    "callerId": '"ari-agent doctor" <0>',
                    "timeout": 10,
                },
            )
        except AriHttpError as exc:
            return Check("extension", "fail", f"{target} cannot be dialled: {exc.message}", fix)
        apps_seen: list[str] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + EXTENSION_WAIT
            while loop.time() < deadline:
                try:
                    channel = await self.ari.raw("GET", f"/channels/{callee}")
                except AriNotFound:
                    break  # the dialplan ended without Stasis
                dialplan = channel.get("dialplan") or {} if isinstance(channel, dict) else {}
                name = str(dialplan.get("app_name") or "")
                data = str(dialplan.get("app_data") or "")
                if name and (not apps_seen or apps_seen[-1] != name):
                    apps_seen.append(name)
                if name.lower() == "stasisbroadcast":
                    # Offered to the pool: a pool agent may claim the probe call and answer it.
                    app_filter = broadcast_filter(data)
                    if filter_matches(app_filter, agent_app):
                        return Check(
                            "extension",
                            "ok",
                            f"{target} offers calls to the pool: StasisBroadcast, filter "
                            f"{app_filter or '(none)'} matches {agent_app}",
                        )
                    return Check(
                        "extension",
                        "fail",
                        f"{target} runs StasisBroadcast with filter {app_filter!r}, "
                        f"which does not match {agent_app}",
                        fix,
                    )
                if name.lower() == "stasis":
                    entered = data.split(",")[0].strip()
                    # In a pool, Stasis() of any pool agent's app (a fallback chain) reaches the pool.
                    if entered == agent_app or (
                        pooled and peer_instance(self.settings.ari.app, entered) is not None
                    ):
                        return Check("extension", "ok", f"{target} enters Stasis({agent_app})")
                    return Check(
                        "extension",
                        "fail",
                        f"{target} enters Stasis({entered}), not Stasis({agent_app})",
                        fix,
                    )
                status = await self.ari.get_variable(callee, "STASISSTATUS")
                if status:
                    # Stasis() already returned: with the app unregistered it returns at once.
                    if not app_registered:
                        return Check(
                            "extension",
                            "warn",
                            f"{target} runs Stasis() (STASISSTATUS={status}); the app is not registered, "
                            "so it could not be confirmed to be the agent's",
                            "start the agent and run doctor again",
                        )
                    return Check("extension", "fail", f"{target} left Stasis() at once ({status})", fix)
                await asyncio.sleep(0.1)
        finally:
            await _quietly(self.ari.hangup(caller))
        ran = ", ".join(apps_seen) or "nothing we could see"
        return Check("extension", "fail", f"{target} never reached Stasis({agent_app}) (it ran: {ran})", fix)


async def _quietly(aw: Awaitable[Any]) -> None:
    with contextlib.suppress(AriError):
        await aw


async def run_doctor(
    settings: Settings, extension: str | None = None, on_check: Callable[[Check], None] | None = None
) -> list[Check]:
    doctor = Doctor(settings, extension)
    doctor.on_check = on_check
    return await doctor.run()
