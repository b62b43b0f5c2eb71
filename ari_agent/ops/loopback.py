"""What ``doctor``'s two-way audio checks over a socket transport share.

AudioSocket and WebSocket checks both put two ExternalMedia channels in one
mixing bridge with a leg of ours at the end of each: a prompt played into the
bridge must reach both legs (Asterisk sends us audio), and a tone sent on one
leg must come out of the other (our frames -> Asterisk -> us). How the
channels are created and the legs connected is each transport's own; the
bridge, the prompt, the tone and the verdict are here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ari_agent.ari.client import AriError
from ari_agent.ari.events import Event, StasisStart
from ari_agent.media.codecs import SESSION_SAMPLE_RATE, Pcm
from ari_agent.media.leg import ReceiveSide
from ari_agent.media.pacer import OutboundPacer
from ari_agent.ops.ariapp import OpsAri, PrivateApp
from ari_agent.ops.rtpprobe import level_dbfs, tone

HEARD_DBFS = -35.0  # a -12 dBFS tone through a µ-law bridge arrives far above this; silence far below
PROMPT = "sound:beep"
STASIS_WAIT = 5.0
# Generous: a check that passes returns as soon as the audio arrives, and on a busy host the
# bridge can take a second or more to start mixing (a failed CI run of the AudioSocket check).
INBOUND_WAIT = 8.0
PROMPT_EVERY = 1.0  # a short prompt played before the bridge mixes is lost: play it again

L = TypeVar("L", bound=ReceiveSide)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Transport:
    """How a transport is named in the findings."""

    name: str  # "two-way audio over <name> via ..."
    over: str  # "no audio ... arrived over <over>"
    stasis_log: str  # what Asterisk's log says when the channel does not come up
    echo_log: str  # ... and when our audio does not go through


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


@dataclass(frozen=True)
class Rig(Generic[L]):
    """Two legs, each with its ear, and the ids of their channels and of the bridge between them."""

    bridge_id: str
    channel_ids: tuple[str, str]
    legs: tuple[L, L]
    ears: tuple[Ear, Ear]


def make_rig(make_leg: Callable[[Ear], L]) -> Rig[L]:
    ears = (Ear(), Ear())
    tag = uuid.uuid4().hex[:8]
    return Rig(
        bridge_id=f"doctor-{tag}",
        channel_ids=(f"doctor-{tag}-a", f"doctor-{tag}-b"),
        legs=(make_leg(ears[0]), make_leg(ears[1])),
        ears=ears,
    )


async def bridge_channels(ari: OpsAri, app: PrivateApp, rig: Rig[L], transport: Transport) -> Outcome | None:
    """Each channel into the bridge once it is in Stasis; None when both are. Raises AriHttpError."""
    for cid in rig.channel_ids:
        if await app.wait_for(stasis_start_of(cid), STASIS_WAIT) is None:
            return Outcome(
                False,
                f"the {transport.name} channel never entered doctor's Stasis app",
                f"check Asterisk's log for {transport.stasis_log} errors",
            )
        await ari.add_channel(rig.bridge_id, cid)
    return None


async def prompt_until_heard(ari: OpsAri, bridge_id: str, heard: Callable[[], bool]) -> str:
    """Play the prompt into the bridge until ``heard`` (every leg got audio) or INBOUND_WAIT passes.

    Returns how the plays went ("3 prompts played, 1 refused (last: ...)"), for a failed check's detail.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INBOUND_WAIT
    next_prompt = loop.time()
    played = 0
    refused: list[str] = []
    while not heard() and loop.time() < deadline:
        if loop.time() >= next_prompt:
            played += 1
            try:
                await ari.raw("POST", f"/bridges/{bridge_id}/play", {"media": PROMPT})
            except AriError as exc:
                refused.append(str(exc))
            next_prompt = loop.time() + PROMPT_EVERY
        await asyncio.sleep(0.05)
    summary = f"{played} prompts played"
    if refused:
        summary += f", {len(refused)} refused (last: {refused[-1]})"
    return summary


def leg_state(leg: ReceiveSide) -> str:
    """What a leg got, for a failed check's detail: frames taken and dropped by reason."""
    drops = ", ".join(f"{kind} {n}" for kind, n in sorted(leg.counters.counts.items())) or "none"
    return f"{leg.packets_in} frames in, dropped: {drops}"


async def exchange(
    ari: OpsAri, rig: Rig[L], outbound: OutboundPacer, transport: Transport, where: str, fix: str
) -> Outcome:
    """Prompt in, tone across: the verdict on bridged, connected legs (``outbound`` sends on the first)."""
    # Asterisk -> us: a prompt played into the bridge reaches both connections.
    plays = await prompt_until_heard(ari, rig.bridge_id, lambda: all(leg.packets_in for leg in rig.legs))
    if not any(leg.packets_in for leg in rig.legs):
        # What was seen goes in the detail: a check that fails only on a busy host needs it.
        legs = "; ".join(f"leg {i + 1}: {leg_state(leg)}" for i, leg in enumerate(rig.legs))
        return Outcome(
            False, f"no audio from Asterisk arrived over {transport.over} at {where} ({plays}; {legs})", fix
        )

    # Us -> Asterisk -> us: a tone sent on one connection comes out of the other.
    outbound.start()
    mark = len(rig.ears[1].levels)
    try:
        outbound.enqueue(tone(1.0, rate=SESSION_SAMPLE_RATE))
        await asyncio.wait_for(outbound.wait_idle(), 5)
        await asyncio.sleep(0.3)
    except TimeoutError:
        pass  # judged by what came back
    finally:
        await outbound.stop()
    heard = rig.ears[1].loudest(mark)
    if heard < HEARD_DBFS:
        return Outcome(
            False,
            f"audio sent over {transport.over} never came back through the bridge (loudest {heard:.0f} dBFS)",
            f"check Asterisk's log for {transport.echo_log} errors",
        )
    return Outcome(
        True, f"two-way audio over {transport.name} via {where} (tone came back at {heard:.0f} dBFS)"
    )


async def hang_up(ari: OpsAri, rig: Rig[L]) -> None:
    """Both channels and the bridge gone, whatever state they reached (the legs are the caller's)."""
    for cid in rig.channel_ids:
        with contextlib.suppress(AriError):
            await ari.hangup(cid)
    with contextlib.suppress(AriError):
        await ari.destroy_bridge(rig.bridge_id)
