"""Hybrid knowledge search: the pure parts (fusion.py) on small vectors, the index's vectors, the
search tool with an embedder, and the CLI with the offline embedder configured."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ari_agent.cli import main
from ari_agent.knowledge import KnowledgeBase, KnowledgeError
from ari_agent.knowledge.answer import NOTHING_FOUND, KnowledgeSearch
from ari_agent.knowledge.base import MIGRATIONS, embedding_texts
from ari_agent.knowledge.fusion import (
    from_blobs,
    hybrid_answers,
    nearest,
    passage_similarities,
    reciprocal_rank_fusion,
    to_blob,
    top_scores,
)
from ari_agent.knowledge.passages import vector_texts
from providers.base import ProviderError
from providers.embeddings import Embedder, Vectors
from tests.fakes.openai_server import bag_of_words_vector
from tests.knowledge.questions import DOCUMENT

# ------------------------------------------------------------------ pure parts


def unit(*rows: Sequence[float]) -> npt.NDArray[np.float32]:
    m = np.array(rows, dtype=np.float32)
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def test_vectors_round_trip_through_bytes_little_endian() -> None:
    v = np.array([1.0, -0.5, 0.25], dtype=np.float32)
    blob = to_blob(v)
    assert blob == b"\x00\x00\x80\x3f" + b"\x00\x00\x00\xbf" + b"\x00\x00\x80\x3e"
    assert np.array_equal(from_blobs([blob, blob], 3), np.stack([v, v]))
    assert from_blobs([], 3).shape == (0, 3)


def test_a_blob_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="vector 1 has 8 bytes, expected 12"):
        from_blobs([b"\x00" * 12, b"\x00" * 8], 3)
    with pytest.raises(ValueError, match="one non-empty row"):
        to_blob(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="dimension must be positive"):
        from_blobs([], 0)


def test_nearest_orders_by_cosine_with_ties_by_row() -> None:
    matrix = unit([1, 0], [0, 1], [1, 1], [1, 0])
    found = nearest(matrix, unit([1, 0])[0], 3)
    assert [i for i, _ in found] == [0, 3, 2]
    assert found[0][1] == pytest.approx(1.0) and found[2][1] == pytest.approx(0.7071, abs=1e-4)
    assert nearest(matrix, unit([1, 0])[0], 0) == []
    assert nearest(np.zeros((0, 2), dtype=np.float32), unit([1, 0])[0], 3) == []
    with pytest.raises(ValueError, match="cannot compare"):
        nearest(matrix, unit([1, 0, 0])[0], 1)


def test_a_passage_is_embedded_whole_by_heading_and_by_sentence() -> None:
    body = "Free parking behind the building. The entrance is on Tanner Street!  Twelve spaces?"
    assert vector_texts("Parking", body) == [
        f"Parking\n{body}",
        "Parking",
        "Parking\nFree parking behind the building.",
        "Free parking behind the building.",
        "The entrance is on Tanner Street!",
        "Twelve spaces?",
    ]
    # No heading (a text file): the whole and its sentences; one sentence is the whole, kept once.
    assert vector_texts("", "Open daily. Closed on Sundays.") == [
        "Open daily. Closed on Sundays.",
        "Open daily.",
        "Closed on Sundays.",
    ]
    assert vector_texts("", "Open daily.") == ["Open daily."]
    assert vector_texts("Hours", "Open\n daily.") == [
        "Hours\nOpen\n daily.",
        "Hours",
        "Hours\nOpen daily.",
        "Open daily.",
    ]


def test_a_passages_similarity_is_the_best_of_its_vectors() -> None:
    matrix = unit([1, 0], [0, 1], [1, 1], [0, 1])
    owners = np.array([0, 0, 1, 2], dtype=np.intp)
    alike = passage_similarities(matrix, owners, 4, unit([0, 1])[0])
    assert alike[:3] == pytest.approx([1.0, 0.7071, 1.0], abs=1e-4)
    assert alike[3] == -np.inf  # passage 3 has no vector
    assert top_scores(alike, 3) == [
        (0, pytest.approx(1.0)),
        (2, pytest.approx(1.0)),
        (1, pytest.approx(0.7071, abs=1e-4)),
    ]
    assert top_scores(alike, 10)[-1][0] == 1  # a passage without a vector is never among the nearest
    assert top_scores(alike, 0) == []
    with pytest.raises(ValueError, match="owners must name a passage"):
        passage_similarities(matrix, np.array([0, 0, 1, 4], dtype=np.intp), 4, unit([0, 1])[0])
    with pytest.raises(ValueError, match="owners must name a passage"):
        passage_similarities(matrix, np.array([0, 1], dtype=np.intp), 4, unit([0, 1])[0])
    with pytest.raises(ValueError, match="cannot compare"):
        passage_similarities(matrix, owners, 4, unit([0, 1, 0])[0])


def test_reciprocal_rank_fusion_rewards_agreement_and_keeps_the_union() -> None:
    lexical = ["a", "b", "c"]
    meaning = ["c", "d", "a"]
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (a tie: a was met first), b: 1/62, d: 1/62 (b met first).
    assert reciprocal_rank_fusion([lexical, meaning]) == ["a", "c", "b", "d"]
    # A passage both sides rank second beats one that only one side ranks first.
    assert reciprocal_rank_fusion([["x", "both"], ["y", "both"]])[0] == "both"
    assert reciprocal_rank_fusion([[], []]) == []
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], k=-1)


def test_the_decision_needs_both_meaning_and_words() -> None:
    assert hybrid_answers(0.5, 0.2, min_similarity=0.4, min_coverage=0.1)
    assert not hybrid_answers(0.39, 0.9, min_similarity=0.4, min_coverage=0.1)  # on topic by words only
    assert not hybrid_answers(0.9, 0.05, min_similarity=0.4, min_coverage=0.1)  # near, but shares no word
    assert hybrid_answers(0.4, 0.1, min_similarity=0.4, min_coverage=0.1)  # thresholds are inclusive


# ------------------------------------------------------------------ the index with vectors


class BagOfWords(Embedder):
    """A real Embedder subclass with the fake server's deterministic vectors, no server."""

    name = "bag"

    def __init__(self, dimensions: int = 256, model: str = "words") -> None:
        self.dimensions = dimensions
        self._model = model
        self.calls: list[list[str]] = []
        self.fail = False

    @property
    def model(self) -> str:
        return self._model

    async def _embed(self, texts: list[str]) -> Vectors:
        self.calls.append(texts)
        if self.fail:
            raise ProviderError("down", provider=self.name, retryable=True)
        return np.stack([bag_of_words_vector(t, self.dimensions) for t in texts])


async def embed_all(base: KnowledgeBase, profile: str, embedder: Embedder) -> int:
    missing = base.unembedded(profile, embedder.identity)
    vectors = await embedder.embed(embedding_texts(missing))
    base.store_vectors(profile, embedder.identity, missing, vectors)
    return len(missing)


@pytest.fixture
def vet(tmp_path: Path) -> KnowledgeBase:
    base = KnowledgeBase(tmp_path / "knowledge.db")
    base.add("vet", DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8"))
    return base


async def test_vectors_are_stored_per_passage_and_searched(vet: KnowledgeBase) -> None:
    embedder = BagOfWords()
    passages = len(vet.unembedded("vet", embedder.identity))
    assert passages > 20
    assert await embed_all(vet, "vet", embedder) == passages
    assert vet.unembedded("vet", embedder.identity) == []
    assert vet.embedder("vet") == ("bag:words", 256)
    question = "how much is a microchip"
    query = (await embedder.embed([question]))[0]
    ranking = vet.rank_hybrid("vet", question, query, embedder.identity)
    assert ranking.hits[0].heading == "Microchipping"
    assert ranking.best_similarity is not None and ranking.best_similarity > 0.3
    assert all(h.similarity is not None for h in ranking.hits)
    hits = vet.search_hybrid("vet", question, query, embedder.identity, min_similarity=0.99)
    assert hits == []  # near, but not near enough


async def test_a_sentence_asked_back_is_as_alike_as_it_gets(vet: KnowledgeBase) -> None:
    """The sentence's own vector answers it, not the whole passage's blend of topics."""
    embedder = BagOfWords()
    await embed_all(vet, "vet", embedder)
    with sqlite3.connect(vet.path) as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT source || seq) FROM vectors").fetchone()
    assert rows[1] == 28 and rows[0] == len(embedding_texts(vet.unembedded("vet", "none")))
    question = "A microchip costs 20 pounds and can be fitted during a normal consultation without sedation."
    query = (await embedder.embed([question]))[0]
    ranking = vet.rank_hybrid("vet", question, query, embedder.identity)
    assert ranking.hits[0].heading == "Microchipping"
    assert ranking.best_similarity == pytest.approx(1.0, abs=1e-5)
    assert ranking.hits[0].similarity == pytest.approx(1.0, abs=1e-5)


async def test_vectors_of_the_wrong_count_are_refused(vet: KnowledgeBase) -> None:
    embedder = BagOfWords()
    missing = vet.unembedded("vet", embedder.identity)
    vectors = await embedder.embed(embedding_texts(missing))
    with pytest.raises(KnowledgeError, match=r"28 passages need \d+ vectors, got an array of shape"):
        vet.store_vectors("vet", embedder.identity, missing, vectors[:-1])
    assert vet.embedder("vet") is None


def test_an_index_of_one_vector_per_passage_asks_for_a_reindex(tmp_path: Path) -> None:
    """Schema 2 kept one vector per passage: they cannot be mixed with these, so they go."""
    path = tmp_path / "knowledge.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, migration in enumerate(MIGRATIONS[:2], start=1):
            conn.executescript(migration)
            conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
        conn.execute("INSERT INTO embedders VALUES ('vet', 'bag:words', 256)")
        conn.execute("INSERT INTO vectors VALUES ('vet', 'a.md', 0, ?)", (b"\x00" * 1024,))
    base = KnowledgeBase(path)
    assert base.embedder("vet") is None
    base.add("vet", "a.md", "# Wifi\n\nThe waiting room has free wifi.")
    assert [p.source for p in base.unembedded("vet", "bag:words")] == ["a.md"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 0
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_changed_embedder_is_detected_with_the_fix(vet: KnowledgeBase) -> None:
    await embed_all(vet, "vet", BagOfWords())
    other = BagOfWords(dimensions=32, model="other")
    query = (await other.embed(["parking"]))[0]
    with pytest.raises(KnowledgeError, match=r"embedded by bag:words \(256 dimensions\).*reindex vet"):
        vet.rank_hybrid("vet", "parking", query, other.identity)
    # Re-indexing with the new embedder replaces every vector.
    assert len(vet.unembedded("vet", other.identity)) == len(vet.unembedded("vet", "none"))
    await embed_all(vet, "vet", other)
    assert vet.rank_hybrid("vet", "parking", query, other.identity).hits


async def test_passages_without_vectors_are_named(vet: KnowledgeBase) -> None:
    embedder = BagOfWords()
    query = (await embedder.embed(["parking"]))[0]
    with pytest.raises(KnowledgeError, match=r"no vectors.*reindex vet"):
        vet.rank_hybrid("vet", "parking", query, embedder.identity)
    await embed_all(vet, "vet", embedder)
    vet.add("vet", "extra.md", "# Wifi\n\nThe waiting room has free wifi.")
    assert [p.source for p in vet.unembedded("vet", embedder.identity)] == ["extra.md"]
    with pytest.raises(KnowledgeError, match="1 passage\\(s\\) have no vector"):
        vet.rank_hybrid("vet", "parking", query, embedder.identity)


async def test_remove_takes_the_vectors_and_the_last_the_embedder(vet: KnowledgeBase) -> None:
    await embed_all(vet, "vet", BagOfWords())
    assert vet.remove("vet", DOCUMENT.name)
    with sqlite3.connect(vet.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 0
    assert vet.embedder("vet") is None


async def test_the_search_tool_uses_meaning_and_falls_back_to_words(vet: KnowledgeBase) -> None:
    embedder = BagOfWords()
    await embed_all(vet, "vet", embedder)
    search = KnowledgeSearch(vet, "vet", embedder=embedder, min_similarity=0.2, hybrid_min_coverage=0.1)
    found = await search("what does a microchip cost")
    assert (DOCUMENT.name, "Microchipping") in found.passages
    assert (await search("what's the weather tomorrow")).output == NOTHING_FOUND
    embedder.fail = True
    found = await search("what does a microchip cost")  # by words, since the embedder is down
    assert (DOCUMENT.name, "Microchipping") in found.passages
    embedder.fail = False
    # A document added while the agent runs has rows before (or, if embedding failed, without)
    # vectors: its questions are searched by words rather than failing.
    vet.add("vet", "extra.md", "# Wifi\n\nThe waiting room has free wifi for clients.")
    found = await search("is there wifi in the waiting room")
    assert found.passages and found.passages[0] == ("extra.md", "Wifi")


# ------------------------------------------------------------------ the CLI, with the offline embedder


CONFIG = """
[profiles.frontdesk]
embeddings = "{embedder}"
"""


def test_the_cli_adds_and_searches_by_meaning_with_the_local_embedder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "knowledge.db"))
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(embedder="local"), encoding="utf-8")
    assert main(["--config", str(config), "knowledge", "add", "frontdesk", str(DOCUMENT)]) == 0
    out = capsys.readouterr().out
    assert "embedded 28 passage(s) with local:all-MiniLM-L6-v2" in out
    # "castrated" is not in the document; "neutering" is: words alone do not find it.
    question = "Will my dog have to stay overnight after being castrated?"
    assert main(["--config", str(config), "knowledge", "search", "frontdesk", question, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["embedder"] == "local:all-MiniLM-L6-v2"
    assert "Neutering" in [h["heading"] for h in shown["hits"]]
    assert all(h["similarity"] is not None for h in shown["hits"])
    decided = (
        shown["best_similarity"] >= shown["min_similarity"]
        and shown["best_coverage"] >= shown["min_coverage"]
    )
    assert shown["answered"] is decided
    teeth = "How much does it cost to have my dog's teeth cleaned?"
    assert main(["--config", str(config), "knowledge", "search", "frontdesk", teeth, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["answered"] is True and shown["hits"][0]["heading"] == "Dental care"
    assert (
        main(["--config", str(config), "knowledge", "search", "frontdesk", "what's the weather tomorrow"])
        == 0
    )
    assert "a call would be told nothing" in capsys.readouterr().out
    # Nothing left to embed.
    assert main(["--config", str(config), "knowledge", "reindex", "frontdesk", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 0


def test_an_unknown_embedder_is_a_config_error_naming_the_field_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "knowledge.db"))
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(embedder="sentencebert"), encoding="utf-8")
    assert main(["--config", str(config), "check"]) == 2
    err = capsys.readouterr().err
    assert "profiles.frontdesk.embeddings: unknown embeddings provider 'sentencebert'" in err
    assert "known: local, openai" in err and "Fix: correct 'profiles.frontdesk.embeddings'" in err
    guide = tmp_path / "guide.md"
    guide.write_text("# Hours\n\nWe open at nine.", encoding="utf-8")
    assert main(["--config", str(config), "knowledge", "add", "frontdesk", str(guide)]) == 2
    assert "profiles.frontdesk.embeddings: unknown embeddings provider" in capsys.readouterr().err


def test_reindex_without_an_embedder_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "knowledge.db"))
    assert main(["knowledge", "reindex", "frontdesk"]) == 2
    assert "set profiles.frontdesk.embeddings" in capsys.readouterr().err


# ------------------------------------------------------------------ the agent's side


async def test_an_embedder_that_cannot_run_leaves_the_profile_searching_by_words(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ari_agent.profiles import ProfileConfig
    from ari_agent.profiles.build import build_embedder
    from ari_agent.profiles.catalogue import plan_profile

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY_FILE", "/nonexistent")
    plan = plan_profile("vet", ProfileConfig(embeddings="openai"))
    assert [p.severity for p in plan.problems if p.field == "profiles.vet.embeddings"] == ["unready"]
    assert await build_embedder(plan) is None
    assert "knowledge searched by words only" in caplog.text and "OPENAI_API_KEY" in caplog.text
    assert await build_embedder(plan_profile("vet", ProfileConfig())) is None


def test_the_agent_searches_by_words_until_the_passages_are_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ari_agent.config import Settings
    from ari_agent.knowledge.answer import knowledge_search

    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "knowledge.db"))
    KnowledgeBase(tmp_path / "knowledge.db").add(
        "frontdesk", DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8")
    )
    embedder = BagOfWords()
    search = knowledge_search(Settings(), "frontdesk", embedder)
    assert search is not None and search.embedder is None
    assert "Fix: ari-agent knowledge reindex frontdesk" in caplog.text
    asyncio.run(embed_all(KnowledgeBase(tmp_path / "knowledge.db"), "frontdesk", embedder))
    search = knowledge_search(Settings(), "frontdesk", embedder)
    assert search is not None and search.embedder is embedder
