"""``ari-agent knowledge add|list|remove|search|reindex``: a profile's documents in the knowledge base.

A profile that names an embeddings provider has its passages embedded at ``add``
(and all of them at ``reindex``, after a change of embedder) and is searched by
words and meaning.

Exit codes: 0 done, 1 nothing to act on (no such document), 2 a bad argument
(unknown profile, unreadable file, a file that is not Markdown or text, an
embeddings provider that cannot run).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ari_agent.config import Settings
from ari_agent.knowledge import KnowledgeBase, KnowledgeError
from ari_agent.knowledge.base import Hit, Ranking, embedding_texts, read_document
from ari_agent.knowledge.fusion import hybrid_answers
from ari_agent.knowledge.relevance import answers
from ari_agent.ops.output import Out, clean, table
from providers.base import ProviderError
from providers.embeddings import Embedder, Vectors

EXIT_MISSING = 1
EXIT_BAD = 2


def _profile_known(settings: Settings, profile: str) -> bool:
    if profile in settings.all_profiles():
        return True
    known = ", ".join(sorted(settings.all_profiles()))
    print(f"error: no profile named {profile!r} (profiles: {known})", file=sys.stderr)
    return False


class EmbedderUnusable(Exception):
    """The profile names an embeddings provider that cannot run here; the message says why."""


def embedder_for(settings: Settings, profile: str) -> Embedder | None:
    """The profile's embeddings provider (None: it names none), checked as ``check`` would."""
    from ari_agent.profiles.catalogue import plan_profile
    from providers import registry

    config = settings.all_profiles()[profile]
    if not config.embeddings:
        return None
    plan = plan_profile(profile, config)
    slots = plan.ready("embeddings")
    if not slots:
        field = f"profiles.{profile}.embeddings"
        problems = [str(p) for p in plan.problems if p.field == field] or [f"{field}: not usable"]
        raise EmbedderUnusable("; ".join(problems))
    return registry.create_embedder(slots[0].name, slots[0].ctx)


async def _embed_all(embedder: Embedder, texts: list[str]) -> Vectors:
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


def _reindex(base: KnowledgeBase, profile: str, embedder: Embedder) -> int:
    """Embed the profile's passages that lack a vector from ``embedder``; how many were embedded."""

    missing = base.unembedded(profile, embedder.identity)
    if not missing:
        return 0
    vectors = asyncio.run(_embed_all(embedder, embedding_texts(missing)))
    base.store_vectors(profile, embedder.identity, missing, vectors)
    return len(missing)


def add(settings: Settings, profile: str, files: list[str], as_json: bool) -> int:
    if not _profile_known(settings, profile):
        return EXIT_BAD
    out = Out(json_mode=as_json)
    base = KnowledgeBase(settings.knowledge_path)
    added = []
    embedded = 0
    try:
        embedder = embedder_for(settings, profile)
        # Read every file first: one bad file adds none, rather than half the set.
        texts = [(Path(f).name, read_document(Path(f))) for f in files]
        names = [name for name, _ in texts]
        if len(set(names)) != len(names):
            raise KnowledgeError("two files share a name; a document is known by its file name")
        for name, passages in base.add_many(profile, texts).items():
            added.append({"source": name, "passages": len(passages)})
            out.line(f"added {clean(name)} to {profile}: {len(passages)} passage(s)")
        if embedder is not None:
            embedded = _reindex(base, profile, embedder)
            out.line(f"embedded {embedded} passage(s) with {embedder.identity}")
    except (KnowledgeError, ValueError, EmbedderUnusable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    except ProviderError as exc:
        # The documents are in (searched by words); their vectors are not.
        print(
            f"error: embedding failed ({exc}); the documents are searched by words until "
            f"`ari-agent knowledge reindex {profile}` succeeds",
            file=sys.stderr,
        )
        return EXIT_BAD
    if as_json:
        out.json({"profile": profile, "added": added, "embedded": embedded})
    return 0


def reindex(settings: Settings, profile: str, as_json: bool) -> int:
    """Embed every passage the profile's embedder has no vector for (all of them after a change)."""
    if not _profile_known(settings, profile):
        return EXIT_BAD
    out = Out(json_mode=as_json)
    try:
        embedder = embedder_for(settings, profile)
        if embedder is None:
            raise EmbedderUnusable(
                f"profile {profile} names no embeddings provider; set profiles.{profile}.embeddings "
                '(e.g. "local") to search by meaning'
            )
        identity = embedder.identity
        embedded = _reindex(KnowledgeBase(settings.knowledge_path), profile, embedder)
    except (KnowledgeError, EmbedderUnusable, ProviderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    if as_json:
        out.json({"profile": profile, "embedder": identity, "embedded": embedded})
    else:
        out.line(f"embedded {embedded} passage(s) of {profile} with {identity}")
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
    base = KnowledgeBase(settings.knowledge_path)
    try:
        embedder = embedder_for(settings, profile)
        if embedder is not None:
            return _search_hybrid(settings, base, profile, question, embedder, out)
        ranking = base.rank(profile, question, top=settings.knowledge.top)
    except (KnowledgeError, EmbedderUnusable, ProviderError) as exc:
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


def _search_hybrid(
    settings: Settings, base: KnowledgeBase, profile: str, question: str, embedder: Embedder, out: Out
) -> int:
    """``search`` for a profile with embeddings: what a call's hybrid search would get."""

    identity = embedder.identity
    query = asyncio.run(_embed_all(embedder, [question]))[0]
    ranking: Ranking = base.rank_hybrid(profile, question, query, identity, top=settings.knowledge.top)
    knowledge = settings.knowledge
    best_similarity = ranking.best_similarity or 0.0
    answered = hybrid_answers(
        best_similarity,
        ranking.best_coverage,
        min_similarity=knowledge.min_similarity,
        min_coverage=knowledge.hybrid_min_coverage,
    )
    if out.json_mode:
        out.json(
            {
                "profile": profile,
                "embedder": identity,
                "min_similarity": knowledge.min_similarity,
                "min_coverage": knowledge.hybrid_min_coverage,
                "best_similarity": round(best_similarity, 3),
                "best_coverage": round(ranking.best_coverage, 3),
                "answered": answered,
                "hits": [_hit_json(h, answered) for h in ranking.hits],
            }
        )
        return 0
    if not answered:
        out.line(
            out.paint(
                f"the nearest passage is {best_similarity:.2f} alike (needs {knowledge.min_similarity:.2f}) "
                f"and the best covers {ranking.best_coverage:.0%} of the question (needs "
                f"{knowledge.hybrid_min_coverage:.0%}): a call would be told nothing",
                "warn",
            )
        )
    for h in ranking.hits:
        mark = "" if answered else out.paint("  (under the threshold)", "dim")
        name = f"{clean(h.source)} / {clean(h.heading) or '(no heading)'}"
        out.line(f"{h.score:6.2f}  alike {h.similarity or 0.0:4.2f}  covers {h.coverage:4.0%}  {name}{mark}")
        snippet = clean(" ".join(h.text.split()))
        out.line(f"        {snippet[:160]}{'...' if len(snippet) > 160 else ''}")
    return 0


def _hit_json(h: Hit, answered: bool) -> dict[str, object]:
    return {
        "source": h.source,
        "heading": h.heading,
        "score": round(h.score, 3),
        "similarity": None if h.similarity is None else round(h.similarity, 3),
        "coverage": round(h.coverage, 3),
        "above_threshold": answered,
        "text": h.text,
    }
