"""Build a profile's providers from its catalogue plan (``run``; ``check`` reads the same plan)."""

from __future__ import annotations

import asyncio
import logging

from ari_agent.conversation.session import ProfileProviders
from ari_agent.conversation.speech import SESSION_RATE
from ari_agent.profiles.catalogue import ProfilePlan, Slot, language_context
from providers import registry
from providers.base import TTS, ProviderError
from providers.embeddings import Embedder
from providers.resilience import build_chain

log = logging.getLogger(__name__)


class ProfileUnavailable(Exception):
    pass


def _usable(plan: ProfilePlan, key: str) -> list[Slot]:
    """The stage's providers that can run, in failover order; the rest are logged."""
    for problem in plan.problems:
        if problem.severity == "unready" and problem.field == f"profiles.{plan.name}.{key}":
            log.warning("profile %s: provider left out: %s", plan.name, problem)
    slots = plan.ready(key)
    if not slots:
        named = getattr(plan.profile, key)
        raise ProfileUnavailable(f"no usable {key} provider among {named}")
    return slots


async def build_providers(plan: ProfilePlan) -> ProfileProviders:
    """The profile's providers, built and warmed (models, voices) before any call."""
    if plan.errors:
        raise ProfileUnavailable("; ".join(str(p) for p in plan.errors))
    canned = await _canned(plan)
    if plan.profile.realtime:
        chosen = _usable(plan, "realtime")[0]
        realtime = registry.create_realtime(chosen.name, chosen.ctx)
        await realtime.prepare()
        voice = _usable(plan, "apology_tts")[0]
        return ProfileProviders(
            tts=registry.create_tts(voice.name, voice.ctx), realtime=realtime, canned=canned
        )
    chains = {}
    for key in ("stt", "llm", "tts"):
        slots = {s.name: s.ctx for s in _usable(plan, key)}
        chains[key] = (list(slots), slots.__getitem__)
    stt = build_chain("stt", *chains["stt"])
    llm = build_chain("llm", *chains["llm"])
    tts = build_chain("tts", *chains["tts"])
    voices = _voices(plan)
    await asyncio.gather(
        stt.prepare(),
        llm.prepare(),
        tts.prepare(plan.profile.known_phrases(), SESSION_RATE),
        *(voice.prepare((), SESSION_RATE) for voice in voices.values()),
    )
    return ProfileProviders(tts=tts, stt=stt, llm=llm, canned=canned, voices=voices)


async def build_embedder(plan: ProfilePlan) -> Embedder | None:
    """The profile's embeddings provider, warmed (a local model loads now, not in a call); None when
    it names none or the one it names cannot run here: its knowledge is then searched by words."""
    if not plan.profile.embeddings:
        return None
    slots = plan.ready("embeddings")
    if not slots:
        for problem in plan.problems:
            if problem.field == f"profiles.{plan.name}.embeddings":
                log.error("profile %s: knowledge searched by words only: %s", plan.name, problem)
        return None
    embedder = registry.create_embedder(slots[0].name, slots[0].ctx)
    try:
        await embedder.prepare()
    except (ProviderError, OSError, RuntimeError) as exc:
        log.error(
            "profile %s: embeddings %s cannot start (%s); searching by words", plan.name, embedder.name, exc
        )
        await embedder.aclose()
        return None
    return embedder


def _voices(plan: ProfilePlan) -> dict[str, TTS]:
    """A TTS chain per language of ``languages``, speaking with that language's voice."""
    profile = plan.profile
    voices: dict[str, TTS] = {}
    for tag in profile.languages:
        slots = {s.name: language_context(s.ctx, profile, tag) for s in _usable(plan, "tts")}
        voices[tag] = build_chain("tts", list(slots), slots.__getitem__, scope=tag)
    return voices


async def _canned(plan: ProfilePlan) -> dict[str, bytes]:
    """The apology and error replies, synthesised now by the apology voice (offline by default)."""
    slot = _usable(plan, "apology_tts")[0]
    voice = registry.create_tts(slot.name, slot.ctx)
    canned: dict[str, bytes] = {}
    for phrase in plan.profile.canned_phrases():
        chunks = [chunk async for chunk in voice.synthesize(phrase, SESSION_RATE)]
        canned[phrase] = b"".join(chunks)
    await voice.aclose()
    return canned
