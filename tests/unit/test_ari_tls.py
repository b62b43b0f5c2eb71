"""ARI over TLS against a loopback aiohttp server with a CA made here (the real Asterisk:
tests/integration/test_ari_tls.py)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ari_agent.ari.client import AriClient, AriTlsError
from ari_agent.ari.tls import client_ssl
from ari_agent.errors import ConfigError
from tests.integration.testpki import LabPki, make_pki


def test_client_ssl_choices(tmp_path: Path) -> None:
    assert client_ssl("http://127.0.0.1:8088", None, True) is True
    assert client_ssl("https://127.0.0.1:8089", None, False) is False
    with pytest.raises(ConfigError) as caught:
        client_ssl("https://127.0.0.1:8089", tmp_path / "nope.pem", True)
    assert "nope.pem" in str(caught.value) and "AGENT_ARI__CA_FILE" in str(caught.value)
    pki = make_pki(tmp_path / "pki")
    assert isinstance(client_ssl("https://127.0.0.1:8089", pki.ca, True), ssl.SSLContext)


@pytest.fixture
async def tls_ari(tmp_path: Path) -> AsyncIterator[tuple[str, LabPki]]:
    pki = make_pki(tmp_path / "pki")

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"system": {"version": "22.10.1"}})

    app = web.Application()
    app.router.add_get("/ari/asterisk/info", info)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}", pki
    finally:
        await runner.cleanup()


async def test_verified_with_the_ca_file(tls_ari: tuple[str, LabPki]) -> None:
    url, pki = tls_ari
    async with AriClient(url, "u", "p", ssl=client_ssl(url, pki.ca, True)) as client:
        assert (await client.asterisk_info())["system"]["version"] == "22.10.1"


async def test_a_certificate_that_does_not_verify_is_refused(tls_ari: tuple[str, LabPki]) -> None:
    url, pki = tls_ari
    for ca in (pki.other_ca, None):  # a wrong CA file, and the system's CAs
        async with AriClient(url, "u", "p", ssl=client_ssl(url, ca, True)) as client:
            with pytest.raises(AriTlsError) as caught:
                await client.asterisk_info()
        assert "does not verify" in str(caught.value) and "AGENT_ARI__CA_FILE" in str(caught.value)
    async with AriClient(url, "u", "p", ssl=client_ssl(url, None, False)) as client:
        assert (await client.asterisk_info())["system"]["version"] == "22.10.1"


async def test_https_to_a_plain_port_says_so(unused_tcp_port: int) -> None:
    async def info(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/ari/asterisk/info", info)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    try:
        url = f"https://127.0.0.1:{unused_tcp_port}"
        async with AriClient(url, "u", "p", ssl=client_ssl(url, None, True)) as client:
            with pytest.raises(AriTlsError) as caught:
                await client.asterisk_info()
        assert "tlsenable" in str(caught.value)
    finally:
        await runner.cleanup()
