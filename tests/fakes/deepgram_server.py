"""A fake Deepgram speaking the ``listen`` v1 and ``speak`` v1 WebSocket protocols.

Driven through the real ``deepgram-sdk``: point ``DeepgramClientEnvironment``
(option ``url`` of our adapters) at ``ws://127.0.0.1:PORT``.

Listen: each turn of ``transcripts`` is answered either when ``bytes_per_turn``
audio bytes have arrived (an interim result half way, then a final with
``speech_final`` and an ``UtteranceEnd``, as Deepgram's endpointing does) or
when the client sends ``Finalize`` (a final with ``from_finalize``).
A socket opened with ``language=multi`` gets, like Nova-3 multilingual, the
language of each result in the best alternative's ``languages`` and in each
word's ``language`` (``languages[i]`` for ``transcripts[i]``, "en" if unset).
``SpeechStarted`` goes out on the first audio of a turn. ``reject_status`` answers the
handshake with an HTTP error (the first ``reject_times`` only, when set).
``reset_after_bytes``
drops the TCP connection without a close frame, mid-utterance.

Speak: ``Speak`` text is held until ``Flush``, then answered with linear16
audio (a 440 Hz tone, ``tts_ms_per_char`` per character) at the requested
``sample_rate`` in ``tts_chunk_ms`` messages, then ``Flushed``. ``Clear``
stops the audio and answers ``Cleared``.

Everything received is recorded in ``listens`` / ``speaks`` for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class ListenRecord:
    query: dict[str, str]
    authorization: str | None
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)  # KeepAlive, Finalize, CloseStream in order
    reset: bool = False


@dataclass
class SpeakRecord:
    query: dict[str, str]
    authorization: str | None
    texts: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)  # Flush, Clear, Close in order
    audio_bytes_sent: int = 0


def tone(samples: int, sample_rate: int, start: int = 0) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * (start + i) / sample_rate)))
        for i in range(samples)
    )


def _results(
    text: str,
    *,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    start: float,
    language: str | None = None,
) -> str:
    words: list[dict[str, Any]] = [
        {"word": w, "start": start + i * 0.3, "end": start + i * 0.3 + 0.25, "confidence": 0.97}
        for i, w in enumerate(text.split())
    ]
    alternative: dict[str, Any] = {"transcript": text, "confidence": 0.97, "words": words}
    if language is not None and text:
        alternative["languages"] = [language]
        for word in words:
            word["language"] = language
    return json.dumps(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": 1.0,
            "start": start,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": "fake-request",
                "model_info": {"name": "fake", "version": "1", "arch": "fake"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }
    )


class FakeDeepgram:
    def __init__(
        self,
        transcripts: Sequence[str] = ("hello there",),
        *,
        bytes_per_turn: int | None = None,
        latency: float = 0.0,
        reset_after_bytes: int | None = None,
        resets: int = 1,
        reject_status: int | None = None,
        reject_times: int | None = None,
        tts_ms_per_char: float = 20.0,
        tts_chunk_ms: int = 20,
        tts_chunk_delay: float = 0.0,
        tts_empty: bool = False,
        languages: Sequence[str] = (),
    ) -> None:
        self.transcripts = list(transcripts)
        self.languages = list(languages)
        self.bytes_per_turn = bytes_per_turn
        self.latency = latency
        self.reset_after_bytes = reset_after_bytes
        self.resets_left = resets
        self.reject_status = reject_status
        self.reject_times = reject_times  # None: every handshake is rejected
        self.rejected = 0
        self.tts_ms_per_char = tts_ms_per_char
        self.tts_chunk_ms = tts_chunk_ms
        self.tts_chunk_delay = tts_chunk_delay
        self.tts_empty = tts_empty
        self.listens: list[ListenRecord] = []
        self.speaks: list[SpeakRecord] = []
        self._turn = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/listen", self._listen)
        app.router.add_get("/v1/speak", self._speak)
        return app

    def _reject(self) -> web.Response | None:
        if self.reject_status is None:
            return None
        if self.reject_times is not None and self.rejected >= self.reject_times:
            return None
        self.rejected += 1
        return web.Response(status=self.reject_status, text="rejected by the fake")

    def _next_text(self) -> str:
        text = self.transcripts[self._turn % len(self.transcripts)] if self.transcripts else ""
        self._turn += 1
        return text

    def _language_of(self, turn: int) -> str:
        i = turn % len(self.transcripts) if self.transcripts else turn
        return self.languages[i] if i < len(self.languages) else "en"

    # ------------------------------------------------------------------ listen

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        rejection = self._reject()
        if rejection is not None:
            return rejection
        record = ListenRecord(dict(request.query), request.headers.get("Authorization"))
        self.listens.append(record)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        vad = request.query.get("vad_events") == "true"
        multi = request.query.get("language") == "multi"

        def language(turn: int) -> str | None:
            return self._language_of(turn) if multi else None

        turn_bytes = 0
        interim_sent = False
        elapsed = 0.0
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                if vad and turn_bytes == 0 and msg.data:
                    await ws.send_str(
                        json.dumps({"type": "SpeechStarted", "channel": [0], "timestamp": elapsed})
                    )
                record.audio_bytes += len(msg.data)
                turn_bytes += len(msg.data)
                if (
                    self.reset_after_bytes is not None
                    and self.resets_left > 0
                    and record.audio_bytes >= self.reset_after_bytes
                ):
                    self.resets_left -= 1
                    record.reset = True
                    assert request.transport is not None
                    request.transport.abort()  # no close frame: a dropped connection
                    return ws
                if self.bytes_per_turn is None:
                    continue
                if not interim_sent and turn_bytes >= self.bytes_per_turn // 2:
                    interim_sent = True
                    upcoming = (
                        self.transcripts[self._turn % len(self.transcripts)] if self.transcripts else ""
                    )
                    half = " ".join(upcoming.split()[: max(1, len(upcoming.split()) // 2)])
                    await self._send(
                        ws,
                        _results(
                            half, is_final=False, speech_final=False, from_finalize=False, start=elapsed
                        ),
                    )
                if turn_bytes >= self.bytes_per_turn:
                    turn = self._turn
                    text = self._next_text()
                    await self._send(
                        ws,
                        _results(
                            text,
                            is_final=True,
                            speech_final=True,
                            from_finalize=False,
                            start=elapsed,
                            language=language(turn),
                        ),
                    )
                    await ws.send_str(
                        json.dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": elapsed + 1})
                    )
                    elapsed += 1.0
                    turn_bytes = 0
                    interim_sent = False
            elif msg.type == WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type", "")
                record.controls.append(kind)
                if kind == "Finalize":
                    turn = self._turn
                    text = self._next_text() if turn_bytes else ""
                    await self._send(
                        ws,
                        _results(
                            text,
                            is_final=True,
                            speech_final=False,
                            from_finalize=True,
                            start=elapsed,
                            language=language(turn),
                        ),
                    )
                    elapsed += 1.0
                    turn_bytes = 0
                    interim_sent = False
                elif kind == "CloseStream":
                    await ws.send_str(
                        json.dumps(
                            {
                                "type": "Metadata",
                                "transaction_key": "deprecated",
                                "request_id": "fake-request",
                                "sha256": "0" * 64,
                                "created": "2025-01-01T00:00:00.000Z",
                                "duration": elapsed,
                                "channels": 1,
                            }
                        )
                    )
                    await ws.close()
        return ws

    async def _send(self, ws: web.WebSocketResponse, text: str) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if not ws.closed:
            await ws.send_str(text)

    # ------------------------------------------------------------------- speak

    async def _speak(self, request: web.Request) -> web.StreamResponse:
        rejection = self._reject()
        if rejection is not None:
            return rejection
        record = SpeakRecord(dict(request.query), request.headers.get("Authorization"))
        self.speaks.append(record)
        rate = int(request.query.get("sample_rate", "24000"))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        pending: list[str] = []
        sequence = 0
        generating: asyncio.Task[Any] | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                message = json.loads(msg.data)
                kind = message.get("type", "")
                if kind == "Speak":
                    record.texts.append(str(message.get("text", "")))
                    pending.append(str(message.get("text", "")))
                    continue
                record.controls.append(kind)
                if kind == "Flush":
                    text = " ".join(pending)
                    pending.clear()
                    generating = asyncio.create_task(self._generate(ws, record, text, rate, sequence))
                    sequence += 1
                elif kind == "Clear":
                    pending.clear()
                    if generating is not None:
                        generating.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await generating
                    await ws.send_str(json.dumps({"type": "Cleared", "sequence_id": sequence}))
                elif kind == "Close":
                    await ws.close()
        finally:
            if generating is not None:
                generating.cancel()
        return ws

    async def _generate(
        self, ws: web.WebSocketResponse, record: SpeakRecord, text: str, rate: int, sequence: int
    ) -> None:
        if not self.tts_empty:
            total = int(rate * self.tts_ms_per_char * len(text) / 1000)
            step = rate * self.tts_chunk_ms // 1000
            for start in range(0, total, step):
                if self.latency and start == 0:
                    await asyncio.sleep(self.latency)
                chunk = tone(min(step, total - start), rate, start)
                await ws.send_bytes(chunk)
                record.audio_bytes_sent += len(chunk)
                if self.tts_chunk_delay:
                    await asyncio.sleep(self.tts_chunk_delay)
        await ws.send_str(json.dumps({"type": "Flushed", "sequence_id": sequence}))
