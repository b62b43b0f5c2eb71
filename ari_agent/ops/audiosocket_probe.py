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
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ari_agent.ari.client import AriError, AriHttpError
from ari_agent.ari.events import Event, StasisStart
from ari_agent.config import Settings
from ari_agent.errors import MediaError
from ari_agent.media.audiosocket_leg import SLIN8, AudioSocketLeg, AudioSocketServer
from ari_agent.media.codecs import SESSION_SAMPLE_RATE, Pcm
from ari_agent.media.pacer import OutboundPacer
from ari_agent.media.transport import rtp_address
from ari_agent.ops.ariapp import OpsAri, PrivateApp
from ari_agent.ops.rtpprobe import level_dbfs, tone

HEARD_DBFS = -35.0
PROMPT = "sound:beep"
STASIS_WAIT = 5.0
INBOUND_WAIT = 3.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    fix: str = ""


class Ear:
    """What one leg heard: the level of each chunk handed on (on the receive clock)."""

    def __init__(self) -> None:
        self.levels: list[float] = []

    def __call__(self, pcm: Pcm) -> None:
        self.levels.append(level_dbfs(pcm))

    def loudest(self, since: int) -> float:
        return max(self.levels[since:], default=-90.0)


def stasis_start_of(channel_id: str) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, StasisStart) and event.channel.id == channel_id


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
    ears = (Ear(), Ear())
    legs = tuple(server.expect(SLIN8, ear, jitter_ms=0) for ear in ears)
    tag = uuid.uuid4().hex[:8]
    bridge_id = f"doctor-{tag}"
    channel_ids = (f"doctor-{tag}-a", f"doctor-{tag}-b")
    try:
        return await _run(ari, app, bridge_id, channel_ids, legs, ears, adv_host, port, where)
    finally:
        for leg in legs:
            leg.close()
        await server.close()
        for cid in channel_ids:
            with contextlib.suppress(AriError):
                await ari.hangup(cid)
        with contextlib.suppress(AriError):
            await ari.destroy_bridge(bridge_id)


async def _run(
    ari: OpsAri,
    app: PrivateApp,
    bridge_id: str,
    channel_ids: tuple[str, str],
    legs: tuple[AudioSocketLeg, ...],
    ears: tuple[Ear, Ear],
    host: str,
    port: int,
    where: str,
) -> Outcome:
    reach_fix = (
        "set AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_HOST (and _PORT behind a port mapping) to where "
        "Asterisk reaches this host, and allow tcp to it from Asterisk"
    )
    try:
        await ari.create_bridge(bridge_id, "mixing", name="ari-agent doctor")
        for cid, leg in zip(channel_ids, legs, strict=True):
            await ari.external_media(
                cid,
                app.name,
                rtp_address(host, port),
                "slin",
                encapsulation="audiosocket",
                transport="tcp",
                data=str(leg.uuid),
            )
        for cid in channel_ids:
            if await app.wait_for(stasis_start_of(cid), STASIS_WAIT) is None:
                return Outcome(
                    False,
                    "the AudioSocket channel never entered doctor's Stasis app",
                    "check Asterisk's log for chan_audiosocket errors",
                )
            await ari.add_channel(bridge_id, cid)
    except AriHttpError as exc:
        # Asterisk answers 500 when it cannot connect to the address it was given.
        return Outcome(False, f"Asterisk could not open AudioSocket to {where}: {exc}", reach_fix)
    for leg in legs:
        try:
            await asyncio.wait_for(leg.connected.wait(), INBOUND_WAIT)
        except TimeoutError:
            return Outcome(False, f"Asterisk connected to {where} but never sent the call's UUID", reach_fix)

    # Asterisk -> us: a prompt played into the bridge reaches both connections.
    with contextlib.suppress(AriError):
        await ari.raw("POST", f"/bridges/{bridge_id}/play", {"media": PROMPT})
    for _ in range(int(INBOUND_WAIT / 0.05)):
        if all(leg.packets_in for leg in legs):
            break
        await asyncio.sleep(0.05)
    if not any(leg.packets_in for leg in legs):
        return Outcome(False, f"no audio from Asterisk arrived over AudioSocket at {where}", reach_fix)

    # Us -> Asterisk -> us: a tone sent on one connection comes out of the other.
    sender = legs[0]
    pacer = OutboundPacer(sender.send, SLIN8, rtp=False)
    pacer.start()
    mark = len(ears[1].levels)
    try:
        pacer.enqueue(tone(1.0, rate=SESSION_SAMPLE_RATE))
        await asyncio.wait_for(pacer.wait_idle(), 5)
        await asyncio.sleep(0.3)
    finally:
        await pacer.stop()
    heard = ears[1].loudest(mark)
    if heard < HEARD_DBFS:
        return Outcome(
            False,
            f"audio sent over AudioSocket never came back through the bridge (loudest {heard:.0f} dBFS)",
            "check Asterisk's log for AudioSocket errors",
        )
    return Outcome(True, f"two-way audio over AudioSocket via {where} (tone came back at {heard:.0f} dBFS)")
