"""Provider names -> classes. The only place that knows which vendors exist.

Classes are imported lazily so a vendor's SDK (an optional extra) is needed
only when a profile uses it.
"""

from __future__ import annotations

import importlib
from typing import Literal, Protocol, cast

from providers.base import LLM, STT, TTS, ProviderContext, Realtime, STTCapabilities
from providers.embeddings import Embedder
from providers.options import ProviderOptions

Stage = Literal["stt", "llm", "tts", "realtime", "embeddings"]

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
    # Optional: a profile that names one searches its knowledge base by meaning too (hybrid).
    "embeddings": {
        "openai": "providers.openai.embeddings:OpenAIEmbeddings",
        "local": "providers.local.embeddings:MiniLMEmbeddings",
    },
}

# The extra that brings a provider's packages, where it is not named after the provider.
_EXTRAS: dict[tuple[Stage, str], str] = {("embeddings", "local"): "embeddings"}


class _Factory(Protocol):
    @classmethod
    def create(cls, ctx: ProviderContext) -> object: ...

    @classmethod
    def check(cls, ctx: ProviderContext) -> list[str]: ...


class UnknownProvider(LookupError):
    """The name names no provider of the stage: a mistake in the profile."""


class ProviderUnavailable(LookupError):
    """The provider exists but this installation lacks a package it needs."""


_BASES: dict[Stage, type] = {"stt": STT, "llm": LLM, "tts": TTS, "realtime": Realtime, "embeddings": Embedder}
_OURS = ("providers", "ari_agent", "tests")


def names(stage: Stage) -> list[str]:
    return sorted(_REGISTRY[stage])


def stages_of(name: str) -> list[Stage]:
    """The stages a registered provider name serves (empty for plugins and typos)."""
    return [stage for stage, table in _REGISTRY.items() if name in table]


def load(stage: Stage, name: str) -> type[_Factory]:
    """The provider class ``name`` means for ``stage``.

    Raises UnknownProvider when the name is wrong, ProviderUnavailable when its package is missing.
    """
    registered = _REGISTRY[stage].get(name)
    # "package.module:Class" names a provider outside the registry (tests, plugins).
    if registered is None and ":" not in name:
        elsewhere = stages_of(name)
        also = f" ('{name}' is a {'/'.join(elsewhere)} provider)" if elsewhere else ""
        raise UnknownProvider(f"unknown {stage} provider '{name}'{also}; known: {', '.join(names(stage))}")
    module_name, _, attr = (registered or name).partition(":")
    if not module_name or not attr.isidentifier():
        raise UnknownProvider(f"{stage} provider '{name}' is not a known name nor 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        if registered is None and (missing == module_name or module_name.startswith(missing + ".")):
            raise UnknownProvider(f"{stage} provider '{name}': there is no module {module_name}") from None
        if missing.split(".")[0] in _OURS:
            raise  # our own code is broken: not the operator's to fix
        extra = f"'ari-agent[{_EXTRAS.get((stage, name), name)}]'" if registered else missing
        raise ProviderUnavailable(
            f"{stage} provider '{name}' needs a package that is not installed ({missing}); "
            f"install it: pip install {extra}"
        ) from None
    except Exception as exc:
        if registered is not None:
            raise
        raise UnknownProvider(
            f"{stage} provider '{name}': importing {module_name} failed ({type(exc).__name__})"
        ) from None
    cls = getattr(module, attr, None)
    base = _BASES[stage]
    if cls is None:
        raise UnknownProvider(f"{stage} provider '{name}': module {module_name} has no {attr}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UnknownProvider(
            f"{stage} provider '{name}' is not a subclass of providers.base.{base.__name__}"
        )
    return cast(type[_Factory], cls)


def options_model(stage: Stage, name: str) -> type[ProviderOptions] | None:
    """The options the provider declares (None: it declares none and takes them unchecked)."""
    model: type[ProviderOptions] | None = getattr(load(stage, name), "Options", None)
    return model


def check(stage: Stage, name: str, ctx: ProviderContext) -> list[str]:
    """Problems that stop this provider from running for this profile (empty: fine)."""
    try:
        return load(stage, name).check(ctx)
    except (UnknownProvider, ProviderUnavailable) as exc:
        return [str(exc)]


def create_stt(name: str, ctx: ProviderContext) -> STT:
    return cast(STT, load("stt", name).create(ctx))


def create_llm(name: str, ctx: ProviderContext) -> LLM:
    return cast(LLM, load("llm", name).create(ctx))


def create_tts(name: str, ctx: ProviderContext) -> TTS:
    return cast(TTS, load("tts", name).create(ctx))


def create_realtime(name: str, ctx: ProviderContext) -> Realtime:
    return cast(Realtime, load("realtime", name).create(ctx))


def create_embedder(name: str, ctx: ProviderContext) -> Embedder:
    return cast(Embedder, load("embeddings", name).create(ctx))


def stt_capabilities(name: str, ctx: ProviderContext) -> STTCapabilities:
    """What the STT provider ``name`` would declare for ``ctx`` (``check``: nothing is built).

    A plugin recogniser that is not an ``STT`` subclass may lack ``capabilities_for``; it then
    declares what its class says, or nothing, rather than failing ``check`` and ``run``."""
    cls = load("stt", name)
    capabilities_for = getattr(cls, "capabilities_for", None)
    if capabilities_for is None:
        caps = getattr(cls, "capabilities", None)
        return caps if isinstance(caps, STTCapabilities) else STTCapabilities()
    return cast(STTCapabilities, capabilities_for(ctx))
