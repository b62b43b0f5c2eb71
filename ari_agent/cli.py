"""Command line: ``ari-agent [--config FILE] run|check``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from ari_agent.config import Settings, load_settings, masked
from ari_agent.errors import ConfigError
from ari_agent.observability.logs import setup_logging
from providers import registry

log = logging.getLogger("ari_agent")

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    # --config is accepted both before and after the subcommand.
    parser = argparse.ArgumentParser(prog="ari-agent", description=__doc__)
    parser.add_argument("--config", metavar="FILE", help="TOML config file (or AGENT_CONFIG)")
    # The subcommands' copy must not overwrite a --config given before them.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[after], help="run the Stasis app")
    sub.add_parser("check", parents=[after], help="validate and print the resolved settings")
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


def cmd_check(settings: Settings) -> int:
    print(json.dumps(masked(settings), indent=2))
    problems = profile_problems(settings)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print("configuration OK", file=sys.stderr)
    return 0


async def _run(settings: Settings) -> int:
    from ari_agent.app import AgentApp  # the app pulls in numpy and the media plane

    app = AgentApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    await stop.wait()
    log.info("shutting down: handing active calls back to the dialplan")
    await app.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        return cmd_check(settings)
    setup_logging(settings.log_level)
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    raise SystemExit(main())
