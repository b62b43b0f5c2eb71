"""Offline providers: PocketSphinx speech-to-text and espeak-ng text-to-speech."""

from providers.local.stt import PocketsphinxSTT
from providers.local.tts import EspeakTTS

__all__ = ["EspeakTTS", "PocketsphinxSTT"]
