"""Provider names -> classes. The only place that knows which vendors exist.

Classes are imported lazily so a vendor's SDK (an optional extra) is needed
only when a profile uses it.
"""

from __future__ import annotations

import importlib
from typing import Literal, Protocol, cast

from providers.base import LLM, STT, TTS, ProviderContext

Stage = Literal["stt", "llm", "tts"]

_REGISTRY: dict[Stage, dict[str, str]] = {
    "stt": {"local": "providers.local.stt:PocketsphinxSTT"},
    "llm": {"scripted": "providers.scripted.llm:ScriptedLLM"},
    "tts": {"local": "providers.local.tts:EspeakTTS"},
}


class _Factory(Protocol):
    @classmethod
    def create(cls, ctx: ProviderContext) -> object: ...

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]: ...


class UnknownProvider(LookupError):
    pass


def names(stage: Stage) -> list[str]:
    return sorted(_REGISTRY[stage])


def _load(stage: Stage, name: str) -> type[_Factory]:
    try:
        target = _REGISTRY[stage][name]
    except KeyError:
        raise UnknownProvider(
            f"unknown {stage} provider '{name}'; known: {', '.join(names(stage))}"
        ) from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownProvider(
            f"{stage} provider '{name}' needs a package that is not installed ({exc.name}); "
            f"install it: pip install 'ari-agent[{name}]'"
        ) from None
    return cast(type[_Factory], getattr(module, attr))


def check(stage: Stage, name: str, ctx: ProviderContext) -> list[str]:
    """Problems that stop this provider from running for this profile (empty: fine)."""
    try:
        return _load(stage, name).check(ctx)
    except UnknownProvider as exc:
        return [str(exc)]


def create_stt(name: str, ctx: ProviderContext) -> STT:
    return cast(STT, _load("stt", name).create(ctx))


def create_llm(name: str, ctx: ProviderContext) -> LLM:
    return cast(LLM, _load("llm", name).create(ctx))


def create_tts(name: str, ctx: ProviderContext) -> TTS:
    return cast(TTS, _load("tts", name).create(ctx))
