"""Unit tests never write the machine's audit log (its default sits beside the real call store)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_audit_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENT_AUDIT__PATH", str(tmp_path / "audit" / "audit.jsonl"))
