"""The knowledge base as an LLM tool: its spec, the search behind it, and the result the model reads.

The core names no vendor: the spec is a plain ``ToolSpec`` and the result is
text, whatever adapter carries them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ari_agent.knowledge.base import Hit, KnowledgeBase, KnowledgeError
from ari_agent.knowledge.fusion import HYBRID_MIN_COVERAGE, MIN_SIMILARITY
from ari_agent.knowledge.relevance import MIN_COVERAGE
from providers.base import ProviderError, ToolSpec
from providers.embeddings import Embedder

if TYPE_CHECKING:
    from ari_agent.config import Settings

log = logging.getLogger(__name__)

# A BM25 floor under each passage, off by default: whether anything answers is decided by the
# share of the question the best passage covers (relevance.MIN_COVERAGE), which does not move
# with the question's length the way a raw BM25 score does. The old default, a 2.0 cutoff, is
# what bench_knowledge measures as "before".
MIN_SCORE = 0.0

TOOL_NAME = "search_knowledge"
NOTHING_FOUND = "nothing in the knowledge base answers this. Tell the caller you do not know; do not guess."

SEARCH_SPEC = ToolSpec(
    TOOL_NAME,
    "Search this business's documents (policies, prices, hours, FAQ) for the caller's question. "
    "Answer only from the passages it returns; if it finds nothing, say you do not know.",
    {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "the caller's question, in full"}},
        "required": ["query"],
    },
)


@dataclass(frozen=True)
class Found:
    output: str  # what the model reads
    passages: tuple[tuple[str, str], ...]  # (source, heading) of each passage given


def tool_output(hits: Sequence[Hit]) -> Found:
    if not hits:
        return Found(NOTHING_FOUND, ())
    parts = [f"[{h.source} / {h.heading or '(no heading)'}]\n{h.text}" for h in hits]
    return Found(
        "passages, best first (answer from these only):\n\n" + "\n\n".join(parts),
        tuple(dict.fromkeys((h.source, h.heading) for h in hits)),
    )


class KnowledgeSearch:
    """One profile's search, as calls use it: off the event loop, with the operator's threshold.

    With an embedder the search is hybrid (words and meaning, base.search_hybrid); when the
    embedder fails for a question, that question is searched by words alone, so a call still
    gets an answer the lexical way rather than none.
    """

    def __init__(
        self,
        base: KnowledgeBase,
        profile: str,
        *,
        top: int = 3,
        min_score: float = MIN_SCORE,
        min_coverage: float = MIN_COVERAGE,
        embedder: Embedder | None = None,
        min_similarity: float = MIN_SIMILARITY,
        hybrid_min_coverage: float = HYBRID_MIN_COVERAGE,
    ):
        self.base = base
        self.profile = profile
        self.top = top
        self.min_score = min_score
        self.min_coverage = min_coverage
        self.embedder = embedder
        self.min_similarity = min_similarity
        self.hybrid_min_coverage = hybrid_min_coverage

    async def __call__(self, question: str) -> Found:
        if self.embedder is not None:
            try:
                query = (await self.embedder.embed([question]))[0]
            except ProviderError as exc:
                log.warning("profile %s: embeddings failed (%s); searching by words", self.profile, exc)
            else:
                try:
                    hits = await asyncio.to_thread(
                        self.base.search_hybrid,
                        self.profile,
                        question,
                        query,
                        self.embedder.identity,
                        top=self.top,
                        min_similarity=self.min_similarity,
                        min_coverage=self.hybrid_min_coverage,
                    )
                    return tool_output(hits)
                except KnowledgeError as exc:
                    # `knowledge add` while the agent runs: the new passages get their vectors a
                    # moment after their rows (or never, if embedding failed there).
                    log.warning("profile %s: %s; searching by words", self.profile, exc)
        # SQLite reads the disk: never on the event loop (each search opens its own connection).
        hits = await asyncio.to_thread(
            self.base.search,
            self.profile,
            question,
            top=self.top,
            min_score=self.min_score,
            min_coverage=self.min_coverage,
        )
        return tool_output(hits)


def knowledge_search(
    settings: Settings, profile: str, embedder: Embedder | None = None
) -> KnowledgeSearch | None:
    """The profile's search when it has documents (reads the file: call it off the event loop).

    With an embedder whose vectors the index lacks (documents added before it was named, or by
    another embedder), the search is by words, and the log says how to re-index."""
    base = KnowledgeBase(settings.knowledge_path)
    try:
        documents = base.documents(profile)
        if embedder is not None and base.unembedded(profile, embedder.identity):
            log.error(
                "profile %s: the knowledge base has passages without %s vectors; searching by words "
                "only. Fix: ari-agent knowledge reindex %s",
                profile,
                embedder.identity,
                profile,
            )
            embedder = None
    except KnowledgeError as exc:
        # A broken knowledge file costs the profile its search tool, not its calls.
        log.error("profile %s: knowledge base unusable, no search tool: %s", profile, exc)
        return None
    if not documents:
        return None
    how = f"words and meaning ({embedder.identity})" if embedder is not None else "words"
    log.info("profile %s: search tool over %d document(s), by %s", profile, len(documents), how)
    return KnowledgeSearch(
        base,
        profile,
        top=settings.knowledge.top,
        min_score=settings.knowledge.min_score,
        min_coverage=settings.knowledge.min_coverage,
        embedder=embedder,
        min_similarity=settings.knowledge.min_similarity,
        hybrid_min_coverage=settings.knowledge.hybrid_min_coverage,
    )
