"""docs/providers.md's option tables list exactly the options each provider's model declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from providers import registry
from providers.options import ProviderOptions

DOC = (Path(__file__).resolve().parents[2] / "docs" / "providers.md").read_text(encoding="utf-8")

# Section heading (start) -> the provider names whose options it documents.
SECTIONS = {
    "## OpenAI": ["openai"],
    "## Deepgram": ["deepgram"],
    "## Azure AI Speech": ["azure"],
    "## Offline": ["local", "scripted"],
}


def section(start: str) -> str:
    parts = re.split(r"(?m)^(?=## )", DOC)
    return next(p for p in parts if p.startswith(start))


def documented(text: str) -> list[str]:
    """Option names of every '| Option |' table in ``text``."""
    names: list[str] = []
    for table in re.findall(r"(?ms)^\| Option .*?(?=^[^|]|\Z)", text):
        names += re.findall(r"(?m)^\| `([a-z_]+)`", table)
    return names


def own_options(name: str) -> set[str]:
    stage = registry.stages_of(name)[0]
    model = registry.options_model(stage, name)
    assert model is not None
    return set(model.model_fields) - set(ProviderOptions.model_fields)


@pytest.mark.parametrize("start", SECTIONS)
def test_vendor_tables_match_models(start: str) -> None:
    expected = set().union(*(own_options(n) for n in SECTIONS[start]))
    shown = set(documented(section(start)))
    # A vendor table may also explain a common option it reads itself (openai's `timeout`).
    assert expected <= shown <= expected | set(ProviderOptions.model_fields)


def test_every_provider_is_documented() -> None:
    providers = {n for s in ("stt", "llm", "tts", "realtime") for n in registry.names(s)}
    assert providers == {n for names in SECTIONS.values() for n in names}


def test_common_table_matches_provider_options() -> None:
    assert set(documented(section("## Failover"))) == set(ProviderOptions.model_fields)
