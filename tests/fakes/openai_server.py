"""A fake OpenAI API speaking the real wire protocol, for the real ``openai`` SDK.

Endpoints (under ``/v1``):
- ``POST /chat/completions``: SSE chunks (``choices[0].delta.content`` and
  ``tool_calls`` deltas, then ``data: [DONE]``), or one JSON body when
  ``stream`` is false.
- ``POST /audio/speech``: raw PCM16 24 kHz (espeak-ng speech of the input,
  a tone when espeak-ng is missing), streamed in chunks.
- ``POST /audio/transcriptions``: multipart upload, ``{"text": ...}``; with
  ``response_format=verbose_json`` (whisper) also ``language`` as whisper names
  it ("spanish"), and for ``gpt-transcribe`` ``languages: [{"code": ...}]``.
- ``POST /embeddings``: one vector per input, a hashed bag of its words (so texts
  sharing words are alike, deterministically), in the real response shape; as
  base64 float32 when ``encoding_format`` is "base64" (the SDK's default).
- ``GET /realtime``: the Realtime WebSocket (GA event names), for
  speech-to-speech sessions (``?model=``) and transcription sessions
  (``?intent=transcription``). Speech is detected by energy in the
  appended audio, timed by the audio itself (not the wall clock).

A test scripts replies, delays and failures on a ``FakeOpenAI`` and reads
back what the server received (``requests``, ``realtime_events``). Every
request must carry ``Authorization: Bearer <key>``; when ``api_key`` is
set, the key must match too (401 otherwise, like the real service).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
import struct
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import soxr
from aiohttp import WSMsgType, web

from ari_agent.media.codecs import ulaw_decode, ulaw_encode
from tests.fakes.threaded import serve

RATE = 24000  # the API's PCM rate, both for speech and Realtime audio/pcm


# --------------------------------------------------------------------------
# Scripts


@dataclass
class Fault:
    """A failure to inject instead of (or in the middle of) a normal answer."""

    status: int = 0  # an HTTP error status, answered with OpenAI's error JSON
    reset_after_chunks: int | None = None  # drop the connection after this many chunks


@dataclass
class ChatReply:
    text: str = "Hello from the fake."
    # (name, arguments): a dict is sent as JSON; a str is sent as is (bad JSON on purpose).
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    first_token_delay: float = 0.0
    chunk_delay: float = 0.0
    fault: Fault = field(default_factory=Fault)
    # Writes the text from the request it answers (e.g. repeats a sentence of a tool result),
    # so a test hears whether what the agent sent reached the model.
    respond: Callable[[dict[str, Any]], str] | None = None


@dataclass
class SpeechReply:
    empty: bool = False  # 200 with no audio at all
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_ms: int = 100
    fault: Fault = field(default_factory=Fault)
    # Hold the rest of the body after the first chunk until the test sets it
    # (proves the client plays audio before the body is complete).
    gate: asyncio.Event | None = None


@dataclass
class TranscriptionReply:
    text: str = "hello there"
    fault: Fault = field(default_factory=Fault)
    language: str = "en"  # ISO-639-1; verbose_json names it as whisper does


@dataclass
class EmbeddingsReply:
    dimensions: int = 256  # unless the request asks for ``dimensions`` (fewer collisions than 64)
    fault: Fault = field(default_factory=Fault)
    delay: float = 0.0


def bag_of_words_vector(text: str, dimensions: int) -> np.ndarray:
    """A deterministic vector for ``text``: each word (and its first five letters, a poor man's
    stem) adds one to a slot chosen by its hash; a text of no word gets a constant vector."""
    vector = np.zeros(dimensions, dtype=np.float32)
    for word in "".join(c if c.isalnum() else " " for c in text.lower()).split():
        for token in {word, word[:5]}:
            digest = hashlib.sha256(token.encode("utf-8")).digest()
            vector[int.from_bytes(digest[:4], "little") % dimensions] += 1.0
    if not vector.any():
        vector[0] = 1.0
    return vector


# A few of whisper's names, for verbose_json answers.
_LANGUAGE_NAMES = {"en": "english", "es": "spanish", "fr": "french", "de": "german"}
LISTING_MODELS = ("gpt-transcribe", "gpt-live-transcribe")


@dataclass
class RealtimeReply:
    """One agent response in a Realtime session."""

    text: str = "Hello, how can I help?"
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    audio_ms: int | None = None  # None: as long as the speech of ``text``
    chunk_ms: int = 100
    chunk_delay: float = 0.0  # wall time between audio deltas (room to barge in)


@dataclass
class RealtimeScript:
    caller_transcripts: collections.deque[str] = field(default_factory=collections.deque)
    # The language of each transcript, sent (``languages``) when the transcription model lists them.
    caller_languages: collections.deque[str] = field(default_factory=collections.deque)
    replies: collections.deque[RealtimeReply] = field(default_factory=collections.deque)
    default_reply: RealtimeReply = field(default_factory=RealtimeReply)
    handshake_status: int = 0  # reject the WebSocket upgrade with this HTTP status
    # Like the service at its maximum session duration: an error event, then close.
    expire_after_appends: int | None = None
    speech_threshold: float = 500.0  # RMS of a chunk that counts as speech
    silence_ms: int = 300  # of audio time, when turn detection has no silence_duration_ms


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


# --------------------------------------------------------------------------
# Audio helpers


def speech_pcm(text: str, rate: int = RATE) -> bytes:
    """PCM16 speech of ``text`` at ``rate`` (a 440 Hz tone when espeak-ng is missing)."""
    samples: np.ndarray
    if shutil.which("espeak-ng") and text.strip():
        wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
        (src_rate,) = struct.unpack_from("<I", wav, 24)
        body = wav[44 : len(wav) - (len(wav) - 44) % 2]
        samples = np.frombuffer(body, dtype="<i2").astype(np.int16)
        samples = np.asarray(soxr.resample(samples, src_rate, rate), dtype=np.int16)
    else:
        t = np.arange(int(rate * max(0.2, 0.06 * len(text)))) / rate
        samples = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return samples.astype("<i2").tobytes()


def tone_pcm(ms: int, rate: int = RATE, amplitude: int = 6000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def _rms(pcm: np.ndarray) -> float:
    if pcm.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def _error_body(status: int) -> dict[str, Any]:
    kinds = {
        400: ("invalid_request_error", None, "Bad request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist."),
        429: ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached. Try again later."),
    }
    kind, code, message = kinds.get(status, ("server_error", None, "The server had an error."))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# --------------------------------------------------------------------------
# The fake


class FakeOpenAI:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.chat_replies: collections.deque[ChatReply] = collections.deque()
        self.default_chat = ChatReply()
        self.speech_replies: collections.deque[SpeechReply] = collections.deque()
        self.default_speech = SpeechReply()
        self.transcription_replies: collections.deque[TranscriptionReply] = collections.deque()
        self.default_transcription = TranscriptionReply()
        self.realtime = RealtimeScript()
        self.embeddings_replies: collections.deque[EmbeddingsReply] = collections.deque()
        self.default_embeddings = EmbeddingsReply()
        self.requests: list[Request] = []
        self.realtime_events: list[dict[str, Any]] = []  # client events, appends summarised
        self.realtime_connections: list[dict[str, str]] = []  # query of each WebSocket
        self.transcribed_audio: list[tuple[int, int]] = []  # (sample rate, frames) of each upload
        self._sockets: set[web.WebSocketResponse] = set()

    # -- setup

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/realtime", self._realtime)
        app.on_shutdown.append(self._close_sockets)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve in the current loop; yields the base URL ending in ``/v1``."""
        async with serve(self.app()) as url:
            yield url + "/v1"

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.realtime_events if e.get("type") == kind]

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close()

    # -- HTTP helpers

    def _auth_error(self, request: web.Request) -> int:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return 401
        if self.api_key is not None and header[7:] != self.api_key:
            return 401
        return 0

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        # Keep whether a key came, never the key itself: tests grep for leaks.
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        headers["authorization-present"] = str("Authorization" in request.headers)
        self.requests.append(Request(request.path, headers, body))

    @staticmethod
    def _error(status: int) -> web.Response:
        return web.json_response(_error_body(status), status=status)

    def _auth_failure(self, request: web.Request) -> web.Response:
        body = _error_body(401)
        # Worst case on purpose: quote the rejected key in full (the real
        # service masks most of it), so tests prove the client scrubs it.
        presented = request.headers.get("Authorization", "")[7:]
        body["error"]["message"] = f"Incorrect API key provided: {presented}."
        return web.json_response(body, status=401)

    # -- chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        if self._auth_error(request):
            return self._auth_failure(request)
        reply = self.chat_replies.popleft() if self.chat_replies else self.default_chat
        if reply.respond is not None:
            reply = dataclasses.replace(reply, text=reply.respond(body), respond=None)
        if reply.fault.status:
            return self._error(reply.fault.status)
        if not body.get("stream"):
            return web.json_response(self._chat_completion(body, reply))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(reply.first_token_delay)
        for n, chunk in enumerate(self._chat_chunks(body, reply)):
            if reply.fault.reset_after_chunks is not None and n >= reply.fault.reset_after_chunks:
                _reset(request)
                return response
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(reply.chunk_delay)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _chat_chunks(body: dict[str, Any], reply: ChatReply) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        words = reply.text.split(" ") if reply.text else []
        for i, word in enumerate(words):
            chunks.append(chunk({"content": word if i == 0 else " " + word}))
        for index, (name, arguments) in enumerate(reply.tool_calls):
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            head = {"index": index, "id": f"call_{index}", "type": "function"}
            chunks.append(chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
            # Arguments arrive in pieces, as from the real service.
            for start in range(0, len(raw), 7):
                piece = {"index": index, "function": {"arguments": raw[start : start + 7]}}
                chunks.append(chunk({"tool_calls": [piece]}))
        chunks.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        return chunks

    @staticmethod
    def _chat_completion(body: dict[str, Any], reply: ChatReply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": n, "arguments": a if isinstance(a, str) else json.dumps(a)},
                }
                for i, (n, a) in enumerate(reply.tool_calls)
            ]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }

    # -- speech

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        if self._auth_error(request):
            return self._auth_failure(request)
        reply = self.speech_replies.popleft() if self.speech_replies else self.default_speech
        if reply.fault.status:
            return self._error(reply.fault.status)
        if body.get("response_format") != "pcm":
            return web.json_response(
                {"error": {"message": "fake serves pcm only", "type": "invalid_request_error"}}, status=400
            )
        pcm = b"" if reply.empty else await asyncio.to_thread(speech_pcm, str(body.get("input", "")))
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await asyncio.sleep(reply.first_chunk_delay)
        step = RATE * reply.chunk_ms // 1000 * 2
        for n, start in enumerate(range(0, len(pcm), step)):
            if reply.fault.reset_after_chunks is not None and n >= reply.fault.reset_after_chunks:
                _reset(request)
                return response
            if n:
                await asyncio.sleep(reply.chunk_delay)
            if n == 1 and reply.gate is not None:
                await reply.gate.wait()
            await response.write(pcm[start : start + step])
        await response.write_eof()
        return response

    # -- embeddings

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if self._auth_error(request):
            return self._auth_failure(request)
        reply = self.embeddings_replies.popleft() if self.embeddings_replies else self.default_embeddings
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.fault.status:
            return self._error(reply.fault.status)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return self._error(400)
        dimensions = int(body.get("dimensions") or reply.dimensions)
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = bag_of_words_vector(text, dimensions)
            # Like the service: vectors come back unit length.
            vector /= np.linalg.norm(vector)
            encoded: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if base64_wanted
                else [float(x) for x in vector]
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(t.split()) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- transcriptions

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        self._record(request, fields)
        if self._auth_error(request):
            return self._auth_failure(request)
        reply = self.transcription_replies.popleft() if self.transcription_replies else None
        reply = reply or self.default_transcription
        if reply.fault.status:
            return self._error(reply.fault.status)
        if upload is None or isinstance(upload, str):
            return self._error(400)
        with wave.open(io.BytesIO(upload.file.read()), "rb") as wav:
            self.transcribed_audio.append((wav.getframerate(), wav.getnframes()))
            duration = wav.getnframes() / wav.getframerate()
        if fields.get("response_format") == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": _LANGUAGE_NAMES.get(reply.language, reply.language),
                    "duration": duration,
                    "text": reply.text,
                    "segments": [],
                }
            )
        if fields.get("model") in LISTING_MODELS:
            return web.json_response({"text": reply.text, "languages": [{"code": reply.language}]})
        return web.json_response({"text": reply.text})

    # -- Realtime

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        self.realtime_connections.append(dict(request.query))
        if self.realtime.handshake_status:
            return self._error(self.realtime.handshake_status)
        if self._auth_error(request):
            return self._auth_failure(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        transcription = request.query.get("intent") == "transcription"
        session = _RealtimeSession(self, ws, transcription, request.query.get("model", ""))
        try:
            await session.run()
        finally:
            self._sockets.discard(ws)
            await session.stop()
        return ws


def _reset(request: web.Request) -> None:
    """Drop the TCP connection mid-response, like a network failure."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class _RealtimeSession:
    """One Realtime WebSocket: client events in, server events out."""

    def __init__(self, fake: FakeOpenAI, ws: web.WebSocketResponse, transcription: bool, model: str) -> None:
        self.fake = fake
        self.ws = ws
        self.transcription = transcription
        self.model = model
        self.config: dict[str, Any] = {"type": "transcription" if transcription else "realtime"}
        self.counter = 0
        self.appends = 0
        self.response_task: asyncio.Task[None] | None = None
        self.response_id = ""
        # Energy VAD state, timed in audio milliseconds.
        self.audio_ms = 0
        self.speaking = False
        self.silent_ms = 0
        self.speech_item = ""
        self.buffer_has_audio = False

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self._id("event"))
        if not self.ws.closed:
            await self.ws.send_json(event)

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": dict(self.config)})
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                event = json.loads(msg.data)
            except ValueError:
                await self._error("invalid_json", "not JSON")
                continue
            await self.handle(event)

    async def stop(self) -> None:
        if self.response_task is not None:
            self.response_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.response_task

    async def _error(self, code: str, message: str) -> None:
        await self.send(
            {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message}}
        )

    # -- client events

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            audio = base64.b64decode(event.get("audio", ""))
            self.fake.realtime_events.append({"type": kind, "bytes": len(audio)})
            await self._append(audio)
            return
        self.fake.realtime_events.append(event)
        if kind == "session.update":
            session = event.get("session", {})
            self.config = _merge(self.config, session)
            await self.send({"type": "session.updated", "session": self.config})
        elif kind == "input_audio_buffer.commit":
            if not self.buffer_has_audio:
                await self._error("input_audio_buffer_commit_empty", "buffer too small")
            else:
                await self._commit()
        elif kind == "input_audio_buffer.clear":
            self.buffer_has_audio = False
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "response.create":
            await self._start_response(event.get("response", {}))
        elif kind == "response.cancel":
            await self._cancel_response()
        elif kind == "conversation.item.truncate":
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": event.get("item_id"),
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event.get("audio_end_ms"),
                }
            )
        elif kind == "conversation.item.create":
            item = dict(event.get("item", {}))
            item.setdefault("id", self._id("item"))
            await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
            await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})
        else:
            await self._error("unknown_event", f"unknown event type {kind!r}")

    # -- input audio and turn detection

    def _lists_languages(self) -> bool:
        audio_in = self.config.get("audio", {}).get("input", {})
        return (audio_in.get("transcription") or {}).get("model") in LISTING_MODELS

    def _input_format(self) -> str:
        fmt = self.config.get("audio", {}).get("input", {}).get("format", {})
        return str(fmt.get("type", "audio/pcm"))

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.config.get("audio", {}).get("input", {}).get("turn_detection", {"type": "server_vad"})
        return td if isinstance(td, dict) else None

    async def _append(self, audio: bytes) -> None:
        self.appends += 1
        script = self.fake.realtime
        if script.expire_after_appends is not None and self.appends > script.expire_after_appends:
            await self.send(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "session_expired",
                        "message": "Your session hit the maximum duration of 60 minutes.",
                    },
                }
            )
            await self.ws.close()
            return
        if self._input_format() == "audio/pcmu":
            pcm, rate = ulaw_decode(audio), 8000
        else:
            pcm, rate = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2"), RATE
        self.buffer_has_audio = True
        td = self._turn_detection()
        if td is None:
            self.audio_ms += pcm.size * 1000 // rate
            return
        # The VAD looks at the audio in 20 ms windows, whatever the client's chunking.
        window = rate // 50
        for start in range(0, pcm.size, window):
            await self._vad(pcm[start : start + window], rate, td)

    async def _vad(self, pcm: np.ndarray, rate: int, td: dict[str, Any]) -> None:
        script = self.fake.realtime
        chunk_ms = pcm.size * 1000 // rate
        loud = _rms(pcm) >= script.speech_threshold
        if loud and not self.speaking:
            self.speaking = True
            self.silent_ms = 0
            self.speech_item = self._id("item")
            await self.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": self.audio_ms,
                    "item_id": self.speech_item,
                }
            )
        elif self.speaking:
            self.silent_ms = 0 if loud else self.silent_ms + chunk_ms
            if self.silent_ms >= int(td.get("silence_duration_ms", script.silence_ms)):
                self.speaking = False
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": self.audio_ms + chunk_ms,
                        "item_id": self.speech_item,
                    }
                )
                await self._commit(td)
        self.audio_ms += chunk_ms

    async def _commit(self, td: dict[str, Any] | None = None) -> None:
        item_id = self.speech_item if td is not None else self._id("item")
        self.buffer_has_audio = False
        await self.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": item_id}
        )
        script = self.fake.realtime
        text = script.caller_transcripts.popleft() if script.caller_transcripts else "hello"
        language = script.caller_languages.popleft() if script.caller_languages else "en"
        words = text.split(" ")
        for i, word in enumerate(words):
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": word if i == 0 else " " + word,
                }
            )
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": 1.0},
                **({"languages": [{"code": language}]} if self._lists_languages() else {}),
            }
        )
        if not self.transcription and td is not None and td.get("create_response", True):
            await self._start_response({})

    # -- responses

    async def _start_response(self, params: dict[str, Any]) -> None:
        await self._cancel_response()
        script = self.fake.realtime
        reply = script.replies.popleft() if script.replies else script.default_reply
        self.response_id = self._id("resp")
        self.response_task = asyncio.create_task(self._respond(self.response_id, reply))

    async def _cancel_response(self) -> None:
        task = self.response_task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.send(
            {
                "type": "response.done",
                "response": {"id": self.response_id, "object": "realtime.response", "status": "cancelled"},
            }
        )

    def _output_format(self) -> str:
        fmt = self.config.get("audio", {}).get("output", {}).get("format", {})
        return str(fmt.get("type", "audio/pcm"))

    async def _respond(self, response_id: str, reply: RealtimeReply) -> None:
        base = {"response_id": response_id}
        await self.send(
            {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
        )
        output: list[dict[str, Any]] = []
        if reply.text:
            item_id = self._id("item")
            item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress"}
            await self.send({"type": "response.output_item.added", **base, "output_index": 0, "item": item})
            pcm = (
                tone_pcm(reply.audio_ms)
                if reply.audio_ms is not None
                else await asyncio.to_thread(speech_pcm, reply.text)
            )
            if self._output_format() == "audio/pcmu":
                samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
                audio = ulaw_encode(np.asarray(soxr.resample(samples, RATE, 8000), dtype=np.int16))
                step = 8000 * reply.chunk_ms // 1000
            else:
                audio = pcm
                step = RATE * reply.chunk_ms // 1000 * 2
            where = {**base, "item_id": item_id, "output_index": 0, "content_index": 0}
            for start in range(0, len(audio), step):
                delta = base64.b64encode(audio[start : start + step]).decode()
                await self.send({"type": "response.output_audio.delta", **where, "delta": delta})
                await asyncio.sleep(reply.chunk_delay)
            await self.send({"type": "response.output_audio.done", **where})
            await self.send({"type": "response.output_audio_transcript.delta", **where, "delta": reply.text})
            await self.send(
                {"type": "response.output_audio_transcript.done", **where, "transcript": reply.text}
            )
            item = {**item, "status": "completed"}
            await self.send({"type": "response.output_item.done", **base, "output_index": 0, "item": item})
            output.append(item)
        for name, arguments in reply.tool_calls:
            item_id = self._id("item")
            call_id = self._id("call")
            raw = json.dumps(arguments)
            item = {
                "id": item_id,
                "type": "function_call",
                "status": "completed",
                "name": name,
                "call_id": call_id,
                "arguments": raw,
            }
            where = {**base, "item_id": item_id, "output_index": len(output)}
            await self.send({"type": "response.function_call_arguments.delta", **where, "delta": raw})
            await self.send(
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "call_id": call_id,
                    "name": name,
                    "arguments": raw,
                }
            )
            output.append(item)
        await self.send(
            {
                "type": "response.done",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "completed",
                    "output": output,
                },
            }
        )


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """session.update is a partial update: nested objects merge, other values replace."""
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def fake_fixture(key: str) -> Any:
    """A pytest fixture ``fake``: this server on loopback with ``key`` as OPENAI_API_KEY, and its URL.

    For the unit tests of each OpenAI adapter: ``fake = fake_fixture(KEY)`` at module level.
    """

    @pytest.fixture
    async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeOpenAI, str]]:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        server = FakeOpenAI(api_key=key)
        async with server.running() as url:
            yield server, url

    return fake
