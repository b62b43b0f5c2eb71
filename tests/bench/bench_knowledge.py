"""The knowledge base's retrieval on the question set (tests/knowledge/questions.py), no Asterisk.

Two methods from the same run, on the same index:
- before: the first method, a raw BM25 cutoff (2.0) on a query of the question's
  words less function words;
- after: the query also drops a spoken question's filler, and the question is
  answered only when the best passage covers ``min_coverage`` of it (the
  IDF-weighted share of its content words, ari_agent/knowledge/relevance.py).

The coverage threshold is chosen on half the questions (the even-numbered ones
of each list, "tune") as the one with the highest top-3 rate plus rejection
rate there (ties: the lowest), and reported on the other half ("held out") and
on all. Prints top-1 and top-3 accuracy on the answerable questions (the
expected passage, by source and heading, among the hits returned) and the share
of no-answer questions that got nothing; writes JSON under tests/bench/results/.
``--show`` lists each question's hits; ``--strict`` exits 1 when a target is missed.

    python -m tests.bench.bench_knowledge
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ari_agent.knowledge import KnowledgeBase
from ari_agent.knowledge.base import Hit
from ari_agent.knowledge.query import FUNCTION_WORDS
from ari_agent.knowledge.relevance import MIN_COVERAGE
from tests.knowledge.questions import ANSWERABLE, DOCUMENT, NO_ANSWER

RESULTS = Path(__file__).with_name("results")
TARGET_TOP3 = 0.85
BEFORE_MIN_SCORE = 2.0  # the first method's shipped threshold
GRID = tuple(round(0.05 * i, 2) for i in range(0, 13))  # coverage thresholds tried: 0 .. 0.6

Search = Callable[[str], list[Hit]]
Answerable = Sequence[tuple[str, str, str]]


@dataclass
class Figures:
    answerable: int
    top1: float
    top3: float
    no_answer: int
    rejected: float
    misses: list[str]
    leaks: list[str]


def measure(search: Search, answerable: Answerable, no_answer: Sequence[str], show: bool = False) -> Figures:
    top1 = top3 = 0
    misses: list[str] = []
    for question, source, heading in answerable:
        hits = search(question)
        found = [(h.source, h.heading) for h in hits]
        top1 += bool(found) and found[0] == (source, heading)
        if (source, heading) in found:
            top3 += 1
        else:
            misses.append(question)
        if show:
            print(f"{question!r} -> {heading}")
            for h in hits:
                print(f"    {h.score:6.2f}  cover {h.coverage:4.2f}  {h.heading}")
    rejected = 0
    leaks: list[str] = []
    for question in no_answer:
        hits = search(question)
        if hits:
            leaks.append(
                f"{question} -> {hits[0].heading} ({hits[0].score:.2f}, cover {hits[0].coverage:.2f})"
            )
        else:
            rejected += 1
        if show:
            shown = [(h.heading, round(h.score, 2), round(h.coverage, 2)) for h in hits]
            print(f"NO ANSWER {question!r}: {shown}")
    n, m = len(answerable), len(no_answer)
    return Figures(n, top1 / n, top3 / n, m, rejected / m, misses, leaks)


def line(label: str, f: Figures) -> str:
    return (
        f"  {label:<22} answerable {f.answerable:2d}  top-1 {f.top1:6.1%}  top-3 {f.top3:6.1%}   "
        f"no-answer {f.no_answer:2d}  rejected {f.rejected:6.1%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--show", action="store_true", help="print every question's hits (after)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args()
    tune = (ANSWERABLE[0::2], NO_ANSWER[0::2])
    held = (ANSWERABLE[1::2], NO_ANSWER[1::2])
    every = (ANSWERABLE, NO_ANSWER)
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(Path(tmp) / "knowledge.db")
        kb.add("bench", DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8"))

        def before(question: str) -> list[Hit]:
            return kb.search("bench", question, top=3, min_score=BEFORE_MIN_SCORE, stop_words=FUNCTION_WORDS)

        def after(threshold: float) -> Search:
            return lambda question: kb.search("bench", question, top=3, min_coverage=threshold)

        sweep = {
            t: (measure(after(t), *tune), measure(after(t), *held), measure(after(t), *every)) for t in GRID
        }
        chosen = max(GRID, key=lambda t: (sweep[t][0].top3 + sweep[t][0].rejected, -t))
        old = {
            "tune": measure(before, *tune),
            "held_out": measure(before, *held),
            "all": measure(before, *every),
        }
        new = dict(zip(("tune", "held_out", "all"), sweep[MIN_COVERAGE], strict=True))
        if args.show:
            measure(after(MIN_COVERAGE), *every, show=True)
    print(f"knowledge retrieval on {DOCUMENT.name}: {len(ANSWERABLE)} answerable, {len(NO_ANSWER)} no-answer")
    print(f"before: BM25 cutoff {BEFORE_MIN_SCORE:g}, function words dropped")
    for half, f in old.items():
        print(line(half, f))
    print(f"after: spoken filler dropped too, answered only if the best passage covers >= {MIN_COVERAGE:g}")
    for half, f in new.items():
        print(line(half, f))
    print(f"threshold chosen on the tune half: {chosen:g} (shipped: {MIN_COVERAGE:g})")
    print("trade-off (min_coverage: tune | held out | all, as top-3 / rejected):")
    for t, (a, b, c) in sweep.items():
        mark = " <- shipped" if t == MIN_COVERAGE else ""
        print(
            f"  {t:4.2f}  {a.top3:6.1%} / {a.rejected:6.1%}  |  {b.top3:6.1%} / {b.rejected:6.1%}  |  "
            f"{c.top3:6.1%} / {c.rejected:6.1%}{mark}"
        )
    final = new["all"]
    for q in final.misses:
        print(f"  missed:   {q}")
    for q in final.leaks:
        print(f"  answered: {q}")
    RESULTS.mkdir(exist_ok=True)
    figures = {
        "before": {"min_score": BEFORE_MIN_SCORE, **{k: asdict(v) for k, v in old.items()}},
        "after": {
            "min_coverage": MIN_COVERAGE,
            "chosen_on_tune": chosen,
            **{k: asdict(v) for k, v in new.items()},
        },
    }
    (RESULTS / "knowledge.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    met = final.top3 >= TARGET_TOP3 and final.rejected == 1.0
    verdict = "met" if met else "NOT met"
    print(f"  targets (top-3 >= {TARGET_TOP3:.0%}, every no-answer question rejected): {verdict}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
