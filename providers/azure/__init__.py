"""Azure AI Speech: live speech-to-text and streaming speech (azure-cognitiveservices-speech).

Settings, from the environment and the profile's ``[options.azure]``: the key
``AZURE_SPEECH_KEY`` and the region ``AZURE_SPEECH_REGION`` (or options
``region``, ``endpoint``, or ``host`` for a Speech container), and
``segmentation_silence_ms`` (how long a pause ends a phrase).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Imported here so that a missing SDK is reported when the provider is loaded.
import azure.cognitiveservices.speech  # noqa: F401

from providers.azure.sdk import AzureSettings
from providers.secrets import get_secret, missing_key

KEY_NAME = "AZURE_SPEECH_KEY"
REGION_NAME = "AZURE_SPEECH_REGION"


def settings(options: Mapping[str, Any]) -> AzureSettings:
    region = options.get("region")
    if region is None:
        secret = get_secret(REGION_NAME)
        region = secret.reveal() if secret else None
    silence = options.get("segmentation_silence_ms")
    return AzureSettings(
        key=get_secret(KEY_NAME),
        region=str(region) if region else None,
        endpoint=str(options["endpoint"]) if options.get("endpoint") else None,
        host=str(options["host"]) if options.get("host") else None,
        segmentation_silence_ms=int(silence) if silence is not None else None,
    )


def check(options: Mapping[str, Any]) -> list[str]:
    s = settings(options)
    problems: list[str] = []
    if s.key is None and not s.host:  # a local Speech container needs no key
        problems.append(missing_key(KEY_NAME))
    if not (s.region or s.endpoint or s.host):
        problems.append(
            f"Azure region missing: set {REGION_NAME}, "
            "or region, endpoint or host in the profile's azure options"
        )
    return problems
