"""The other media transports through the real Asterisk 22: AudioSocket (ExternalMedia over
TCP) and WebSocket (chan_websocket, the agent connecting to Asterisk's /media/<id>).

The same calls as on RTP (test_calls, test_barge_in, test_media_input), with
``media.transport = audiosocket`` or ``websocket``: everything above the media
leg must not notice. Deadlines are generous; nothing here measures latency.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from ari_agent.media import audiosocket
from ari_agent.media.ws_listener import (
    REJECT_AUTH,
    REJECT_FORMAT,
    REJECT_NO_START,
    REJECT_TAKEN,
    REJECT_TIMEOUT,
    REJECT_UNKNOWN,
)
from tests.integration.lab import AgentFactory, AgentProcess, Lab, metric, voiced_segments
from tests.integration.rtp_caller import RtpCaller, cough
from tests.integration.test_barge_in import (
    test_own_echo_does_not_interrupt_but_the_caller_does as own_echo_test,
)
from tests.integration.test_calls import (
    ADDRESS,
    GOODBYE,
    GREETING,
    HOURS,
    RECEPTION,
    agent_leftovers,
    agent_lines,
    heard_turns,
    status_after_stasis,
)
from tests.integration.test_interruptions import _sound_over_the_greeting
from tests.integration.test_ops import doctor


def audiosocket_env(lab: Lab) -> dict[str, str]:
    # TCP on the first number of the slot's media range (RTP uses the range for UDP only).
    return {
        "AGENT_MEDIA__TRANSPORT": "audiosocket",
        "AGENT_MEDIA__AUDIOSOCKET__LISTEN_PORT": str(lab.ports.agent_media[0]),
    }


def websocket_env(lab: Lab) -> dict[str, str]:
    # connection_type=server: the agent connects to the lab Asterisk's HTTP server (ARI's URL).
    return {"AGENT_MEDIA__TRANSPORT": "websocket"}


def websocket_client_env(lab: Lab) -> dict[str, str]:
    # connection_type=client: the lab's websocket_client.conf [ari-agent] dials this port.
    return {
        "AGENT_MEDIA__TRANSPORT": "websocket",
        "AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE": "client",
        "AGENT_MEDIA__WEBSOCKET__LISTEN_PORT": str(lab.ws_client_port),
        "AGENT_MEDIA__WEBSOCKET__USERNAME": lab.ws_client_user,
        "AGENT_MEDIA__WEBSOCKET__PASSWORD": lab.ws_client_password,
    }


def websocket_wss_env(lab: Lab, section: str = "ari-agent-tls") -> dict[str, str]:
    # The lab's wss:// websocket_client.conf sections dial this port; the agent serves the
    # certificate the lab CA signed for 127.0.0.1 (the one Asterisk's own TLS port serves).
    assert lab.tls is not None
    return {
        **websocket_client_env(lab),
        "AGENT_MEDIA__WEBSOCKET__CLIENT_NAME": section,
        "AGENT_MEDIA__WEBSOCKET__LISTEN_PORT": str(lab.ws_client_tls_port),
        "AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE": str(lab.tls.cert),
        "AGENT_MEDIA__WEBSOCKET__TLS_KEY_FILE": str(lab.tls.key),
    }


ENVS = {"audiosocket": audiosocket_env, "websocket": websocket_env, "websocket-client": websocket_client_env}
# The metrics' transport label (both chan_websocket connection types are "websocket").
LABELS = {"audiosocket": "audiosocket", "websocket": "websocket", "websocket-client": "websocket"}


@pytest.fixture
def as_agent(agent_factory: AgentFactory, lab: Lab) -> AgentProcess:
    return agent_factory.start(audiosocket_env(lab))


@pytest.fixture(params=sorted(ENVS))
def transport(request: pytest.FixtureRequest) -> str:
    """Each stream transport in turn (the calls that must not notice which one carries them)."""
    return str(request.param)


@pytest.fixture
def stream_agent(agent_factory: AgentFactory, lab: Lab, transport: str) -> AgentProcess:
    return agent_factory.start(ENVS[transport](lab))


def media_channel_names(lab: Lab) -> list[str]:
    return [c["name"] for c in lab.ari("GET", "/channels") if c["id"].startswith("aia-")]


def wait_leftovers_gone(lab: Lab, timeout: float = 10.0) -> tuple[list[str], list[str]]:
    deadline = time.monotonic() + timeout
    while agent_leftovers(lab) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.2)
    return agent_leftovers(lab)


INTENTS = (("what time do you open", HOURS), ("where are you located", ADDRESS), ("goodbye", GOODBYE))


def assert_call_answers_each_intent(
    lab: Lab,
    agent: AgentProcess,
    label: str,
    channel_prefix: str,
    intents: tuple[tuple[str, str], ...] = INTENTS,
) -> None:
    """One call over the agent's transport: each answer heard whole, at its true speed; nothing left."""
    handle = lab.place_call([question for question, _ in intents], via="local")
    # While the call runs, the agent's media channel is the transport's own (not UnicastRTP).
    names: list[str] = []
    deadline = time.monotonic() + 30
    while not names and time.monotonic() < deadline:
        names = media_channel_names(lab)
        time.sleep(0.2)
    assert names and all(n.startswith(channel_prefix) for n in names), names
    lab.wait_call_ended(handle, timeout=120)
    record = agent.record_for(handle.number)

    assert agent_lines(record) == [GREETING, *(answer for _, answer in intents)]
    assert record["end_reason"] == "hangup_by_agent"
    assert status_after_stasis(lab, handle.number) == "COMPLETED"
    assert heard_turns(lab, handle) >= set(range(len(intents)))
    # Played at its true speed (espeak-ng speaks the greeting in about 3.6 s; at the wrong
    # rate it would be half or twice as long): AudioSocket's 8 kHz frames taken as 8 kHz,
    # chan_websocket's paced by Asterisk.
    segments = voiced_segments(handle.recording_path)
    assert segments, "the caller heard nothing"
    assert 2.5 < segments[0][1] - segments[0][0] < 5.0, segments
    assert record["media"]["received"] > 100 and record["media"]["lost"] == 0
    assert metric(agent, "ari_agent_rtp_packets_in_total", transport=label) > 100
    assert metric(agent, "ari_agent_rtp_packets_out_total", transport=label) > 100
    assert metric(agent, "ari_agent_rtp_packets_in_total", transport="rtp") == 0
    assert wait_leftovers_gone(lab) == ([], [])


def test_audiosocket_call_answers_each_intent_and_goodbye(lab: Lab, as_agent: AgentProcess) -> None:
    assert_call_answers_each_intent(lab, as_agent, "audiosocket", "AudioSocket/")


async def test_caller_silent_between_words_gets_every_answer(
    lab: Lab, stream_agent: AgentProcess, transport: str, tmp_path: Path
) -> None:
    """A leg that sends nothing while the caller is quiet: the agent's clock fills it, as on RTP."""
    async with RtpCaller.connect(lab, silence_suppression=True) as call:
        try:
            await call.wait_greeting()
            await call.ask("what time do you open")
            said = await call.say("goodbye")
            await call.wait_ended(timeout=30)
        except BaseException:
            call.dump_wav(tmp_path / "call.wav")
            raise
        assert said.last_sent > 0
        assert call.suppressed_frames > 100
    record = stream_agent.record_for(call.number, timeout=20)
    assert [t["text"] for t in record["turns"] if t["role"] == "user"] == ["what time do you open", "goodbye"]
    assert agent_lines(record) == [GREETING, HOURS, GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
    assert record["media"]["gaps"] >= 2
    assert metric(stream_agent, "ari_agent_rtp_inbound_gaps_total", transport=LABELS[transport]) >= 2


def test_one_key_press_gives_one_digit(lab: Lab, stream_agent: AgentProcess) -> None:
    # The digit comes through ARI; the copy Asterisk also writes on the stream (AudioSocket's
    # DTMF kind, chan_websocket's DTMF_END) is only counted.
    handle = lab.place_call(["dtmf:5", "goodbye"], via="local")
    lab.wait_call_ended(handle, timeout=90)
    record = stream_agent.record_for(handle.number)
    users = [t["text"] for t in record["turns"] if t["role"] == "user"]
    assert [u for u in users if u.startswith("caller pressed")] == ["caller pressed 5"], users
    assert record["end_reason"] == "hangup_by_agent"
    assert record["media"]["telephone_events"] == 1


def test_audiosocket_narrowband_booking_transfers_and_strangers_are_refused(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    # media.format = ulaw: AudioSocket carries no µ-law, so the call is 8 kHz slin both ways.
    as_agent = agent_factory.start({**audiosocket_env(lab), "AGENT_MEDIA__FORMAT": "ulaw"})
    # Someone who found the port but not a call's UUID gets nothing, and the calls go on.
    with socket.create_connection(("127.0.0.1", lab.ports.agent_media[0]), timeout=5) as stranger:
        stranger.sendall(audiosocket.encode_uuid(uuid.uuid4()) + audiosocket.encode_audio(bytes(320)))
        assert stranger.recv(100) == b""  # closed by the agent
    handle = lab.place_call(["i want to book an appointment"], via="local")
    lab.wait_dialplan_event(handle.number, "reception", timeout=60)
    record = as_agent.record_for(handle.number, timeout=20)
    assert agent_lines(record) == [GREETING, RECEPTION]
    assert record["end_reason"] == "transferred"
    assert status_after_stasis(lab, handle.number) == "TRANSFERRED"
    assert heard_turns(lab, handle) >= {0, 1}
    segments = voiced_segments(handle.recording_path)
    assert segments and 2.5 < segments[0][1] - segments[0][0] < 5.0, segments
    assert record["media"]["received"] > 50
    dropped = "ari_agent_rtp_packets_dropped_total"
    assert metric(as_agent, dropped, reason="unknown_uuid", transport="audiosocket") == 1


async def test_barge_in_stops_the_reply(
    lab: Lab, stream_agent: AgentProcess, transport: str, tmp_path: Path
) -> None:
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            said = await call.say("what time do you open")
            await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await asyncio.sleep(1.5)  # well into the five-second reply
            said = await call.say("where are you located")
            await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        except BaseException:
            call.dump_wav(tmp_path / "barge-in.wav")
            raise
    record = stream_agent.record_for(call.number, timeout=20)
    replies = [t for t in record["turns"] if t["role"] == "agent"]
    hours = next(t for t in replies if str(t["text"]).startswith("We are open") or t.get("interrupted"))
    assert hours["interrupted"] is True
    heard = str(hours["text"])
    assert heard and HOURS.startswith(heard) and len(heard) < len(HOURS)
    assert replies[-1]["text"] == ADDRESS
    assert metric(stream_agent, "ari_agent_barge_ins_total", profile="frontdesk") == 1
    if LABELS[transport] == "websocket":
        # The cut is Asterisk's: FLUSH_MEDIA dropped what it still held.
        assert record["media"]["ws_flushes"] >= 1


def test_five_concurrent_sip_calls_leave_nothing(lab: Lab, stream_agent: AgentProcess) -> None:
    questions = [("what time do you open", HOURS), ("where are you located", ADDRESS)]
    handles = []
    for i in range(5):
        question, reply = questions[i % len(questions)]
        handles.append((lab.place_call([question, "goodbye"], via="sip", codec="ulaw"), reply))
        time.sleep(0.25)
    for handle, _ in handles:
        lab.wait_call_ended(handle, timeout=180)
    wrong = []
    for handle, reply in handles:
        record = stream_agent.record_for(handle.number, timeout=20)
        if agent_lines(record) != [GREETING, reply, GOODBYE] or record["end_reason"] != "hangup_by_agent":
            wrong.append((handle.number, agent_lines(record), record["end_reason"]))
    assert not wrong, wrong
    assert wait_leftovers_gone(lab) == ([], [])
    status, body = stream_agent.http_get("/calls")
    assert status == 200 and body.strip() == "[]"


def test_kill_and_restart_hands_parked_callers_back(
    lab: Lab, agent_factory: AgentFactory, transport: str
) -> None:
    records_dir = agent_factory.workdir / "restart-records"
    env = ENVS[transport](lab)
    first = agent_factory.start(env, records_dir=records_dir)
    handles = [lab.place_call([], via="local", tail=60, max_duration=90) for _ in range(2)]
    deadline = time.monotonic() + 30
    body = ""
    while time.monotonic() < deadline:
        status, body = first.http_get("/calls")
        if status == 200 and body.count('"call_id"') == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the calls never became active: {body}")
    deadline = time.monotonic() + 10
    while len(agent_leftovers(lab)[0]) < 2:
        assert time.monotonic() < deadline, "expected the agent's bridges while calls are up"
        time.sleep(0.2)
    first.kill()
    # The listening port is free again at once for the new process (SO_REUSEADDR).
    second = agent_factory.start(env, records_dir=records_dir)
    for handle in handles:
        event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=15)
        assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    assert wait_leftovers_gone(lab) == ([], [])
    for handle in handles:
        assert second.record_for(handle.number)["end_reason"] == "failed"


def test_doctor_checks_audiosocket_modules_and_two_way_audio(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    env = {**agent_factory.base_env(tmp_path / "records"), **audiosocket_env(lab)}
    code, checks = doctor(env)
    assert checks["modules"][0]["status"] == "ok"
    assert "chan_audiosocket" in checks["modules"][0]["detail"]
    media = checks["media"][0]
    assert media["status"] == "ok", media
    port = lab.ports.agent_media[0]
    assert f"two-way audio over AudioSocket via 127.0.0.1:{port} " in media["detail"]
    # Asterisk told to connect where nothing listens: the fix names the setting.
    code, checks = doctor({**env, "AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_PORT": "1"})
    assert code == 1 and checks["media"][0]["status"] == "fail", checks
    assert "AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_HOST" in checks["media"][0]["fix"]
    # With the agent holding the port, doctor proves the address on a port of its own.
    agent_factory.start(audiosocket_env(lab))
    code, checks = doctor(env)
    assert checks["media"][0]["status"] == "ok", checks["media"]
    assert code == 0, checks
    assert "the agent holds its own" in checks["media"][0]["detail"]
    lab.agent.rx("module unload chan_audiosocket.so")
    try:
        code, checks = doctor(env)
    finally:
        lab.agent.rx("module load chan_audiosocket.so")
    assert code == 1
    failed = [c for c in checks["modules"] if c["status"] == "fail"]
    assert [c["detail"] for c in failed] == [
        "module chan_audiosocket.so is not loaded (media.transport is audiosocket)"
    ]
    assert "module load chan_audiosocket.so" in failed[0]["fix"]
    assert checks["media"][0]["status"] == "skip"
    # Loaded again (the next test's calls need it).
    assert "chan_audiosocket.so" in lab.agent.rx("module show like audiosocket")


# ---------------------------------------------------------------- WebSocket (chan_websocket)


@pytest.fixture
def ws_agent(agent_factory: AgentFactory, lab: Lab) -> AgentProcess:
    return agent_factory.start(websocket_env(lab))


def test_websocket_call_answers_each_intent_and_goodbye(lab: Lab, ws_agent: AgentProcess) -> None:
    # The goodbye is heard whole before the hang-up: the agent waits for Asterisk's play-out.
    assert_call_answers_each_intent(lab, ws_agent, "websocket", "WebSocket/")


def test_websocket_client_call_answers_each_intent_and_goodbye_and_refuses_strangers(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    """connection_type=client: Asterisk dials the agent's listener (websocket_client.conf)."""
    agent = agent_factory.start(websocket_client_env(lab))
    url = f"ws://127.0.0.1:{lab.ws_client_port}/media"
    # A stranger naming no waiting call is closed, and the calls go on.
    stranger_start = (
        "MEDIA_START connection_id:ari-agent channel:WebSocket/ari-agent/0x1 "
        "channel_id:aia-m-000000000000 format:slin16 optimal_frame_size:640 ptime:20"
    )
    # Without the credentials: 401 before any upgrade. With them but naming no waiting call: closed.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(_stranger(url, stranger_start, {}))
    assert refused.value.status == 401
    auth = {"Authorization": aiohttp.encode_basic_auth(lab.ws_client_user, lab.ws_client_password)}
    assert asyncio.run(_stranger(url, stranger_start, auth)) == "CLOSE"
    # The channel is the websocket_client.conf connection's, not an incoming one.
    assert_call_answers_each_intent(lab, agent, "websocket", "WebSocket/ari-agent/")
    dropped = "ari_agent_rtp_packets_dropped_total"
    assert metric(agent, dropped, reason="unknown_channel", transport="websocket") == 1
    assert metric(agent, dropped, reason="auth", transport="websocket") == 1


def test_websocket_client_with_the_wrong_password_fails_the_call_cleanly(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    # Asterisk presents websocket_client.conf's password; the agent expects another one.
    # Asterisk gives up (401) and hangs its channel up; the caller goes back to the dialplan.
    agent = agent_factory.start({**websocket_client_env(lab), "AGENT_MEDIA__WEBSOCKET__PASSWORD": "not-it"})
    handle = lab.place_call(["what time do you open"], via="local")
    event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=60)
    assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    record = agent.record_for(handle.number, timeout=20)
    assert record["end_reason"] == "failed"
    dropped = "ari_agent_rtp_packets_dropped_total"
    assert metric(agent, dropped, reason="auth", transport="websocket") >= 1
    assert wait_leftovers_gone(lab) == ([], [])
    assert "not-it" not in agent.log_tail(100000)


def listener_refusals(agent: AgentProcess) -> float:
    """Connections the listener refused after their HTTP request (a failed handshake is not one)."""
    reasons = (REJECT_AUTH, REJECT_NO_START, REJECT_UNKNOWN, REJECT_TAKEN, REJECT_FORMAT, REJECT_TIMEOUT)
    dropped = "ari_agent_rtp_packets_dropped_total"
    return sum(metric(agent, dropped, reason=r, transport="websocket") for r in reasons)


def test_websocket_client_over_wss_answers_an_intent_and_goodbye(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    """TLS on the agent's listener: Asterisk (tls_enabled, ca_list_file = the lab CA) dials wss://."""
    agent = agent_factory.start(websocket_wss_env(lab))
    # Plain ws:// to the TLS port gets no HTTP answer at all, so never an upgrade.
    plain = f"ws://127.0.0.1:{lab.ws_client_tls_port}/media"
    auth = {"Authorization": aiohttp.encode_basic_auth(lab.ws_client_user, lab.ws_client_password)}
    with pytest.raises(aiohttp.ClientError):
        asyncio.run(_stranger(plain, "MEDIA_START", auth))
    intents = (("what time do you open", HOURS), ("goodbye", GOODBYE))
    assert_call_answers_each_intent(lab, agent, "websocket", "WebSocket/ari-agent-tls/", intents)
    assert listener_refusals(agent) == 0
    log = agent.log_tail(100000)
    assert f"chan_websocket listener on wss://127.0.0.1:{lab.ws_client_tls_port}" in log
    assert lab.ws_client_password not in log and "PRIVATE KEY" not in log


def test_websocket_client_wss_refused_by_asterisk_fails_the_call_cleanly(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    # [ari-agent-untrusted] trusts another CA: Asterisk refuses the agent's certificate after
    # the handshake, gives up and hangs its channel up; the caller goes back to the dialplan.
    agent = agent_factory.start(websocket_wss_env(lab, "ari-agent-untrusted"))
    messages = lab.agent.log_dir / "messages.log"
    seen = len(messages.read_text(errors="replace")) if messages.exists() else 0
    handle = lab.place_call(["what time do you open"], via="local")
    event = lab.wait_dialplan_event(handle.number, "stasis-return", timeout=60)
    assert event.fields["AI_AGENT_STATUS"] == "FAILED"
    record = agent.record_for(handle.number, timeout=20)
    assert record["end_reason"] == "failed"
    assert wait_leftovers_gone(lab) == ([], [])
    # It was the certificate: Asterisk says so (tcptls.c), and never got as far as HTTP.
    said = messages.read_text(errors="replace")[seen:]
    assert "did not verify" in said, said[-2000:]
    assert listener_refusals(agent) == 0


def test_doctor_checks_websocket_client_over_wss(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    env = {**agent_factory.base_env(tmp_path / "records"), **websocket_wss_env(lab)}
    code, checks = doctor(env)
    media = checks["media"][0]
    assert code == 0 and media["status"] == "ok", checks
    where = f"websocket_client.conf [ari-agent-tls] -> wss://127.0.0.1:{lab.ws_client_tls_port}"
    assert f"two-way audio over WebSocket via {where} " in media["detail"]
    # A section whose CA did not sign the agent's certificate: the fix says what TLS needs.
    code, checks = doctor({**env, **websocket_wss_env(lab, "ari-agent-untrusted")})
    media = checks["media"][0]
    assert code == 1 and media["status"] == "fail", checks
    assert "did not connect" in media["detail"] and "ca_list_file" in media["fix"]
    # A wss:// uri alone does not make Asterisk speak TLS (tls_enabled does): its plain
    # connection is refused by the TLS listener, so nothing connects.
    code, checks = doctor({**env, **websocket_wss_env(lab, "ari-agent-wss-uri-only")})
    media = checks["media"][0]
    assert code == 1 and media["status"] == "fail" and "did not connect" in media["detail"], checks
    assert "connections refused: none" in media["detail"], media
    assert wait_leftovers_gone(lab) == ([], [])


async def _stranger(url: str, first: str, headers: dict[str, str]) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=("media",), headers=headers) as ws,
    ):
        await ws.send_str(first)
        await ws.send_bytes(bytes(640))
        message = await ws.receive(timeout=10)
        return message.type.name


@pytest.mark.parametrize("kind", ["websocket", "websocket-client"])
def test_websocket_narrowband_booking_transfers(lab: Lab, agent_factory: AgentFactory, kind: str) -> None:
    # media.format = ulaw: chan_websocket carries µ-law as it is (160-byte frames).
    ws_agent = agent_factory.start({**ENVS[kind](lab), "AGENT_MEDIA__FORMAT": "ulaw"})
    handle = lab.place_call(["i want to book an appointment"], via="local")
    lab.wait_dialplan_event(handle.number, "reception", timeout=60)
    record = ws_agent.record_for(handle.number, timeout=20)
    assert agent_lines(record) == [GREETING, RECEPTION]
    assert record["end_reason"] == "transferred"
    assert status_after_stasis(lab, handle.number) == "TRANSFERRED"
    assert heard_turns(lab, handle) >= {0, 1}
    segments = voiced_segments(handle.recording_path)
    assert segments and 2.5 < segments[0][1] - segments[0][0] < 5.0, segments
    assert record["media"]["received"] > 50
    assert wait_leftovers_gone(lab) == ([], [])


async def test_websocket_heard_part_of_a_cut_reply_matches_the_caller(
    lab: Lab, ws_agent: AgentProcess, tmp_path: Path
) -> None:
    """The record's heard part comes from Asterisk's play-out (marks), not from when frames left."""
    async with RtpCaller.connect(lab) as call:
        try:
            await call.wait_greeting()
            said = await call.say("what time do you open")
            reply_at = await call.wait_agent_audio(timeout=15, after=said.last_sent)
            await asyncio.sleep(2.0)  # into the five-second reply, which Asterisk holds whole
            said = await call.say("where are you located")
            await call.wait_agent_speech(timeout=15, after=said.last_sent)
            await call.wait_agent_silence(min_silence_ms=700, timeout=20)
        except BaseException:
            call.dump_wav(tmp_path / "heard.wav")
            raise
        # What the caller got of the reply: its first audible frame to its last before the
        # answer to the second question (packets come 20 ms apart: exact to a frame).
        # (Asterisk sends the caller nothing once the agent's audio is flushed: the last packet
        # before the second answer is the last frame heard.)
        got = call.packets(after=reply_at - 0.001, before=said.last_sent)
    assert got, "the reply never played"
    record = ws_agent.record_for(call.number, timeout=20)
    hours = next(t for t in record["turns"] if t["role"] == "agent" and t.get("interrupted"))
    heard_ms = int(hours["heard_ms"])
    caller_ms = (got[-1].at - got[0].at) * 1000 + 20
    print(f"record: {heard_ms} ms heard; caller: {caller_ms:.0f} ms from the reply's first frame to its last")
    assert 1000 < heard_ms < 4500
    assert abs(heard_ms - caller_ms) <= 60
    assert record["media"]["ws_flushes"] >= 1 and record["media"]["ws_marks_processed"] > 10


async def test_websocket_cough_during_the_greeting_pauses_and_continues_it(
    lab: Lab, ws_agent: AgentProcess, tmp_path: Path
) -> None:
    record = await _sound_over_the_greeting(lab, ws_agent, tmp_path, cough(), "cough")
    # Held and resumed by Asterisk: PAUSE_MEDIA, then CONTINUE_MEDIA, nothing flushed.
    media = record["media"]
    assert isinstance(media, dict)
    assert media["ws_pauses"] >= 1 and media["ws_continues"] >= 1, media
    assert media["ws_flushes"] == 0, media


# Long enough that Asterisk's queue (XOFF at 900 frames, 18 s) fills: about 30 s of espeak-ng.
LONG_GREETING = " ".join(
    [
        "Thank you for calling Riverside Dental.",
        "Before we begin, here is some information about our practice.",
        "We are open Monday to Friday, from nine in the morning to five in the evening.",
        "We are closed on weekends and on public holidays.",
        "Our practice is at 12 Harbour Street, next to the library, with parking behind the building.",
        "New patients are welcome, and we see children from the age of three.",
        "For emergencies outside our opening hours, please call the hospital.",
        "This is the end of the greeting. How can I help you?",
    ]
)


def test_websocket_reply_longer_than_asterisks_queue_waits_for_xon_and_arrives_whole(
    lab: Lab, agent_factory: AgentFactory
) -> None:
    config = agent_factory.workdir / "long-greeting.toml"
    config.write_text(f'[profiles.frontdesk]\ngreeting = "{LONG_GREETING}"\n', encoding="utf-8")
    ws_agent = agent_factory.start({**websocket_env(lab), "AGENT_CONFIG": str(config)})
    handle = lab.place_call([], via="local", tail=45, max_duration=60)
    lab.wait_call_ended(handle, timeout=90)
    record = ws_agent.record_for(handle.number)
    assert agent_lines(record)[0] == LONG_GREETING
    assert not record["turns"][0].get("interrupted")
    media = record["media"]
    assert media["ws_xoffs"] >= 1, media  # Asterisk said its queue was full ...
    sent_s = metric(ws_agent, "ari_agent_rtp_packets_out_total", transport="websocket") * 0.02
    assert sent_s > 20, sent_s
    # ... and the caller still heard all of it, at its true speed: from the first voiced
    # segment to the last, as long as the frames sent (less the greeting's trailing quiet).
    segments = voiced_segments(handle.recording_path)
    assert segments
    span = segments[-1][1] - segments[0][0]
    print(f"greeting: {sent_s:.1f} s sent, {span:.1f} s heard, {media['ws_xoffs']} XOFF")
    assert sent_s - 1.5 < span <= sent_s + 0.5, (span, sent_s)


def test_doctor_checks_websocket_modules_and_two_way_audio(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    env = {**agent_factory.base_env(tmp_path / "records"), **websocket_env(lab)}
    code, checks = doctor(env)
    assert checks["modules"][0]["status"] == "ok"
    assert "chan_websocket" in checks["modules"][0]["detail"]
    media = checks["media"][0]
    assert media["status"] == "ok", media
    assert f"two-way audio over WebSocket via ws://127.0.0.1:{lab.ports.ari}/media/<id> " in media["detail"]
    # A media URL where Asterisk is not: the fix names the setting.
    code, checks = doctor({**env, "AGENT_MEDIA__WEBSOCKET__URL": "ws://127.0.0.1:1"})
    assert code == 1 and checks["media"][0]["status"] == "fail", checks
    assert "AGENT_MEDIA__WEBSOCKET__URL" in checks["media"][0]["fix"]
    lab.agent.rx("module unload chan_websocket.so")
    try:
        code, checks = doctor(env)
    finally:
        lab.agent.rx("module load chan_websocket.so")
    assert code == 1
    failed = [c for c in checks["modules"] if c["status"] == "fail"]
    assert [c["detail"] for c in failed] == [
        "module chan_websocket.so is not loaded (media.transport is websocket)"
    ]
    assert checks["media"][0]["status"] == "skip"
    assert "chan_websocket.so" in lab.agent.rx("module show like chan_websocket")


def test_doctor_checks_websocket_client_through_websocket_client_conf(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    env = {**agent_factory.base_env(tmp_path / "records"), **websocket_client_env(lab)}
    code, checks = doctor(env)
    media = checks["media"][0]
    assert code == 0 and media["status"] == "ok", checks
    where = f"websocket_client.conf [ari-agent] -> ws://127.0.0.1:{lab.ws_client_port}"
    assert f"two-way audio over WebSocket via {where} " in media["detail"]
    # The wrong password: Asterisk's connection is refused, and the fix says where to look.
    code, checks = doctor({**env, "AGENT_MEDIA__WEBSOCKET__PASSWORD": "not-it"})
    media = checks["media"][0]
    assert code == 1 and media["status"] == "fail", checks
    assert "auth=" in media["detail"] and "not-it" not in str(checks)
    assert "websocket_client.conf" in media["fix"]
    # A section Asterisk does not have: ExternalMedia is refused (400), named in the detail.
    code, checks = doctor({**env, "AGENT_MEDIA__WEBSOCKET__CLIENT_NAME": "no-such-section"})
    media = checks["media"][0]
    assert code == 1 and media["status"] == "fail" and "websocket_client" in media["detail"], checks
    # With the agent holding the listener's port, doctor checks the server path and says so.
    agent_factory.start(websocket_client_env(lab))
    code, checks = doctor(env)
    media = checks["media"][0]
    assert code == 0 and media["status"] == "ok", checks
    assert "only the server path was checked" in media["detail"]
    assert wait_leftovers_gone(lab) == ([], [])


async def test_websocket_realtime_barge_in_truncates_at_the_heard_position(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    """A speech-to-speech provider's audio (µ-law as it comes) over chan_websocket: the truncate
    position the provider is told is what Asterisk played, from the marks."""
    from tests.fakes.openai_server import FakeOpenAI, RealtimeReply
    from tests.fakes.threaded import serve_in_thread

    key = "sk-test-realtime-0123456789SECRET"
    fake = FakeOpenAI(api_key=key)
    long_reply = RealtimeReply(text=HOURS + " " + HOURS, chunk_ms=100, chunk_delay=0.08)
    fake.realtime.replies.extend(
        [RealtimeReply(text="Hello, how can I help?"), long_reply, RealtimeReply(text=ADDRESS)]
    )
    with serve_in_thread(fake.app) as url:
        config = tmp_path / "rt.toml"
        config.write_text(
            f'[profiles.rt]\ngreeting = "Hello, how can I help?"\nrealtime = ["openai"]\n'
            f'[profiles.rt.options.openai]\nbase_url = "{url}/v1"\n',
            encoding="utf-8",
        )
        agent = agent_factory.start(
            {
                **websocket_env(lab),
                "AGENT_CONFIG": str(config),
                "OPENAI_API_KEY": key,
                "AGENT_MEDIA__FORMAT": "ulaw",
            }
        )
        async with RtpCaller.connect(lab, extension="rt", context="lab-profile") as call:
            try:
                await call.wait_agent_speech(timeout=20)
                await call.wait_agent_silence(min_silence_ms=700, timeout=20)
                said = await call.say("what time do you open")
                reply_at = await call.wait_agent_audio(timeout=20, after=said.last_sent)
                await asyncio.sleep(2.0)
                said = await call.say("where are you located")
                await call.wait_agent_speech(timeout=20, after=said.last_sent)
                await call.wait_agent_silence(min_silence_ms=700, timeout=20)
            except BaseException:
                call.dump_wav(tmp_path / "realtime.wav")
                raise
            got = call.packets(after=reply_at - 0.001, before=said.last_sent)
            heard_ms = (got[-1].at - got[0].at) * 1000 + 20
        truncates = fake.events_of("conversation.item.truncate")
    assert len(truncates) == 1
    audio_end_ms = truncates[0]["audio_end_ms"]
    print(f"truncated at {audio_end_ms} ms; the caller heard {heard_ms:.0f} ms")
    assert 1500 < audio_end_ms < 6000
    assert abs(audio_end_ms - heard_ms) <= 100
    record = agent.record_for(call.number, timeout=20)
    cut = [t for t in record["turns"] if t["role"] == "agent" and t.get("interrupted")]
    assert len(cut) == 1 and cut[0]["heard_ms"] == audio_end_ms
    assert record["media"]["ws_flushes"] >= 1


async def test_websocket_own_echo_does_not_interrupt_but_the_caller_does(
    lab: Lab, ws_agent: AgentProcess, tmp_path: Path
) -> None:
    # The echo guard's references follow what Asterisk plays (the marks), handed over a little
    # ahead of it. On slin16 only the -20 dB, 80 ms echo of test_barge_in: a -6 dB, 20 ms echo
    # scores 0.6-0.95 against the references (>= 0.97 on RTP; threshold 0.8) and pauses the
    # greeting; sending the speech band-limited to 8 kHz did not change that. On ulaw (no
    # resampling in Asterisk on the way to an 8 kHz caller) the loud echo is recognised too.
    await own_echo_test(lab, ws_agent, tmp_path, -20, 80)


async def test_websocket_ulaw_loud_echo_does_not_interrupt(
    lab: Lab, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    ws_agent = agent_factory.start({**websocket_env(lab), "AGENT_MEDIA__FORMAT": "ulaw"})
    await own_echo_test(lab, ws_agent, tmp_path, -6, 20)


def test_websocket_media_over_tls_follows_ari(lab: Lab, agent_factory: AgentFactory) -> None:
    # ARI over https: the media WebSocket is wss:// to the same TLS port, checked against ARI's CA.
    assert lab.tls is not None
    ws_agent = agent_factory.start(
        {**websocket_env(lab), "AGENT_ARI__URL": lab.ari_tls_url, "AGENT_ARI__CA_FILE": str(lab.tls.ca)}
    )
    handle = lab.place_call(["what time do you open", "goodbye"], via="local")
    lab.wait_call_ended(handle, timeout=90)
    record = ws_agent.record_for(handle.number)
    assert agent_lines(record) == [GREETING, HOURS, GOODBYE]
    assert record["end_reason"] == "hangup_by_agent"
    assert metric(ws_agent, "ari_agent_rtp_packets_in_total", transport="websocket") > 100
    assert record["media"]["ws_marks_processed"] > 10
