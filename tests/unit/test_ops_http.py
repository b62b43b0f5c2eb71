"""/metrics and /calls behind an optional bearer token; health endpoints always open."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ari_agent.observability.http import exposure_warning, http_token, make_http_app
from ari_agent.observability.metrics import Metrics

CALLS = [{"call_id": "c1", "profile": "frontdesk", "state": "listening"}]


async def client_for(token: str | None) -> TestClient:  # type: ignore[type-arg]
    app = make_http_app(Metrics(), lambda: True, lambda: CALLS, token=token)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_token_guards_metrics_and_calls_only() -> None:
    client = await client_for("s3cret-token")
    try:
        for path in ("/healthz", "/readyz"):
            assert (await client.get(path)).status == 200
        for path in ("/metrics", "/calls"):
            resp = await client.get(path)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            bad = await client.get(path, headers={"Authorization": "Bearer wrong"})
            assert bad.status == 401
        ok = await client.get("/calls", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200 and await ok.json() == CALLS
        metrics = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert "ari_agent_active_calls" in await metrics.text()
    finally:
        await client.close()


async def test_no_token_means_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing configured at all (a named file that is missing is an error: test_privacy_findings).
    for name in ("AGENT_HTTP_TOKEN", "AGENT_HTTP_TOKEN_FILE", "AGENT_HTTP__TOKEN", "AGENT_HTTP__TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    client = await client_for(None)
    try:
        assert (await client.get("/calls")).status == 200
    finally:
        await client.close()


async def test_token_from_environment_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AGENT_HTTP_TOKEN", "from-env")
    assert http_token() == "from-env"
    monkeypatch.delenv("AGENT_HTTP_TOKEN")
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.setenv("AGENT_HTTP_TOKEN_FILE", str(secret))
    assert http_token() == "from-file"
    client = await client_for(None)
    try:
        assert (await client.get("/calls")).status == 401
        assert (await client.get("/calls", headers={"Authorization": "Bearer from-file"})).status == 200
    finally:
        await client.close()


def test_exposure_warning() -> None:
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("0.0.0.0", "tok") is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning is not None and "AGENT_HTTP__TOKEN" in warning
