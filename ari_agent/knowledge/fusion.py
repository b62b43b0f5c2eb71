"""Hybrid retrieval's pure parts: vectors as bytes, nearest passages, rank fusion, the decision.

Pure: arrays and lists in, lists out. Vectors are float32 rows of unit length
(providers.embeddings), so a dot product is the cosine similarity.

Fusion is reciprocal rank fusion (Cormack et al., 2009): each list gives a
passage 1 / (k + rank). BM25 scores and cosine similarities live on unrelated
scales (BM25's moves with the question's length and the collection), so a
weighted sum of the two would need its weight re-tuned per document set and
per embedder; ranks need none, and k = 60 is the value the paper found robust.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)

RRF_K = 60
# The decision's thresholds for the local embedder (all-MiniLM-L6-v2) with multi-vector passages,
# chosen on the tune half of the question set by tests/bench/bench_knowledge.py (highest top-3
# plus rejection there, ties: the lowest). With one vector per passage it was 0.38 and 0.30.
MIN_SIMILARITY = 0.40
HYBRID_MIN_COVERAGE = 0.30
VECTOR_DTYPE = np.dtype("<f4")  # stored little-endian whatever the machine


def to_blob(vector: npt.NDArray[np.float32]) -> bytes:
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"a vector must be one non-empty row, got shape {vector.shape}")
    return vector.astype(VECTOR_DTYPE).tobytes()


def from_blobs(blobs: Sequence[bytes], dimension: int) -> npt.NDArray[np.float32]:
    """Stored vectors as a (len(blobs), dimension) matrix; ValueError on a blob of another width."""
    if dimension <= 0:
        raise ValueError(f"dimension must be positive, got {dimension}")
    width = dimension * VECTOR_DTYPE.itemsize
    for i, blob in enumerate(blobs):
        if len(blob) != width:
            raise ValueError(f"vector {i} has {len(blob)} bytes, expected {width} ({dimension} float32)")
    if not blobs:
        return np.zeros((0, dimension), dtype=np.float32)
    return (
        np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(blobs), dimension).astype(np.float32)
    )


def nearest(
    matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float32], top: int
) -> list[tuple[int, float]]:
    """(row, cosine similarity) of the ``top`` rows most like ``query``, best first (ties: lower row)."""
    if matrix.ndim != 2 or query.ndim != 1 or (matrix.size and matrix.shape[1] != query.shape[0]):
        raise ValueError(f"cannot compare a {query.shape} query with a {matrix.shape} matrix")
    if matrix.shape[0] == 0:
        return []
    return top_scores((matrix @ query).astype(np.float32), top)


def passage_similarities(
    matrix: npt.NDArray[np.float32],
    owners: npt.NDArray[np.intp],
    passages: int,
    query: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Each passage's cosine similarity to ``query``: the best of its rows (``owners[row]`` is the
    passage a row belongs to, 0 .. passages - 1); -inf for a passage with no row."""
    if matrix.ndim != 2 or query.ndim != 1 or (matrix.size and matrix.shape[1] != query.shape[0]):
        raise ValueError(f"cannot compare a {query.shape} query with a {matrix.shape} matrix")
    if owners.shape != (matrix.shape[0],) or (
        owners.size and not 0 <= owners.min() <= owners.max() < passages
    ):
        raise ValueError(f"owners must name a passage (0..{passages - 1}) for each of {matrix.shape[0]} rows")
    best = np.full(passages, -np.inf, dtype=np.float32)
    np.maximum.at(best, owners, (matrix @ query).astype(np.float32))
    return best


def top_scores(scores: npt.NDArray[np.float32], top: int) -> list[tuple[int, float]]:
    """(index, score) of the ``top`` highest finite scores, best first (ties: lower index)."""
    if top <= 0:
        return []
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [(int(i), float(scores[i])) for i in order if np.isfinite(scores[i])][:top]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[K]], k: int = RRF_K) -> list[K]:
    """The union of the rankings (each best first), ordered by summed 1 / (k + rank), rank from 1.

    Ties keep the order in which the items were first met, the first ranking first.
    """
    if k < 0:
        raise ValueError(f"k must not be negative, got {k}")
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    first_seen = {item: i for i, item in enumerate(scores)}
    return sorted(scores, key=lambda item: (-scores[item], first_seen[item]))


def hybrid_answers(
    best_similarity: float, best_coverage: float, *, min_similarity: float, min_coverage: float
) -> bool:
    """Whether the documents answer the question: the nearest passage is near enough in meaning,
    and some passage shares enough of the question's words (relevance.coverage).

    Both must hold. Meaning alone lets through a question on the documents' topic that they
    do not answer ("can I adopt a cat" is close to every passage about cats); words alone miss
    a question put in other words than the document's.
    """
    return best_similarity >= min_similarity and best_coverage >= min_coverage
