"""Command line: ``ari-agent [--config FILE] [--env-file FILE] COMMAND`` (run, check, doctor, call, ...)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ari_agent.config import Settings, load_settings, masked
from ari_agent.errors import AgentError, ConfigError, MediaError
from ari_agent.observability.logs import setup_logging
from ari_agent.ops.loadplan import CallPlan
from ari_agent.profiles.catalogue import Problem, all_problems, plan_all

log = logging.getLogger("ari_agent")

EXIT_CONFIG = 2
EXIT_REPLACED = 3  # another agent took over our Stasis app
DEFAULT_TARGET = "100@ai-agent-demo"


class _PhraseAction(argparse.Action):
    """--say and --wav append to one list, so phrases keep the order they were given in."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, option: str | None = None
    ) -> None:
        phrases = list(getattr(ns, self.dest, None) or [])
        phrases.append(("say" if option == "--say" else "wav", str(value)))
        setattr(ns, self.dest, phrases)


def _parser() -> argparse.ArgumentParser:
    # --config and --env-file are accepted both before and after the subcommand.
    parser = argparse.ArgumentParser(prog="ari-agent", description=__doc__)
    parser.add_argument("--config", metavar="FILE", help="TOML config file (or AGENT_CONFIG)")
    parser.add_argument(
        "--env-file", metavar="FILE", help="read KEY=VALUE settings from FILE (e.g. the .env of make up)"
    )
    # The subcommands' copies must not overwrite one given before them.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    after.add_argument("--env-file", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[after], help="run the Stasis app")
    sub.add_parser("check", parents=[after], help="validate and print the resolved settings")
    doctor = sub.add_parser(
        "doctor", parents=[after, as_json], help="check a live Asterisk: ARI, modules, app, two-way audio"
    )
    doctor.add_argument(
        "--extension",
        metavar="EXT@CONTEXT",
        help="also check that this dialplan extension reaches the agent's Stasis app",
    )
    call = sub.add_parser(
        "call", parents=[after, as_json], help="place a test call without a phone and print the conversation"
    )
    call.add_argument(
        "target", nargs="?", default=DEFAULT_TARGET, help=f"EXT@CONTEXT (default {DEFAULT_TARGET})"
    )
    call.add_argument(
        "--say", dest="phrases", metavar="TEXT", action=_PhraseAction, help="say TEXT (espeak-ng)"
    )
    call.add_argument("--wav", dest="phrases", metavar="FILE", action=_PhraseAction, help="play a 16-bit WAV")
    call.add_argument(
        "--turn-silence", type=float, default=1.2, metavar="S", help="quiet that ends the agent's turn"
    )
    call.add_argument("--reply-timeout", type=float, default=20.0, metavar="S", help="wait for a reply")
    flow = sub.add_parser(
        "test",
        parents=[after],
        help="run call-flow tests (TOML) through Asterisk; exit 0 all passed, 1 a failure, 2 a bad file",
    )
    flow.add_argument("files", nargs="*", metavar="FILE", help="call-flow test files (TOML)")
    flow.add_argument(
        "--examples", action="store_true", help="also run the examples shipped for the built-in profile"
    )
    flow.add_argument(
        "--list", action="store_true", help="list the scenarios (with --examples: where they are)"
    )
    flow.add_argument(
        "--extension", metavar="EXT@CONTEXT", help="dial this where a scenario names no extension of its own"
    )
    flow.add_argument("--parallel", type=int, default=1, metavar="N", help="run N scenarios at a time")
    flow.add_argument("--junit", metavar="FILE", help="write JUnit XML to FILE")
    flow.add_argument(
        "--turn-silence", type=float, default=1.2, metavar="S", help="quiet that ends the agent's turn"
    )
    flow.add_argument("--reply-timeout", type=float, default=20.0, metavar="S", help="wait for a reply")
    calls = sub.add_parser(
        "calls",
        parents=[after, as_json],
        help="list active calls; `calls show ID`: one call; `calls erase --caller NUMBER`: forget a caller",
    )
    calls.add_argument(
        "action", nargs="?", choices=["show", "erase"], help="show one ended call, or erase calls"
    )
    calls.add_argument("call_id", nargs="?", metavar="ID", help="call id (or a unique prefix)")
    calls.add_argument("--caller", metavar="NUMBER", help="erase: every call from this number")
    calls.add_argument("--call", dest="erase_call", metavar="ID", help="erase: this call")
    calls.add_argument(
        "--agents",
        metavar="URLS",
        help="a pool's live calls: each agent's HTTP address, comma-separated, or a port range "
        "(http://127.0.0.1:8090-8093); which agent has which call",
    )
    leads = sub.add_parser(
        "leads",
        parents=[after, as_json],
        help="completed leads: list, show ID, redeliver ID... (or --failed) to the webhook",
    )
    leads.add_argument("action", choices=["list", "show", "redeliver"])
    leads.add_argument("lead_ids", nargs="*", metavar="ID", help="lead id (or a unique prefix)")
    leads.add_argument(
        "--status", choices=["stored", "pending", "delivered", "failed"], help="list: only these"
    )
    leads.add_argument("--failed", action="store_true", help="redeliver: every failed or pending lead")
    _load_parser(sub, [after, as_json])
    _knowledge_parser(sub, [after, as_json])
    return parser


def _knowledge_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    knowledge = sub.add_parser(
        "knowledge", help="a profile's documents, searched by its LLM: add, list, remove, search, reindex"
    )
    actions = knowledge.add_subparsers(dest="knowledge_action", required=True)
    add = actions.add_parser(
        "add", parents=parents, help="index Markdown or text files (a file of the same name is replaced)"
    )
    add.add_argument("profile")
    add.add_argument("files", nargs="+", metavar="FILE")
    listing = actions.add_parser("list", parents=parents, help="the profile's documents")
    listing.add_argument("profile")
    remove = actions.add_parser("remove", parents=parents, help="forget a document (by its file name)")
    remove.add_argument("profile")
    remove.add_argument("file", metavar="FILE")
    search = actions.add_parser(
        "search", parents=parents, help="the passages a call would get for a question, with scores"
    )
    search.add_argument("profile")
    search.add_argument("question")
    reindex = actions.add_parser(
        "reindex",
        parents=parents,
        help="embed the profile's passages with its embeddings provider (after naming or changing it)",
    )
    reindex.add_argument("profile")


def _load_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    load = sub.add_parser(
        "load",
        parents=parents,
        help="load test: SIPp callers ask a question and say goodbye; exit 1 on any failed call",
    )
    load.add_argument(
        "target",
        nargs="?",
        help="EXT@HOST[:PORT], Asterisk's SIP address (default: the bundled Asterisk, "
        "100@127.0.0.1:$ASTERISK_SIP_PORT, 5060 if unset; --env-file .env sets it)",
    )
    load.add_argument("--calls", type=int, default=5, metavar="N", help="calls to place (default 5)")
    load.add_argument("--rate", type=float, default=1.0, metavar="R", help="new calls per second (default 1)")
    load.add_argument("--max-concurrent", type=int, default=None, metavar="N", help="at most N calls at once")
    load.add_argument("--question", default="what time do you open", help="what each caller asks")
    load.add_argument("--goodbye", default="goodbye", help="what each caller says last")
    load.add_argument(
        "--expect",
        metavar="TEXT",
        help="words the reply must contain (default: the reply of the profile's intent with the question "
        "as an example)",
    )
    load.add_argument(
        "--silent-between",
        action="store_true",
        help="callers send no RTP between utterances (silence suppression), instead of streaming silence",
    )
    for flag, default, what in (
        ("--greeting-wait", CallPlan.greeting_wait, "answer -> question"),
        ("--reply-wait", CallPlan.reply_wait, "question -> goodbye"),
        ("--hangup-wait", CallPlan.hangup_wait, "goodbye -> we hang up if the agent has not"),
    ):
        load.add_argument(
            flag, type=float, default=default, metavar="S", help=f"{what} (default {default:g})"
        )
    load.add_argument(
        "--no-hangup-check", action="store_true", help="do not require the agent to hang up after goodbye"
    )
    load.add_argument("--keep", metavar="DIR", help="keep SIPp's scenario, audio and logs in DIR")
    load.add_argument(
        "--auth-user",
        metavar="USER",
        help="SIP digest authentication: the endpoint's user name, for an Asterisk that challenges calls",
    )
    load.add_argument(
        "--auth-password",
        metavar="PASS",
        help="its password (default: $LOAD_AUTH_PASSWORD; SIPp gets it as -ap, visible to ps on this host)",
    )
    load.add_argument(
        "--local-ip",
        metavar="IP",
        help="the address SIPp sends SIP and RTP from (default: the one routed towards the target)",
    )


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(f"{'warning' if problem.severity == 'warning' else 'error'}: {problem}", file=sys.stderr)


def cmd_check(settings: Settings) -> int:
    print(json.dumps(masked(settings), indent=2))
    problems = all_problems(plan_all(settings)) + _media_tls_check(settings)
    if not any(p.severity == "error" for p in problems):
        problems += _knowledge_check(settings)
        problems += asyncio.run(_tool_server_check(settings))
    print_problems(problems)
    if any(p.severity != "warning" for p in problems):
        return EXIT_CONFIG
    print("configuration OK", file=sys.stderr)
    return 0


def _media_tls_check(settings: Settings) -> list[Problem]:
    """The listener's certificate set where no listener runs: the operator expects TLS that isn't."""
    media = settings.media
    if media.websocket.tls_cert_file is None:
        return []
    if media.transport == "websocket" and media.websocket.connection_type == "client":
        return []
    return [
        Problem(
            "media.websocket.tls_cert_file",
            f"is set, but only the WebSocket client listener uses it (media.transport is {media.transport}, "
            f"connection_type {media.websocket.connection_type}).",
            "set AGENT_MEDIA__WEBSOCKET__CONNECTION_TYPE=client with AGENT_MEDIA__TRANSPORT=websocket, or "
            "unset TLS_CERT_FILE/TLS_KEY_FILE (with server, TLS is Asterisk's: a wss:// media URL)",
            "warning",
        )
    ]


def _knowledge_check(settings: Settings) -> list[Problem]:
    """Which profiles' LLMs get the search tool, and documents no profile can use."""
    from ari_agent.knowledge import KnowledgeBase, KnowledgeError

    path = settings.knowledge_path
    try:
        with_documents = KnowledgeBase(path).profiles()
    except KnowledgeError as exc:
        return [Problem("knowledge.path", f"{exc}.", "", "unready")]
    profiles = settings.all_profiles()
    problems = []
    for name in with_documents:
        profile = profiles.get(name)
        if profile is None:
            problems.append(
                Problem(
                    "knowledge",
                    f"{path} has documents for '{name}', which is not a profile; no call uses them.",
                    f"ari-agent knowledge remove {name} FILE, or add the profile",
                    "warning",
                )
            )
        elif profile.realtime:
            problems.append(
                Problem(
                    f"profiles.{name}",
                    "has documents, but a realtime profile is not offered the search tool yet.",
                    "use stt/llm/tts for this profile, or remove its documents",
                    "warning",
                )
            )
        else:
            print(f"profile {name}: search_knowledge offered ({path})", file=sys.stderr)
            problems += _embedding_check(settings, name)
    return problems


def _embedding_check(settings: Settings, name: str) -> list[Problem]:
    """A profile with embeddings whose passages lack that embedder's vectors is searched by words."""
    from ari_agent.knowledge import KnowledgeBase, KnowledgeError
    from ari_agent.ops.knowledge import EmbedderUnusable, embedder_for

    try:
        embedder = embedder_for(settings, name)
        if embedder is None:
            return []
        missing = KnowledgeBase(settings.knowledge_path).unembedded(name, embedder.identity)
    except (EmbedderUnusable, KnowledgeError):
        return []  # the catalogue or the knowledge check has said so
    if not missing:
        print(
            f"profile {name}: knowledge searched by words and meaning ({embedder.identity})", file=sys.stderr
        )
        return []
    return [
        Problem(
            f"profiles.{name}.embeddings",
            f"{len(missing)} passage(s) have no {embedder.identity} vector; calls search by words only.",
            f"ari-agent knowledge reindex {name}",
            "warning",
        )
    ]


async def _tool_server_check(settings: Settings) -> list[Problem]:
    """Start each profile's tool servers once, as run would, and say which tools they would offer."""
    profiles = {n: p for n, p in settings.all_profiles().items() if p.tool_servers and not p.realtime}
    if not profiles:
        return []
    from ari_agent.toolservers import ToolHub
    from ari_agent.toolservers.hub import mcp_missing

    if mcp_missing() is not None:
        return []  # the catalogue has said so
    hub = ToolHub()
    problems: list[Problem] = []
    try:
        for name, profile in sorted(profiles.items()):
            try:
                remote = await hub.tools_for(name, profile)
            except AgentError as exc:
                problems.append(Problem(f"profiles.{name}.tool_servers", f"{exc}.", "", "unready"))
                continue
            offered = [s.name for s in remote.specs] if remote is not None else []
            listed = ", ".join(offered) or "none"
            print(f"profile {name}: tools offered from its servers: {listed}", file=sys.stderr)
            wanted = [f"{server}__{tool}" for server, c in profile.tool_servers.items() for tool in c.tools]
            for missing in [w for w in wanted if w not in offered]:
                problems.append(
                    Problem(
                        f"profiles.{name}.tool_servers",
                        f"{missing} is allowed but its server has no such tool.",
                        "correct the name in tools, or remove it",
                        "warning",
                    )
                )
    finally:
        await hub.close()
    return problems


def config_errors(settings: Settings) -> list[Problem]:
    """What `run` refuses to start with: the config's own mistakes (not a missing key or program)."""
    return [p for p in all_problems(plan_all(settings)) if p.severity == "error"]


async def _run(settings: Settings, config_file: str | None = None) -> int:
    from ari_agent.app import AgentApp  # the app pulls in numpy and the media plane

    app = AgentApp(settings, config_file=config_file)
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, received.put_nowait, sig)
    try:
        await app.start()
    except MediaError as exc:
        # The AudioSocket port taken: say which and stop, no traceback.
        log.error("cannot start: %s", exc)
        await app.stop()
        return 1
    fatal = asyncio.create_task(app.fatal.wait())
    while True:
        next_signal = asyncio.create_task(received.get())
        await asyncio.wait({next_signal, fatal}, return_when=asyncio.FIRST_COMPLETED)
        if not next_signal.done():
            next_signal.cancel()
            await app.stop()
            return EXIT_REPLACED
        sig = next_signal.result()
        if sig != signal.SIGHUP:
            break
        await app.reload()
    fatal.cancel()
    if sig == signal.SIGTERM:
        # An orchestrator stopping us: let calls finish, hand the rest back.
        await app.drain()
    else:
        log.info("interrupted: handing active calls back to the dialplan")
        await app.stop()
    return 0


def _load(settings: Settings, args: argparse.Namespace) -> int:
    from ari_agent.ops import commands
    from ari_agent.ops.load import LoadOptions
    from ari_agent.ops.loadplan import Target

    try:
        # The bundled Asterisk (make up) takes the load test's calls from 127.0.0.1 on its SIP port.
        target = Target.parse(args.target or f"100@127.0.0.1:{os.environ.get('ASTERISK_SIP_PORT') or 5060}")
        plan = CallPlan(
            greeting_wait=args.greeting_wait,
            reply_wait=args.reply_wait,
            hangup_wait=args.hangup_wait,
            silent_between=args.silent_between,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    opts = LoadOptions(
        target=target,
        calls=args.calls,
        rate=args.rate,
        max_concurrent=args.max_concurrent,
        question=args.question,
        goodbye=args.goodbye,
        expect=args.expect,
        plan=plan,
        require_hangup=not args.no_hangup_check,
        keep_dir=Path(args.keep) if args.keep else None,
        auth_user=args.auth_user,
        # The environment's password only with a user: a password alone is refused (run_load says why).
        auth_password=args.auth_password
        or (os.environ.get("LOAD_AUTH_PASSWORD") if args.auth_user else None),
        local_ip=args.local_ip,
    )
    _ops_logging()
    return commands.load(settings, opts, args.json)


def _knowledge(settings: Settings, args: argparse.Namespace) -> int:
    from ari_agent.ops import knowledge

    action = args.knowledge_action
    if action == "add":
        return knowledge.add(settings, args.profile, args.files, args.json)
    if action == "list":
        return knowledge.list_documents(settings, args.profile, args.json)
    if action == "remove":
        return knowledge.remove(settings, args.profile, args.file, args.json)
    if action == "reindex":
        return knowledge.reindex(settings, args.profile, args.json)
    return knowledge.search(settings, args.profile, args.question, args.json)


def _ops_logging() -> None:
    # The operator commands print their own output; only library trouble goes to stderr.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.env_file:
        from ari_agent.ops.envfile import load_into_environ

        try:
            load_into_environ(Path(args.env_file))
        except (OSError, ValueError) as exc:
            print(f"error: --env-file: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command in ("check", "run", "doctor", "call", "test"):
        from ari_agent.ari.tls import client_ssl
        from ari_agent.media.listener_tls import settings_ssl
        from ari_agent.observability.http import http_token
        from ari_agent.store.crypto import data_cipher

        try:
            # A named secret file that gives nothing: refuse, never run open or in plaintext.
            http_token(settings.http)
            data_cipher(settings.store)
            client_ssl(settings.ari.url, settings.ari.ca_file, settings.ari.tls_verify)
            # The chan_websocket listener's certificate and key, whenever they are set.
            settings_ssl(settings.media.websocket.tls_cert_file, settings.media.websocket.tls_key_file)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.command == "check":
        return cmd_check(settings)
    if args.command == "load":
        return _load(settings, args)
    if args.command == "knowledge":
        return _knowledge(settings, args)
    if args.command == "leads":
        from ari_agent.ops import leads as leads_ops

        _ops_logging()
        return leads_ops.run(settings, args.action, args.lead_ids, args.status, args.failed, args.json)
    if args.command in ("doctor", "call", "test", "calls"):
        from ari_agent.ops import commands  # the operator commands pull in the media plane

        _ops_logging()
        if args.command == "doctor":
            return asyncio.run(commands.doctor(settings, args.extension, args.json))
        if args.command == "call":
            return asyncio.run(
                commands.call(
                    settings,
                    args.target,
                    args.phrases or [],
                    as_json=args.json,
                    turn_silence=args.turn_silence,
                    reply_timeout=args.reply_timeout,
                )
            )
        if args.command == "test":
            if args.parallel < 1:
                print("error: --parallel must be 1 or more", file=sys.stderr)
                return EXIT_CONFIG
            return asyncio.run(
                commands.flow_test(
                    settings,
                    args.files,
                    examples=args.examples,
                    list_only=args.list,
                    extension=args.extension,
                    parallel=args.parallel,
                    junit_path=args.junit,
                    turn_silence=args.turn_silence,
                    reply_timeout=args.reply_timeout,
                )
            )
        if args.action == "erase":
            return commands.calls_erase(settings, args.caller, args.erase_call, args.json)
        return commands.calls(settings, args.action, args.call_id, args.json, args.agents)
    errors = config_errors(settings)
    if errors:
        print_problems(errors)
        return EXIT_CONFIG
    setup_logging(settings.log_level)
    return asyncio.run(_run(settings, args.config))


if __name__ == "__main__":
    raise SystemExit(main())
