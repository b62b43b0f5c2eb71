"""The knowledge base: a profile's documents, split into passages and searched with BM25 (SQLite FTS5).

``passages`` splits a document (pure), ``query`` turns a question into an FTS5
query (pure), ``base`` keeps the index in a private SQLite file and searches it.
"""

from ari_agent.knowledge.base import DocumentInfo, Hit, KnowledgeBase, KnowledgeError
from ari_agent.knowledge.passages import Passage, split_document

__all__ = ["DocumentInfo", "Hit", "KnowledgeBase", "KnowledgeError", "Passage", "split_document"]
