"""Provider names -> classes. The only place that knows which vendors exist.

Classes are imported lazily so a vendor's SDK (an optional extra) is needed
only when a profile uses it.
"""

from __future__ import annotations

import importlib
from typing import Literal, Protocol, cast

from providers.base import LLM, STT, TTS, ProviderContext, Realtime

Stage = Literal["stt", "llm", "tts", "realtime"]

_REGISTRY: dict[Stage, dict[str, str]] = {
    "stt": {
        "local": "providers.local.stt:PocketsphinxSTT",
        "openai": "providers.openai.stt:OpenAISTT",
        "deepgram": "providers.deepgram.stt:DeepgramSTT",
        "azure": "providers.azure.stt:AzureSTT",
    },
    "llm": {
        "scripted": "providers.scripted.llm:ScriptedLLM",
        "openai": "providers.openai.llm:OpenAILLM",
    },
    "tts": {
        "local": "providers.local.tts:EspeakTTS",
        "openai": "providers.openai.tts:OpenAITTS",
        "deepgram": "providers.deepgram.tts:DeepgramTTS",
        "azure": "providers.azure.tts:AzureTTS",
    },
    "realtime": {
        "openai": "providers.openai.realtime:OpenAIRealtime",
    },
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
    # "package.module:Class" names a provider outside the registry (tests, plugins).
    target = name if ":" in name else _REGISTRY[stage].get(name, "")
    if not target:
        raise UnknownProvider(f"unknown {stage} provider '{name}'; known: {', '.join(names(stage))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("providers", "ari_agent", "tests"):
            raise  # our own code is broken: not the operator's to fix
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


def create_realtime(name: str, ctx: ProviderContext) -> Realtime:
    return cast(Realtime, _load("realtime", name).create(ctx))
