"""The three media transports side by side through the real Asterisk (not run by pytest).

    python -m tests.bench.bench_transports [--samples N] [--calls N] [--transports T ...]
    (from the repository root; T also websocket-client, websocket-client-tls)

For each of rtp, audiosocket and websocket, one agent on the default
(offline) profile, then: turn latency (caller's last voiced packet -> first
agent packet) and the caller's outbound inter-arrival percentiles over a
call of N turns; barge-in stop at the caller (caller onset -> last agent
packet) over N interruptions; agent CPU per call with ``--calls`` calls
held at once. All from the caller's own packet timestamps (tests/bench/phases.py),
in one run, so the rows compare; JSON under tests/bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.phases import run_barge_in, run_concurrency, run_turns
from tests.integration.lab import AgentFactory, Lab, LabError, running_lab

RESULTS = Path(__file__).parent / "results"
TRANSPORTS = ("rtp", "audiosocket", "websocket")
# Also on request (--transports): chan_websocket's client type, plain and over TLS (the lab's
# [ari-agent] and [ari-agent-tls] websocket_client.conf sections), to price TLS per call.
EXTRA = ("websocket-client", "websocket-client-tls")
QUESTIONS = ["where are you located", "what is your address", "where is your office"]
BARGE = "what time do you open"  # the longest reply; each interruption asks for it again


def env_for(lab: Lab, transport: str) -> dict[str, str]:
    env = {"AGENT_MEDIA__TRANSPORT": transport, "AGENT_LOG_LEVEL": "WARNING"}
    if transport == "audiosocket":
        env["AGENT_MEDIA__AUDIOSOCKET__LISTEN_PORT"] = str(lab.ports.agent_media[0])
    if transport.startswith("websocket-client"):
        env.update(
            {
                "AGENT_MEDIA__TRANSPORT": "websocket",
                "AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE": "client",
                "AGENT_MEDIA__WEBSOCKET__LISTEN_PORT": str(lab.ws_client_port),
                "AGENT_MEDIA__WEBSOCKET__USERNAME": lab.ws_client_user,
                "AGENT_MEDIA__WEBSOCKET__PASSWORD": lab.ws_client_password,
            }
        )
    if transport == "websocket-client-tls":
        assert lab.tls is not None
        env.update(
            {
                "AGENT_MEDIA__WEBSOCKET__CLIENT_NAME": "ari-agent-tls",
                "AGENT_MEDIA__WEBSOCKET__LISTEN_PORT": str(lab.ws_client_tls_port),
                "AGENT_MEDIA__WEBSOCKET__TLS_CERT_FILE": str(lab.tls.cert),
                "AGENT_MEDIA__WEBSOCKET__TLS_KEY_FILE": str(lab.tls.key),
            }
        )
    return env


def run(
    lab: Lab, workdir: Path, samples: int, calls: int, transports: tuple[str, ...] = TRANSPORTS
) -> list[dict[str, Any]]:
    factory = AgentFactory(lab, workdir)
    rows = []
    try:
        assert lab.agent.proc is not None
        asterisk_pid = lab.agent.proc.pid
        for transport in transports:
            agent = factory.start(env_for(lab, transport))
            try:
                print(f"{transport}: turns", flush=True)
                turns = asyncio.run(run_turns(lab, QUESTIONS, samples))
                lab.hangup_all()
                print(f"{transport}: barge-ins", flush=True)
                barge = asyncio.run(run_barge_in(lab, BARGE, BARGE, samples))
                lab.hangup_all()
                print(f"{transport}: {calls} calls at once", flush=True)
                level = asyncio.run(run_concurrency(lab, agent.pid, asterisk_pid, calls, QUESTIONS[0]))
                lab.hangup_all()
            finally:
                agent.stop()
                lab.hangup_all()
            rows.append(
                {
                    "transport": transport,
                    "turns": turns.report(),
                    "barge_in": barge.report(),
                    "concurrency": level.report(),
                }
            )
            time.sleep(1.0)
    finally:
        factory.stop_all()
    return rows


def _cell(stats: dict[str, Any], key: str) -> str:
    value = stats.get(key)
    return "-" if value is None else f"{value}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'transport':<20} {'turn p50':>9} {'turn p95':>9} {'stop p50':>9} {'stop p95':>9} "
        f"{'ivl p50':>8} {'ivl p99':>8} {'ivl max':>8} {'cpu %/call':>10} {'held':>6}"
    )
    for r in rows:
        turn = r["turns"]["turn_latency_ms"]
        stop = r["barge_in"]["barge_in_stop_ms"]
        ivl = r["turns"]["outbound_interval_ms"]
        conc = r["concurrency"]
        per_call = conc["agent_cpu_percent_per_call"].get("own", "-")
        print(
            f"{r['transport']:<20} {_cell(turn, 'p50'):>9} {_cell(turn, 'p95'):>9} "
            f"{_cell(stop, 'p50'):>9} {_cell(stop, 'p95'):>9} {_cell(ivl, 'p50'):>8} {_cell(ivl, 'p99'):>8} "
            f"{_cell(ivl, 'max'):>8} {per_call:>10} {conc['held_with_reply']:>3}/{conc['calls']:<2}"
        )
    print(
        "(ms; turn: caller's last voiced packet -> first agent packet; stop: caller onset -> last agent "
        "packet; ivl: the caller's inter-arrival of agent packets; cpu: the agent's own, per held call)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=8, help="turns and barge-ins per transport (default 8)"
    )
    parser.add_argument(
        "--calls", type=int, default=5, help="calls held at once for the CPU figure (default 5)"
    )
    parser.add_argument(
        "--transports",
        nargs="+",
        choices=TRANSPORTS + EXTRA,
        default=list(TRANSPORTS),
        help="which, in this order (default: rtp audiosocket websocket)",
    )
    args = parser.parse_args(argv)
    started = time.time()
    try:
        with running_lab() as lab, tempfile.TemporaryDirectory(prefix="ari-bench-") as tmp:
            rows = run(lab, Path(tmp), args.samples, args.calls, tuple(args.transports))
    except LabError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"transports-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    path.write_text(json.dumps({"results": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
