"""AriClient against a loopback aiohttp server that speaks the relevant bits of ARI.

The fake records every request (method, raw path, query, JSON body, auth header)
and answers from a table, so each test checks what actually went over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ari_agent.ari.client import (
    AriClient,
    AriError,
    AriHttpError,
    AriNotFound,
    AriUnavailable,
    normalize_ari_url,
)
from ari_agent.ari.events import Bridge, Caller, DialplanLocation
from ari_agent.errors import AgentError

USER = "agent"
PASSWORD = "s3cr3t-Pa55word"

CHANNEL = {
    "id": "aiagent-i1-em-1",
    "name": "UnicastRTP/127.0.0.1:40000-0x7f00",
    "state": "Down",
    "protocol_id": "",
    "caller": {"name": "", "number": ""},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {"context": "default", "exten": "s", "priority": 1, "app_name": "", "app_data": ""},
    "creationtime": "2024-05-29T13:34:57.001+0000",
    "language": "en",
    "channelvars": {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "14512"},
}
CALLER = CHANNEL | {
    "id": "1716989696.12",
    "name": "PJSIP/caller-00000004",
    "state": "Up",
    "caller": {"name": "Alice", "number": "5551234"},
    "dialplan": {
        "context": "from-caller",
        "exten": "100",
        "priority": 2,
        "app_name": "Stasis",
        "app_data": "x",
    },
}
BRIDGE = {
    "id": "aiagent-i1-br-1",
    "technology": "simple_bridge",
    "bridge_type": "mixing",
    "bridge_class": "stasis",
    "creator": "Stasis",
    "name": "call-1",
    "channels": [],
    "creationtime": "2024-05-29T13:34:56.900+0000",
    "video_mode": "talker",
}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str


@dataclass
class FakeAri:
    """Loopback ARI: ``replies[(method, path)] = (status, json-or-text)``; default 204."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    stall: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.seen.append(
            Seen(
                request.method,
                request.raw_path.split("?", 1)[0],
                dict(request.query),
                body,
                request.headers.get("Authorization", ""),
            )
        )
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"message": "Authentication required"}, status=401)
        key = (request.method, request.raw_path.split("?", 1)[0])
        if key == ("GET", "/ari/slow"):
            await self.stall.wait()
        status, payload = self.replies.get(key, (204, None))
        if payload is None:
            return web.Response(status=status)
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, content_type="text/html")
        return web.json_response(payload, status=status)

    @property
    def last(self) -> Seen:
        return self.seen[-1]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    ari = FakeAri()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ari.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ari.url = f"http://127.0.0.1:{port}"
    yield ari
    ari.stall.set()
    await runner.cleanup()


@pytest.fixture
async def client(fake: FakeAri) -> AsyncIterator[AriClient]:
    c = AriClient(fake.url, USER, PASSWORD, timeout=5.0)
    yield c
    await c.close()


# --------------------------------------------------------------------------- URL rule


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8088", "http://127.0.0.1:8088/ari"),
        ("http://127.0.0.1:8088/", "http://127.0.0.1:8088/ari"),
        ("http://127.0.0.1:8088/ari", "http://127.0.0.1:8088/ari"),
        ("http://127.0.0.1:8088/ari/", "http://127.0.0.1:8088/ari"),
        ("http://127.0.0.1:8088//ari//", "http://127.0.0.1:8088/ari"),
        ("  http://pbx.example:8088  ", "http://pbx.example:8088/ari"),
        ("https://pbx.example/asterisk/", "https://pbx.example/asterisk/ari"),
        ("HTTPS://pbx.example/asterisk/ari", "https://pbx.example/asterisk/ari"),
        ("http://[::1]:8088", "http://[::1]:8088/ari"),
        ("http://pbx.example/arity", "http://pbx.example/arity/ari"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_ari_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ws://127.0.0.1:8088", "http:// or https://"),
        ("127.0.0.1:8088", "http:// or https://"),
        ("", "http:// or https://"),
        ("http://", "no host"),
        ("http://127.0.0.1:99999", "invalid port"),
        ("http://127.0.0.1:8088/ari?x=1", "query"),
    ],
)
def test_normalize_url_rejects(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_ari_url(given)


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="must not contain credentials") as info:
        normalize_ari_url(f"http://{USER}:{PASSWORD}@127.0.0.1:8088")
    assert PASSWORD not in str(info.value)


def test_client_repr_hides_password() -> None:
    c = AriClient("http://127.0.0.1:8088/ari/", USER, PASSWORD)
    assert c.url == "http://127.0.0.1:8088/ari"
    assert PASSWORD not in repr(c)


# --------------------------------------------------------------------------- wire format

Call = Callable[[AriClient], Awaitable[Any]]


@pytest.mark.parametrize(
    ("call", "method", "path", "query", "body"),
    [
        (lambda c: c.asterisk_info(), "GET", "/ari/asterisk/info", {}, None),
        (lambda c: c.get_application("ai-agent"), "GET", "/ari/applications/ai-agent", {}, None),
        (lambda c: c.list_modules(), "GET", "/ari/asterisk/modules", {}, None),
        (lambda c: c.get_module("res_ari.so"), "GET", "/ari/asterisk/modules/res_ari.so", {}, None),
        (lambda c: c.list_channels(), "GET", "/ari/channels", {}, None),
        (lambda c: c.list_bridges(), "GET", "/ari/bridges", {}, None),
        (lambda c: c.answer("1716989696.12"), "POST", "/ari/channels/1716989696.12/answer", {}, None),
        (
            lambda c: c.hangup("1716989696.12"),
            "DELETE",
            "/ari/channels/1716989696.12",
            {"reason": "normal"},
            None,
        ),
        (lambda c: c.hangup("c1", reason="busy"), "DELETE", "/ari/channels/c1", {"reason": "busy"}, None),
        (lambda c: c.continue_in_dialplan("c1"), "POST", "/ari/channels/c1/continue", {}, None),
        (
            lambda c: c.continue_in_dialplan("c1", context="from-caller", extension="200", priority=1),
            "POST",
            "/ari/channels/c1/continue",
            {"context": "from-caller", "extension": "200", "priority": "1"},
            None,
        ),
        (
            lambda c: c.continue_in_dialplan("c1", label="done"),
            "POST",
            "/ari/channels/c1/continue",
            {"label": "done"},
            None,
        ),
        (
            lambda c: c.set_variable("c1", "AI_AGENT_STATUS", "COMPLETED"),
            "POST",
            "/ari/channels/c1/variable",
            {"variable": "AI_AGENT_STATUS", "value": "COMPLETED"},
            None,
        ),
        (
            lambda c: c.get_variable("c1", "UNICASTRTP_LOCAL_PORT"),
            "GET",
            "/ari/channels/c1/variable",
            {"variable": "UNICASTRTP_LOCAL_PORT"},
            None,
        ),
        (
            lambda c: c.create_bridge("aiagent-i1-br-1", name="call-1"),
            "POST",
            "/ari/bridges/aiagent-i1-br-1",
            {"type": "mixing", "name": "call-1"},
            None,
        ),
        (lambda c: c.destroy_bridge("aiagent-i1-br-1"), "DELETE", "/ari/bridges/aiagent-i1-br-1", {}, None),
        (
            lambda c: c.add_channel("aiagent-i1-br-1", "aiagent-i1-em-1"),
            "POST",
            "/ari/bridges/aiagent-i1-br-1/addChannel",
            {"channel": "aiagent-i1-em-1"},
            None,
        ),
        (
            lambda c: c.external_media("aiagent-i1-em-1", "ai-agent", "127.0.0.1:40000", "slin16"),
            "POST",
            "/ari/channels/externalMedia",
            {
                "channelId": "aiagent-i1-em-1",
                "app": "ai-agent",
                "external_host": "127.0.0.1:40000",
                "format": "slin16",
                "encapsulation": "rtp",
                "transport": "udp",
                "direction": "both",
            },
            None,
        ),
        (
            lambda c: c.external_media(
                "aiagent-i1-em-1", "ai-agent", "127.0.0.1:40002", "ulaw", variables={"CALL_ID": "abc"}
            ),
            "POST",
            "/ari/channels/externalMedia",
            {
                "channelId": "aiagent-i1-em-1",
                "app": "ai-agent",
                "external_host": "127.0.0.1:40002",
                "format": "ulaw",
                "encapsulation": "rtp",
                "transport": "udp",
                "direction": "both",
            },
            {"variables": {"CALL_ID": "abc"}},
        ),
        (
            lambda c: c.originate(
                "Local/100@from-caller",
                app="caller-app",
                app_args="a,b",
                channel_id="test-1",
                caller_id='"Alice" <5551234>',
                variables={"X": "1"},
            ),
            "POST",
            "/ari/channels",
            {
                "endpoint": "Local/100@from-caller",
                "app": "caller-app",
                "appArgs": "a,b",
                "channelId": "test-1",
                "callerId": '"Alice" <5551234>',
                "timeout": "30",
            },
            {"variables": {"X": "1"}},
        ),
        (
            lambda c: c.originate(
                "PJSIP/100@trunk", context="from-caller", extension="100", priority=1, timeout=5
            ),
            "POST",
            "/ari/channels",
            {
                "endpoint": "PJSIP/100@trunk",
                "context": "from-caller",
                "extension": "100",
                "priority": "1",
                "timeout": "5",
            },
            None,
        ),
        (
            lambda c: c.play("c1", "sound:hello-world", playback_id="pb-1"),
            "POST",
            "/ari/channels/c1/play",
            {"media": "sound:hello-world", "playbackId": "pb-1"},
            None,
        ),
        (lambda c: c.play("c1", "tone:ring"), "POST", "/ari/channels/c1/play", {"media": "tone:ring"}, None),
    ],
)
async def test_request_shapes(
    fake: FakeAri, client: AriClient, call: Call, method: str, path: str, query: dict[str, str], body: Any
) -> None:
    # Well-formed replies for the endpoints that return something.
    fake.replies[("GET", "/ari/channels")] = (200, [])
    fake.replies[("GET", "/ari/bridges")] = (200, [])
    fake.replies[("GET", "/ari/asterisk/modules")] = (200, [])
    fake.replies[("GET", "/ari/channels/c1/variable")] = (200, {"value": "14512"})
    fake.replies[("POST", "/ari/bridges/aiagent-i1-br-1")] = (200, BRIDGE)
    fake.replies[("POST", "/ari/channels/externalMedia")] = (200, CHANNEL)
    fake.replies[("POST", "/ari/channels")] = (200, CHANNEL)
    await call(client)
    assert len(fake.seen) == 1
    seen = fake.last
    assert (seen.method, seen.path, seen.query, seen.body) == (method, path, query, body)
    assert seen.authorization == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


async def test_ids_are_quoted_as_one_path_segment(fake: FakeAri, client: AriClient) -> None:
    await client.answer("odd/id@x y")
    # '/' must stay escaped so the id stays one segment; '@' is legal in a path as is.
    assert fake.last.path == "/ari/channels/odd%2Fid@x%20y/answer"


async def test_base_url_with_ari_suffix_is_not_doubled(fake: FakeAri) -> None:
    async with AriClient(fake.url + "/ari/", USER, PASSWORD) as c:
        await c.answer("c1")
    assert fake.last.path == "/ari/channels/c1/answer"


# --------------------------------------------------------------------------- decoded replies


async def test_channels_and_bridges_are_decoded(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("GET", "/ari/channels")] = (200, [CALLER, CHANNEL])
    fake.replies[("GET", "/ari/bridges")] = (
        200,
        [BRIDGE | {"channels": ["1716989696.12", "aiagent-i1-em-1"]}],
    )
    fake.replies[("GET", "/ari/channels/1716989696.12")] = (200, CALLER)
    channels = await client.list_channels()
    assert [c.id for c in channels] == ["1716989696.12", "aiagent-i1-em-1"]
    assert channels[0].caller == Caller("5551234", "Alice")
    assert channels[0].dialplan == DialplanLocation("from-caller", "100", 2)
    assert channels[1].channelvars["UNICASTRTP_LOCAL_PORT"] == "14512"
    assert await client.list_bridges() == [
        Bridge("aiagent-i1-br-1", "mixing", ("1716989696.12", "aiagent-i1-em-1"))
    ]
    assert (await client.get_channel("1716989696.12")).name == "PJSIP/caller-00000004"


async def test_external_media_returns_channel(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("POST", "/ari/channels/externalMedia")] = (200, CHANNEL)
    channel = await client.external_media("aiagent-i1-em-1", "ai-agent", "127.0.0.1:40000", "slin16")
    assert channel.id == "aiagent-i1-em-1"
    assert channel.channelvars["UNICASTRTP_LOCAL_ADDRESS"] == "127.0.0.1"


async def test_create_bridge_returns_bridge(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("POST", "/ari/bridges/aiagent-i1-br-1")] = (200, BRIDGE)
    assert await client.create_bridge("aiagent-i1-br-1") == Bridge("aiagent-i1-br-1", "mixing", ())


async def test_info_and_application_dicts(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("GET", "/ari/asterisk/info")] = (200, {"system": {"version": "22.10.1"}})
    fake.replies[("GET", "/ari/applications/ai-agent")] = (
        200,
        {
            "name": "ai-agent",
            "channel_ids": ["1716989696.12"],
            "bridge_ids": [],
            "endpoint_ids": [],
            "device_names": [],
        },
    )
    fake.replies[("GET", "/ari/asterisk/modules/res_ari.so")] = (
        200,
        {"name": "res_ari.so", "description": "Asterisk RESTful Interface", "status": "Running"},
    )
    assert (await client.asterisk_info())["system"]["version"] == "22.10.1"
    assert (await client.get_application("ai-agent"))["channel_ids"] == ["1716989696.12"]
    assert (await client.get_module("res_ari.so"))["status"] == "Running"


async def test_get_variable_value_and_missing(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("GET", "/ari/channels/c1/variable")] = (200, {"value": "127.0.0.1"})
    assert await client.get_variable("c1", "UNICASTRTP_LOCAL_ADDRESS") == "127.0.0.1"
    fake.replies[("GET", "/ari/channels/c1/variable")] = (404, {"message": "Provided variable was not found"})
    assert await client.get_variable("c1", "NOPE") is None


async def test_malformed_success_reply_is_an_ari_error(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("POST", "/ari/channels/externalMedia")] = (200, {"name": "no id"})
    with pytest.raises(AriError, match="unexpected reply: Channel: field 'id' is missing"):
        await client.external_media("x", "ai-agent", "127.0.0.1:40000", "ulaw")
    fake.replies[("GET", "/ari/channels")] = (200, {"not": "a list"})
    with pytest.raises(AriError, match="expected a JSON array"):
        await client.list_channels()
    fake.replies[("GET", "/ari/asterisk/info")] = (200, "<html>proxy page</html>")
    with pytest.raises(AriError, match="not JSON"):
        await client.asterisk_info()


# --------------------------------------------------------------------------- errors


async def test_http_error_carries_status_and_asterisk_message(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("POST", "/ari/bridges/b1/addChannel")] = (
        422,
        {"message": "Channel not in Stasis application"},
    )
    with pytest.raises(AriHttpError) as info:
        await client.add_channel("b1", "em1")
    exc = info.value
    assert not isinstance(exc, AriNotFound)
    assert isinstance(exc, AgentError)
    assert (exc.status, exc.method, exc.path, exc.message) == (
        422,
        "POST",
        "/bridges/b1/addChannel",
        "Channel not in Stasis application",
    )
    assert "422" in str(exc) and "Channel not in Stasis application" in str(exc)


async def test_404_is_not_found_for_cleanup(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("DELETE", "/ari/channels/gone")] = (404, {"message": "Channel not found"})
    fake.replies[("DELETE", "/ari/bridges/gone")] = (404, {"message": "Bridge not found"})
    with pytest.raises(AriNotFound, match="Channel not found") as info:
        await client.hangup("gone")
    assert info.value.status == 404
    with pytest.raises(AriNotFound, match="Bridge not found"):
        await client.destroy_bridge("gone")


async def test_non_json_error_body_is_used_as_message(fake: FakeAri, client: AriClient) -> None:
    fake.replies[("POST", "/ari/channels/c1/answer")] = (500, "Internal boom")
    with pytest.raises(AriHttpError, match="HTTP 500: Internal boom"):
        await client.answer("c1")
    fake.replies[("POST", "/ari/channels/c1/answer")] = (503, None)
    with pytest.raises(AriHttpError, match="HTTP 503: Service Unavailable"):
        await client.answer("c1")


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))


async def test_bad_credentials_do_not_leak(fake: FakeAri, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-" + PASSWORD
    async with AriClient(fake.url, USER, wrong) as c:
        with pytest.raises(AriHttpError) as info:
            await c.asterisk_info()
    assert info.value.status == 401
    assert info.value.message == "Authentication required"
    assert wrong not in _all_text(info.value)
    assert base64.b64encode(f"{USER}:{wrong}".encode()).decode() not in _all_text(info.value)
    assert wrong not in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_connection_refused_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with AriClient(f"http://127.0.0.1:{_closed_port()}", USER, PASSWORD) as c:
        with pytest.raises(AriUnavailable) as info:
            await c.hangup("c1")
    assert "DELETE /channels/c1" in str(info.value)
    assert isinstance(info.value, AriError)
    assert PASSWORD not in _all_text(info.value)
    assert PASSWORD not in caplog.text


async def test_timeout_is_unavailable(fake: FakeAri, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with AriClient(fake.url, USER, PASSWORD, timeout=0.2) as c:
        with pytest.raises(AriUnavailable, match=r"no answer within 0\.2 s") as info:
            await c._request("GET", "/slow")
    assert PASSWORD not in _all_text(info.value)
    assert PASSWORD not in caplog.text


async def test_given_session_is_not_closed(fake: FakeAri) -> None:
    async with aiohttp.ClientSession() as session:
        c = AriClient(fake.url, USER, PASSWORD, session=session)
        await c.answer("c1")
        await c.close()
        assert not session.closed
        await c.answer("c2")
    assert [s.path for s in fake.seen] == ["/ari/channels/c1/answer", "/ari/channels/c2/answer"]


async def test_own_session_is_reopened_after_close(fake: FakeAri) -> None:
    c = AriClient(fake.url, USER, PASSWORD)
    await c.answer("c1")
    await c.close()
    await c.answer("c2")
    await c.close()
    assert len(fake.seen) == 2
