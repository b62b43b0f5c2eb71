"""A dialog script in place of a language model.

The caller's last message picks an intent: a DTMF digit, an example or
synonym said exactly, one said inside a longer sentence (the longest wins),
or failing those the phrase sharing the most meaningful words, above a
threshold. Anything else gets the fallback reply.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from typing import Self

from ari_agent.leads.dialog import LeadSpec
from providers.base import LLM, Intent, LLMEvent, Message, ProviderContext, TextDelta, ToolCall, ToolSpec
from providers.scripted.lead import LeadTurn, replay
from providers.scripted.options import ScriptedOptions

_WORD_RE = re.compile(r"[a-z0-9']+")
_DTMF_RE = re.compile(r"^\s*caller pressed\s+([0-9*#a-d])\s*\.?\s*$", re.IGNORECASE)

# Words that say little about what the caller wants: shared by many
# questions, they count a quarter of a word in the overlap score.
_FUNCTION_WORDS = frozenset(
    "a an the i me my you your we us our it its is are was be been am do does did can could not "
    "would will should to on in at of for and or with that this there please just like".split()
)
_FUNCTION_WEIGHT = 0.25
DEFAULT_THRESHOLD = 0.5


_CONTRACTIONS = {
    "what's": "what is",
    "where's": "where is",
    "when's": "when is",
    "that's": "that is",
    "it's": "it is",
    "i'd": "i would",
    "i'm": "i am",
    "i'll": "i will",
    "you're": "you are",
    "can't": "can not",
    "cannot": "can not",
    "don't": "do not",
    "won't": "will not",
}


def normalise(text: str) -> tuple[str, ...]:
    """Lower-case words without punctuation, contractions spelled out ("That's it!" -> that is it)."""
    words: list[str] = []
    for word in _WORD_RE.findall(text.lower().replace("\u2019", "'")):
        word = word.strip("'")
        if word:
            words.extend(_CONTRACTIONS.get(word, word).replace("'", "").split())
    return tuple(words)


def _weight(word: str) -> float:
    return _FUNCTION_WEIGHT if word in _FUNCTION_WORDS else 1.0


def _overlap(said: tuple[str, ...], example: tuple[str, ...]) -> float:
    """Weighted Dice similarity of the two word sets, 0..1."""
    a, b = set(said), set(example)
    total = sum(_weight(w) for w in a) + sum(_weight(w) for w in b)
    return 2 * sum(_weight(w) for w in a & b) / total if total else 0.0


def _contains(said: tuple[str, ...], example: tuple[str, ...]) -> bool:
    n = len(example)
    return any(said[i : i + n] == example for i in range(len(said) - n + 1))


class ScriptedLLM(LLM):
    name = "scripted"
    Options = ScriptedOptions

    def __init__(
        self,
        intents: Sequence[Intent],
        fallback_reply: str,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        lead: LeadSpec | None = None,
    ) -> None:
        self.intents = tuple(intents)
        self.lead = lead
        self.fallback_reply = fallback_reply
        self.threshold = threshold
        # Examples and synonyms alike: a key phrase said alone, or inside a
        # longer sentence (what the offline recogniser returns is the key
        # phrase itself; a cloud recogniser returns the whole sentence).
        self._examples = [(intent, normalise(ex)) for intent in self.intents for ex in intent.phrases]
        self._examples = [(intent, ex) for intent, ex in self._examples if ex]
        self._call_ids = itertools.count(1)

    @classmethod
    def create(cls, ctx: ProviderContext) -> Self:
        return cls(
            ctx.intents,
            ctx.fallback_reply,
            threshold=float(ctx.options.get("threshold", DEFAULT_THRESHOLD)),
            lead=ctx.lead,
        )

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]:
        problems: list[str] = []
        if not ctx.intents and not ctx.fallback_reply:
            problems.append(
                f"profile {ctx.profile}: the scripted dialog has no intents and no fallback reply"
            )
        digits: dict[str, str] = {}
        for intent in ctx.intents:
            if intent.action == "transfer" and not intent.destination:
                problems.append(
                    f"profile {ctx.profile}: intent {intent.name} transfers but names no destination; "
                    "set its destination"
                )
            if not intent.phrases and not intent.dtmf:
                problems.append(
                    f"profile {ctx.profile}: intent {intent.name} has no examples and no dtmf digit; "
                    "add examples callers would say"
                )
            if intent.dtmf:
                if intent.dtmf in digits:
                    problems.append(
                        f"profile {ctx.profile}: intents {digits[intent.dtmf]} and {intent.name} "
                        f"share dtmf {intent.dtmf}; give each its own digit"
                    )
                digits[intent.dtmf] = intent.name
        return problems

    def match(self, text: str) -> Intent | None:
        """The intent ``text`` asks for, or None for the fallback."""
        dtmf = _DTMF_RE.match(text)
        if dtmf:
            digit = dtmf.group(1).upper()
            return next((i for i in self.intents if i.dtmf and i.dtmf.upper() == digit), None)
        said = normalise(text)
        if not said:
            return None
        for intent, example in self._examples:
            if said == example:
                return intent
        contained = [(len(ex), intent) for intent, ex in self._examples if _contains(said, ex)]
        if contained:
            return max(contained, key=lambda c: c[0])[1]
        best: Intent | None = None
        best_score = 0.0
        for intent, example in self._examples:
            score = _overlap(said, example)
            if score > best_score:
                best, best_score = intent, score
        return best if best_score >= self.threshold else None

    async def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> AsyncIterator[LLMEvent]:
        if self.lead is not None and messages and messages[-1].role == "user":
            turn = replay(self.lead, self.match, messages, dt.date.today())
            if turn is not None:
                for event in self._lead_events(self.lead, turn):
                    yield event
                return
        said = next((m.content for m in reversed(messages) if m.role == "user"), "")
        asking = self._asking_for(messages)
        if asking is not None and asking.capture and said and not said.startswith("caller pressed"):
            # The previous reply asked for a detail: this answer is it.
            yield ToolCall("capture", {"field": asking.capture, "value": said}, self._next_id())
            intent = self.match(said)
            if intent is None or intent is asking:
                return
        else:
            intent = self.match(said)
        if intent is None:
            if self.fallback_reply:
                yield TextDelta(self.fallback_reply)
            return
        if intent.reply:
            yield TextDelta(intent.reply)
        if intent.result is not None:
            yield ToolCall(
                "set_variable", {"name": "AI_AGENT_RESULT", "value": intent.result}, self._next_id()
            )
        if intent.action == "hangup":
            yield ToolCall("hangup", {}, self._next_id())
        elif intent.action == "transfer":
            yield ToolCall("transfer", {"destination": intent.destination}, self._next_id())

    def _lead_events(self, lead: LeadSpec, turn: LeadTurn) -> list[LLMEvent]:
        """A lead step as what is said, the fields captured, and at the end its result and action."""
        step = turn.step
        text = " ".join(t for t in (turn.opened_by.reply if turn.opened_by else "", step.say) if t)
        events: list[LLMEvent] = [TextDelta(text)] if text else []
        for field, value in step.captured.items():
            events.append(ToolCall("capture", {"field": field, "value": value}, self._next_id()))
        if step.outcome == "open":
            return events
        complete = step.outcome == "complete"
        result = lead.result if complete else lead.failed_result
        if result is not None:
            events.append(
                ToolCall("set_variable", {"name": "AI_AGENT_RESULT", "value": result}, self._next_id())
            )
        action = lead.on_complete if complete else lead.on_failed
        if action == "hangup":
            events.append(ToolCall("hangup", {}, self._next_id()))
        elif action == "transfer":
            events.append(ToolCall("transfer", {"destination": lead.destination}, self._next_id()))
        return events

    def _asking_for(self, messages: Sequence[Message]) -> Intent | None:
        """The intent whose reply the agent said last, if the caller has answered it since."""
        for message in reversed(messages[:-1]):
            if message.role == "assistant":
                return next((i for i in self.intents if i.reply == message.content), None)
            if message.role == "user":
                return None
        return None

    def _next_id(self) -> str:
        return f"scripted-{next(self._call_ids)}"
