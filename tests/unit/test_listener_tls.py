"""TLS for the chan_websocket listener (connection_type=client): the settings, the pair check,
and the real listener on loopback with a CA made here (the real Asterisk:
tests/integration/test_transports.py, the wss tests)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import WSMsgType
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ari_agent.cli import EXIT_CONFIG, main
from ari_agent.config import load_settings
from ari_agent.errors import ConfigError
from ari_agent.media.leg import DropCounters
from ari_agent.media.listener_tls import (
    CERT_FIELD,
    CERT_SETTING,
    KEY_FIELD,
    KEY_SETTING,
    PairError,
    check_pair,
    listener_ssl,
)
from ari_agent.media.websocket_leg import SLIN16, WebSocketLeg
from ari_agent.media.ws_listener import SUBPROTOCOL, WebSocketMediaServer
from tests.integration.testpki import LabPki, make_pki
from tests.unit.test_ws_listener import tone_reaches_the_leg

START = (
    "MEDIA_START connection_id:ari-agent channel:WebSocket/ari-agent/0x7f8dcc0042d0 "
    "channel_id:{cid} format:slin16 optimal_frame_size:640 ptime:20"
)


@pytest.fixture
def pki(tmp_path: Path) -> LabPki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other(tmp_path: Path) -> LabPki:
    return make_pki(tmp_path / "other")


# ---------------------------------------------------------------- the pair, pure


def test_check_pair_vectors(pki: LabPki, other: LabPki, tmp_path: Path) -> None:
    cert, key = pki.cert.read_bytes(), pki.key.read_bytes()
    # Instants from the certificate's own dates, not the clock: the lab's PKI is made when the
    # test runs, and a time taken at import (before it) fell outside its validity in one CI run.
    valid = x509.load_pem_x509_certificate(cert)
    inside = valid.not_valid_before_utc + datetime.timedelta(minutes=1)
    second = datetime.timedelta(seconds=1)
    leaf = check_pair(cert, key, inside)
    assert leaf.subject.rfc4514_string() == "CN=127.0.0.1"
    # The chain may follow the leaf; the key must be the first certificate's.
    assert check_pair(cert + pki.ca.read_bytes(), key, inside) == leaf
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    cases: list[tuple[bytes, bytes, datetime.datetime, str, str]] = [
        (cert, other.key.read_bytes(), inside, KEY_FIELD, "does not match"),
        (pki.ca.read_bytes(), key, inside, KEY_FIELD, "does not match"),  # the CA's cert, not the leaf
        (key, key, inside, CERT_FIELD, "no PEM certificate"),
        (b"", key, inside, CERT_FIELD, "no PEM certificate"),
        (b"\x00\xff garbage", key, inside, CERT_FIELD, "no PEM certificate"),
        (cert, cert, inside, KEY_FIELD, "no PEM private key"),
        (cert, b"", inside, KEY_FIELD, "no PEM private key"),
        (cert, encrypted, inside, KEY_FIELD, "encrypted"),
        (cert, key, valid.not_valid_after_utc + second, CERT_FIELD, "expired on"),
        (cert, key, valid.not_valid_before_utc - second, CERT_FIELD, "not valid before"),
    ]
    for cert_pem, key_pem, now, field, words in cases:
        with pytest.raises(PairError) as caught:
            check_pair(cert_pem, key_pem, now)
        assert caught.value.field == field and words in caught.value.problem, (field, words)


# ---------------------------------------------------------------- the files and the settings


def test_listener_ssl_is_tls12_or_later_and_file_errors_name_the_setting(
    pki: LabPki, other: LabPki, tmp_path: Path
) -> None:
    context = listener_ssl(pki.cert, pki.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    key_text = pki.key.read_text()
    cases = [
        (tmp_path / "missing.pem", pki.key, CERT_FIELD, CERT_SETTING, "No such file"),
        (pki.cert, tmp_path / "missing.key", KEY_FIELD, KEY_SETTING, "No such file"),
        (pki.cert, tmp_path, KEY_FIELD, KEY_SETTING, "Is a directory"),
        (pki.cert, other.key, KEY_FIELD, KEY_SETTING, "does not match"),
        (pki.key, pki.key, CERT_FIELD, CERT_SETTING, "no PEM certificate"),
    ]
    for cert, key, field, setting, words in cases:
        with pytest.raises(ConfigError) as caught:
            listener_ssl(cert, key)
        err = caught.value
        assert err.field == field and setting in err.fix and words in err.problem, str(err)
        # The file is named; its key material never is.
        assert "BEGIN" not in str(err) and key_text.splitlines()[1] not in str(err)


def test_cert_and_key_go_together(monkeypatch: pytest.MonkeyPatch, pki: LabPki) -> None:
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE", str(pki.cert))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "tls_key_file" in caught.value.field and KEY_SETTING in caught.value.fix
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__TLS_KEY_FILE", str(pki.key))
    wsc = load_settings().media.websocket
    assert wsc.tls_cert_file == pki.cert and wsc.tls_key_file == pki.key


def test_check_refuses_a_bad_pair_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pki: LabPki, other: LabPki
) -> None:
    monkeypatch.setenv("AGENT_MEDIA__TRANSPORT", "websocket")
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE", "client")
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE", str(pki.cert))
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__TLS_KEY_FILE", str(other.key))
    assert main(["check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{KEY_FIELD}: {other.key}: the private key does not match" in err and KEY_SETTING in err
    assert "Traceback" not in err and "BEGIN" not in err
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__TLS_KEY_FILE", str(pki.key))
    assert main(["check"]) == 0
    assert "tls_cert_file" not in capsys.readouterr().err
    # Set where no listener uses it: said, but not fatal.
    monkeypatch.setenv("AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE", "server")
    assert main(["check"]) == 0
    err = capsys.readouterr().err
    assert "media.websocket.tls_cert_file: is set, but only the WebSocket client listener uses it" in err


# ---------------------------------------------------------------- the listener over TLS


@pytest.fixture
async def tls_server(pki: LabPki) -> AsyncIterator[WebSocketMediaServer]:
    srv = WebSocketMediaServer("127.0.0.1", 0, hello_timeout=0.5, ssl_context=listener_ssl(pki.cert, pki.key))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def test_a_call_both_ways_over_wss(tls_server: WebSocketMediaServer, pki: LabPki) -> None:
    assert tls_server.scheme == "wss"
    heard: list[np.ndarray] = []
    leg = WebSocketLeg(SLIN16, heard.append, DropCounters(), jitter_ms=0)
    tls_server.expect("m1", leg)
    trusting = ssl.create_default_context(cafile=str(pki.ca))  # as Asterisk with ca_list_file
    async with aiohttp.ClientSession() as session:
        asterisk = await session.ws_connect(
            f"wss://127.0.0.1:{tls_server.port}/media", protocols=(SUBPROTOCOL,), ssl=trusting
        )
        transport = asterisk.get_extra_info("ssl_object")
        assert transport is not None and transport.version() in ("TLSv1.2", "TLSv1.3")
        await asterisk.send_str(START.format(cid="m1"))
        await asyncio.wait_for(leg.connected.wait(), 3)
        await tone_reaches_the_leg(asterisk, heard)
        await leg.send_media(bytes(range(256)) * 5)
        got = await asterisk.receive(timeout=3)
        assert got.type == WSMsgType.BINARY and got.data == bytes(range(256)) * 5
        leg.close()
        await leg.closed_io()
    assert tls_server.rejected == {}


async def test_plain_and_untrusting_clients_are_refused(
    tls_server: WebSocketMediaServer, other: LabPki
) -> None:
    leg = WebSocketLeg(SLIN16, lambda _: None, DropCounters(), jitter_ms=0)
    tls_server.expect("m1", leg)
    async with aiohttp.ClientSession() as session:
        # Plain ws:// to the TLS port: no HTTP answer, so no upgrade.
        with pytest.raises(aiohttp.ClientError):
            await session.ws_connect(f"ws://127.0.0.1:{tls_server.port}/media", protocols=(SUBPROTOCOL,))
        # A client that trusts another CA (Asterisk with the wrong ca_list_file) refuses us.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.ws_connect(
                f"wss://127.0.0.1:{tls_server.port}/media",
                protocols=(SUBPROTOCOL,),
                ssl=ssl.create_default_context(cafile=str(other.ca)),
            )
    assert not leg.connected.is_set() and tls_server.waiting == 1
    leg.close()
