"""The knowledge base's retrieval on the question set (tests/knowledge/questions.py), no Asterisk.

Prints top-1 and top-3 accuracy on the answerable questions (the expected
passage, by source and heading, among the hits above the threshold) and how
many no-answer questions got nothing above it; writes JSON under
tests/bench/results/. ``--show`` lists each question's hits; ``--strict`` exits 1
when a target is missed.

    python -m tests.bench.bench_knowledge
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ari_agent.knowledge import KnowledgeBase
from ari_agent.knowledge.answer import MIN_SCORE
from tests.knowledge.questions import ANSWERABLE, DOCUMENT, NO_ANSWER

RESULTS = Path(__file__).with_name("results")
TARGET_TOP3 = 0.85


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--show", action="store_true", help="print every question's hits")
    parser.add_argument("--min-score", type=float, default=MIN_SCORE, help="threshold to measure")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(Path(tmp) / "knowledge.db")
        kb.add("bench", DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8"))
        top1 = top3 = 0
        misses: list[str] = []
        for question, source, heading in ANSWERABLE:
            hits = kb.search("bench", question, top=3, min_score=args.min_score)
            found = [(h.source, h.heading) for h in hits]
            top1 += bool(found) and found[0] == (source, heading)
            if (source, heading) in found:
                top3 += 1
            else:
                misses.append(question)
            if args.show:
                print(f"{question!r} -> {heading}")
                for h in hits:
                    print(f"    {h.score:6.2f}  {h.heading}")
        rejected = 0
        leaks: list[str] = []
        for question in NO_ANSWER:
            hits = kb.search("bench", question, top=3, min_score=args.min_score)
            if hits:
                leaks.append(f"{question} -> {hits[0].heading} ({hits[0].score:.2f})")
            else:
                rejected += 1
            if args.show:
                print(f"NO ANSWER {question!r}: {[(h.heading, round(h.score, 2)) for h in hits]}")
    n, m = len(ANSWERABLE), len(NO_ANSWER)
    figures = {
        "answerable": n,
        "top1": top1 / n,
        "top3": top3 / n,
        "no_answer": m,
        "rejected": rejected / m,
        "min_score": args.min_score,
        "misses": misses,
        "leaks": leaks,
    }
    print(f"knowledge retrieval on {DOCUMENT.name} (threshold {args.min_score:g})")
    print(f"  answerable questions  {n:3d}   top-1 {top1 / n:6.1%}   top-3 {top3 / n:6.1%}  (target >= 85%)")
    print(f"  no-answer questions   {m:3d}   nothing above the threshold {rejected / m:6.1%}")
    for q in misses:
        print(f"  missed:   {q}")
    for q in leaks:
        print(f"  answered: {q}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knowledge.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    met = top3 / n >= TARGET_TOP3 and rejected == m
    verdict = "met" if met else "NOT met"
    print(f"  targets (top-3 >= {TARGET_TOP3:.0%}, every no-answer question rejected): {verdict}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
