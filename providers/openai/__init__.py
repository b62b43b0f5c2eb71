"""OpenAI adapters (LLM, TTS, STT, Realtime speech-to-speech); also any OpenAI-compatible server.

Needs the ``openai`` package (``pip install 'ari-agent[openai]'``). See
docs/providers.md for the profile options.
"""
