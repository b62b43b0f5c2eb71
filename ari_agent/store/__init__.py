"""The call store: ended calls, their turns (text only where the operator opted in) and captured fields."""

from ari_agent.store.models import CallSummary, StoredCall, StoredTurn, parse_utc
from ari_agent.store.sqlite import SCHEMA_VERSION, CallStore, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "CallStore",
    "CallSummary",
    "StoreError",
    "StoredCall",
    "StoredTurn",
    "parse_utc",
]
