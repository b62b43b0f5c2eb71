"""Every registered adapter declares its options; the models refuse what the adapters would ignore."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers import registry
from providers.options import ProviderOptions, validated

STAGES: tuple[registry.Stage, ...] = ("stt", "llm", "tts", "realtime")
ADAPTERS = [(stage, name) for stage in STAGES for name in registry.names(stage)]


@pytest.mark.parametrize(("stage", "name"), ADAPTERS, ids=[f"{s}-{n}" for s, n in ADAPTERS])
def test_every_adapter_declares_a_strict_options_model(stage: registry.Stage, name: str) -> None:
    model = registry.options_model(stage, name)
    assert model is not None and issubclass(model, ProviderOptions)
    assert model.model_config.get("extra") == "forbid"
    with pytest.raises(ValidationError):
        validated(model, {"no_such_option": 1})


def test_one_options_table_per_provider_name() -> None:
    # [options.<name>] is shared by every stage of that name, so they must agree on its model.
    for name in {n for s in STAGES for n in registry.names(s)}:
        models = {registry.options_model(s, name) for s in registry.stages_of(name)}
        assert len(models) == 1, (name, models)


def test_validated_keeps_only_given_options_converted() -> None:
    model = registry.options_model("tts", "local")
    assert model is not None
    assert validated(model, {"rate": 170, "first_audio_timeout": 5}) == {
        "rate": 170,
        "first_audio_timeout": 5.0,
    }
    with pytest.raises(ValidationError):
        validated(model, {"first_audio_timeout": 0})
