"""The operator commands' RTP leg and turn detection, on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import numpy as np
import pytest

from ari_agent.ari.client import AriError
from ari_agent.ops.ariapp import OpsAri
from ari_agent.ops.loopback import Ear, make_rig
from ari_agent.ops.rtpprobe import RtpProbe, bind_in_range, level_dbfs, tone
from ari_agent.ops.testcall import Ears


async def test_probe_streams_silence_and_plays_audio_in_order() -> None:
    a = RtpProbe(bind_in_range("127.0.0.1", 47000, 47099))
    b = RtpProbe(bind_in_range("127.0.0.1", 47000, a.port - 1))
    assert b.port < a.port <= 47099
    await a.start()
    await b.start()
    try:
        a.remote = ("127.0.0.1", b.port)
        a.start_streaming()
        await a.play(tone(0.2, dbfs=-12.0))
        await a.play(np.zeros(0, dtype=np.int16))  # nothing to play: done at once
        for _ in range(100):
            if b.packets >= 10:
                break
            await asyncio.sleep(0.02)
    finally:
        a.close()
        b.close()
    assert b.packets >= 10 and b.bad_packets == 0
    # The tone's 10 packets arrive at its level (a -12 dBFS peak sine is -15 dBFS RMS), then silence.
    assert sum(1 for level in b.levels if -16.0 < level < -14.0) == 10
    assert all(level == -90.0 for level in b.levels[10:])
    assert b.first_source == ("127.0.0.1", a.port)


async def test_bind_in_range_skips_ports_in_use() -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 47199))
    try:
        sock = bind_in_range("127.0.0.1", 47190, 47199)
        assert sock.getsockname()[1] == 47198
        sock.close()
    finally:
        busy.close()


def test_levels() -> None:
    assert level_dbfs(np.zeros(160, dtype=np.int16)) == -90.0
    assert abs(level_dbfs(tone(0.02, dbfs=-12.0)) - (-12.0 - 3.0)) < 0.5  # a sine's RMS is 3 dB under peak


def test_ears_find_a_turn_and_its_end() -> None:
    ears = Ears(turn_silence=1.0)
    t = 100.0
    ears.hear(t, -20.0)  # one loud packet: a click, not speech yet
    assert not ears.onset.is_set()
    ears.hear(t + 0.02, -80.0)
    for i in range(10):
        ears.hear(t + 1 + i * 0.02, -20.0)
    assert ears.onset.is_set() and ears.started_at == t + 1
    ears.tick(t + 1.5)
    assert not ears.done.is_set()
    ears.tick(t + 1.18 + 1.0)
    assert ears.done.is_set() and not ears.speaking
    ears.next_turn()
    assert not ears.onset.is_set() and not ears.done.is_set()


def test_loopback_rig_pairs_each_leg_with_its_own_ear() -> None:
    from ari_agent.media.audiosocket_leg import SLIN8, AudioSocketServer

    server = AudioSocketServer("127.0.0.1", 0)
    rig = make_rig(lambda ear: server.expect(SLIN8, ear, jitter_ms=0))
    a, b = rig.channel_ids
    assert a != b and a.startswith(rig.bridge_id + "-") and b.startswith(rig.bridge_id + "-")
    assert rig.legs[0] is not rig.legs[1] and rig.ears[0] is not rig.ears[1]
    assert make_rig(lambda ear: server.expect(SLIN8, ear, jitter_ms=0)).bridge_id != rig.bridge_id
    for leg in rig.legs:
        leg.close()


def test_ear_reports_the_loudest_chunk_since_a_mark() -> None:
    ear = Ear()
    assert ear.loudest(0) == -90.0  # nothing heard yet
    ear(tone(0.02, dbfs=-6.0))
    mark = len(ear.levels)
    ear(np.zeros(160, dtype=np.int16))
    ear(tone(0.02, dbfs=-30.0))
    assert -35.0 < ear.loudest(mark) < -31.0  # a sine's RMS is 3 dB under its peak
    assert -11.0 < ear.loudest(0) < -7.0


async def test_prompt_is_played_again_until_every_leg_hears_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A prompt played before the bridge mixes is lost: the check plays it again, and stops
    # playing once every leg has heard audio.
    from ari_agent.ops import loopback

    monkeypatch.setattr(loopback, "PROMPT_EVERY", 0.1)
    plays: list[tuple[str, str]] = []

    class Ari:
        async def raw(self, method: str, path: str, params: dict[str, str]) -> None:
            plays.append((path, params["media"]))

    summary = await loopback.prompt_until_heard(cast(OpsAri, Ari()), "b1", lambda: len(plays) >= 3)
    assert plays == [("/bridges/b1/play", loopback.PROMPT)] * 3
    assert summary == "3 prompts played"


async def test_prompt_gives_up_after_the_inbound_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from ari_agent.ops import loopback

    monkeypatch.setattr(loopback, "PROMPT_EVERY", 0.1)
    monkeypatch.setattr(loopback, "INBOUND_WAIT", 0.35)
    plays: list[str] = []

    class Ari:
        async def raw(self, method: str, path: str, params: dict[str, str]) -> None:
            plays.append(path)
            raise AriError("bridge gone")  # a failed play is not the check's verdict

    summary = await loopback.prompt_until_heard(cast(OpsAri, Ari()), "b1", lambda: False)
    assert 3 <= len(plays) <= 5
    # How the plays went is kept for the check's detail.
    assert summary == f"{len(plays)} prompts played, {len(plays)} refused (last: bridge gone)"
