"""``doctor``'s two-way audio check over AudioSocket (media.transport = audiosocket).

Like the RTP check: two ExternalMedia channels in one mixing bridge, here
AudioSocket ones connecting to a listener of ours on the agent's listen host.
A prompt played into the bridge must reach both connections (Asterisk can
connect to the advertised address and sends audio), and a tone sent on one
must come out of the other (our frames -> Asterisk -> us). The listener takes
the configured port when it is free (the agent not running); otherwise a
free one on the same host, which proves the address and not the port.
"""

from __future__ import annotations

import asyncio

from ari_agent.ari.client import AriHttpError
from ari_agent.config import Settings
from ari_agent.errors import MediaError
from ari_agent.media.audiosocket_leg import SLIN8, AudioSocketLeg, AudioSocketServer
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.transport import rtp_address
from ari_agent.ops.ariapp import OpsAri, PrivateApp
from ari_agent.ops.loopback import (
    INBOUND_WAIT,
    Outcome,
    Rig,
    Transport,
    bridge_channels,
    exchange,
    hang_up,
    make_rig,
)

AUDIOSOCKET = Transport(
    name="AudioSocket", over="AudioSocket", stasis_log="chan_audiosocket", echo_log="AudioSocket"
)


async def _listen(settings: Settings) -> tuple[AudioSocketServer, bool]:
    """A listener on the configured address: its port if free, else any (True: the configured one)."""
    host = settings.media.audiosocket_listen_host
    server = AudioSocketServer(host, settings.media.audiosocket.listen_port)
    try:
        await server.start()
        return server, True
    except MediaError:
        server = AudioSocketServer(host, 0)
        await server.start()
        return server, False


async def audiosocket_loopback(ari: OpsAri, app: PrivateApp, settings: Settings) -> Outcome:
    adv_host, adv_port = settings.media.audiosocket_advertised
    try:
        server, own_port = await _listen(settings)
    except MediaError as exc:
        return Outcome(
            False,
            f"cannot listen for AudioSocket: {exc}",
            "set AGENT_MEDIA__AUDIOSOCKET__LISTEN_HOST to an address of this host",
        )
    port = adv_port if own_port else server.port
    where = f"{adv_host}:{port}" + ("" if own_port else " (a free port: the agent holds its own)")
    rig = make_rig(lambda ear: server.expect(SLIN8, ear, jitter_ms=0))
    try:
        return await _run(ari, app, rig, adv_host, port, where)
    finally:
        for leg in rig.legs:
            leg.close()
        await server.close()
        await hang_up(ari, rig)


async def _run(
    ari: OpsAri, app: PrivateApp, rig: Rig[AudioSocketLeg], host: str, port: int, where: str
) -> Outcome:
    reach_fix = (
        "set AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_HOST (and _PORT behind a port mapping) to where "
        "Asterisk reaches this host, and allow tcp to it from Asterisk"
    )
    try:
        await ari.create_bridge(rig.bridge_id, "mixing", name="ari-agent doctor")
        for cid, leg in zip(rig.channel_ids, rig.legs, strict=True):
            await ari.external_media(
                cid,
                app.name,
                rtp_address(host, port),
                "slin",
                encapsulation="audiosocket",
                transport="tcp",
                data=str(leg.uuid),
            )
        failed = await bridge_channels(ari, app, rig, AUDIOSOCKET)
        if failed is not None:
            return failed
    except AriHttpError as exc:
        # Asterisk answers 500 when it cannot connect to the address it was given.
        return Outcome(False, f"Asterisk could not open AudioSocket to {where}: {exc}", reach_fix)
    for leg in rig.legs:
        try:
            await asyncio.wait_for(leg.connected.wait(), INBOUND_WAIT)
        except TimeoutError:
            return Outcome(False, f"Asterisk connected to {where} but never sent the call's UUID", reach_fix)
    pacer = OutboundPacer(rig.legs[0].send, SLIN8, rtp=False)
    outcome = await exchange(ari, rig, pacer, AUDIOSOCKET, where, reach_fix)
    if outcome.ok:
        return outcome
    seen = [
        f"leg {i + 1}: {'closed by Asterisk' if leg.disconnected else 'connected'}, "
        f"{leg.asterisk_errors} errors from Asterisk"
        for i, leg in enumerate(rig.legs)
    ]
    return Outcome(False, f"{outcome.detail} ({'; '.join(seen)})", outcome.fix)
