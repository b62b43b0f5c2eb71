"""Two rooms: the runtime admin tools ship in the wheel; the development stack (make up) does not."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_runtime_never_imports_the_dev_stack() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("ari_agent", "providers")
        for path in (ROOT / package).rglob("*.py")
        if "devstack" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_wheel_leaves_the_dev_stack_out() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["ari_agent*", "providers*"]
    assert (ROOT / "devstack" / "stack.py").exists()
    assert not (ROOT / "ari_agent" / "ops" / "stack.py").exists()
