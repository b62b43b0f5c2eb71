"""Offline understanding on the paraphrase set, before and after issue 16, in one run (not run by pytest).

    python -m tests.bench.bench_understanding      (from the repository root; part of `make bench`)

Every sample of ``tests/unit/paraphrases.py`` is spoken by espeak-ng, sent
through a µ-law phone line (8 kHz G.711, back to 16 kHz) and understood by
two matchers built from the shipped ``frontdesk`` profile:

* ``before``: the grammar of example phrases and the whole-utterance match
  as they were before issue 16 (``tests/bench/baseline_matcher.py``);
* ``after``: the product code (``providers.local`` then ``providers.scripted``).

Decoders run in this process, one utterance at a time (the agent runs the
same calls in its decoder worker processes). Per matcher: in-scope intent
accuracy, out-of-scope rejection, decode wall time and CPU per utterance as
percentiles, and the decode CPU of a four-question call. The misses are
listed; everything goes to ``tests/bench/results/understanding-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ari_agent.profiles import builtin_profiles
from providers.base import ProviderContext
from providers.local import sphinx
from providers.local.stt import PocketsphinxSTT
from providers.scripted.llm import ScriptedLLM
from tests.bench import baseline_matcher, dev_set
from tests.bench.measure import summary
from tests.unit.paraphrases import Sample, samples
from tests.unit.speech import telephone

RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS_PER_CALL = 4

# pcm -> (what the recogniser heard, the intent picked or None)
Understand = Callable[[bytes], tuple[str, str | None]]


def frontdesk() -> ProviderContext:
    return builtin_profiles()["frontdesk"].provider_context("frontdesk")


def before(ctx: ProviderContext) -> Understand:
    examples = [e for intent in ctx.intents for e in intent.examples]
    decoder = baseline_matcher.build_decoder(examples)

    def understand(pcm: bytes) -> tuple[str, str | None]:
        heard = baseline_matcher.decode(decoder, pcm)
        intent = baseline_matcher.match(ctx.intents, heard)
        return heard, intent.name if intent else None

    return understand


def after(ctx: ProviderContext) -> Understand:
    wanted = PocketsphinxSTT.create(ctx).spec
    spec = sphinx.plan_grammar(
        wanted.phrases,
        wanted.phone_penalty,
        fillers=wanted.fillers,
        filler_exponent=wanted.filler_exponent,
        min_score=wanted.min_score,
        min_coverage=wanted.min_coverage,
        min_frames_per_phone=wanted.min_frames_per_phone,
    ).spec
    decoder = sphinx.build_decoder(spec)
    llm = ScriptedLLM.create(ctx)

    def understand(pcm: bytes) -> tuple[str, str | None]:
        result = sphinx.recognise(decoder, spec, pcm)
        intent = llm.match(result.text)
        score = "-" if result.score is None else f"{result.score:.1f}"
        coverage = "-" if result.coverage is None else f"{result.coverage:.2f}"
        pace = "-" if result.frames_per_phone is None else f"{result.frames_per_phone:.1f}"
        return f"{result.heard} [{score} cov {coverage} fpp {pace}]", intent.name if intent else None

    return understand


MATCHERS: dict[str, Callable[[ProviderContext], Understand]] = {"before": before, "after": after}


@dataclass
class Outcome:
    name: str
    rows: list[tuple[Sample, str, str | None]] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def in_scope(self) -> tuple[int, int]:
        rows = [r for r in self.rows if r[0].want is not None]
        return sum(r[0].want == r[2] for r in rows), len(rows)

    def rejected(self) -> tuple[int, int]:
        rows = [r for r in self.rows if r[0].want is None]
        return sum(r[2] is None for r in rows), len(rows)

    def report(self) -> dict[str, Any]:
        ok, n = self.in_scope()
        rej, m = self.rejected()
        mean_cpu = sum(self.cpu_s) / len(self.cpu_s) if self.cpu_s else 0.0
        return {
            "in_scope_accuracy": round(ok / n, 4) if n else None,
            "in_scope": [ok, n],
            "out_of_scope_rejection": round(rej / m, 4) if m else None,
            "out_of_scope": [rej, m],
            "decode_ms": summary(self.wall_s),
            "decode_cpu_ms": summary(self.cpu_s),
            "decode_cpu_ms_per_call": round(mean_cpu * QUESTIONS_PER_CALL * 1000, 1),
            "misses": [
                {"text": s.text, "voice": s.voice, "wpm": s.wpm, "want": s.want, "heard": heard, "got": got}
                for s, heard, got in self.rows
                if got != s.want
            ],
        }


def run(name: str, understand: Understand, audio: list[tuple[Sample, bytes]]) -> Outcome:
    outcome = Outcome(name)
    for sample, pcm in audio:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        heard, got = understand(pcm)
        outcome.cpu_s.append(time.thread_time() - cpu0)
        outcome.wall_s.append(time.perf_counter() - wall0)
        outcome.rows.append((sample, heard, got))
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list every miss")
    parser.add_argument(
        "--set",
        choices=("paraphrases", "dev", "dev-fast"),
        default="paraphrases",
        help="the paraphrase set (the figures of issue 16) or the development set (tests/bench/dev_set.py), "
        "at its normal or its fast renderings",
    )
    args = parser.parse_args()
    ctx = frontdesk()
    chosen = {"paraphrases": samples, "dev": dev_set.samples, "dev-fast": dev_set.fast_samples}[args.set]()
    audio = [(s, telephone(s.text, voice=s.voice, wpm=s.wpm).tobytes()) for s in chosen]
    reports: dict[str, dict[str, Any]] = {}
    for name, make in MATCHERS.items():
        outcome = run(name, make(ctx), audio)
        reports[name] = outcome.report()
    print_table(reports, show_misses=args.misses, title=args.set)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.set == "paraphrases" else f"-{args.set}"
    path = RESULTS / f"understanding{suffix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "load": os.getloadavg()}
    path.write_text(json.dumps({"machine": machine, "matchers": reports}, indent=2), encoding="utf-8")
    print(f"written: {path}")


def print_table(reports: dict[str, dict[str, Any]], *, show_misses: bool, title: str = "paraphrases") -> None:
    where = {
        "paraphrases": "paraphrase set (tests/unit/paraphrases.py)",
        "dev": "dev set (tests/bench/dev_set.py)",
        "dev-fast": "dev set at fast renderings (tests/bench/dev_set.py)",
    }[title]
    print(f"offline understanding, {where} through µ-law")
    print(
        f"{'matcher':8} {'in-scope':>16} {'rejection':>16} {'decode ms p50/p95':>18} "
        f"{'cpu ms p50/p95':>15} {'cpu ms/call':>11}"
    )
    for name, r in reports.items():
        ok, n = r["in_scope"]
        rej, m = r["out_of_scope"]
        d, c = r["decode_ms"], r["decode_cpu_ms"]
        print(
            f"{name:8} {ok:>4}/{n:<3} {r['in_scope_accuracy']:6.1%} {rej:>4}/{m:<3} "
            f"{r['out_of_scope_rejection']:6.1%} {d['p50']:>8.0f}/{d['p95']:<8.0f} "
            f"{c['p50']:>7.0f}/{c['p95']:<7.0f} {r['decode_cpu_ms_per_call']:>11.0f}"
        )
    print(f"(targets: in-scope >= 90%, rejection >= 80%; cpu per call = {QUESTIONS_PER_CALL} questions)")
    if show_misses:
        for name, r in reports.items():
            for miss in r["misses"]:
                print(
                    f"  {name:7} {miss['voice'] + '@' + str(miss['wpm']):18} {miss['text']!r:52} "
                    f"want {miss['want'] or '-':10} heard {miss['heard']!r} -> {miss['got'] or '-'}"
                )


if __name__ == "__main__":
    main()
