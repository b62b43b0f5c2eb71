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
from ari_agent.knowledge.relevance import MIN_COVERAGE
from providers.base import ToolSpec

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
    """One profile's search, as calls use it: off the event loop, with the operator's threshold."""

    def __init__(
        self,
        base: KnowledgeBase,
        profile: str,
        *,
        top: int = 3,
        min_score: float = MIN_SCORE,
        min_coverage: float = MIN_COVERAGE,
    ):
        self.base = base
        self.profile = profile
        self.top = top
        self.min_score = min_score
        self.min_coverage = min_coverage

    async def __call__(self, question: str) -> Found:
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


def knowledge_search(settings: Settings, profile: str) -> KnowledgeSearch | None:
    """The profile's search when it has documents (reads the file: call it off the event loop)."""
    base = KnowledgeBase(settings.knowledge_path)
    try:
        documents = base.documents(profile)
    except KnowledgeError as exc:
        # A broken knowledge file costs the profile its search tool, not its calls.
        log.error("profile %s: knowledge base unusable, no search tool: %s", profile, exc)
        return None
    if not documents:
        return None
    log.info("profile %s: search tool over %d document(s)", profile, len(documents))
    return KnowledgeSearch(
        base,
        profile,
        top=settings.knowledge.top,
        min_score=settings.knowledge.min_score,
        min_coverage=settings.knowledge.min_coverage,
    )
