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
import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ari_agent.errors import AgentError
from ari_agent.knowledge.passages import Passage, split_document
from ari_agent.knowledge.query import STOP_WORDS, quoted, terms
from ari_agent.knowledge.relevance import answers, coverage, term_weights
from ari_agent.privatefile import FILE_MODE, make_private, private_dir

# A heading names the passage's topic in a few words: a word there says more than one in the body.
HEADING_WEIGHT = 2.0
BODY_WEIGHT = 1.0
DEFAULT_TOP = 3

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


@dataclass(frozen=True)
class Ranking:
    hits: list[Hit]  # best first by BM25, before any threshold
    best_coverage: float  # of every passage that shares a term with the question, not only these


@dataclass(frozen=True)
class DocumentInfo:
    source: str
    passages: int
    chars: int
    added_at: str
    sha256: str


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
        """Forget a document; False when the profile has none of that name."""
        with self._connect(write=True) as conn:
            cur = conn.execute("DELETE FROM documents WHERE profile = ? AND source = ?", (profile, source))
            if cur.rowcount == 0:
                return False
            conn.execute(f"DELETE FROM {_table(profile)} WHERE source = ?", (source,))
            left = conn.execute("SELECT COUNT(*) FROM documents WHERE profile = ?", (profile,)).fetchone()
            if left[0] == 0:
                conn.execute(f"DROP TABLE IF EXISTS {_table(profile)}")
        return True

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
            passages = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            # Which passages hold each term, through the same tokenizer (porter) as the index.
            holding = {
                w: {
                    int(r[0])
                    for r in conn.execute(f"SELECT rowid FROM {table} WHERE {table} MATCH ?", (quoted(w),))
                }
                for w in words
            }
            rows = conn.execute(
                f"SELECT rowid, source, heading, body, -bm25({table}, ?, ?) AS score FROM {table} "
                f"WHERE {table} MATCH ? ORDER BY score DESC, source, seq LIMIT ?",
                (HEADING_WEIGHT, BODY_WEIGHT, " OR ".join(quoted(w) for w in words), max(0, top)),
            ).fetchall()
        weights = term_weights({w: len(ids) for w, ids in holding.items()}, passages)
        present: dict[int, set[str]] = {}
        for word, ids in holding.items():
            for rowid in ids:
                present.setdefault(rowid, set()).add(word)
        best = max((coverage(weights, words_in) for words_in in present.values()), default=0.0)
        hits = [
            Hit(r[1], r[2], r[3], float(r[4]), coverage(weights, present.get(int(r[0]), set()))) for r in rows
        ]
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
    "read_document",
)
