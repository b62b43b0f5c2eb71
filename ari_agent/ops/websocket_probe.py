"""``doctor``'s two-way audio check over chan_websocket (media.transport = websocket).

Like the RTP and AudioSocket checks: two ExternalMedia channels in one
mixing bridge, here WebSocket ones: with ``connection_type=server`` doctor
connects to them at the media URL the agent would use; with ``client``
Asterisk connects to doctor's listener on the agent's listen address through
websocket_client.conf (when the agent holds that port, the server path is
checked instead and the detail says so), over wss:// with the agent's own
certificate when TLS is set, so Asterisk's trust in it is what is checked. A prompt played into the
bridge must reach both connections (the URL is right and Asterisk sends
audio), and a tone sent on one must come out of the other (our frames ->
Asterisk's play-out -> us).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ari_agent.ari.client import AriHttpError
from ari_agent.ari.tls import client_ssl
from ari_agent.config import Settings
from ari_agent.errors import MediaError
from ari_agent.media.codecs import Pcm
from ari_agent.media.listener_tls import settings_ssl
from ari_agent.media.websocket_leg import SLIN8, WebSocketLeg, media_base, media_url
from ari_agent.media.ws_listener import WebSocketMediaServer
from ari_agent.ops.ariapp import OpsAri, PrivateApp
from ari_agent.ops.loopback import Outcome, Rig, Transport, bridge_channels, exchange, hang_up, make_rig

WEBSOCKET = Transport(
    name="WebSocket", over="the WebSocket", stasis_log="chan_websocket", echo_log="chan_websocket"
)

URL_FIX = (
    "set AGENT_MEDIA__WEBSOCKET__URL to Asterisk's HTTP server as this host reaches it "
    "(ws://host:port, wss:// with TLS), and allow tcp to it"
)
CLIENT_FIX = (
    "check that Asterisk's websocket_client.conf has the section AGENT_MEDIA__WEBSOCKET__CLIENT_NAME "
    "names, that its uri reaches AGENT_MEDIA__WEBSOCKET__LISTEN_HOST:LISTEN_PORT from Asterisk, and "
    "that its username/password are AGENT_MEDIA__WEBSOCKET__USERNAME/PASSWORD"
)
TLS_FIX = (
    "; with AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE set, the section needs tls_enabled = yes and "
    "ca_list_file = the CA that signed that certificate (a file Asterisk can read), and the "
    "certificate's common name or DNS name must be the uri's host; Asterisk's log says which failed"
)


async def websocket_loopback(ari: OpsAri, app: PrivateApp, settings: Settings) -> Outcome:
    wsc = settings.media.websocket
    if wsc.connection_type == "client":
        listener = await _client_listener(settings)
        if listener is not None:
            try:
                return await _client_loopback(ari, app, settings, listener)
            finally:
                await listener.close()
        held = await _server_loopback(ari, app, settings)
        # The agent holds the listener's port: Asterisk's connection to it cannot be tried here.
        note = (
            f" (connection_type=client: the agent holds {settings.media.websocket_listen_host}:"
            f"{wsc.listen_port}, so only the server path was checked)"
        )
        return Outcome(held.ok, held.detail + note, held.fix)
    return await _server_loopback(ari, app, settings)


async def _client_listener(settings: Settings) -> WebSocketMediaServer | None:
    wsc = settings.media.websocket
    credentials = (
        (wsc.username, wsc.password.get_secret_value())
        if wsc.username is not None and wsc.password is not None
        else None
    )
    listener = WebSocketMediaServer(
        settings.media.websocket_listen_host,
        wsc.listen_port,
        hello_timeout=wsc.connect_timeout,
        credentials=credentials,
        # The agent's own certificate: what Asterisk must trust in a call, it must trust here.
        ssl_context=settings_ssl(wsc.tls_cert_file, wsc.tls_key_file),
    )
    try:
        await listener.start()
    except MediaError:
        return None
    return listener


async def _client_loopback(
    ari: OpsAri, app: PrivateApp, settings: Settings, listener: WebSocketMediaServer
) -> Outcome:
    wsc = settings.media.websocket
    fix = CLIENT_FIX + (TLS_FIX if wsc.tls_cert_file is not None else "")
    where = (
        f"websocket_client.conf [{wsc.client_name}] -> {listener.scheme}://{listener.host}:{listener.port}"
    )
    rig = make_rig(_leg)
    for leg, cid in zip(rig.legs, rig.channel_ids, strict=True):
        listener.expect(cid, leg)

    async def connect() -> Outcome | None:
        try:
            await ari.create_bridge(rig.bridge_id, "mixing", name="ari-agent doctor")
            for cid in rig.channel_ids:
                await ari.external_media(
                    cid,
                    app.name,
                    wsc.client_name,
                    "slin",
                    encapsulation="none",
                    transport="websocket",
                    connection_type="client",
                )
        except AriHttpError as exc:
            return Outcome(
                False, f"Asterisk refused a WebSocket (client) ExternalMedia channel: {exc}", CLIENT_FIX
            )
        try:
            for leg in rig.legs:
                await asyncio.wait_for(leg.connected.wait(), wsc.connect_timeout)
        except TimeoutError:
            refused = ", ".join(f"{k}={v}" for k, v in sorted(listener.rejected.items())) or "none"
            return Outcome(
                False,
                f"Asterisk did not connect to {where} within {wsc.connect_timeout:g} s "
                f"(connections refused: {refused})",
                fix,
            )
        return None

    try:
        return await _exchange(ari, app, rig, where, connect, fix)
    finally:
        await _tear_down(ari, rig)


def _leg(ear: Callable[[Pcm], None]) -> WebSocketLeg:
    return WebSocketLeg(SLIN8, ear, None, jitter_ms=0)


async def _tear_down(ari: OpsAri, rig: Rig[WebSocketLeg]) -> None:
    for leg in rig.legs:
        leg.close()
        await leg.closed_io()
    await hang_up(ari, rig)


async def _server_loopback(ari: OpsAri, app: PrivateApp, settings: Settings) -> Outcome:
    base = settings.media.websocket.url or media_base(settings.ari.url)
    where = media_url(base, "<id>")
    rig = make_rig(_leg)

    async def connect() -> Outcome | None:
        return await _connect_server(ari, app, settings, rig, base, where)

    try:
        return await _exchange(ari, app, rig, where, connect, URL_FIX)
    finally:
        await _tear_down(ari, rig)


async def _connect_server(
    ari: OpsAri,
    app: PrivateApp,
    settings: Settings,
    rig: Rig[WebSocketLeg],
    base: str,
    where: str,
) -> Outcome | None:
    ids: list[str] = []
    try:
        await ari.create_bridge(rig.bridge_id, "mixing", name="ari-agent doctor")
        for cid in rig.channel_ids:
            channel = await ari.external_media(
                cid,
                app.name,
                None,
                "slin",
                encapsulation="none",
                transport="websocket",
                connection_type="server",
            )
            ids.append(channel.channelvars.get("MEDIA_WEBSOCKET_CONNECTION_ID", ""))
    except AriHttpError as exc:
        return Outcome(
            False,
            f"Asterisk refused a WebSocket ExternalMedia channel: {exc}",
            "load chan_websocket (Asterisk 22.6+, 21.11+ or 20.16+)",
        )
    if not all(ids):
        return Outcome(False, "Asterisk did not say the channel's MEDIA_WEBSOCKET_CONNECTION_ID", "")
    ari_settings = settings.ari
    for leg, connection_id in zip(rig.legs, ids, strict=True):
        url = media_url(base, connection_id)
        ssl = client_ssl(url.replace("wss://", "https://", 1), ari_settings.ca_file, ari_settings.tls_verify)
        try:
            await leg.connect(url, ssl=ssl, connect_timeout=settings.media.websocket.connect_timeout)
        except MediaError as exc:
            return Outcome(False, f"cannot open the media WebSocket at {where}: {exc}", URL_FIX)
    return None


async def _exchange(
    ari: OpsAri,
    app: PrivateApp,
    rig: Rig[WebSocketLeg],
    where: str,
    connect: Callable[[], Awaitable[Outcome | None]],
    fix: str,
) -> Outcome:
    failed = await connect()
    if failed is not None:
        return failed
    # The channel is answered, and enters Stasis, once its WebSocket is connected.
    try:
        failed = await bridge_channels(ari, app, rig, WEBSOCKET)
    except AriHttpError as exc:
        return Outcome(False, f"Asterisk would not bridge the WebSocket channels: {exc}", "")
    if failed is not None:
        return failed
    return await exchange(ari, rig, rig.legs[0].make_outbound(), WEBSOCKET, where, fix)
