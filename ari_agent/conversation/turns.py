"""The caller's turns, sans-IO: frames and provider events in, actions out.

The engine is fed every 20 ms frame of the caller's audio (the receive
clock keeps them coming whether packets arrive or not) with the frame's
time and its raw voice verdict, plus the speech recogniser's events and
the turn model's verdicts. It decides when the caller's turn starts and
ends, when the caller barges in, when to say a filler and when to start
thinking early, and says so as actions. It reads no clock, never sleeps
and does no IO: the pipeline performs the actions, so every decision here
can be tested on virtual time.

The caller's side is one state machine (``Caller``) whose transitions are
listed in ``TRANSITIONS``; any other move is a bug and raises.

End of turn, by the profile's ``end_of_turn``:

* ``silence``: the turn is over after ``end_of_turn_ms`` of silence.
* ``model``: after ``turn_pause_ms`` of silence the turn model's verdict on
  whether the caller has finished decides. Yes: the turn is over. No: wait
  on, up to ``turn_max_wait_ms`` of silence, for the caller to go on. The
  model is asked already after ``turn_prepare_ms`` of silence so that its
  verdict is in hand at the pause; "not finished" then is asked again at
  the pause, on the longer silence.

Either way the recogniser's own end of turn, where trusted, ends it too.

Interruptions (``false_interruptions`` on): caller sound while the agent says
something interruptible pauses the agent's audio at once (``PauseAgent``).
Words that are not a backchannel ("mm-hmm", "okay") make it a real barge-in
(``BargeIn``: the rest is dropped). A short sound followed by
``false_interruption_ms`` of silence with no such words resumes the agent
where it paused (``ResumeAgent``); longer speech keeps it paused until its
transcript decides. A turn that began over the agent and holds no words, or
only backchannel words, is a false interruption: nothing answers it.
Off: the agent stops for good after ``barge_in_min_ms`` of continuous sound.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Literal

from ari_agent.conversation.backchannel import DEFAULT, Backchannels

FRAME_MS = 20
ONSET_MS = 60  # consecutive voiced audio that starts speech
PREROLL_MS = 200  # audio kept from before the onset, so the first phoneme reaches STT
RUN_GAP_MS = 60  # unvoiced frames inside one stretch of speech (consonants, short pauses)
MAX_TURN_AUDIO_MS = 8000  # the turn model looks at the last 8 s
MAX_UTTERANCE_MS = 30_000
# A recogniser that never sends its final must not hold the caller: the turn ends without it.
FINAL_TIMEOUT_MS = 4000

EndReason = Literal["silence", "model", "max_wait", "provider", "max_length"]


class Caller(enum.Enum):
    QUIET = "quiet"  # no speech under way
    SPEAKING = "speaking"  # speech under way
    PAUSED = "paused"  # stopped speaking: is the turn over?
    FINALIZING = "finalizing"  # the turn is over: waiting for the final transcript


TRANSITIONS: dict[Caller, frozenset[Caller]] = {
    Caller.QUIET: frozenset({Caller.SPEAKING}),
    Caller.SPEAKING: frozenset({Caller.PAUSED, Caller.FINALIZING, Caller.QUIET}),
    Caller.PAUSED: frozenset({Caller.SPEAKING, Caller.FINALIZING, Caller.QUIET}),
    Caller.FINALIZING: frozenset({Caller.QUIET}),
}


@dataclass(frozen=True)
class TurnSettings:
    end_of_turn: Literal["silence", "model"] = "silence"
    end_of_turn_ms: int = 600
    turn_pause_ms: int = 200
    turn_threshold: float = 0.5
    turn_max_wait_ms: int = 2500
    min_speech_ms: int = 120
    barge_in: bool = True
    barge_in_min_ms: int = 150
    false_interruptions: bool = True
    hold_after_ms: int = 100  # continuous caller sound over the agent that holds its audio
    false_interruption_ms: int = 150  # silence after a short sound before the agent goes on
    # Speech longer than this while the agent is paused is taken for words: it stays paused
    # until the transcript decides (a recogniser without interim results says nothing sooner).
    backchannel_max_ms: int = 800
    backchannels: Backchannels = DEFAULT
    provider_endpointing: bool = False  # the recogniser has endpointing and the profile trusts it
    # The recogniser gives finals by segment (STTCapabilities.segments): it is finalized while
    # the end of turn is decided, so the final is in hand (or on its way) when the turn is taken
    # as over instead of being asked for only then.
    finalize_at_pause: bool = False
    # Silence after which the end of the turn is prepared (at the latest at the pause): the
    # recogniser finalized (finalize_at_pause) and the turn model asked (model mode). Either is
    # acted on only at the pause; words before it make both start again at the next silence.
    turn_prepare_ms: int = 100
    early_start: bool = False
    early_start_ms: int = 100  # caller silence before an early start (the pause is decided later)
    filler_after_ms: int = 0  # 0: no filler


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Frame:
    """One 20 ms frame of what the caller sent (after the echo guard), at time ``now``."""

    now: float  # when the frame's audio ended
    audio: bytes
    voiced: bool
    agent_interruptible: bool = False  # the agent is saying something a caller may cut
    agent_audible: bool = False  # the agent's audio is going out


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class PushAudio:
    audio: bytes


@dataclass(frozen=True)
class RetractAudio:
    """Take back the last ``size`` bytes pushed: silence the receive clock filled for late audio."""

    size: int


@dataclass(frozen=True)
class Finalize:
    """Ask the recogniser for its final transcript of what was pushed."""


@dataclass(frozen=True)
class PredictTurn:
    """Ask the turn model whether the caller has finished; answer with ``prediction(ticket, ...)``."""

    ticket: int
    audio: bytes  # the turn so far, at most the last 8 s


@dataclass(frozen=True)
class BargeIn:
    """The caller really interrupts: drop the rest of what the agent was saying."""

    onset_at: float  # start of the stretch of continuous speech that made it
    stopped_at: float | None = None  # when the agent's audio was paused for it, if it stayed paused


@dataclass(frozen=True)
class PauseAgent:
    """Caller sound over the agent: hold its audio, it may go on."""

    onset_at: float


@dataclass(frozen=True)
class ResumeAgent:
    """The sound that paused the agent was no interruption: go on where it paused."""


@dataclass(frozen=True)
class FalseInterruption:
    """A turn that began over the agent had no words, or only a backchannel: nothing answers it."""

    text: str
    kind: Literal["noise", "backchannel"]


@dataclass(frozen=True)
class StartEarly:
    """Start thinking about ``text`` before the turn is known to be over; speak only on ``TurnOver``."""

    ticket: int
    text: str


@dataclass(frozen=True)
class CancelEarly:
    ticket: int


@dataclass(frozen=True)
class SayFiller:
    pass


@dataclass(frozen=True)
class CallerTurn:
    text: str
    speech_end_at: float  # when the caller's last voiced frame ended
    ended_at: float  # when the turn was taken as over, transcript in hand
    stt_ms: float | None  # finalize asked -> final transcript
    reason: EndReason
    silence_frames: int  # frames of caller silence when the end was decided
    early_ticket: int | None = None  # an early start that thought about exactly this text
    language: str | None = None  # the caller's language, when the recogniser reported it


@dataclass(frozen=True)
class TurnOver:
    turn: CallerTurn


Action = (
    PushAudio
    | RetractAudio
    | Finalize
    | PredictTurn
    | BargeIn
    | PauseAgent
    | ResumeAgent
    | FalseInterruption
    | StartEarly
    | CancelEarly
    | SayFiller
    | TurnOver
)


def _same_words(a: str, b: str) -> bool:
    def words(text: str) -> list[str]:
        return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()

    return words(a) == words(b)


class TurnEngine:
    def __init__(self, settings: TurnSettings) -> None:
        self.settings = settings
        self.state = Caller.QUIET
        self.wasted_early_starts = 0
        # Onset detection and pre-roll (while quiet).
        self._voiced_run_ms = 0
        self._recent: deque[bytes] = deque(maxlen=(PREROLL_MS + ONSET_MS) // FRAME_MS)
        # The utterance under way.
        self._run_ms = 0  # continuous speech (barge-in measure)
        self._run_started_at = 0.0
        self._gap_ms = 0
        self._silence_ms = 0  # silence since the last voiced frame
        self._last_voiced_at = 0.0
        self._pushing = False
        self._barged = False
        self._utterance_voiced_ms = 0
        self._turn_audio: deque[bytes] = deque(maxlen=MAX_TURN_AUDIO_MS // FRAME_MS)
        self._utterance_ms = 0
        # The turn (may span utterances until it is over).
        self._texts: list[str] = []
        self._language: str | None = None  # as the turn's last final with words reported it
        self._finalize_at: float | None = None
        self._final_at: float | None = None  # when the final of the last finalize arrived
        self._finalized_in_pause = False  # everything the caller said so far has been finalized
        self._end: tuple[EndReason, int] | None = None
        self._finalizing_ms = 0
        # Turn model.
        self._ticket = 0
        self._asked: int | None = None  # ticket of the question in flight
        self._verdict: float | None = None  # the model's answer while preparing, for the pause
        self._prepare_ticket = 0  # the question asked before the pause (on a shorter silence)
        # Early start.
        self._interim = ""
        self._early: tuple[int, str] | None = None
        # Filler.
        self._reply_since: float | None = None
        self._filler_said = False
        # Interruptions: the agent's audio held for the caller, and whether this turn began over it.
        self._agent_paused_at: float | None = None
        self._pause_onset_at = 0.0
        self._over_agent = False
        self._agent_interruptible = False

    # ------------------------------------------------------------ state

    def _go(self, state: Caller) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"turn engine: no transition {self.state.value} -> {state.value}")
        self.state = state

    @property
    def caller_active(self) -> bool:
        """The caller is talking, or their turn is being decided or transcribed: not idle."""
        return self.state is not Caller.QUIET

    # ------------------------------------------------------------ audio

    def frame(self, f: Frame) -> list[Action]:
        out: list[Action] = []
        self._agent_interruptible = f.agent_interruptible
        if not f.agent_interruptible:
            self._agent_paused_at = None  # it ended or was cut some other way (a key press)
        self._filler(f, out)
        if self.state is Caller.QUIET:
            self._quiet(f, out)
        elif self.state is Caller.FINALIZING:
            self._finalizing(f, out)
        else:
            self._in_turn(f, out)
        self._maybe_resume_agent(f.now, out)
        return out

    def retract(self, frames: int) -> list[Action]:
        """The last ``frames`` frames were silence filled for audio that has now come, late.

        Inside an utterance they are taken out of it, as if never heard: a stall of the
        caller's packets in mid-word must not reach the recogniser as a pause inside the
        word, nor count towards the end of the turn. Once the utterance has gone to the
        recogniser (a final asked at a pause) or the turn is over, it is too late.
        """
        out: list[Action] = []
        if self.state not in (Caller.SPEAKING, Caller.PAUSED) or self._finalized_in_pause:
            return out
        n = min(frames, self._silence_ms // FRAME_MS, len(self._turn_audio))
        size = 0
        for _ in range(n):
            size += len(self._turn_audio.pop())
        self._utterance_ms -= n * FRAME_MS
        self._silence_ms -= n * FRAME_MS
        self._gap_ms = max(0, self._gap_ms - n * FRAME_MS)
        if self._pushing and size:
            out.append(RetractAudio(size))
        return out

    def _quiet(self, f: Frame, out: list[Action]) -> None:
        self._recent.append(f.audio)
        self._voiced_run_ms = self._voiced_run_ms + FRAME_MS if f.voiced else 0
        if self._voiced_run_ms >= ONSET_MS:
            self._start_utterance(f, out)

    def _start_utterance(self, f: Frame, out: list[Action]) -> None:
        self._go(Caller.SPEAKING)
        self._run_started_at = f.now - self._voiced_run_ms / 1000
        self._run_ms = self._voiced_run_ms
        self._gap_ms = 0
        self._silence_ms = 0
        self._utterance_ms = self._voiced_run_ms
        self._last_voiced_at = f.now
        self._barged = False
        self._utterance_voiced_ms = self._voiced_run_ms
        self._turn_audio.extend(self._recent)
        self._voiced_run_ms = 0
        self._maybe_push_start(out)
        self._maybe_barge_in(f, out)

    def _in_turn(self, f: Frame, out: list[Action]) -> None:
        self._turn_audio.append(f.audio)
        self._utterance_ms += FRAME_MS
        if self._pushing:
            out.append(PushAudio(f.audio))
        if f.voiced:
            self._voiced(f, out)
        else:
            self._unvoiced(f, out)
        if self.state in (Caller.SPEAKING, Caller.PAUSED) and self._utterance_ms >= MAX_UTTERANCE_MS:
            self._end_turn("max_length", f.now, out)

    def _voiced(self, f: Frame, out: list[Action]) -> None:
        if self._run_ms == 0:
            self._run_started_at = f.now - FRAME_MS / 1000
        self._run_ms += FRAME_MS
        self._gap_ms = 0
        self._last_voiced_at = f.now
        self._utterance_voiced_ms += FRAME_MS
        if self.state is Caller.SPEAKING and self._silence_ms:
            if self._early is not None:
                self._cancel_early(out)  # started in a short silence, and the caller went on
            # The caller went on: these words need a final too, and the model's say is stale.
            self._finalized_in_pause = False
            self._asked = self._verdict = None
        if self.state is Caller.PAUSED:
            # A single voiced frame in a pause is often noise: resume on a short run only.
            self._voiced_run_ms += FRAME_MS
            if self._voiced_run_ms < ONSET_MS:
                return
            self._resume(out)
        self._silence_ms = 0
        self._maybe_push_start(out)
        self._maybe_barge_in(f, out)

    def _unvoiced(self, f: Frame, out: list[Action]) -> None:
        self._voiced_run_ms = 0
        self._silence_ms += FRAME_MS
        self._gap_ms += FRAME_MS
        if self._gap_ms > RUN_GAP_MS:
            self._run_ms = 0  # three coughs half a second apart are still three short noises
        s = self.settings
        if self.state is Caller.SPEAKING:
            pause_ms = s.turn_pause_ms if s.end_of_turn == "model" else min(s.turn_pause_ms, s.end_of_turn_ms)
            if self._silence_ms >= pause_ms:
                self._pause(f, out)
                return
            if self._silence_ms >= s.turn_prepare_ms:
                self._prepare(f.now, out)
            if self._pushing:
                self._maybe_start_early(out)
            return
        # PAUSED
        if not self._pushing:
            if self._silence_ms >= s.end_of_turn_ms:
                self._discard(out)  # a click or a cough: nothing to transcribe, no turn
            return
        if s.end_of_turn == "silence":
            if self._silence_ms >= s.end_of_turn_ms:
                self._end_turn("silence", f.now, out)
        elif self._silence_ms >= s.turn_max_wait_ms:
            self._end_turn("max_wait", f.now, out)

    def _pause(self, f: Frame, out: list[Action]) -> None:
        self._go(Caller.PAUSED)
        if not self._pushing:
            return
        self._prepare(f.now, out)
        if self.settings.end_of_turn == "model" and self._asked is None:
            verdict, self._verdict = self._verdict, None
            if verdict is not None and verdict >= self.settings.turn_threshold:
                self._end_turn("model", f.now, out)  # asked while preparing: finished
                return
            if verdict is not None:
                self._ask_model(out)  # "not finished" on less silence: ask again on this pause
        self._maybe_start_early(out)

    def _prepare(self, now: float, out: list[Action]) -> None:
        if not self._pushing:
            return
        if self.settings.finalize_at_pause and not self._finalized_in_pause:
            self._finalize_at, self._final_at = now, None
            self._finalized_in_pause = True
            out.append(Finalize())
        if self.settings.end_of_turn == "model" and self._asked is None and self._verdict is None:
            self._ask_model(out)
            if self.state is Caller.SPEAKING:
                self._prepare_ticket = self._ticket

    def _ask_model(self, out: list[Action]) -> None:
        self._ticket += 1
        self._asked = self._ticket
        out.append(PredictTurn(self._ticket, b"".join(self._turn_audio)))

    def _maybe_start_early(self, out: list[Action]) -> None:
        s = self.settings
        if not s.early_start or not self._interim:
            return
        if self.state is not Caller.PAUSED and not (
            self.state is Caller.SPEAKING and self._silence_ms >= s.early_start_ms
        ):
            return
        if self._early is not None:
            if _same_words(self._early[1], self._interim):
                return
            self._cancel_early(out)  # the words changed while we waited: think about the new ones
        self._ticket += 1
        self._early = (self._ticket, self._interim)
        out.append(StartEarly(self._ticket, self._interim))

    def _resume(self, out: list[Action]) -> None:
        self._go(Caller.SPEAKING)
        self._asked = self._verdict = None
        self._finalized_in_pause = False  # new words: the turn's end needs a final of them too
        self._cancel_early(out)

    def _discard(self, out: list[Action]) -> None:
        self._go(Caller.QUIET)
        self._reset_utterance()
        self._recent.clear()
        self._voiced_run_ms = 0
        if self._over_agent and not self._barged:
            self._false_interruption("", out)
        self._over_agent = False

    def _maybe_push_start(self, out: list[Action]) -> None:
        if not self._pushing and self._run_ms >= self.settings.min_speech_ms:
            self._pushing = True
            out.append(PushAudio(b"".join(self._turn_audio)))

    def _maybe_barge_in(self, f: Frame, out: list[Action]) -> None:
        s = self.settings
        if not s.barge_in or self._barged or not f.agent_interruptible:
            return
        if not s.false_interruptions:
            if self._run_ms >= s.barge_in_min_ms:
                self._barge_in(out)
            return
        if self._agent_paused_at is None and self._run_ms >= s.hold_after_ms:
            self._agent_paused_at = f.now
            self._pause_onset_at = self._run_started_at
            self._over_agent = True
            out.append(PauseAgent(self._run_started_at))

    def _barge_in(self, out: list[Action]) -> None:
        self._barged = True
        if self._agent_paused_at is not None:
            out.append(BargeIn(self._pause_onset_at, self._agent_paused_at))
        else:
            out.append(BargeIn(self._run_started_at))
        self._agent_paused_at = None

    def _maybe_resume_agent(self, now: float, out: list[Action]) -> None:
        if self._agent_paused_at is None or self.state is Caller.SPEAKING:
            return
        s = self.settings
        if self._utterance_voiced_ms > s.backchannel_max_ms and self.state is not Caller.QUIET:
            return  # speech this long is taken for words: its transcript decides
        if (now - self._last_voiced_at) * 1000 >= s.false_interruption_ms:
            self._agent_paused_at = None
            out.append(ResumeAgent())

    def _words_heard(self, text: str, out: list[Action]) -> None:
        """Words over the agent that are not a backchannel: a real barge-in."""
        if self._barged or not self._over_agent or not self._agent_interruptible:
            return
        if text.strip() and not self.settings.backchannels.matches(text):
            self._barge_in(out)

    def _false_interruption(self, text: str, out: list[Action]) -> None:
        self._over_agent = False
        if self._agent_paused_at is not None:
            self._agent_paused_at = None
            out.append(ResumeAgent())
        out.append(FalseInterruption(text, "backchannel" if text else "noise"))

    def _finalizing(self, f: Frame, out: list[Action]) -> None:
        # The caller may start again while the final is on its way: track the onset and keep
        # the pre-roll, so the next utterance starts whole once this turn is out.
        self._recent.append(f.audio)
        self._voiced_run_ms = self._voiced_run_ms + FRAME_MS if f.voiced else 0
        self._finalizing_ms += FRAME_MS
        if self._finalizing_ms >= FINAL_TIMEOUT_MS:
            self._complete(f.now, out)

    # ------------------------------------------------------------ ending

    def _end_turn(self, reason: EndReason, now: float, out: list[Action]) -> None:
        self._go(Caller.FINALIZING)
        self._end = (reason, self._silence_ms // FRAME_MS)
        self._finalizing_ms = 0
        self._recent.clear()
        self._voiced_run_ms = 0
        self._asked = self._verdict = None
        if reason != "provider" and self._finalized_in_pause:
            # Everything said was finalized at the pause: its final is here or on its way.
            if self._final_at is not None:
                self._complete(now, out)
            return
        if reason != "provider":
            self._finalize_at, self._final_at = now, None
            out.append(Finalize())
        if self._texts and reason == "provider":
            self._complete(now, out)

    def _complete(self, now: float, out: list[Action]) -> None:
        assert self._end is not None
        reason, silence_frames = self._end
        text = " ".join(self._texts)
        if self._over_agent and not self._barged and (not text or self.settings.backchannels.matches(text)):
            self._cancel_early(out)
            self._forget_turn()
            self._go(Caller.QUIET)
            self._false_interruption(text, out)
            return
        if self._over_agent and not self._barged and self._agent_interruptible:
            self._barge_in(out)  # words: whatever is left of the agent's speech goes
        self._over_agent = False
        answered_at = self._final_at if self._final_at is not None else now
        stt_ms = (answered_at - self._finalize_at) * 1000 if self._finalize_at is not None else None
        early_ticket: int | None = None
        if self._early is not None:
            ticket, early_text = self._early
            if text and _same_words(text, early_text):
                early_ticket = ticket
                self._early = None
            else:
                self._cancel_early(out)
        out.append(
            TurnOver(
                CallerTurn(
                    text=text,
                    speech_end_at=self._last_voiced_at or now,
                    ended_at=now,
                    stt_ms=stt_ms,
                    reason=reason,
                    silence_frames=silence_frames,
                    early_ticket=early_ticket,
                    language=self._language,
                )
            )
        )
        self._forget_turn()
        self._reply_since = now
        self._filler_said = False
        self._go(Caller.QUIET)  # keeps the onset tracked while finalizing: speech goes on from there

    def _forget_turn(self) -> None:
        self._texts = []
        self._language = None
        self._finalize_at = self._final_at = None
        self._finalized_in_pause = False
        self._end = None
        self._interim = ""
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._pushing = False
        self._run_ms = self._gap_ms = self._silence_ms = 0
        self._utterance_ms = self._utterance_voiced_ms = 0
        self._turn_audio.clear()
        self._asked = self._verdict = None

    def _cancel_early(self, out: list[Action]) -> None:
        if self._early is not None:
            out.append(CancelEarly(self._early[0]))
            self._early = None
            self.wasted_early_starts += 1

    # ------------------------------------------------------------ provider events

    def prediction(self, ticket: int, probability: float, now: float) -> list[Action]:
        """The turn model's answer to ``PredictTurn(ticket)``; late answers are ignored."""
        out: list[Action] = []
        if ticket != self._asked or self.state not in (Caller.SPEAKING, Caller.PAUSED):
            return out
        self._asked = None
        if self.state is Caller.SPEAKING:
            self._verdict = probability  # asked while preparing: the pause acts on it
            return out
        if probability >= self.settings.turn_threshold:
            self._end_turn("model", now, out)
        elif ticket == self._prepare_ticket:
            self._ask_model(out)  # "not finished" on the shorter silence: ask again on this pause
        # Not finished: the pause goes on, up to turn_max_wait_ms (see _unvoiced).
        return out

    def interim(self, text: str, now: float) -> list[Action]:
        out: list[Action] = []
        self._interim = text.strip()
        self._words_heard(self._interim, out)
        self._maybe_start_early(out)
        return out

    def final(self, text: str, now: float, language: str | None = None) -> list[Action]:
        out: list[Action] = []
        if self._finalize_at is not None and self._final_at is None:
            self._final_at = now
        if text.strip():
            self._texts.append(text.strip())
            self._language = language or self._language
            self._interim = ""
            self._words_heard(" ".join(self._texts), out)
        if self.state is Caller.FINALIZING:
            self._complete(now, out)
        return out

    def provider_end(self, now: float) -> list[Action]:
        """The recogniser's own end of turn."""
        out: list[Action] = []
        if self.state is Caller.FINALIZING:
            if self._finalize_at is not None:
                # We asked for this turn's end: it is over, even with nothing made out.
                self._complete(now, out)
            return out
        # Nothing pushed (quiet, or only a click so far): nothing for the provider to have ended.
        if not self.settings.provider_endpointing or not self._pushing:
            return out
        self._end_turn("provider", now, out)
        return out

    # ------------------------------------------------------------ filler

    def reply_started(self, now: float) -> None:
        """A reply is being prepared (to a turn or a key press): the filler clock runs from ``now``."""
        if self._reply_since is None:
            self._reply_since = now
            self._filler_said = False

    def reply_finished(self) -> None:
        self._reply_since = None

    def _filler(self, f: Frame, out: list[Action]) -> None:
        since = self._reply_since
        if since is None or self._filler_said:
            return
        if f.agent_audible:
            self._reply_since = None  # the reply is out: no dead air to cover
            return
        after = self.settings.filler_after_ms
        if after > 0 and (f.now - since) * 1000 >= after:
            self._filler_said = True
            out.append(SayFiller())
