"""The knowledge index: passages of each profile's documents in SQLite FTS5, ranked by BM25.

One private file (0600 in a 0700 directory, like the call store) holds every
profile's documents, each profile in its own FTS5 table: BM25 weighs a word by
how rare it is among the passages it ranks, so one profile's documents must not
change another's scores (and its threshold). Each method opens and closes its
own connection, so the CLI and the agent's worker threads can share the class
without handing a connection across threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ari_agent.errors import AgentError
from ari_agent.knowledge.fusion import (
    from_blobs,
    hybrid_answers,
    passage_similarities,
    reciprocal_rank_fusion,
    to_blob,
    top_scores,
)
from ari_agent.knowledge.passages import Passage, split_document, vector_texts
from ari_agent.knowledge.query import STOP_WORDS, quoted, terms
from ari_agent.knowledge.relevance import answers, coverage, term_weights
from ari_agent.privatefile import FILE_MODE, make_private, private_dir

# A heading names the passage's topic in a few words: a word there says more than one in the body.
HEADING_WEIGHT = 2.0
BODY_WEIGHT = 1.0
DEFAULT_TOP = 3
# Hybrid search fuses this many passages from each side: enough for a passage ranked low by one
# side and high by the other to surface, few enough that fusion stays about the question.
CANDIDATES = 10

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE documents (
        profile  TEXT NOT NULL,
        source   TEXT NOT NULL,
        sha256   TEXT NOT NULL,
        added_at TEXT NOT NULL,
        passages INTEGER NOT NULL,
        chars    INTEGER NOT NULL,
        PRIMARY KEY (profile, source)
    );
    """,
    # Hybrid retrieval: each passage's vector beside its FTS row, and per profile which embedder
    # made them (a vector is comparable only with one from the same model).
    """
    CREATE TABLE vectors (
        profile TEXT NOT NULL,
        source  TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        vector  BLOB NOT NULL,
        PRIMARY KEY (profile, source, seq)
    );
    CREATE TABLE embedders (
        profile   TEXT PRIMARY KEY,
        identity  TEXT NOT NULL,
        dimension INTEGER NOT NULL
    );
    """,
    # Several vectors per passage (passages.vector_texts): a short question is like one sentence
    # far more than like a whole passage. One vector per passage cannot be mixed with these, so
    # they go, and the operator re-indexes (the agent searches by words until then and says so).
    """
    DROP TABLE vectors;
    DELETE FROM embedders;
    CREATE TABLE vectors (
        profile TEXT NOT NULL,
        source  TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        part    INTEGER NOT NULL,
        vector  BLOB NOT NULL,
        PRIMARY KEY (profile, source, seq, part)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class KnowledgeError(AgentError):
    """The knowledge base cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class Hit:
    source: str
    heading: str
    text: str
    score: float  # BM25, higher is better (FTS5's bm25() negated)
    coverage: float = 0.0  # the IDF-weighted share of the question's terms the passage has (0..1)
    seq: int = 0  # the passage's place in its document
    similarity: float | None = None  # cosine similarity to the question (hybrid search only)


@dataclass(frozen=True)
class Ranking:
    hits: list[Hit]  # best first by BM25, before any threshold
    best_coverage: float  # of every passage that shares a term with the question, not only these
    best_similarity: float | None = None  # of the nearest passage in meaning (hybrid search only)


@dataclass(frozen=True)
class DocumentInfo:
    source: str
    passages: int
    chars: int
    added_at: str
    sha256: str


@dataclass(frozen=True)
class StoredPassage:
    source: str
    seq: int
    heading: str
    text: str


def embedding_texts(passages: Sequence[StoredPassage]) -> list[str]:
    """What is embedded for these passages, in order: each one's passages.vector_texts, one after
    another; store_vectors takes the vectors of exactly these texts."""
    return [t for p in passages for t in vector_texts(p.heading, p.text)]


def _table(profile: str) -> str:
    # A profile's name is the operator's text: the table name is derived, never spliced in.
    return "passages_" + profile.encode("utf-8").hex()


class KnowledgeBase:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- documents -----------------------------------------------------------

    def add(self, profile: str, source: str, text: str) -> list[Passage]:
        """Index a document under its file name, replacing an earlier one of that name."""
        return self.add_many(profile, [(source, text)])[source]

    def add_many(self, profile: str, documents: Sequence[tuple[str, str]]) -> dict[str, list[Passage]]:
        """Index (file name, text) documents in one transaction: all of them, or none if one is refused."""
        split = {source: split_document(source, text) for source, text in documents}
        added = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._connect(write=True) as conn:
            table = self._ensure_table(conn, profile)
            for source, text in documents:
                passages = split[source]
                digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
                conn.execute(f"DELETE FROM {table} WHERE source = ?", (source,))
                # Its passages changed: their vectors go; the embedder (CLI) makes new ones.
                conn.execute("DELETE FROM vectors WHERE profile = ? AND source = ?", (profile, source))
                conn.executemany(
                    f"INSERT INTO {table} (heading, body, source, seq) VALUES (?, ?, ?, ?)",
                    [(p.heading, p.text, p.source, p.seq) for p in passages],
                )
                conn.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                    (profile, source, digest, added, len(passages), len(text)),
                )
        return split

    def remove(self, profile: str, source: str) -> bool:
        """Forget a document (and its vectors); False when the profile has none of that name."""
        with self._connect(write=True) as conn:
            cur = conn.execute("DELETE FROM documents WHERE profile = ? AND source = ?", (profile, source))
            if cur.rowcount == 0:
                return False
            conn.execute(f"DELETE FROM {_table(profile)} WHERE source = ?", (source,))
            conn.execute("DELETE FROM vectors WHERE profile = ? AND source = ?", (profile, source))
            left = conn.execute("SELECT COUNT(*) FROM documents WHERE profile = ?", (profile,)).fetchone()
            if left[0] == 0:
                conn.execute(f"DROP TABLE IF EXISTS {_table(profile)}")
                conn.execute("DELETE FROM embedders WHERE profile = ?", (profile,))
        return True

    # -- vectors (hybrid search) ---------------------------------------------

    def unembedded(self, profile: str, identity: str) -> list[StoredPassage]:
        """The profile's passages that have no vector from the embedder ``identity``: every one when
        its vectors came from another embedder, else those added since (or without) it."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            table = _table(profile)
            if not _has_table(conn, table):
                return []
            recorded = _embedder(conn, profile)
            same = recorded is not None and recorded[0] == identity
            missing = (
                "WHERE NOT EXISTS (SELECT 1 FROM vectors AS v WHERE v.profile = ? AND v.source = t.source "
                "AND v.seq = t.seq) "
            )
            rows = conn.execute(
                f"SELECT t.source, t.seq, t.heading, t.body FROM {table} AS t "
                + (missing if same else "")
                + "ORDER BY t.source, t.seq",
                (profile,) if same else (),
            ).fetchall()
        return [StoredPassage(str(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows]

    def store_vectors(
        self,
        profile: str,
        identity: str,
        passages: Sequence[StoredPassage],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """Keep ``vectors`` (one unit row per text of embedding_texts(passages)) as made by
        ``identity``; a profile whose vectors came from another embedder loses those first (they
        cannot be compared)."""
        parts = [len(vector_texts(p.heading, p.text)) for p in passages]
        if vectors.ndim != 2 or vectors.shape[0] != sum(parts) or (passages and vectors.shape[1] == 0):
            raise KnowledgeError(
                f"{len(passages)} passages need {sum(parts)} vectors, got an array of shape {vectors.shape}"
            )
        if not passages:
            return
        dimension = int(vectors.shape[1])
        with self._connect(write=True) as conn:
            recorded = _embedder(conn, profile)
            if recorded != (identity, dimension):
                conn.execute("DELETE FROM vectors WHERE profile = ?", (profile,))
                conn.execute(
                    "INSERT OR REPLACE INTO embedders VALUES (?, ?, ?)", (profile, identity, dimension)
                )
            rows = []
            start = 0
            for p, n in zip(passages, parts, strict=True):
                rows += [
                    (profile, p.source, p.seq, part, to_blob(vectors[start + part])) for part in range(n)
                ]
                start += n
            conn.executemany(
                "DELETE FROM vectors WHERE profile = ? AND source = ? AND seq = ?",
                [(profile, p.source, p.seq) for p in passages],
            )
            conn.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?, ?)", rows)

    def embedder(self, profile: str) -> tuple[str, int] | None:
        """(identity, dimension) of the embedder the profile's vectors came from; None: no vectors."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            return _embedder(conn, profile)

    def documents(self, profile: str) -> list[DocumentInfo]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT source, passages, chars, added_at, sha256 FROM documents WHERE profile = ? "
                "ORDER BY source",
                (profile,),
            ).fetchall()
        return [DocumentInfo(r[0], int(r[1]), int(r[2]), r[3], r[4]) for r in rows]

    def profiles(self) -> list[str]:
        """The profiles that have documents."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute("SELECT DISTINCT profile FROM documents ORDER BY profile").fetchall()
        return [str(r[0]) for r in rows]

    # -- search --------------------------------------------------------------

    def search(
        self,
        profile: str,
        question: str,
        *,
        top: int = DEFAULT_TOP,
        min_score: float = 0.0,
        min_coverage: float = 0.0,
        stop_words: frozenset[str] = STOP_WORDS,
    ) -> list[Hit]:
        """The best passages for the question, best first; none when no passage covers ``min_coverage``
        of the question (relevance.py), and those scoring under ``min_score`` (BM25) left out."""
        ranking = self.rank(profile, question, top=top, stop_words=stop_words)
        if min_coverage > 0.0 and not answers(ranking.best_coverage, min_coverage):
            return []
        return [h for h in ranking.hits if h.score >= min_score]

    def search_hybrid(
        self,
        profile: str,
        question: str,
        query: npt.NDArray[np.float32],
        identity: str,
        *,
        top: int = DEFAULT_TOP,
        min_similarity: float = 0.0,
        min_coverage: float = 0.0,
    ) -> list[Hit]:
        """The best passages by words and meaning fused; none unless fusion.hybrid_answers says the
        documents answer the question. ``query``: the question's vector from embedder ``identity``."""
        ranking = self.rank_hybrid(profile, question, query, identity, top=top)
        best = ranking.best_similarity or 0.0
        if not hybrid_answers(
            best, ranking.best_coverage, min_similarity=min_similarity, min_coverage=min_coverage
        ):
            return []
        return ranking.hits

    def rank_hybrid(
        self,
        profile: str,
        question: str,
        query: npt.NDArray[np.float32],
        identity: str,
        *,
        top: int = DEFAULT_TOP,
        candidates: int = CANDIDATES,
        stop_words: frozenset[str] = STOP_WORDS,
    ) -> Ranking:
        """The top passages of BM25's and the embedder's candidates fused (fusion.py), each with its
        coverage and similarity, and the best coverage and similarity of all passages.

        Raises KnowledgeError when the stored vectors are not the embedder's or some are missing."""
        if not self.path.exists():
            return Ranking([], 0.0, None)
        words = terms(question, stop_words)
        with self._connect() as conn:
            table = _table(profile)
            if not _has_table(conn, table):
                return Ranking([], 0.0, None)
            matrix, owners, keys = self._vectors(conn, profile, table, identity, int(query.shape[0]))
            lexical, best_coverage, covered = _lexical(conn, table, words, max(top, candidates))
            alike = passage_similarities(matrix, owners, len(keys), query.astype(np.float32))
            near = top_scores(alike, max(top, candidates))
            position = {key: i for i, key in enumerate(keys)}
            fused = reciprocal_rank_fusion([[(h.source, h.seq) for h in lexical], [keys[i] for i, _ in near]])
            by_key = {(h.source, h.seq): h for h in lexical}
            hits = []
            for key in fused[: max(0, top)]:
                hit = by_key.get(key) or _passage(conn, table, key, covered)
                hits.append(dataclasses.replace(hit, similarity=float(alike[position[key]])))
        best_similarity = near[0][1] if near else None
        return Ranking(hits, best_coverage, best_similarity)

    def _vectors(
        self, conn: sqlite3.Connection, profile: str, table: str, identity: str, dimension: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp], list[tuple[str, int]]]:
        """The stored vectors, each row's passage (an index into the keys), and the passages' keys."""
        fix = f"Fix: ari-agent knowledge reindex {profile}"
        recorded = _embedder(conn, profile)
        if recorded is None:
            raise KnowledgeError(
                f"profile {profile}: its passages have no vectors (added without embeddings). {fix}"
            )
        if recorded != (identity, dimension):
            raise KnowledgeError(
                f"profile {profile}: its passages were embedded by {recorded[0]} ({recorded[1]} dimensions), "
                f"the profile now uses {identity} ({dimension}). {fix}"
            )
        passages = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        rows = conn.execute(
            "SELECT source, seq, vector FROM vectors WHERE profile = ? ORDER BY source, seq, part", (profile,)
        ).fetchall()
        keys = list(dict.fromkeys((str(r[0]), int(r[1])) for r in rows))
        if len(keys) != passages:
            raise KnowledgeError(
                f"profile {profile}: {passages - len(keys)} passage(s) have no vector. {fix}"
            )
        index = {key: i for i, key in enumerate(keys)}
        owners = np.array([index[(str(r[0]), int(r[1]))] for r in rows], dtype=np.intp)
        try:
            matrix = from_blobs([bytes(r[2]) for r in rows], dimension)
        except ValueError as exc:
            raise KnowledgeError(f"profile {profile}: a stored vector is damaged ({exc}). {fix}") from None
        return matrix, owners, keys

    def rank(
        self, profile: str, question: str, *, top: int = DEFAULT_TOP, stop_words: frozenset[str] = STOP_WORDS
    ) -> Ranking:
        """The top passages by BM25 with each one's coverage of the question, and the best coverage."""
        words = terms(question, stop_words)
        if not words or not self.path.exists():
            return Ranking([], 0.0)
        with self._connect() as conn:
            table = _table(profile)
            if not _has_table(conn, table):
                return Ranking([], 0.0)
            hits, best, _ = _lexical(conn, table, words, top)
        return Ranking(hits, best)

    # -- plumbing ------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if self.path.is_dir():
            raise KnowledgeError(f"knowledge base {self.path}: is a directory. Fix: set its path to a file")
        if not self.path.exists():
            # Documents can hold what a business tells only its callers: the agent's user only.
            private_dir(self.path.parent)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
        make_private(self.path)
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise KnowledgeError(f"knowledge base {self.path}: cannot open it ({exc})") from exc
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                _migrate(conn, self.path)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise KnowledgeError(f"knowledge base {self.path}: SQLite error ({exc})") from exc
        finally:
            conn.close()

    def _ensure_table(self, conn: sqlite3.Connection, profile: str) -> str:
        table = _table(profile)
        # porter over unicode61: "vaccinated" finds "vaccinations"; diacritics folded ("café").
        conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5(heading, body, source UNINDEXED, "
            "seq UNINDEXED, tokenize = 'porter unicode61 remove_diacritics 2')"
        )
        return table


Covered = Callable[[int], float]  # a passage's coverage of the question, by FTS rowid


def _lexical(
    conn: sqlite3.Connection, table: str, words: Sequence[str], top: int
) -> tuple[list[Hit], float, Covered]:
    """The top passages by BM25 with each one's coverage, the best coverage of all, and coverage by rowid."""
    if not words:
        return [], 0.0, lambda rowid: 0.0
    passages = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    # Which passages hold each term, through the same tokenizer (porter) as the index.
    holding = {
        w: {int(r[0]) for r in conn.execute(f"SELECT rowid FROM {table} WHERE {table} MATCH ?", (quoted(w),))}
        for w in words
    }
    rows = conn.execute(
        f"SELECT rowid, source, heading, body, -bm25({table}, ?, ?) AS score, seq FROM {table} "
        f"WHERE {table} MATCH ? ORDER BY score DESC, source, seq LIMIT ?",
        (HEADING_WEIGHT, BODY_WEIGHT, " OR ".join(quoted(w) for w in words), max(0, top)),
    ).fetchall()
    weights = term_weights({w: len(ids) for w, ids in holding.items()}, passages)
    present: dict[int, set[str]] = {}
    for word, ids in holding.items():
        for rowid in ids:
            present.setdefault(rowid, set()).add(word)
    best = max((coverage(weights, words_in) for words_in in present.values()), default=0.0)

    def covered(rowid: int) -> float:
        return coverage(weights, present.get(rowid, set()))

    hits = [Hit(r[1], r[2], r[3], float(r[4]), covered(int(r[0])), int(r[5])) for r in rows]
    return hits, best, covered


def _passage(conn: sqlite3.Connection, table: str, key: tuple[str, int], covered: Covered) -> Hit:
    """A passage found by meaning only: no BM25 score (0), its coverage as the words found it."""
    row = conn.execute(
        f"SELECT rowid, source, heading, body, seq FROM {table} WHERE source = ? AND seq = ?", key
    ).fetchone()
    if row is None:
        raise KnowledgeError(f"a vector names passage {key[1]} of {key[0]}, which the index lacks")
    return Hit(row[1], row[2], row[3], 0.0, covered(int(row[0])), int(row[4]))


def _embedder(conn: sqlite3.Connection, profile: str) -> tuple[str, int] | None:
    row = conn.execute("SELECT identity, dimension FROM embedders WHERE profile = ?", (profile,)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    return row is not None


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    if current > SCHEMA_VERSION:
        raise KnowledgeError(
            f"knowledge base {path}: schema version {current} is from a newer ari-agent "
            f"(this one knows {SCHEMA_VERSION}). Fix: upgrade ari-agent"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version - 1].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def read_document(path: Path) -> str:
    """A document's text (UTF-8; a BOM is dropped), with a clear error when it can't be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise KnowledgeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise KnowledgeError(f"{path}: cannot read it ({exc.strerror})") from None


__all__: Sequence[str] = (
    "DocumentInfo",
    "Hit",
    "KnowledgeBase",
    "KnowledgeError",
    "Ranking",
    "StoredPassage",
    "embedding_texts",
    "read_document",
)
