"""``ari-agent call``: a test call without a phone, printed live.

The command is the caller. It originates ``Local/EXT@CONTEXT/n`` with the
near half in a Stasis app of its own (never the agent's), bridges that half
with an ExternalMedia channel toward a UDP socket of its own, and so hears
the agent as a caller would and speaks into the call: each phrase (text via
espeak-ng, or a WAV file) once the agent has finished its turn (it spoke,
then was quiet for ``turn_silence`` seconds).

Latency is measured where the caller sits: from the last packet of a phrase
to the first loud packet of the agent's reply, so it includes end-of-speech
detection, STT, LLM, TTS and Asterisk. What the agent understood and said
comes from its call record (``calls.jsonl``; see ``ops/calls.py``) once the
call has ended, matched by the far half's channel id.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ari_agent.ari.client import AriError, AriHttpError
from ari_agent.ari.events import ChannelDestroyed, ChannelVarset, StasisEnd, StasisStart, UnknownEvent
from ari_agent.config import Settings
from ari_agent.ops.ariapp import OpsAri, PrivateApp, ops_client
from ari_agent.ops.calls import CallSource
from ari_agent.ops.rtpprobe import RtpProbe, bind_in_range

RATE = 8000
LOUD_DBFS = -40.0
ONSET_S = 0.06  # this much loud audio in a row: the agent started speaking
RECORD_WAIT = 5.0


class CallFailed(Exception):
    """The test call could not be placed or went wrong; the message says how."""


# ---------------------------------------------------------------- what the caller says


@dataclass(frozen=True)
class Phrase:
    """What the caller does: ``say`` text, play a ``wav`` file, press ``dtmf`` digits, ``wait`` seconds."""

    kind: str  # "say", "wav", "dtmf" or "wait"
    value: str

    @property
    def label(self) -> str:
        return Path(self.value).name if self.kind == "wav" else self.value


def _to_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return pcm.astype(np.int16)
    return np.asarray(soxr.resample(pcm.astype(np.int16), rate, RATE), dtype=np.int16)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV file as 8 kHz mono int16."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise CallFailed(f"{path}: only 16-bit PCM WAV files can be played")
            channels, rate = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, wave.Error, EOFError) as exc:
        raise CallFailed(f"cannot read {path}: {exc}") from None
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return _to_rate(data, rate)


def speak(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng, 8 kHz mono int16."""
    if shutil.which("espeak-ng") is None:
        raise CallFailed("espeak-ng not found; install it (apt-get install espeak-ng) or pass --wav FILE")
    with tempfile.TemporaryDirectory(prefix="ari-agent-call-") as tmp:
        path = Path(tmp) / "say.wav"
        proc = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise CallFailed(f"espeak-ng failed: {proc.stderr.strip()}")
        return read_wav(path)


def render(phrase: Phrase) -> np.ndarray:
    if phrase.kind == "say":
        return speak(phrase.value)
    if phrase.kind == "wav":
        return read_wav(Path(phrase.value))
    return np.zeros(0, dtype=np.int16)  # dtmf, wait: no audio of ours


DTMF = re.compile(r"^[0-9*#A-D]+$")


# ---------------------------------------------------------------- hearing the agent's turns


@dataclass
class Ears:
    """Turn detection on the levels of what the agent sends (called per packet and by a clock)."""

    turn_silence: float
    speaking: bool = False
    loud_since: float | None = None
    last_loud: float = 0.0
    started_at: float = 0.0
    onset: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def hear(self, now: float, level: float) -> None:
        if level <= LOUD_DBFS:
            self.loud_since = None
            return
        self.last_loud = now
        if self.loud_since is None:
            self.loud_since = now
        if not self.speaking and now - self.loud_since >= ONSET_S:
            self.speaking = True
            self.started_at = self.loud_since
            self.onset.set()

    def tick(self, now: float) -> None:
        if self.speaking and now - self.last_loud >= self.turn_silence:
            self.speaking = False
            self.done.set()

    def next_turn(self) -> None:
        self.onset.clear()
        self.done.clear()


# ---------------------------------------------------------------- the call


@dataclass
class CallResult:
    answered: bool = False
    heard_turns: int = 0
    hung_up_by: str = ""  # "agent", "us" or ""
    channel_id: str = ""  # the far half: the channel the agent saw
    latencies: list[float | None] = field(default_factory=list)  # per agent turn: greeting, replies
    record: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    # Per phrase, in order, for the phrases that ran (the call may end before the last):
    step_started: list[datetime] = field(default_factory=list)  # UTC, when the caller began it
    step_latencies: list[float | None] = field(default_factory=list)  # s to the reply (None: none, wait)
    # Seen by Asterisk on the agent's side of the call (its events, not the agent's record):
    status_seen: str | None = None  # the AI_AGENT_STATUS set on the channel
    went_to: str | None = None  # where it went in the dialplan on leaving Stasis: "EXT@CONTEXT"


class TestCall:
    def __init__(
        self,
        settings: Settings,
        target: str,
        phrases: list[Phrase],
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        source: CallSource | None = None,
        turn_silence: float = 1.2,
        answer_timeout: float = 20.0,
        reply_timeout: float = 20.0,
        turn_limit: float = 60.0,
        caller_number: str = "0",
    ) -> None:
        exten, _, context = target.partition("@")
        if not exten or not context:
            raise CallFailed(f"target {target!r} is not EXT@CONTEXT (e.g. 100@ai-agent-demo)")
        self.settings = settings
        self.endpoint = f"Local/{exten}@{context}/n"
        self.target = target
        self.phrases = phrases
        self.on_event = on_event
        self.source = source
        self.ears = Ears(turn_silence)
        self.answer_timeout = answer_timeout
        self.reply_timeout = reply_timeout
        self.turn_limit = turn_limit
        self.caller_number = caller_number
        tag = uuid.uuid4().hex[:10]
        self.caller_id = f"cli-call-{tag}"
        self.agent_side_id = f"cli-call-{tag}-2"
        self.media_id = f"cli-call-{tag}-media"
        self.bridge_id = f"cli-call-{tag}"
        self.result = CallResult(channel_id=self.agent_side_id)
        self.hangup = asyncio.Event()
        self._t0 = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        entry = {"t": round(time.monotonic() - self._t0, 2), "event": event, **fields}
        self.result.events.append(entry)
        if self.on_event is not None:
            self.on_event(entry)

    async def run(self) -> CallResult:
        audio = [render(p) for p in self.phrases]  # before dialling: no pause mid-call
        ari = ops_client(self.settings)
        try:
            async with PrivateApp(self.settings, "call") as app:
                await self._call(ari, app, audio)
        except AriError as exc:
            raise CallFailed(str(exc)) from None
        finally:
            await ari.close()
        if self.result.answered and self.source is not None:
            self.result.record = await self._record()
        return self.result

    async def _call(self, ari: OpsAri, app: PrivateApp, audio: list[np.ndarray]) -> None:
        media = self.settings.media
        probe = RtpProbe(bind_in_range(media.bind_host, media.port_min, media.port_max))
        probe.on_level = self.ears.hear
        await probe.start()
        clock = asyncio.create_task(self._clock())
        watcher: asyncio.Task[None] | None = None
        try:
            self._t0 = time.monotonic()
            self.emit("dialing", target=self.target)
            try:
                await ari.raw(
                    "POST",
                    "/channels",
                    {
                        "endpoint": self.endpoint,
                        "app": app.name,
                        "channelId": self.caller_id,
                        "otherChannelId": self.agent_side_id,
                        "callerId": f'"ari-agent call" <{self.caller_number}>',
                        "timeout": int(self.answer_timeout),
                    },
                )
            except AriHttpError as exc:
                raise CallFailed(f"cannot dial {self.target}: {exc.message}") from None
            answered = await app.wait_for(
                lambda e: (
                    isinstance(e, StasisStart | StasisEnd | ChannelDestroyed)
                    and e.channel.id == self.caller_id
                ),
                self.answer_timeout,
            )
            if not isinstance(answered, StasisStart):
                raise CallFailed(f"{self.target} did not answer within {self.answer_timeout:g} s")
            self.result.answered = True
            answered_at = time.monotonic()
            self.emit("answered")
            watcher = asyncio.create_task(self._watch_hangup(app))
            await self._connect_media(ari, app, probe)
            await self._agent_turn(answered_at)
            for phrase, pcm in zip(self.phrases, audio, strict=True):
                if self.hangup.is_set():
                    break
                self.result.step_started.append(datetime.now(UTC))
                if phrase.kind == "wait":
                    self.emit("wait", seconds=float(phrase.value))
                    pause = asyncio.ensure_future(asyncio.sleep(float(phrase.value)))
                    try:
                        await self._until(pause, float(phrase.value) + 1.0)
                    finally:
                        pause.cancel()  # the call ended first
                    self.result.step_latencies.append(None)
                    continue
                self.ears.next_turn()
                if phrase.kind == "dtmf":
                    self.emit("dtmf", digits=phrase.value)
                    await ari.raw("POST", f"/channels/{self.caller_id}/dtmf", {"dtmf": phrase.value})
                else:
                    self.emit("you", text=phrase.label, seconds=round(len(pcm) / RATE, 2))
                    await self._until(probe.play(pcm), len(pcm) / RATE + 5.0)
                heard_before = len(self.result.latencies)
                await self._agent_turn(time.monotonic())
                self.result.step_latencies.append(
                    self.result.latencies[-1] if len(self.result.latencies) > heard_before else None
                )
            if not self.hangup.is_set():
                self.result.hung_up_by = "us"
                self.emit("hangup", by="us")
        finally:
            clock.cancel()
            if watcher is not None:
                watcher.cancel()
            probe.close()
            self._agent_side_seen(app)
            for cid in (self.caller_id, self.media_id):
                with contextlib.suppress(AriError):
                    await ari.hangup(cid)
            with contextlib.suppress(AriError):
                await ari.destroy_bridge(self.bridge_id)

    def _agent_side_seen(self, app: PrivateApp) -> None:
        """What Asterisk told us of the agent's side: our app originated both halves, it gets their events."""
        in_stasis = False
        for event in app.seen:
            if (
                isinstance(event, ChannelVarset)
                and event.channel is not None
                and event.channel.id == self.agent_side_id
                and event.variable == "AI_AGENT_STATUS"
            ):
                self.result.status_seen = event.value
            elif isinstance(event, UnknownEvent) and event.type == "ChannelDialplan":
                channel = event.raw.get("channel")
                if not isinstance(channel, dict) or channel.get("id") != self.agent_side_id:
                    continue
                where = channel.get("dialplan")
                if not isinstance(where, dict):
                    continue
                # Where the channel went first after it left the agent's Stasis(); the h
                # extension is a hang-up, not a place it went to.
                if where.get("app_name") == "Stasis":
                    in_stasis, self.result.went_to = True, None
                elif in_stasis:
                    in_stasis = False
                    if where.get("exten") != "h":
                        self.result.went_to = f"{where.get('exten')}@{where.get('context')}"

    async def _connect_media(self, ari: OpsAri, app: PrivateApp, probe: RtpProbe) -> None:
        media = self.settings.media
        await ari.create_bridge(self.bridge_id, "mixing", name="ari-agent call")
        await ari.add_channel(self.bridge_id, self.caller_id)
        await ari.external_media(self.media_id, app.name, f"{media.advertised}:{probe.port}", "ulaw")
        started = await app.wait_for(
            lambda e: isinstance(e, StasisStart) and e.channel.id == self.media_id, 5.0
        )
        if started is None:
            raise CallFailed("the ExternalMedia channel never entered the app; run `ari-agent doctor`")
        await ari.add_channel(self.bridge_id, self.media_id)
        host = await ari.get_variable(self.media_id, "UNICASTRTP_LOCAL_ADDRESS")
        port = await ari.get_variable(self.media_id, "UNICASTRTP_LOCAL_PORT")
        if not host or not port:
            raise CallFailed("the ExternalMedia channel did not report its RTP address")
        probe.remote = (host, int(port))
        probe.start_streaming()

    async def _agent_turn(self, since: float) -> None:
        """Wait for the agent to speak and finish; record the latency since ``since``."""
        ears = self.ears
        onset = await self._until(ears.onset, self.reply_timeout)
        if not onset:
            if not self.hangup.is_set():
                self.emit("no_reply", waited=self.reply_timeout)
            self.result.latencies.append(None)
            return
        latency = max(ears.started_at - since, 0.0)
        self.result.latencies.append(round(latency, 2))
        self.result.heard_turns += 1
        self.emit("agent_speaking", latency=round(latency, 2))
        await self._until(ears.done, self.turn_limit)
        self.emit("agent_done", seconds=round(ears.last_loud - ears.started_at, 2))

    async def _until(self, flag: asyncio.Event | asyncio.Future[None], timeout: float) -> bool:  # noqa: ASYNC109
        """Wait for ``flag``, the hang-up or the timeout; True if ``flag`` is set (or done)."""
        first = asyncio.ensure_future(flag.wait()) if isinstance(flag, asyncio.Event) else flag
        hangup = asyncio.ensure_future(self.hangup.wait())
        try:
            await asyncio.wait([first, hangup], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
            if isinstance(flag, asyncio.Event):
                first.cancel()
        return flag.is_set() if isinstance(flag, asyncio.Event) else flag.done()

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.ears.tick(time.monotonic())

    async def _watch_hangup(self, app: PrivateApp) -> None:
        await app.wait_for(
            lambda e: isinstance(e, StasisEnd | ChannelDestroyed) and e.channel.id == self.caller_id, 86400
        )
        if not self.hangup.is_set():
            self.hangup.set()
            if self.ears.speaking:
                self.ears.tick(time.monotonic() + self.ears.turn_silence)
            self.result.hung_up_by = self.result.hung_up_by or "agent"
            self.emit("hangup", by="agent")

    async def _record(self) -> dict[str, Any] | None:
        assert self.source is not None
        deadline = time.monotonic() + RECORD_WAIT
        while time.monotonic() < deadline:
            record = await asyncio.to_thread(self.source.by_channel, self.agent_side_id)
            if record is not None:
                return record
            await asyncio.sleep(0.2)
        return None


def transcript(result: CallResult) -> list[dict[str, Any]]:
    """The agent's record turns, each agent turn with the latency heard on our side (greeting first)."""
    if result.record is None:
        return []
    out: list[dict[str, Any]] = []
    agent_turn = 0
    for turn in result.record.get("turns", []):
        entry = {"role": turn.get("role"), "text": turn.get("text"), "at": turn.get("at")}
        if turn.get("role") == "agent":
            if agent_turn < len(result.latencies):
                entry["heard_latency"] = result.latencies[agent_turn]
            agent_turn += 1
        for key in ("interrupted", "turn_latency_ms", "stt_ms", "llm_first_token_ms", "tts_first_audio_ms"):
            if key in turn:
                entry[key] = turn[key]
        out.append(entry)
    return out
