"""``ari-agent knowledge add|list|remove|search``: a profile's documents in the knowledge base.

Exit codes: 0 done, 1 nothing to act on (no such document), 2 a bad argument
(unknown profile, unreadable file, a file that is not Markdown or text).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ari_agent.config import Settings
from ari_agent.knowledge import KnowledgeBase, KnowledgeError
from ari_agent.knowledge.base import read_document
from ari_agent.knowledge.relevance import answers
from ari_agent.ops.output import Out, clean, table

EXIT_MISSING = 1
EXIT_BAD = 2


def _profile_known(settings: Settings, profile: str) -> bool:
    if profile in settings.all_profiles():
        return True
    known = ", ".join(sorted(settings.all_profiles()))
    print(f"error: no profile named {profile!r} (profiles: {known})", file=sys.stderr)
    return False


def add(settings: Settings, profile: str, files: list[str], as_json: bool) -> int:
    if not _profile_known(settings, profile):
        return EXIT_BAD
    out = Out(json_mode=as_json)
    base = KnowledgeBase(settings.knowledge_path)
    added = []
    try:
        # Read every file first: one bad file adds none, rather than half the set.
        texts = [(Path(f).name, read_document(Path(f))) for f in files]
        names = [name for name, _ in texts]
        if len(set(names)) != len(names):
            raise KnowledgeError("two files share a name; a document is known by its file name")
        for name, passages in base.add_many(profile, texts).items():
            added.append({"source": name, "passages": len(passages)})
            out.line(f"added {clean(name)} to {profile}: {len(passages)} passage(s)")
    except (KnowledgeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    if as_json:
        out.json({"profile": profile, "added": added})
    return 0


def list_documents(settings: Settings, profile: str, as_json: bool) -> int:
    if not _profile_known(settings, profile):
        return EXIT_BAD
    out = Out(json_mode=as_json)
    try:
        docs = KnowledgeBase(settings.knowledge_path).documents(profile)
    except KnowledgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    if as_json:
        out.json(
            {
                "profile": profile,
                "documents": [
                    {"source": d.source, "passages": d.passages, "chars": d.chars, "added_at": d.added_at}
                    for d in docs
                ],
            }
        )
    elif not docs:
        out.line(f"profile {profile} has no documents (add some: ari-agent knowledge add {profile} FILE)")
    else:
        rows = [[clean(d.source), str(d.passages), str(d.chars), d.added_at] for d in docs]
        out.line(table(rows, ["source", "passages", "chars", "added"]))
    return 0


def remove(settings: Settings, profile: str, file: str, as_json: bool) -> int:
    if not _profile_known(settings, profile):
        return EXIT_BAD
    out = Out(json_mode=as_json)
    name = Path(file).name  # as added: by file name, wherever it was added from
    try:
        removed = KnowledgeBase(settings.knowledge_path).remove(profile, name)
    except KnowledgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    if as_json:
        out.json({"profile": profile, "source": name, "removed": removed})
    elif removed:
        out.line(f"removed {clean(name)} from {profile}")
    else:
        print(f"error: profile {profile} has no document named {name!r}", file=sys.stderr)
    return 0 if removed else EXIT_MISSING


def search(settings: Settings, profile: str, question: str, as_json: bool) -> int:
    """The passages a call would get, best first, with the share of the question each covers; when
    the best passage covers too little, or a passage scores under the BM25 floor, it says so."""
    if not _profile_known(settings, profile):
        return EXIT_BAD
    out = Out(json_mode=as_json)
    floor = settings.knowledge.min_score
    min_coverage = settings.knowledge.min_coverage
    try:
        ranking = KnowledgeBase(settings.knowledge_path).rank(profile, question, top=settings.knowledge.top)
    except KnowledgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    answered = answers(ranking.best_coverage, min_coverage) or min_coverage == 0.0
    hits = ranking.hits
    if as_json:
        out.json(
            {
                "profile": profile,
                "min_score": floor,
                "min_coverage": min_coverage,
                "best_coverage": round(ranking.best_coverage, 3),
                "answered": answered and any(h.score >= floor for h in hits),
                "hits": [
                    {
                        "source": h.source,
                        "heading": h.heading,
                        "score": round(h.score, 3),
                        "coverage": round(h.coverage, 3),
                        "above_threshold": answered and h.score >= floor,
                        "text": h.text,
                    }
                    for h in hits
                ],
            }
        )
        return 0
    if hits and not answered:
        out.line(
            out.paint(
                f"the best passage covers {ranking.best_coverage:.0%} of the question, under "
                f"{min_coverage:.0%}: a call would be told nothing",
                "warn",
            )
        )
    elif not any(h.score >= floor for h in hits):
        out.line(out.paint("no passage matches the question: a call would be told nothing", "warn"))
    for h in hits:
        mark = "" if answered and h.score >= floor else out.paint("  (under the threshold)", "dim")
        name = f"{clean(h.source)} / {clean(h.heading) or '(no heading)'}"
        out.line(f"{h.score:6.2f}  covers {h.coverage:4.0%}  {name}{mark}")
        snippet = clean(" ".join(h.text.split()))
        out.line(f"        {snippet[:160]}{'...' if len(snippet) > 160 else ''}")
    return 0
