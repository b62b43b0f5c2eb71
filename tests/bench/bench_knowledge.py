"""The knowledge base's retrieval on the question set (tests/knowledge/questions.py), no Asterisk.

Three methods from the same run, on the same index:
- before: the first method, a raw BM25 cutoff (2.0) on a query of the question's
  words less function words;
- after (lexical, today's default): the query also drops a spoken question's
  filler, and the question is answered only when the best passage covers
  ``min_coverage`` of it (the IDF-weighted share of its content words,
  ari_agent/knowledge/relevance.py);
- hybrid (a profile with ``embeddings = "local"``): BM25's and the offline
  embedder's (all-MiniLM-L6-v2) 10 best fused by reciprocal rank, answered only
  when the nearest passage's similarity reaches ``min_similarity`` and some
  passage covers ``hybrid_min_coverage`` (ari_agent/knowledge/fusion.py), in two
  variants from the same run: "1 vector" (each passage embedded whole: the
  method shipped before, rebuilt here from the same pure parts) and "multi"
  (each passage embedded whole, heading, heading + first sentence and each
  sentence, its similarity the best of these: passages.vector_texts, shipped
  now). Each variant with two decisions: "both" (the shipped rule, both
  thresholds) and "sum" (one combined score, similarity + w x coverage >= t).
  Every parameter is chosen on the tune half the same way, over a grid.

What was tried after looking at results, honestly: the single-vector figures
(80.0 % top-3 on all) were known before any of this was tried. Multi-vector
passages and the "sum" decision were then tried on all the questions at once,
with other sets of texts per passage (the variants below), before the set
proposed in the issue ahead of any measurement (whole, heading, heading + first
sentence, each sentence) was kept and its thresholds chosen on the tune half.
The shipped method is NOT what a choice by the tune half among everything
printed would pick: "sum" beats "both" there for every set of texts (91.3 % /
100 % on tune), and among the "both" rules the sets without the heading alone
lead ("whole+sentences": 87.0 % / 100 % on tune against 82.6 %), yet those let
1 to 3 of the 6 held-out no-answer questions through. The bench prints which
methods lead on the tune half. The rule "both" is shipped because it was the
rule before this change, and the set of texts because the issue proposed it;
say so when quoting the held-out figures.

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
import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ari_agent.knowledge import KnowledgeBase
from ari_agent.knowledge.base import CANDIDATES, Hit, Ranking, StoredPassage, embedding_texts
from ari_agent.knowledge.fusion import (
    HYBRID_MIN_COVERAGE,
    MIN_SIMILARITY,
    hybrid_answers,
    passage_similarities,
    reciprocal_rank_fusion,
    top_scores,
)
from ari_agent.knowledge.passages import split_sentences
from ari_agent.knowledge.query import FUNCTION_WORDS
from ari_agent.knowledge.relevance import MIN_COVERAGE
from tests.knowledge.questions import ANSWERABLE, DOCUMENT, NO_ANSWER

RESULTS = Path(__file__).with_name("results")
TARGET_TOP3 = 0.85
BEFORE_MIN_SCORE = 2.0  # the first method's shipped threshold
GRID = tuple(round(0.05 * i, 2) for i in range(0, 13))  # coverage thresholds tried: 0 .. 0.6
SIMILARITY_GRID = tuple(round(0.02 * i, 2) for i in range(5, 31))  # hybrid: 0.10 .. 0.60
SINGLE_VECTOR_SHIPPED = (0.38, 0.30)  # the 1-vector method's defaults, chosen on the tune half before

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


@dataclass
class Timing:
    p50_ms: float
    p95_ms: float
    max_ms: float


def timing(samples: Sequence[float]) -> Timing:
    ms = np.array(samples) * 1000.0
    return Timing(*(round(float(x), 2) for x in np.percentile(ms, [50, 95, 100])))


def percentiles(label: str, t: Timing) -> str:
    return f"  {label:<40} p50 {t.p50_ms:7.2f} ms  p95 {t.p95_ms:7.2f} ms  max {t.max_ms:7.2f} ms"


Params = tuple[float, float]
Decide = Callable[[Ranking, Params], bool]
Halves = dict[str, tuple[Answerable, Sequence[str]]]


def decide_both(r: Ranking, p: Params) -> bool:
    """The shipped decision (fusion.hybrid_answers): similarity >= p[0] and coverage >= p[1]."""
    return hybrid_answers(r.best_similarity or 0.0, r.best_coverage, min_similarity=p[0], min_coverage=p[1])


def decide_sum(r: Ranking, p: Params) -> bool:
    """Tried, not shipped: one combined score, similarity + p[0] x coverage >= p[1]."""
    return (r.best_similarity or 0.0) + p[0] * r.best_coverage >= p[1] - 1e-9


BOTH_GRID = tuple((s, c) for s in SIMILARITY_GRID for c in GRID)
SUM_GRID = tuple(
    (round(0.05 * w, 2), round(0.01 * t, 2)) for w in range(0, 21) for t in range(20, 121)
)  # weight 0 .. 1, threshold 0.20 .. 1.20


@dataclass
class Method:
    """One way to search, its parameters (chosen on the tune half unless said) and its figures."""

    label: str
    params: Params | None
    figures: dict[str, Figures]  # tune, held_out, all


@dataclass
class Hybrid:
    """The hybrid methods' figures, or why they could not be measured."""

    missing: str | None = None
    embedder: str = ""
    methods: list[Method] | None = None
    sweep: dict[Params, tuple[Figures, Figures, Figures]] | None = None  # shipped method, by params
    passages: int = 0
    vectors: int = 0
    embed_passages_s: float = 0.0
    lexical_search: Timing | None = None
    question_embed: Timing | None = None
    single_search: Timing | None = None
    hybrid_search: Timing | None = None


def chosen_on_tune(
    rankings: dict[str, Ranking], decide: Decide, grid: Sequence[Params], halves: Halves
) -> Params:
    """The grid point with the highest top-3 plus rejection rate on the tune half (ties: the lowest)."""

    def tune_score(p: Params) -> tuple[float, float, float]:
        f = measure(decided(rankings, decide, p), *halves["tune"])
        return (f.top3 + f.rejected, -p[0], -p[1])

    return max(grid, key=tune_score)


def decided(rankings: dict[str, Ranking], decide: Decide, p: Params | None) -> Search:
    """A search over rankings made once per question: its hits if the decision answers, else none."""

    def search(question: str) -> list[Hit]:
        r = rankings[question]
        return r.hits if p is None or decide(r, p) else []

    return search


# The sets of texts per passage compared: each passage's vectors are those of its texts of
# these kinds; "sentence" is each sentence alone, "heading+sentence" each with the heading in
# front. The shipped set (passages.vector_texts) is "whole, heading, heading+first, sentences".
KINDS = ("whole", "heading", "heading+first", "heading+sentence", "sentence")
VARIANTS: dict[str, frozenset[str]] = {
    name: frozenset(kinds)
    for name, kinds in (
        ("1 vector", {"whole"}),
        ("whole+heading+first", {"whole", "heading", "heading+first"}),
        ("whole+sentences", {"whole", "sentence"}),
        ("whole+first+sentences", {"whole", "heading+first", "sentence"}),
        ("whole+heading+sentences", {"whole", "heading", "sentence"}),
        ("multi (shipped set)", {"whole", "heading", "heading+first", "sentence"}),
        ("heading+first+sentences", {"heading", "heading+first", "sentence"}),
        ("whole+headed sentences", {"whole", "heading+sentence"}),
        ("heading+headed sentences", {"heading", "heading+sentence"}),
        ("whole+heading+headed sent.", {"whole", "heading", "heading+sentence"}),
        ("all five kinds", set(KINDS)),
    )
}


def labelled_texts(p: StoredPassage) -> list[tuple[str, str]]:
    """(kind, text) of every kind for one passage."""
    sentences = split_sentences(p.text)
    out = [("whole", f"{p.heading}\n{p.text}" if p.heading else p.text)]
    if p.heading:
        out += [("heading", p.heading)]
        out += [("heading+first", f"{p.heading}\n{sentences[0]}")] if sentences else []
        out += [("heading+sentence", f"{p.heading}: {s}") for s in sentences]
    return out + [("sentence", s) for s in sentences]


def variant_ranking(
    lexical: Ranking,
    query: npt.NDArray[np.float32],
    matrix: npt.NDArray[np.float32],
    owners: npt.NDArray[np.intp],
    passages: Sequence[StoredPassage],
) -> Ranking:
    """What KnowledgeBase.rank_hybrid does, from the same pure parts, over any set of vectors:
    BM25's 10 best (``lexical``) and the 10 nearest (a passage's best vector) fused by RRF."""
    alike = passage_similarities(matrix, owners, len(passages), query)
    near = top_scores(alike, CANDIDATES)
    keys = [(p.source, p.seq) for p in passages]
    fused = reciprocal_rank_fusion([[(h.source, h.seq) for h in lexical.hits], [keys[i] for i, _ in near]])
    by_key = {(h.source, h.seq): h for h in lexical.hits}
    hits = []
    for key in fused[:3]:
        i = keys.index(key)
        p = passages[i]
        hit = by_key.get(key) or Hit(p.source, p.heading, p.text, 0.0, 0.0, p.seq)
        hits.append(dataclasses.replace(hit, similarity=float(alike[i])))
    return Ranking(hits, lexical.best_coverage, near[0][1] if near else None)


def measure_hybrid(kb: KnowledgeBase, halves: Halves) -> Hybrid:
    """The hybrid methods on the same index: passages embedded once, each question ranked once."""
    import asyncio
    import time

    try:
        from providers.local.embeddings import MiniLMEmbeddings
    except ImportError as exc:
        return Hybrid(missing=f"{exc.name} is not installed (pip install 'ari-agent[embeddings]')")
    embedder = MiniLMEmbeddings()
    asyncio.run(embedder.prepare())
    passages = kb.unembedded("bench", embedder.identity)
    texts = embedding_texts(passages)
    start = time.perf_counter()
    vectors = asyncio.run(embedder.embed(texts))
    embed_passages_s = time.perf_counter() - start
    kb.store_vectors("bench", embedder.identity, passages, vectors)
    # Every kind of text of every passage, embedded once; each variant takes its kinds' rows.
    labelled = [(i, kind, text) for i, p in enumerate(passages) for kind, text in labelled_texts(p)]
    every = asyncio.run(embedder.embed([text for _, _, text in labelled]))
    kinds = np.array([kind for _, kind, _ in labelled])
    owners = np.array([i for i, _, _ in labelled], dtype=np.intp)
    questions = [q for q, _, _ in ANSWERABLE] + list(NO_ANSWER)
    multi: dict[str, Ranking] = {}
    variants: dict[str, dict[str, Ranking]] = {name: {} for name in VARIANTS}
    embed_times: list[float] = []
    search_times: list[float] = []
    single_times: list[float] = []
    lexical_times: list[float] = []
    for question in questions:
        t0 = time.perf_counter()
        query = asyncio.run(embedder.embed([question]))[0]
        t1 = time.perf_counter()
        multi[question] = kb.rank_hybrid("bench", question, query, embedder.identity, top=3)
        t2 = time.perf_counter()
        lexical = kb.rank("bench", question, top=CANDIDATES)
        whole = kinds == "whole"
        variants["1 vector"][question] = variant_ranking(
            lexical, query, every[whole], owners[whole], passages
        )
        t3 = time.perf_counter()
        kb.search("bench", question, top=3, min_coverage=MIN_COVERAGE)
        lexical_times.append(time.perf_counter() - t3)
        embed_times.append(t1 - t0)
        search_times.append(t2 - t1)
        single_times.append(t3 - t2)
        for name, chosen in VARIANTS.items():
            rows = np.isin(kinds, list(chosen))
            variants[name][question] = variant_ranking(lexical, query, every[rows], owners[rows], passages)
    single = variants["1 vector"]

    def method(label: str, rankings: dict[str, Ranking], decide: Decide, p: Params | None) -> Method:
        figures = {h: measure(decided(rankings, decide, p), *halves[h]) for h in ("tune", "held_out", "all")}
        return Method(label, p, figures)

    methods = [
        method("1 vector, shipped before", single, decide_both, SINGLE_VECTOR_SHIPPED),
        method("multi, shipped now", multi, decide_both, (MIN_SIMILARITY, HYBRID_MIN_COVERAGE)),
    ]
    for name, rankings in variants.items():
        methods += [
            method(
                f"{name}, both",
                rankings,
                decide_both,
                chosen_on_tune(rankings, decide_both, BOTH_GRID, halves),
            ),
            method(
                f"{name}, sum", rankings, decide_sum, chosen_on_tune(rankings, decide_sum, SUM_GRID, halves)
            ),
            method(f"{name}, no threshold", rankings, decide_both, None),
        ]
    sweep = {
        p: (
            measure(decided(multi, decide_both, p), *halves["tune"]),
            measure(decided(multi, decide_both, p), *halves["held_out"]),
            measure(decided(multi, decide_both, p), *halves["all"]),
        )
        for p in BOTH_GRID
    }
    return Hybrid(
        embedder=embedder.identity,
        methods=methods,
        sweep=sweep,
        passages=len(passages),
        vectors=len(texts),
        embed_passages_s=embed_passages_s,
        lexical_search=timing(lexical_times),
        question_embed=timing(embed_times),
        single_search=timing(single_times),
        hybrid_search=timing(search_times),
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
        unthresholded = measure(after(0.0), *every)
        if args.show:
            measure(after(MIN_COVERAGE), *every, show=True)
        hybrid = measure_hybrid(kb, {"tune": tune, "held_out": held, "all": every})
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
    for q in new["all"].misses:
        print(f"  missed:   {q}")
    for q in new["all"].leaks:
        print(f"  answered: {q}")
    print(line("no threshold (ranking)", unthresholded))
    final = new["all"]
    if hybrid.missing is not None:
        print(f"hybrid: not measured: {hybrid.missing}")
    else:
        final = report_hybrid(new, hybrid)
    RESULTS.mkdir(exist_ok=True)
    figures = {
        "before": {"min_score": BEFORE_MIN_SCORE, **{k: asdict(v) for k, v in old.items()}},
        "after": {
            "min_coverage": MIN_COVERAGE,
            "chosen_on_tune": chosen,
            "no_threshold": asdict(unthresholded),
            **{k: asdict(v) for k, v in new.items()},
        },
        "hybrid": hybrid_json(hybrid),
    }
    (RESULTS / "knowledge.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    met = final.top3 >= TARGET_TOP3 and final.rejected == 1.0
    verdict = "met" if met else "NOT met"
    method = "hybrid" if hybrid.missing is None else "lexical"
    print(f"  targets (top-3 >= {TARGET_TOP3:.0%}, every no-answer question rejected), {method}: {verdict}")
    return 0 if met or not args.strict else 1


def figures_cell(f: Figures) -> str:
    return f"{f.top3:6.1%} / {f.rejected:6.1%}"


def report_hybrid(lexical: dict[str, Figures], hybrid: Hybrid) -> Figures:
    """Print the hybrid methods beside today's lexical one; the shipped method's figures on all."""
    assert hybrid.methods is not None and hybrid.sweep is not None
    print(
        f"hybrid ({hybrid.embedder}, RRF of BM25's and the embedder's 10 best); top-3 / rejected, "
        "parameters chosen on the tune half unless said:"
    )
    print(f"  {'method':<42} {'parameters':<26} {'tune':^17} | {'held out':^17} | {'all':^17}")
    rows = [Method("lexical (today's main)", (MIN_COVERAGE, 0.0), lexical), *hybrid.methods]
    for m in rows:
        if m.params is None:
            params = "answers everything"
        elif "sum" in m.label:
            params = f"sim + {m.params[0]:g} x cov >= {m.params[1]:g}"
        elif "lexical" in m.label:
            params = f"cov >= {m.params[0]:g}"
        else:
            params = f"sim >= {m.params[0]:g}, cov >= {m.params[1]:g}"
        cells = " | ".join(figures_cell(m.figures[h]) for h in ("tune", "held_out", "all"))
        mark = "  <- shipped" if m.label == "multi, shipped now" else ""
        print(f"  {m.label:<42} {params:<26} {cells}{mark}")
    lead = max(m.figures["tune"].top3 + m.figures["tune"].rejected for m in hybrid.methods)
    leaders = [m for m in hybrid.methods if m.figures["tune"].top3 + m.figures["tune"].rejected == lead]
    print(
        f"  leading on the tune half ({len(leaders)} tied; the shipped one is not among them unless listed):"
    )
    for m in leaders:
        cells = " | ".join(figures_cell(m.figures[h]) for h in ("tune", "held_out", "all"))
        print(f"    {m.label:<40} {cells}")
    shipped = next(m for m in hybrid.methods if m.label == "multi, shipped now")
    for half in ("tune", "held_out", "all"):
        print(line(f"{half} lexical", lexical[half]))
        print(line(f"{half} hybrid (shipped)", shipped.figures[half]))
    print("trade-off of the shipped method at the shipped coverage (min_similarity: tune | held out | all):")
    for (sim, cov), (a, b, d) in hybrid.sweep.items():
        if cov != HYBRID_MIN_COVERAGE or round(sim * 50) % 2:
            continue
        mark = " <- shipped" if sim == MIN_SIMILARITY else ""
        print(f"  {sim:4.2f}  {figures_cell(a)}  |  {figures_cell(b)}  |  {figures_cell(d)}{mark}")
    best_all = max(hybrid.sweep.values(), key=lambda v: (v[2].rejected == 1.0, v[2].top3))[2]
    print(
        f"  best top-3 on all with every no-answer rejected, any grid point (hindsight): {best_all.top3:.1%}"
    )
    final = shipped.figures["all"]
    for q in final.misses:
        print(f"  hybrid missed:   {q}")
    for q in final.leaks:
        print(f"  hybrid answered: {q}")
    print(
        f"speed (same run; {len(ANSWERABLE) + len(NO_ANSWER)} questions; {hybrid.passages} passages as "
        f"{hybrid.vectors} vectors, embedded in {hybrid.embed_passages_s:.2f} s):"
    )
    for label, t in (
        ("lexical search (today)", hybrid.lexical_search),
        ("hybrid: embed the question", hybrid.question_embed),
        ("hybrid: 1-vector fused search (before)", hybrid.single_search),
        ("hybrid: multi-vector fused search (now)", hybrid.hybrid_search),
    ):
        assert t is not None
        print(percentiles(label, t))
    return final


def hybrid_json(hybrid: Hybrid) -> dict[str, object]:
    if hybrid.missing is not None or hybrid.methods is None:
        return {"measured": False, "why": hybrid.missing}
    return {
        "measured": True,
        "embedder": hybrid.embedder,
        "min_similarity": MIN_SIMILARITY,
        "min_coverage": HYBRID_MIN_COVERAGE,
        "passages": hybrid.passages,
        "vectors": hybrid.vectors,
        "methods": [
            {"label": m.label, "params": m.params, **{k: asdict(v) for k, v in m.figures.items()}}
            for m in hybrid.methods
        ],
        "embed_passages_s": round(hybrid.embed_passages_s, 3),
        "timing": {
            name: asdict(t) if t else None
            for name, t in (
                ("lexical_search", hybrid.lexical_search),
                ("question_embed", hybrid.question_embed),
                ("single_vector_search", hybrid.single_search),
                ("hybrid_search", hybrid.hybrid_search),
            )
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
