"""The profile catalogue: what each profile's providers are, and what is wrong with them.

One reading of the profiles serves both ``check`` (which prints the problems)
and ``run`` (which refuses to start on an error and builds the providers from
the same plan), so the two cannot disagree about a config. A profile's
providers are resolved per stage in failover order: the name must name a
provider of that stage, its options must pass the provider's options model,
and the provider must be ready here (keys, programs, packages).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from ari_agent.conversation.languages import primary
from ari_agent.profiles import ProfileConfig
from ari_agent.profiles.template import template_warnings
from providers import registry
from providers.base import ProviderContext, STTCapabilities
from providers.options import ProviderOptions, validated

if TYPE_CHECKING:
    from ari_agent.config import Settings

# error: the config is wrong (check exits 2, run refuses to start).
# unready: the provider cannot run on this machine (check exits 2, run leaves it out of its chain).
# warning: printed, nothing refused.
Severity = Literal["error", "unready", "warning"]


@dataclass(frozen=True)
class Problem:
    field: str
    problem: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return (
            f"{self.field}: {self.problem} Fix: {self.fix}" if self.fix else f"{self.field}: {self.problem}"
        )


@dataclass(frozen=True)
class Slot:
    """One provider of one stage of a profile, with its options checked."""

    stage: registry.Stage
    key: str  # the profile field that names it: stt, llm, tts, realtime, apology_tts
    name: str
    ctx: ProviderContext
    ready: bool


@dataclass
class ProfilePlan:
    name: str
    profile: ProfileConfig
    slots: list[Slot] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def ready(self, key: str) -> list[Slot]:
        """The providers of a profile field that can run, in failover order."""
        return [s for s in self.slots if s.key == key and s.ready]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _stages(profile: ProfileConfig) -> list[tuple[registry.Stage, str, list[str]]]:
    # A realtime profile uses only its realtime chain and the apology voice (see app).
    chains: list[tuple[registry.Stage, str, list[str]]] = (
        [("realtime", "realtime", profile.realtime)]
        if profile.realtime
        else [("stt", "stt", profile.stt), ("llm", "llm", profile.llm), ("tts", "tts", profile.tts)]
    )
    embeddings: list[tuple[registry.Stage, str, list[str]]] = (
        [("embeddings", "embeddings", [profile.embeddings])] if profile.embeddings else []
    )
    return [*chains, ("tts", "apology_tts", [profile.apology_tts]), *embeddings]


def _own_options(model: type[ProviderOptions]) -> str:
    own = [n for n in model.model_fields if n not in ProviderOptions.model_fields]
    return ", ".join(own) + (", " if own else "") + "and the retry, breaker and timeout options"


def _option_problems(
    where: str, provider: str, model: type[ProviderOptions], exc: ValidationError
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        dotted = ".".join(str(p) for p in err["loc"])
        at = f"{where}.options.{provider}" + (f".{dotted}" if dotted else "")
        if err["type"] == "extra_forbidden":
            problems.append(
                Problem(
                    at,
                    f"not an option of the {provider} provider.",
                    f"remove it or correct its spelling; {provider} takes {_own_options(model)} "
                    "(docs/providers.md)",
                )
            )
        else:
            message = err["msg"].removeprefix("Value error, ")
            problems.append(
                Problem(at, f"{message}.", f"correct '{at}' in the config file (docs/providers.md)")
            )
    return problems


def _slot(
    name: str, profile: ProfileConfig, stage: registry.Stage, key: str, provider: str
) -> tuple[Slot | None, list[Problem]]:
    where = f"profiles.{name}"
    try:
        cls = registry.load(stage, provider)
    except registry.UnknownProvider as exc:
        return None, [Problem(f"{where}.{key}", f"{exc}.", f"correct '{where}.{key}' in the config file")]
    except registry.ProviderUnavailable as exc:
        return None, [Problem(f"{where}.{key}", f"{exc}.", "", "unready")]
    model: type[ProviderOptions] | None = getattr(cls, "Options", None)
    raw: dict[str, Any] = dict(profile.options.get(provider, {}))
    if model is None:
        options = raw  # a plugin that declares no options model takes them as given
    else:
        try:
            options = validated(model, raw)
        except ValidationError as exc:
            return None, _option_problems(where, provider, model, exc)
    ctx = dataclasses.replace(profile.provider_context(name, provider), options=options)
    try:
        unready = cls.check(ctx)
    except Exception as exc:  # a plugin's own check is broken: say so, don't crash check
        unready = [f"its check failed ({type(exc).__name__}: {exc})"]
    problems = [Problem(f"{where}.{key}", f"{provider}: {text}", "", "unready") for text in unready]
    return Slot(stage, key, provider, ctx, ready=not unready), problems


def _unused_options(name: str, profile: ProfileConfig, used: set[str]) -> list[Problem]:
    problems = []
    for provider in profile.options:
        if provider in used:
            continue
        at = f"profiles.{name}.options.{provider}"
        if ":" in provider or registry.stages_of(provider):
            problems.append(
                Problem(
                    at,
                    f"options for '{provider}', which this profile does not use; they are ignored.",
                    f"remove the table, or name '{provider}' in one of the profile's stages",
                    "warning",
                )
            )
        else:
            stages: tuple[registry.Stage, ...] = ("stt", "llm", "tts", "realtime", "embeddings")
            known = sorted({n for s in stages for n in registry.names(s)})
            problems.append(
                Problem(
                    at,
                    f"no provider is named '{provider}'.",
                    f"correct the table's name (providers: {', '.join(known)}) or remove it",
                )
            )
    return problems


def plan_profile(name: str, profile: ProfileConfig) -> ProfilePlan:
    plan = ProfilePlan(name, profile)
    used: set[str] = set()
    for stage, key, wanted in _stages(profile):
        for provider in wanted:
            used.add(provider)
            slot, problems = _slot(name, profile, stage, key, provider)
            if slot is not None:
                plan.slots.append(slot)
            plan.problems.extend(problems)
    plan.problems.extend(_unused_options(name, profile, used))
    if profile.end_of_turn == "model" and not profile.realtime:
        from ari_agent.audio.turn_model import turn_model_problem

        missing = turn_model_problem()
        if missing is not None:
            plan.problems.append(
                Problem(
                    f"profiles.{name}.end_of_turn",
                    missing,
                    'install it as it says, or set end_of_turn = "silence"',
                )
            )
    plan.problems.extend(_frontend_problems(name, profile))
    plan.problems.extend(_tool_server_problems(name, profile))
    plan.problems.extend(_lead_problems(name, profile))
    plan.problems.extend(_language_problems(plan))
    plan.problems.extend(
        Problem(f"profiles.{name}", text, "", "warning") for text in profile.shared_phrases(name)
    )
    plan.problems.extend(
        Problem(f"profiles.{name}.instructions", text, fix, "warning")
        for text, fix in template_warnings(profile.instructions, profile.template_variables)
    )
    plan.problems.extend(
        Problem(f"profiles.{name}.languages.{tag}.{key}", text, fix, "warning")
        for tag, lang in profile.languages.items()
        for key, own in (("instructions", lang.instructions), ("hint", lang.hint))
        if own
        for text, fix in template_warnings(own, profile.template_variables)
    )
    # One options table serves every stage of its provider: report each fault once.
    plan.problems = list(dict.fromkeys(plan.problems))
    return plan


def _lead_problems(name: str, profile: ProfileConfig) -> list[Problem]:
    """A lead whose answers the profile's recogniser cannot hear, or a stack that cannot run it."""
    if profile.lead is None:
        return []
    where = f"profiles.{name}.lead"
    if profile.realtime:
        return [
            Problem(where, "a realtime profile does not run the lead dialog (nor hear keys).", "", "warning")
        ]
    problems: list[Problem] = []
    try:
        caps = getattr(registry.load("stt", profile.stt[0]), "capabilities", None)
    except Exception:  # a wrong or missing provider is reported by its own slot
        return problems
    if isinstance(caps, STTCapabilities) and caps.grammar_only:
        spoken = [f.name for f in profile.fields if f.type in ("text", "email", "date")]
        keyed = [f.name for f in profile.fields if f.type in ("digits", "phone")]
        if spoken:
            problems.append(
                Problem(
                    where,
                    f"{profile.stt[0]} hears only its phrases: the answers to {', '.join(spoken)} "
                    "(free text, email, date) cannot be heard.",
                    "use a recogniser of free speech for these fields",
                    "warning",
                )
            )
        if keyed:
            questions = " ".join(f.prompt.lower() for f in profile.fields if f.name in keyed)
            if "key" not in questions and "press" not in questions:
                problems.append(
                    Problem(
                        where,
                        f"{profile.stt[0]} does not hear spoken numbers: {', '.join(keyed)} must be keyed.",
                        "ask callers to key them in and press hash",
                        "warning",
                    )
                )
    return problems


def _language_problems(plan: ProfilePlan) -> list[Problem]:
    """Languages the recogniser cannot hear, or cannot tell apart, and voices that cannot speak."""
    profile = plan.profile
    where = f"profiles.{plan.name}"
    if profile.realtime:
        if not profile.languages:
            return []
        return [
            Problem(
                f"{where}.languages",
                "a realtime profile does not switch languages; its provider answers as it hears.",
                "remove languages, or use stt/llm/tts",
                "warning",
            )
        ]
    problems: list[Problem] = []
    wanted = [profile.language, *profile.languages]
    reporting: list[str] = []
    for slot in plan.slots:
        if slot.key != "stt":
            continue
        caps = registry.stt_capabilities(slot.name, slot.ctx)
        if caps.reports_language:
            reporting.append(slot.name)
        if caps.hears is not None:
            deaf = [tag for tag in wanted if primary(tag) not in caps.hears]
            if deaf:
                problems.append(
                    Problem(
                        f"{where}.stt",
                        f"{slot.name} hears only {', '.join(caps.hears)}: callers speaking "
                        f"{', '.join(deaf)} cannot be heard.",
                        "use a recogniser of those languages (a cloud STT) first in stt",
                        "warning",
                    )
                )
    stt_slots = [s.name for s in plan.slots if s.key == "stt"]
    if profile.languages and stt_slots and not reporting:
        problems.append(
            Problem(
                f"{where}.languages",
                f"{', '.join(stt_slots)} does not report the caller's language: calls stay in "
                f"{profile.language} and the other languages are never used.",
                "put a recogniser that reports the caller's language first in stt "
                "(docs/providers.md says which do, and with which settings)",
                "warning",
            )
        )
    for slot in plan.slots:
        if slot.key != "tts" or not slot.ready:
            continue
        cls = registry.load("tts", slot.name)
        for tag in profile.languages:
            ctx = language_context(slot.ctx, profile, tag)
            try:
                unready = cls.check(ctx)
            except Exception as exc:
                unready = [f"its check failed ({type(exc).__name__}: {exc})"]
            problems.extend(
                Problem(f"{where}.languages.{tag}.voice", f"{slot.name}: {text}", "", "warning")
                for text in unready
            )
    return problems


def language_context(ctx: ProviderContext, profile: ProfileConfig, tag: str) -> ProviderContext:
    """A slot's context for speaking (or thinking in) one of the profile's languages."""
    return dataclasses.replace(
        ctx, language=tag, voice=profile.voice_for(tag), instructions=profile.instructions_for(tag)
    )


def _frontend_problems(name: str, profile: ProfileConfig) -> list[Problem]:
    from ari_agent.audio.frontend import fix_for, frontend_missing, wanted_stages

    stages = wanted_stages(profile)
    if not stages:
        return []
    if profile.realtime:
        return [
            Problem(
                f"profiles.{name}.{stage}",
                "the audio front end serves pipeline profiles only; a realtime profile ignores it.",
                f"remove it, or set {stage} = false",
                "warning",
            )
            for stage in stages
        ]
    missing = frontend_missing()
    if missing is None:
        return []
    return [Problem(f"profiles.{name}.{stages[0]}", missing, fix_for(stages))]


def _tool_server_problems(name: str, profile: ProfileConfig) -> list[Problem]:
    if not profile.tool_servers:
        return []
    from ari_agent.toolservers.hub import ToolServerError, mcp_missing, resolve_headers

    where = f"profiles.{name}.tool_servers"
    if profile.realtime:
        return [
            Problem(
                where,
                "tool servers serve pipeline profiles only; a realtime profile ignores them.",
                "remove them, or use stt/llm/tts",
                "warning",
            )
        ]
    missing = mcp_missing()
    if missing is not None:
        return [Problem(where, f"{missing}.", "install it, or remove the tool servers")]
    problems = []
    for server, config in profile.tool_servers.items():
        try:
            resolve_headers(config.headers)
        except ToolServerError as exc:
            problems.append(Problem(f"{where}.{server}.headers", f"{exc}.", "", "unready"))
    return problems


def plan_all(settings: Settings) -> dict[str, ProfilePlan]:
    return {name: plan_profile(name, profile) for name, profile in sorted(settings.all_profiles().items())}


def all_problems(plans: dict[str, ProfilePlan]) -> list[Problem]:
    return [p for plan in plans.values() for p in plan.problems]
