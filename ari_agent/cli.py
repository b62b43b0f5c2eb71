"""Command line: ``ari-agent [--config FILE] [--env-file FILE] run|check|doctor|call|calls``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ari_agent.config import Settings, load_settings, masked
from ari_agent.errors import ConfigError
from ari_agent.observability.logs import setup_logging
from providers import registry

log = logging.getLogger("ari_agent")

EXIT_CONFIG = 2
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
    calls = sub.add_parser(
        "calls", parents=[after, as_json], help="list active calls; `calls show ID`: one call"
    )
    calls.add_argument("action", nargs="?", choices=["show"], help="show one ended call")
    calls.add_argument("call_id", nargs="?", metavar="ID", help="call id (or a unique prefix)")
    return parser


def profile_problems(settings: Settings) -> list[str]:
    """What stops each profile's providers from running, each naming the field."""
    problems: list[str] = []
    for name, profile in sorted(settings.all_profiles().items()):
        stages: tuple[tuple[registry.Stage, list[str]], ...] = (
            ("stt", profile.stt),
            ("llm", profile.llm),
            ("tts", profile.tts),
        )
        for stage, wanted in stages:
            for provider in wanted:
                for problem in registry.check(stage, provider, profile.provider_context(name, provider)):
                    problems.append(f"profiles.{name}.{stage} ({provider}): {problem}")
    return problems


def profile_warnings(settings: Settings) -> list[str]:
    """What works but probably not as meant (the check still passes)."""
    warnings: list[str] = []
    for name, profile in sorted(settings.all_profiles().items()):
        warnings.extend(profile.shared_phrases(name))
    return warnings


def cmd_check(settings: Settings) -> int:
    print(json.dumps(masked(settings), indent=2))
    for warning in profile_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    problems = profile_problems(settings)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print("configuration OK", file=sys.stderr)
    return 0


async def _run(settings: Settings, config_file: str | None = None) -> int:
    from ari_agent.app import AgentApp  # the app pulls in numpy and the media plane

    app = AgentApp(settings, config_file=config_file)
    received: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, received.put_nowait, sig)
    await app.start()
    while (sig := await received.get()) == signal.SIGHUP:
        await app.reload()
    if sig == signal.SIGTERM:
        # An orchestrator stopping us: let calls finish, hand the rest back.
        await app.drain()
    else:
        log.info("interrupted: handing active calls back to the dialplan")
        await app.stop()
    return 0


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
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        return cmd_check(settings)
    if args.command in ("doctor", "call", "calls"):
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
        return commands.calls(settings, args.action, args.call_id, args.json)
    setup_logging(settings.log_level)
    return asyncio.run(_run(settings, args.config))


if __name__ == "__main__":
    raise SystemExit(main())
