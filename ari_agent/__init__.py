"""ari-agent: an AI voice agent for Asterisk, as an ARI Stasis application."""

__version__ = "0.1.0"
