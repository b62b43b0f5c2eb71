"""The agent's chan_websocket listener (connection_type=client): Asterisk's connection to the call.

``route`` is pure (message vectors as Asterisk 22.10.1 sends them); the server
is real aiohttp on a loopback port, with a client speaking as Asterisk does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp import WSMessage, WSMsgType

from ari_agent.media.leg import DropCounters
from ari_agent.media.websocket_leg import SLIN16, WebSocketLeg
from ari_agent.media.ws_listener import (
    REJECT_AUTH,
    REJECT_FORMAT,
    REJECT_NO_START,
    REJECT_TAKEN,
    REJECT_TIMEOUT,
    REJECT_UNKNOWN,
    SUBPROTOCOL,
    WebSocketMediaServer,
    authorized,
    route,
)

# Seen from Asterisk 22.10.1 (ExternalMedia connection_type=client, external_host=ari-agent).
START = (
    "MEDIA_START connection_id:ari-agent channel:WebSocket/ari-agent/0x7f8dcc0042d0 "
    "channel_id:{cid} format:{fmt} optimal_frame_size:{size} ptime:20"
)


def text(data: str) -> WSMessage:
    return WSMessage(WSMsgType.TEXT, data, None)


def make_leg(heard: list[np.ndarray] | None = None) -> WebSocketLeg:
    sink = heard if heard is not None else []
    return WebSocketLeg(SLIN16, sink.append, DropCounters(), jitter_ms=0)


async def tone_reaches_the_leg(asterisk: aiohttp.ClientWebSocketResponse, heard: list[np.ndarray]) -> None:
    """One frame of slin16 sent as Asterisk would arrives whole at the leg's ``heard``."""
    tone = (np.arange(320) % 50 * 100).astype("<i2")
    await asterisk.send_bytes(tone.tobytes())
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert heard and np.array_equal(heard[0], tone)


def test_route_vectors() -> None:
    leg = make_leg()
    waiting = {"aia-m-0123456789ab": leg}
    ok = route(text(START.format(cid="aia-m-0123456789ab", fmt="slin16", size=640)), waiting)
    assert ok.leg is leg and ok.reason == ""
    assert ok.start is not None and ok.start.channel_id == "aia-m-0123456789ab" and ok.start.ptime == 20
    unknown = route(text(START.format(cid="aia-m-ffffffffffff", fmt="slin16", size=640)), waiting)
    assert unknown.leg is None and unknown.reason == REJECT_UNKNOWN
    # The right channel in the wrong format (e.g. a ulaw call's section used by a slin16 one).
    fmt = route(text(START.format(cid="aia-m-0123456789ab", fmt="ulaw", size=160)), waiting)
    assert fmt.leg is None and fmt.reason == REJECT_FORMAT
    for garbage in (
        text("MEDIA_XON channel_id:aia-m-0123456789ab"),
        text("MEDIA_START"),
        text("\x00\xff not a message"),
        text(""),
        WSMessage(WSMsgType.BINARY, bytes(640), None),
        WSMessage(WSMsgType.CLOSE, 1000, ""),
    ):
        routed = route(garbage, waiting)
        assert routed.leg is None and routed.reason == REJECT_NO_START, garbage


def test_route_refuses_a_closed_leg() -> None:
    leg = make_leg()
    leg.close()
    routed = route(text(START.format(cid="m1", fmt="slin16", size=640)), {"m1": leg})
    assert routed.leg is None and routed.reason == REJECT_TAKEN


@pytest.fixture
async def server() -> AsyncIterator[WebSocketMediaServer]:
    srv = WebSocketMediaServer("127.0.0.1", 0, hello_timeout=0.5)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def _connect(
    srv: WebSocketMediaServer, session: aiohttp.ClientSession
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(f"ws://127.0.0.1:{srv.port}/media", protocols=(SUBPROTOCOL,))


async def test_connection_reaches_its_leg_both_ways_and_strangers_are_refused(
    server: WebSocketMediaServer,
) -> None:
    heard: list[np.ndarray] = []
    leg = make_leg(heard)
    server.expect("aia-m-0123456789ab", leg)
    async with aiohttp.ClientSession() as session:
        stranger = await _connect(server, session)
        assert stranger.protocol == SUBPROTOCOL
        await stranger.send_str(START.format(cid="aia-m-ffffffffffff", fmt="slin16", size=640))
        assert (await stranger.receive(timeout=3)).type == WSMsgType.CLOSE
        assert server.rejected == {REJECT_UNKNOWN: 1}
        assert not leg.connected.is_set()

        asterisk = await _connect(server, session)
        await asterisk.send_str(START.format(cid="aia-m-0123456789ab", fmt="slin16", size=640))
        await asyncio.wait_for(leg.connected.wait(), 3)
        assert leg.start is not None and leg.start.channel == "WebSocket/ari-agent/0x7f8dcc0042d0"
        await tone_reaches_the_leg(asterisk, heard)

        # A second connection for the same call is refused; the first goes on.
        again = await _connect(server, session)
        await again.send_str(START.format(cid="aia-m-0123456789ab", fmt="slin16", size=640))
        assert (await again.receive(timeout=3)).type == WSMsgType.CLOSE
        assert server.rejected[REJECT_TAKEN] == 1

        await leg.send_media(bytes(range(256)) * 5)  # two frames, one message
        got = await asterisk.receive(timeout=3)
        assert got.type == WSMsgType.BINARY and got.data == bytes(range(256)) * 5

        # The leg's close closes Asterisk's connection and forgets the call.
        leg.close()
        await leg.closed_io()
        assert (await asterisk.receive(timeout=3)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert server.waiting == 0


async def test_silent_and_garbage_connections_are_closed(server: WebSocketMediaServer) -> None:
    leg = make_leg()
    server.expect("m1", leg)
    async with aiohttp.ClientSession() as session:
        silent = await _connect(server, session)
        assert (await silent.receive(timeout=3)).type == WSMsgType.CLOSE
        garbage = await _connect(server, session)
        await garbage.send_bytes(b"\xff" * 640)
        assert (await garbage.receive(timeout=3)).type == WSMsgType.CLOSE
        async with session.get(f"http://127.0.0.1:{server.port}/media") as plain:
            assert plain.status == 426
    assert server.rejected == {REJECT_TIMEOUT: 1, REJECT_NO_START: 2}
    assert not leg.connected.is_set() and server.waiting == 1


async def test_asterisk_hanging_up_is_seen_by_the_leg(server: WebSocketMediaServer) -> None:
    leg = make_leg()
    server.expect("m1", leg)
    async with aiohttp.ClientSession() as session:
        asterisk = await _connect(server, session)
        await asterisk.send_str(START.format(cid="m1", fmt="slin16", size=640))
        await asyncio.wait_for(leg.connected.wait(), 3)
        await asterisk.close()
    for _ in range(100):
        if leg.disconnected:
            break
        await asyncio.sleep(0.02)
    assert leg.disconnected
    leg.close()
    assert server.waiting == 0


def test_authorized_vectors() -> None:
    creds = ("ari-agent", "s3cret:with colon")
    # base64("ari-agent:s3cret:with colon"), as Asterisk's ast_http_create_basic_auth_header writes it.
    assert authorized("Basic YXJpLWFnZW50OnMzY3JldDp3aXRoIGNvbG9u", creds)
    for header in (
        "",
        "Basic",
        "Basic !!!notbase64",
        "Bearer YXJpLWFnZW50OnMzY3JldDp3aXRoIGNvbG9u",
        "Basic YXJpLWFnZW50OnMzY3JldA==",  # ari-agent:s3cret
        "Basic b3RoZXI6czNjcmV0OndpdGggY29sb24=",  # other:s3cret:with colon
    ):
        assert not authorized(header, creds), header


async def test_credentials_are_checked_before_the_upgrade() -> None:
    srv = WebSocketMediaServer("127.0.0.1", 0, hello_timeout=0.5, credentials=("ari-agent", "pw"))
    await srv.start()
    leg = make_leg()
    srv.expect("m1", leg)
    url = f"ws://127.0.0.1:{srv.port}/media"
    try:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": aiohttp.encode_basic_auth("ari-agent", "wrong")}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await session.ws_connect(url, protocols=(SUBPROTOCOL,), headers=headers)
                assert err.value.status == 401
            ws = await session.ws_connect(
                url,
                protocols=(SUBPROTOCOL,),
                headers={"Authorization": aiohttp.encode_basic_auth("ari-agent", "pw")},
            )
            await ws.send_str(START.format(cid="m1", fmt="slin16", size=640))
            await asyncio.wait_for(leg.connected.wait(), 3)
            leg.close()
            await leg.closed_io()
    finally:
        await srv.close()
    assert srv.rejected == {REJECT_AUTH: 2}
