"""A scripted dialog standing in for a language model (offline default)."""

from providers.scripted.llm import ScriptedLLM

__all__ = ["ScriptedLLM"]
