"""The speaker holds and resumes the agent's audio; the record says what the caller heard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from ari_agent.conversation.records import Turn
from ari_agent.conversation.speech import Reply, Speaker
from ari_agent.media.codecs import ULAW
from ari_agent.media.pacer import OutboundPacer
from providers.base import TTS

SENTENCE = "one two three four five six seven eight nine ten"


class ToneTTS(TTS):
    """100 ms of tone per word, all at once."""

    name = "tone"

    async def _synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        n = sample_rate // 10 * len(text.split())
        yield (np.sin(np.arange(n) / 3) * 8000).astype("<i2").tobytes()


class Wire(list[bytes]):
    """The packets sent; ``wait_for(n)`` until n have gone out."""

    def __init__(self) -> None:
        super().__init__()
        self._grew = asyncio.Event()

    def send(self, packet: bytes) -> None:
        self.append(packet)
        self._grew.set()

    async def wait_for(self, n: int) -> None:
        while len(self) < n:
            self._grew.clear()
            await asyncio.wait_for(self._grew.wait(), 2)


async def _speaker() -> tuple[Speaker, OutboundPacer, list[Turn], Wire]:
    sent = Wire()
    pacer = OutboundPacer(sent.send, ULAW)
    pacer.start()
    turns: list[Turn] = []
    return Speaker(pacer, ToneTTS(), turns), pacer, turns, sent


async def test_paused_then_resumed_the_record_keeps_the_whole_utterance() -> None:
    speaker, pacer, turns, sent = await _speaker()
    try:
        saying = asyncio.create_task(speaker.say(Reply, SENTENCE))
        await sent.wait_for(10)
        assert speaker.pause()
        held = len(sent)
        await asyncio.sleep(0.1)
        assert len(sent) == held and not saying.done()
        assert speaker.resume()
        spoken = await asyncio.wait_for(saying, 5)
        assert not spoken.interrupted
        assert turns[-1].text == SENTENCE and not turns[-1].interrupted
        assert len(sent) == 50  # 1 s: every frame once
    finally:
        await pacer.stop()


async def test_paused_then_cut_the_record_keeps_what_was_heard_before_the_pause() -> None:
    speaker, pacer, turns, sent = await _speaker()
    try:
        saying = asyncio.create_task(speaker.say(Reply, SENTENCE))
        await sent.wait_for(15)  # 300 ms: three words out
        speaker.pause()
        await asyncio.sleep(0.1)  # held: the caller is talking
        assert speaker.interrupt()
        saying.cancel()
        spoken = await asyncio.gather(saying, return_exceptions=True)
        assert isinstance(spoken[0], asyncio.CancelledError)
        heard = turns[-1]
        assert heard.interrupted
        words = round(len(sent) / 5)  # 5 frames a word; the cut word counts by its share
        assert heard.text == " ".join(SENTENCE.split()[:words]) and 3 <= words <= 4
        assert not speaker.resume()  # nothing held any more
    finally:
        await pacer.stop()
