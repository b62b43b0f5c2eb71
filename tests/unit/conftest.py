"""Unit tests never write the machine's call store or audit log.

Both default to the state directory (/var/lib/ari-agent for root); several tests
clear every AGENT_* variable, so the state directory itself is moved.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("AGENT_AUDIT__PATH", str(tmp_path / "state" / "audit.jsonl"))
