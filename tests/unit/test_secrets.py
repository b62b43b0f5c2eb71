from pathlib import Path

from providers.secrets import Secret, get_secret, missing_key


def test_env_wins_over_file(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text("from-file\n")
    assert get_secret("X_KEY", {"X_KEY": "from-env", "X_KEY_FILE": str(f)}).reveal() == "from-env"  # type: ignore[union-attr]
    assert get_secret("X_KEY", {"X_KEY_FILE": str(f)}).reveal() == "from-file"  # type: ignore[union-attr]
    assert get_secret("X_KEY", {"X_KEY_FILE": str(tmp_path / "none")}) is None


def test_secret_never_shows() -> None:
    s = Secret("sk-abcdef")
    for text in (repr(s), str(s), f"{s}", f"{s!r}", "%s" % s, str([s])):  # noqa: UP031
        assert "sk-abcdef" not in text
    assert s.reveal() == "sk-abcdef"
    assert "OPENAI_API_KEY" in missing_key("OPENAI_API_KEY")
