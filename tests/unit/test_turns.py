"""The turn engine on virtual time: frames are 20 ms apart, nothing sleeps."""

from __future__ import annotations

import pytest

from ari_agent.conversation.turns import (
    Action,
    BargeIn,
    CallerTurn,
    CancelEarly,
    FalseInterruption,
    Finalize,
    Frame,
    PauseAgent,
    PredictTurn,
    PushAudio,
    ResumeAgent,
    RetractAudio,
    SayFiller,
    StartEarly,
    TurnEngine,
    TurnOver,
    TurnSettings,
)

VOICED = b"\x01\x00" * 320
SILENT = bytes(640)


class Clock:
    """Feeds frames on a virtual 20 ms grid and keeps every action with its frame time."""

    def __init__(self, engine: TurnEngine) -> None:
        self.engine = engine
        self.now = 100.0
        self.log: list[tuple[float, Action]] = []

    def feed(self, pattern: str, *, interruptible: bool = False, audible: bool = False) -> list[Action]:
        """'v' a voiced frame, '.' a silent one; spaces are ignored."""
        got: list[Action] = []
        for ch in pattern.replace(" ", ""):
            self.now = round(self.now + 0.02, 6)
            voiced = ch == "v"
            actions = self.engine.frame(
                Frame(self.now, VOICED if voiced else SILENT, voiced, interruptible, audible)
            )
            got += actions
            self.log += [(self.now, a) for a in actions]
        return got

    def silence(self, ms: int, **kw: bool) -> list[Action]:
        return self.feed("." * (ms // 20), **kw)

    def speech(self, ms: int, **kw: bool) -> list[Action]:
        return self.feed("v" * (ms // 20), **kw)

    def log_actions(self) -> list[Action]:
        return [a for _, a in self.log]

    def first(self, kind: type[Action]) -> tuple[float, Action] | None:
        return next(((t, a) for t, a in self.log if isinstance(a, kind)), None)


def _of(actions: list[Action], kind: type[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def _turn(actions: list[Action]) -> CallerTurn:
    overs = _of(actions, TurnOver)
    assert len(overs) == 1, actions
    over = overs[0]
    assert isinstance(over, TurnOver)
    return over.turn


def test_silence_ends_the_turn_after_end_of_turn_ms_then_the_final_completes_it() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", end_of_turn_ms=600))
    clock = Clock(engine)
    acts = clock.speech(600)
    pushes = _of(acts, PushAudio)
    # Audio reaches STT once speech outlasts min_speech_ms, the pre-roll and onset with it.
    assert pushes and len(pushes[0].audio) >= 6 * 640  # type: ignore[attr-defined]
    speech_end = clock.now
    acts = clock.silence(580)
    assert not _of(acts, Finalize)
    acts = clock.silence(20)
    assert _of(acts, Finalize)
    assert engine.caller_active  # waiting for the transcript is not idle
    turn = _turn(engine.final("what time do you open", clock.now + 0.15))
    assert turn.text == "what time do you open"
    assert turn.reason == "silence" and turn.silence_frames == 30
    assert turn.speech_end_at == pytest.approx(speech_end)
    assert turn.stt_ms == pytest.approx(150)
    assert not engine.caller_active


def test_model_says_finished_turn_ends_after_the_short_pause() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, end_of_turn_ms=600))
    clock = Clock(engine)
    clock.speech(800)
    acts = clock.silence(200)
    asks = _of(acts, PredictTurn)
    assert len(asks) == 1
    ask = asks[0]
    assert isinstance(ask, PredictTurn) and len(ask.audio) >= 40 * 640  # the turn so far
    acts = engine.prediction(ask.ticket, 0.93, clock.now + 0.03)
    assert _of(acts, Finalize)
    turn = _turn(engine.final("what time do you open", clock.now + 0.2))
    assert turn.reason == "model"
    # Fewer frames of silence than end_of_turn_ms would have waited.
    assert turn.silence_frames == 10 < 600 // 20


def test_model_says_not_finished_waits_and_the_caller_goes_on() -> None:
    settings = TurnSettings(
        end_of_turn="model", turn_pause_ms=200, turn_prepare_ms=200, turn_max_wait_ms=2500
    )
    engine = TurnEngine(settings)
    clock = Clock(engine)
    clock.speech(1000)  # "my number is five five five"
    ask = _of(clock.silence(200), PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    assert not engine.prediction(ask.ticket, 0.1, clock.now)
    # A pause of a second, longer than end_of_turn_ms: still the caller's turn.
    assert not _of(clock.silence(1000), Finalize)
    clock.speech(800)  # "... two one two"
    # The old question's answer arrives late: ignored.
    assert not engine.prediction(ask.ticket, 0.99, clock.now)
    ask2 = _of(clock.silence(200), PredictTurn)[0]
    assert isinstance(ask2, PredictTurn) and ask2.ticket != ask.ticket
    assert _of(engine.prediction(ask2.ticket, 0.8, clock.now), Finalize)
    assert _turn(engine.final("my number is five five five two one two", clock.now)).reason == "model"


def test_maximum_wait_ends_a_turn_the_model_thought_unfinished() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, turn_max_wait_ms=2500))
    clock = Clock(engine)
    clock.speech(600)
    ask = _of(clock.silence(200), PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    engine.prediction(ask.ticket, 0.2, clock.now)
    assert not _of(clock.silence(2280), Finalize)
    assert _of(clock.silence(20), Finalize)
    assert _turn(engine.final("my address is", clock.now)).reason == "max_wait"


def test_no_verdict_at_all_still_ends_at_the_maximum_wait() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_max_wait_ms=1500))
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(1480)
    assert _of(clock.silence(20), Finalize)


def test_a_click_or_cough_is_no_turn() -> None:
    engine = TurnEngine(TurnSettings(min_speech_ms=120))
    clock = Clock(engine)
    acts = clock.feed("vvvv") + clock.silence(1000)  # 80 ms: past the onset, under min_speech_ms
    assert not _of(acts, PushAudio) and not _of(acts, Finalize) and not _of(acts, TurnOver)
    assert not engine.caller_active


def test_without_false_interruptions_continuous_speech_stops_the_agent_for_good() -> None:
    engine = TurnEngine(TurnSettings(barge_in=True, barge_in_min_ms=150, false_interruptions=False))
    clock = Clock(engine)
    # Three coughs, 60 ms each, half a second apart, while the agent speaks: no barge-in.
    coughs = clock.feed(("vvv" + "." * 25) * 3, interruptible=True)
    assert not _of(coughs, BargeIn)
    acts = clock.speech(200, interruptible=True)
    barges = _of(acts, BargeIn)
    assert len(barges) == 1  # once per utterance
    onset = barges[0]
    assert isinstance(onset, BargeIn) and onset.onset_at == pytest.approx(clock.now - 0.2)
    assert not _of(clock.log_actions(), PauseAgent)
    # Nothing to interrupt: no barge-in however long the caller talks.
    engine2 = TurnEngine(TurnSettings())
    assert not _of(Clock(engine2).speech(1000, interruptible=False), BargeIn)


def test_early_start_on_a_stable_interim_then_the_final_confirms_it() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="silence", end_of_turn_ms=600, turn_pause_ms=200, early_start=True)
    )
    clock = Clock(engine)
    clock.speech(800)
    engine.interim("what time do you open", clock.now)
    starts = _of(clock.silence(200), StartEarly)
    assert len(starts) == 1
    start = starts[0]
    assert isinstance(start, StartEarly) and start.text == "what time do you open"
    clock.silence(400)
    turn = _turn(engine.final("What time do you open?", clock.now))
    assert turn.early_ticket == start.ticket
    assert engine.wasted_early_starts == 0


def test_early_start_cancelled_when_the_final_differs() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", early_start=True))
    clock = Clock(engine)
    clock.speech(800)
    engine.interim("what time do you", clock.now)
    start = _of(clock.silence(200), StartEarly)[0]
    assert isinstance(start, StartEarly)
    clock.silence(400)
    acts = engine.final("what time do you close", clock.now)
    cancels = _of(acts, CancelEarly)
    assert len(cancels) == 1 and cancels[0] == CancelEarly(start.ticket)
    assert _turn(acts).early_ticket is None
    assert engine.wasted_early_starts == 1


def test_early_start_cancelled_when_the_caller_goes_on() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", early_start=True))
    clock = Clock(engine)
    clock.speech(600)
    engine.interim("my number is", clock.now)
    start = _of(clock.silence(200), StartEarly)[0]
    assert isinstance(start, StartEarly)
    acts = clock.speech(200)
    assert _of(acts, CancelEarly) == [CancelEarly(start.ticket)]
    assert engine.wasted_early_starts == 1


def test_an_interim_that_arrives_during_the_pause_starts_early_too() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", early_start=True))
    clock = Clock(engine)
    clock.speech(600)
    assert not _of(clock.silence(200), StartEarly)
    acts = engine.interim("where are you located", clock.now)
    assert [type(a) for a in acts] == [StartEarly]


def test_filler_after_filler_after_ms_without_audible_reply() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", end_of_turn_ms=600, filler_after_ms=1200))
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(600)
    _turn(engine.final("book an appointment", clock.now))
    assert not _of(clock.silence(1180), SayFiller)
    assert len(_of(clock.silence(600), SayFiller)) == 1  # once


def test_no_filler_once_the_reply_is_audible() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", filler_after_ms=1200))
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(600)
    _turn(engine.final("hello", clock.now))
    clock.silence(400)
    assert not _of(clock.silence(2000, audible=True), SayFiller)
    # A key press starts a reply too: the filler clock runs from it.
    engine.reply_started(clock.now)
    assert _of(clock.silence(1200), SayFiller)


def test_provider_endpointing_ends_the_turn_without_finalize() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", provider_endpointing=True))
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(100)
    acts = engine.provider_end(clock.now)
    assert not _of(acts, Finalize) and not _of(acts, TurnOver)  # the transcript follows
    turn = _turn(engine.final("where are you", clock.now))
    assert turn.reason == "provider" and turn.stt_ms is None


def test_untrusted_provider_endpointing_is_ignored() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", provider_endpointing=False))
    clock = Clock(engine)
    clock.speech(600)
    assert not engine.provider_end(clock.now)
    assert engine.caller_active


def test_a_recogniser_that_never_answers_does_not_hold_the_caller() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", end_of_turn_ms=600))
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(600)
    acts = clock.silence(4000)
    turn = _turn(acts)
    assert turn.text == ""  # the pipeline answers with its "did not catch that" reply
    assert not engine.caller_active


def test_speech_during_the_wait_for_the_final_starts_the_next_turn_whole() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", end_of_turn_ms=600))
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(600)
    clock.speech(100)  # the caller starts again before the final is in
    _turn(engine.final("first question", clock.now))
    acts = clock.speech(200)
    pushed = sum(len(p.audio) for p in _of(acts, PushAudio))  # type: ignore[attr-defined]
    # The next utterance reaches STT whole, with the frames spoken while the final was awaited.
    assert pushed == (5 + 10) * 640


def test_transitions_outside_the_table_raise() -> None:
    from ari_agent.conversation.turns import Caller

    engine = TurnEngine(TurnSettings())
    with pytest.raises(RuntimeError, match="quiet -> finalizing"):
        engine._go(Caller.FINALIZING)


# ---------------------------------------------------------------- false interruptions


def _talking_agent() -> tuple[TurnEngine, Clock]:
    engine = TurnEngine(
        TurnSettings(end_of_turn="silence", end_of_turn_ms=600, hold_after_ms=60, false_interruption_ms=200)
    )
    clock = Clock(engine)
    clock.silence(200, interruptible=True, audible=True)
    return engine, clock


def test_a_cough_pauses_the_agent_at_once_and_it_goes_on_after_a_short_silence() -> None:
    engine, clock = _talking_agent()
    start = clock.now
    acts = clock.speech(240, interruptible=True, audible=True)  # a cough webrtcvad calls speech
    pauses = _of(acts, PauseAgent)
    assert len(pauses) == 1
    assert clock.first(PauseAgent)[0] == pytest.approx(start + 0.06)  # type: ignore[index]
    assert not _of(acts, BargeIn)
    cough_end = clock.now
    acts = clock.silence(180, interruptible=True, audible=True)
    assert not _of(acts, ResumeAgent)
    acts = clock.silence(20, interruptible=True, audible=True)
    assert _of(acts, ResumeAgent)
    resumed_at = clock.first(ResumeAgent)[0]  # type: ignore[index]
    assert resumed_at - cough_end == pytest.approx(0.2)
    # The cough was pushed to STT (longer than min_speech_ms): its final has no words.
    acts = clock.silence(400, interruptible=True, audible=True)
    assert _of(acts, Finalize)
    acts = engine.final("", clock.now + 0.1)
    assert _of(acts, FalseInterruption) == [FalseInterruption("", "noise")]
    assert not _of(acts, TurnOver) and not _of(clock.log_actions(), BargeIn)
    assert not engine.caller_active


def test_a_click_too_short_for_stt_is_a_false_interruption_too() -> None:
    _engine, clock = _talking_agent()
    acts = clock.feed("vvvv", interruptible=True, audible=True) + clock.silence(700, interruptible=True)
    assert len(_of(acts, PauseAgent)) == 1 and len(_of(acts, ResumeAgent)) == 1
    assert _of(acts, FalseInterruption) == [FalseInterruption("", "noise")]
    assert not _of(acts, PushAudio) and not _of(acts, TurnOver)


def test_a_backchannel_word_resumes_and_nothing_answers_it() -> None:
    engine, clock = _talking_agent()
    clock.speech(400, interruptible=True, audible=True)  # "mm-hmm"
    acts = clock.silence(600, interruptible=True, audible=True)
    assert _of(acts, ResumeAgent) and _of(acts, Finalize)
    acts = engine.final("Mm-hmm.", clock.now + 0.1)
    assert _of(acts, FalseInterruption) == [FalseInterruption("Mm-hmm.", "backchannel")]
    assert not _of(acts, TurnOver) and not _of(acts, BargeIn)
    # A backchannel interim while paused does not make it a barge-in either.
    clock.speech(300, interruptible=True, audible=True)
    assert not _of(engine.interim("okay", clock.now), BargeIn)


def test_words_while_paused_make_it_a_real_barge_in_from_the_pause() -> None:
    engine, clock = _talking_agent()
    onset = clock.now
    clock.speech(300, interruptible=True, audible=True)
    paused_at = clock.first(PauseAgent)[0]  # type: ignore[index]
    acts = engine.interim("wait", clock.now)
    barges = _of(acts, BargeIn)
    assert len(barges) == 1
    barge = barges[0]
    assert isinstance(barge, BargeIn)
    assert barge.onset_at == pytest.approx(onset) and barge.stopped_at == pytest.approx(paused_at)
    # The caller goes on; the turn is answered as usual, and nothing resumes the agent.
    clock.speech(600, interruptible=False)
    acts = clock.silence(600)
    assert not _of(clock.log_actions(), ResumeAgent)
    turn = _turn(engine.final("wait what are your hours", clock.now))
    assert turn.text == "wait what are your hours"


def test_long_speech_keeps_the_agent_paused_until_its_words_decide() -> None:
    engine, clock = _talking_agent()
    clock.speech(1200, interruptible=True, audible=True)  # a recogniser without interim results
    acts = clock.silence(600, interruptible=True, audible=True)
    assert not _of(acts, ResumeAgent) and _of(acts, Finalize)
    acts = engine.final("where are you located", clock.now + 0.2)
    assert [type(a) for a in acts] == [BargeIn, TurnOver]  # stop the agent, then answer


def test_a_short_word_resumes_then_its_transcript_makes_it_a_barge_in() -> None:
    engine, clock = _talking_agent()
    clock.speech(300, interruptible=True, audible=True)  # "stop"
    acts = clock.silence(600, interruptible=True, audible=True)
    assert _of(acts, ResumeAgent) and _of(acts, Finalize)
    acts = engine.final("stop", clock.now + 0.2)
    assert [type(a) for a in acts] == [BargeIn, TurnOver]
    barge = acts[0]
    assert isinstance(barge, BargeIn) and barge.stopped_at is None  # it was playing again


def test_no_resume_once_the_agent_was_cut_another_way() -> None:
    _engine, clock = _talking_agent()
    clock.speech(200, interruptible=True, audible=True)
    # A key press cut the agent: the frames say nothing is interruptible any more.
    acts = clock.silence(800, interruptible=False)
    assert not _of(acts, ResumeAgent)


def test_words_after_the_agent_finished_are_a_turn_without_barge_in() -> None:
    engine, clock = _talking_agent()
    clock.speech(200, interruptible=True, audible=True)
    clock.speech(600)  # the agent's utterance ended while the caller spoke
    clock.silence(600)
    acts = engine.final("what time do you open", clock.now)
    assert not _of(acts, BargeIn) and _turn(acts).text == "what time do you open"


def test_a_farewell_is_never_paused() -> None:
    _engine, clock = _talking_agent()
    acts = clock.speech(600, interruptible=False, audible=True)
    assert not _of(acts, PauseAgent) and not _of(acts, BargeIn)


# ---------------------------------------------------------------- finals by segment


def test_a_segment_recogniser_is_finalized_at_the_pause_beside_the_model() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="model", turn_pause_ms=200, finalize_at_pause=True, turn_prepare_ms=200)
    )
    clock = Clock(engine)
    clock.speech(800)
    acts = clock.silence(200)
    assert [type(a) for a in acts if not isinstance(a, PushAudio)] == [Finalize, PredictTurn]
    ask = _of(acts, PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    paused_at = clock.now
    # The model answers first: the turn is over, the final is on its way (no second Finalize).
    acts = engine.prediction(ask.ticket, 0.9, paused_at + 0.1)
    assert not acts
    acts = engine.final("what time do you open", paused_at + 0.15)
    turn = _turn(acts)
    assert turn.reason == "model" and turn.text == "what time do you open"
    assert turn.stt_ms == pytest.approx(150)


def test_a_final_already_in_hand_ends_the_turn_at_the_verdict() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="model", turn_pause_ms=200, finalize_at_pause=True, turn_prepare_ms=200)
    )
    clock = Clock(engine)
    clock.speech(800)
    ask = _of(clock.silence(200), PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    assert not engine.final("what time do you open", clock.now + 0.05)  # not over yet
    turn = _turn(engine.prediction(ask.ticket, 0.9, clock.now + 0.12))
    assert turn.ended_at == pytest.approx(clock.now + 0.12) and turn.stt_ms == pytest.approx(50)


def test_segments_of_a_turn_the_caller_went_on_with_are_joined() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, finalize_at_pause=True))
    clock = Clock(engine)
    clock.speech(1000)
    ask = _of(clock.silence(200), PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    engine.prediction(ask.ticket, 0.05, clock.now)  # not finished: "my number is five five five"
    engine.final("my number is five five five", clock.now + 0.15)
    clock.silence(600)
    clock.speech(600)
    acts = clock.silence(200)
    assert _of(acts, Finalize)  # the new words need their own final
    ask = _of(acts, PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    engine.prediction(ask.ticket, 0.95, clock.now + 0.1)
    turn = _turn(engine.final("one two one two", clock.now + 0.15))
    assert turn.text == "my number is five five five one two one two"


def test_the_end_is_prepared_after_a_short_silence_and_decided_at_the_pause() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="model", turn_pause_ms=200, finalize_at_pause=True, turn_prepare_ms=100)
    )
    clock = Clock(engine)
    clock.speech(800)
    acts = clock.silence(100)
    assert [type(a) for a in acts if not isinstance(a, PushAudio)] == [Finalize, PredictTurn]
    ask = _of(acts, PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    finalized_at = clock.now
    # Both answers come before the pause: nothing is decided on 100 ms of silence.
    assert not engine.prediction(ask.ticket, 0.9, clock.now + 0.05)
    assert not engine.final("what time do you open", finalized_at + 0.08)
    acts = clock.silence(80)
    assert not _of(acts, TurnOver)
    acts = clock.silence(20)  # the pause: the verdict in hand ends the turn, no second question
    assert not _of(acts, PredictTurn) and not _of(acts, Finalize)
    turn = _turn(acts)
    assert turn.reason == "model" and turn.text == "what time do you open"
    assert turn.stt_ms == pytest.approx(80)


def test_a_verdict_not_in_hand_at_the_pause_is_waited_for() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, turn_prepare_ms=100))
    clock = Clock(engine)
    clock.speech(800)
    ask = _of(clock.silence(100), PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    acts = clock.silence(100)
    assert not _of(acts, PredictTurn) and not _of(acts, TurnOver)  # one question in flight
    acts = engine.prediction(ask.ticket, 0.9, clock.now + 0.03)
    assert _of(acts, Finalize)  # a recogniser without segments is finalized at the end


def test_not_finished_on_the_shorter_silence_arriving_after_the_pause_asks_again() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, turn_prepare_ms=100))
    clock = Clock(engine)
    clock.speech(800)
    first = _of(clock.silence(100), PredictTurn)[0]
    assert isinstance(first, PredictTurn)
    assert not _of(clock.silence(100), PredictTurn)  # paused, the first answer not in yet
    acts = engine.prediction(first.ticket, 0.2, clock.now + 0.04)
    second = _of(acts, PredictTurn)[0]
    assert isinstance(second, PredictTurn) and second.ticket != first.ticket
    # Asked once more only.
    assert not _of(engine.prediction(second.ticket, 0.2, clock.now + 0.1), PredictTurn)
    assert not _of(clock.silence(500), TurnOver)  # and the pause goes on to the maximum wait


def test_not_finished_while_preparing_asks_again_at_the_pause() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, turn_prepare_ms=100))
    clock = Clock(engine)
    clock.speech(800)
    first = _of(clock.silence(100), PredictTurn)[0]
    assert isinstance(first, PredictTurn)
    engine.prediction(first.ticket, 0.1, clock.now + 0.02)
    acts = clock.silence(100)
    asks = _of(acts, PredictTurn)
    assert len(asks) == 1 and not _of(acts, TurnOver)
    second = asks[0]
    assert isinstance(second, PredictTurn) and second.ticket != first.ticket
    assert _of(engine.prediction(second.ticket, 0.8, clock.now + 0.02), Finalize)


def test_words_after_preparing_make_the_verdict_stale() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="model", turn_pause_ms=200, turn_prepare_ms=100))
    clock = Clock(engine)
    clock.speech(600)
    stale = _of(clock.silence(120), PredictTurn)[0]  # a breath: "my number is ..."
    assert isinstance(stale, PredictTurn)
    clock.speech(400)
    assert not engine.prediction(stale.ticket, 0.95, clock.now)  # about words since gone on
    acts = clock.silence(100)
    fresh = _of(acts, PredictTurn)[0]
    assert isinstance(fresh, PredictTurn) and fresh.ticket != stale.ticket
    acts = clock.silence(100)
    assert not _of(acts, TurnOver)  # the stale "finished" was not kept for this pause


def test_words_after_an_early_finalize_are_finalized_again() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="model", turn_pause_ms=200, finalize_at_pause=True, turn_prepare_ms=100)
    )
    clock = Clock(engine)
    clock.speech(600)
    assert _of(clock.silence(120), Finalize)  # a breath inside the sentence
    engine.final("my number is", clock.now)
    acts = clock.speech(600)
    assert not _of(acts, Finalize) and not _of(acts, TurnOver)
    acts = clock.silence(200)
    assert len(_of(acts, Finalize)) == 1  # the words after the breath get their own final
    ask = _of(acts, PredictTurn)[0]
    assert isinstance(ask, PredictTurn)
    engine.prediction(ask.ticket, 0.9, clock.now + 0.05)
    turn = _turn(engine.final("five five five", clock.now + 0.1))
    assert turn.text == "my number is five five five"


def test_silence_endpointing_with_segments_has_the_final_when_the_silence_is_up() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn_ms=600, turn_pause_ms=200, finalize_at_pause=True))
    clock = Clock(engine)
    clock.speech(800)
    acts = clock.silence(200)
    assert _of(acts, Finalize)
    assert not engine.final("where are you located", clock.now + 0.15)
    acts = clock.silence(400)
    assert _turn(acts).reason == "silence" and not _of(acts, Finalize)


def test_early_start_on_a_short_silence_and_cancelled_when_the_caller_goes_on() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="model", turn_pause_ms=200, early_start=True, early_start_ms=100)
    )
    clock = Clock(engine)
    clock.speech(400)
    engine.interim("what time", clock.now)
    clock.speech(400)
    acts = clock.silence(100)
    starts = _of(acts, StartEarly)
    assert len(starts) == 1 and not _of(acts, TurnOver)  # thinking before the pause is decided
    acts = clock.speech(100)  # "... do you open"
    assert _of(acts, CancelEarly) and engine.wasted_early_starts == 1


def test_hold_after_ms_lets_shorter_sounds_by() -> None:
    engine = TurnEngine(TurnSettings(hold_after_ms=100))
    clock = Clock(engine)
    acts = clock.feed("vvvv", interruptible=True, audible=True)  # 80 ms: not held
    assert not _of(acts, PauseAgent)
    clock.silence(700, interruptible=True, audible=True)
    start = clock.now
    clock.speech(120, interruptible=True, audible=True)
    assert clock.first(PauseAgent)[0] == pytest.approx(start + 0.1)  # type: ignore[index]


def test_silence_filled_for_a_stalled_word_is_taken_back_from_the_utterance() -> None:
    # Issue 12: a stall of the caller's packets mid-word reached the recogniser as a 580 ms pause
    # inside the word. The receive side retracts the fill once the late audio comes.
    engine = TurnEngine(TurnSettings(end_of_turn="silence", end_of_turn_ms=600))
    clock = Clock(engine)
    pushed = b"".join(a.audio for a in _of(clock.speech(600), PushAudio))  # type: ignore[attr-defined]
    pushed += b"".join(a.audio for a in _of(clock.silence(580), PushAudio))  # type: ignore[attr-defined]
    acts = engine.retract(29)
    assert acts == [RetractAudio(29 * 640)]
    pushed = pushed[: len(pushed) - 29 * 640]
    acts = clock.speech(400)
    pushed += b"".join(a.audio for a in _of(acts, PushAudio))  # type: ignore[attr-defined]
    assert SILENT not in [pushed[i : i + 640] for i in range(0, len(pushed), 640)]
    # The taken-back silence does not count towards the end of the turn either.
    assert not _of(clock.silence(580), Finalize)
    assert _of(clock.silence(20), Finalize)


def test_a_retraction_takes_back_only_the_trailing_silence_of_an_open_utterance() -> None:
    engine = TurnEngine(TurnSettings(end_of_turn="silence", end_of_turn_ms=600))
    assert engine.retract(10) == []  # quiet: nothing of a turn to take back
    clock = Clock(engine)
    clock.speech(600)
    clock.silence(100)
    # More than the silence heard: never the caller's words.
    assert engine.retract(20) == [RetractAudio(5 * 640)]
    assert engine.retract(5) == []


def test_no_retraction_once_the_utterance_went_to_the_recogniser_at_a_pause() -> None:
    engine = TurnEngine(
        TurnSettings(end_of_turn="model", turn_pause_ms=200, end_of_turn_ms=600, finalize_at_pause=True)
    )
    clock = Clock(engine)
    clock.speech(600)
    assert _of(clock.silence(300), Finalize)
    assert engine.retract(15) == []
