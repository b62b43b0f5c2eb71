"""The knowledge base: splitting documents, the FTS5 index in its private file, search, the CLI."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from ari_agent.cli import main
from ari_agent.knowledge import KnowledgeBase, KnowledgeError, split_document
from ari_agent.knowledge.answer import NOTHING_FOUND, Found, KnowledgeSearch, tool_output
from ari_agent.knowledge.base import read_document
from ari_agent.knowledge.query import FUNCTION_WORDS, match_expression, quoted, terms
from ari_agent.knowledge.relevance import MIN_COVERAGE, answers, coverage, idf, term_weights
from tests.knowledge.questions import DOCUMENT

GUIDE = """Intro line before any heading.

# Shop guide

## Opening hours

We open at nine and close at five.

## Returns
Items can be returned within 30 days
with the receipt.

```
# not a heading: inside a code block
```

### Refunds for gift cards

Gift cards are not refundable.
"""


# ------------------------------------------------------------------ splitting


def test_markdown_is_split_by_heading_in_order() -> None:
    passages = split_document("guide.md", GUIDE)
    assert [(p.heading, p.seq) for p in passages] == [
        ("", 0),
        ("Opening hours", 1),
        ("Returns", 2),
        ("Refunds for gift cards", 3),
    ]
    # Line breaks inside a paragraph are layout: the passage reads as one line.
    assert passages[2].text.startswith("Items can be returned within 30 days with the receipt.")
    assert "# not a heading: inside a code block" in passages[2].text
    assert all(p.source == "guide.md" for p in passages)
    # A heading with nothing under it (the title) makes no passage.
    assert "Shop guide" not in [p.heading for p in passages]


def test_a_long_section_is_cut_at_paragraphs_and_sentences_under_the_cap() -> None:
    sentence = "The quick brown fox jumps over the lazy dog again and again. "
    long_paragraph = sentence * 12  # about 720 characters, one paragraph
    body = "\n\n".join([long_paragraph] * 3)
    passages = split_document("long.md", f"## Long\n\n{body}", max_chars=300)
    assert len(passages) > 6
    assert all(len(p.text) <= 300 for p in passages)
    assert all(p.heading == "Long" for p in passages)
    # Cut at sentence ends: every piece ends a sentence.
    assert all(p.text.rstrip().endswith(".") for p in passages)
    assert " ".join(" ".join(p.text.split()) for p in passages) == " ".join(" ".join(body.split()).split())


def test_a_sentence_longer_than_the_cap_is_cut_at_words() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    passages = split_document("notes.txt", words, max_chars=100)
    assert all(len(p.text) <= 100 for p in passages)
    assert " ".join(p.text for p in passages) == words


def test_text_files_have_no_heading_and_other_files_are_refused() -> None:
    passages = split_document("notes.TXT", "first paragraph\n\nsecond paragraph")
    assert [(p.heading, p.text) for p in passages] == [("", "first paragraph\n\nsecond paragraph")]
    with pytest.raises(ValueError, match="not a Markdown or text file"):
        split_document("report.pdf", "%PDF")
    with pytest.raises(ValueError, match="max_chars"):
        split_document("a.md", "x", max_chars=10)


# ------------------------------------------------------------------ queries


def test_the_query_keeps_content_words_and_quotes_them() -> None:
    assert terms("Could you tell me, do you OPEN on Sundays?") == ["open", "sundays"]
    assert terms("What's the price of a microchip?") == ["price", "microchip"]
    assert match_expression("do you open") == '"open"'
    assert match_expression("what is it") is None
    # FTS5 syntax in a question is only text: no operator, no unbalanced quote reaches MATCH.
    assert match_expression('NOT near "quote* (x)') == '"near" OR "quote" OR "x"'
    assert quoted('a"b') == '"a""b"'


def test_the_query_drops_a_spoken_questions_filler_unless_told_only_function_words() -> None:
    question = "Is there somewhere to leave my car, and what happens if it takes too much time?"
    assert terms(question) == ["leave", "car", "time"]
    # Filler words that are also topics stay: a month, a country, a way in.
    assert terms("Are you open in May?") == ["open", "may"]
    assert terms("Do you ship to the US, and which way is the entrance?") == ["ship", "us", "way", "entrance"]
    # The first method's query (the bench's "before") is still there.
    assert terms(question, FUNCTION_WORDS) == [
        "somewhere",
        "leave",
        "car",
        "happens",
        "takes",
        "much",
        "time",
    ]


# ------------------------------------------------------------------ relevance (pure)


def test_idf_is_positive_and_falls_as_more_passages_hold_the_word() -> None:
    weights = [idf(df, 30) for df in range(31)]
    assert all(w > 0 for w in weights)
    assert weights == sorted(weights, reverse=True)
    # A word no passage holds weighs most: the question asks about something the documents lack.
    assert idf(0, 30) == max(weights)
    with pytest.raises(ValueError, match="doc_freq"):
        idf(31, 30)
    with pytest.raises(ValueError, match="doc_freq"):
        idf(-1, 30)


def test_coverage_is_the_idf_weighted_share_of_the_question_a_passage_holds() -> None:
    weights = term_weights({"dog": 8, "grooming": 0}, 30)
    assert weights["grooming"] > weights["dog"]
    assert coverage(weights, {"dog", "grooming"}) == pytest.approx(1.0)
    assert coverage(weights, set()) == 0.0
    # Sharing only the common word is a small part of the question, under the threshold.
    dog_only = coverage(weights, {"dog"})
    assert 0.0 < dog_only < MIN_COVERAGE
    assert coverage(weights, {"grooming"}) == pytest.approx(1.0 - dog_only)
    assert coverage({}, {"dog"}) == 0.0  # no content word: nothing covered


def test_the_decision_needs_some_coverage_and_the_threshold() -> None:
    assert answers(0.5, MIN_COVERAGE)
    assert answers(MIN_COVERAGE, MIN_COVERAGE)
    assert not answers(MIN_COVERAGE - 0.01, MIN_COVERAGE)
    # With the threshold off, a passage still has to share something with the question.
    assert answers(0.01, 0.0) and not answers(0.0, 0.0)


# ------------------------------------------------------------------ index and search


@pytest.fixture
def base(tmp_path: Path) -> KnowledgeBase:
    return KnowledgeBase(tmp_path / "private" / "knowledge.db")


def test_the_file_is_private(base: KnowledgeBase) -> None:
    base.add("shop", "guide.md", GUIDE)
    assert stat.S_IMODE(base.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(base.path.parent.stat().st_mode) == 0o700


def test_search_finds_the_passage_with_stemming_and_names_it(base: KnowledgeBase) -> None:
    base.add("shop", "guide.md", GUIDE)
    # "returning" finds "returned" only through the porter stemmer.
    hits = base.search("shop", "I am returning an item, do I need the receipt?")
    assert hits and (hits[0].source, hits[0].heading) == ("guide.md", "Returns")
    assert hits[0].score > 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert base.search("shop", "do you sell bicycles") == []
    assert base.search("shop", "what is it") == []


def test_the_threshold_leaves_weak_passages_out(base: KnowledgeBase) -> None:
    base.add("shop", "guide.md", GUIDE)
    hits = base.search("shop", "gift cards refund")
    assert hits
    best = hits[0].score
    assert base.search("shop", "gift cards refund", min_score=best + 0.01) == []
    assert base.search("shop", "gift cards refund", min_score=best)[0].heading == "Refunds for gift cards"
    assert len(base.search("vet", "gift cards refund")) == 0  # another profile has no documents


def test_a_question_mostly_about_something_else_is_not_answered(base: KnowledgeBase) -> None:
    base.add("shop", "guide.md", GUIDE)
    question = "do you do gift wrapping and engraving?"
    ranking = base.rank("shop", question)
    # BM25 alone finds the gift card passage; it holds "gift" but not the rest of the question.
    assert ranking.hits[0].heading == "Refunds for gift cards"
    assert ranking.hits[0].coverage == ranking.best_coverage < MIN_COVERAGE
    assert base.search("shop", question, min_coverage=MIN_COVERAGE) == []
    assert base.search("shop", question)[0].heading == "Refunds for gift cards"  # no threshold asked
    hits = base.search("shop", "can I get a refund on a gift card", min_coverage=MIN_COVERAGE)
    assert hits[0].heading == "Refunds for gift cards" and hits[0].coverage >= MIN_COVERAGE
    assert all(0.0 <= h.coverage <= 1.0 for h in hits)


def test_the_best_coverage_counts_passages_beyond_the_top(base: KnowledgeBase) -> None:
    # The passage holding every word of the question is long and says each once, so BM25 ranks it
    # under one that repeats a single word.
    filler = "Opening times, prices and staff are listed on the board by the door. " * 8
    base.add(
        "shop",
        "faq.md",
        f"## Bikes\n\nBikes, bikes, bikes.\n\n## Service\n\n{filler}We fix a bike tyre.\n\n"
        "## Cars\n\nCar tyres.\n\n## Vans\n\nVan tyres.",
    )
    ranking = base.rank("shop", "bike tyre", top=1)
    assert [h.heading for h in ranking.hits] == ["Bikes"]
    assert ranking.hits[0].coverage < ranking.best_coverage == pytest.approx(1.0)
    assert base.search("shop", "bike tyre", top=1, min_coverage=0.9)[0].heading == "Bikes"


def test_profiles_are_separate_and_documents_replace_and_remove(base: KnowledgeBase) -> None:
    base.add("shop", "guide.md", GUIDE)
    base.add("vet", DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8"))
    assert base.profiles() == ["shop", "vet"]
    assert base.search("vet", "gift") == []
    assert {h.source for h in base.search("vet", "refund gift cards")} == {DOCUMENT.name}
    assert base.search("shop", "microchip price") == []
    # The same name again replaces the document, it does not add a second copy.
    base.add("shop", "guide.md", "## Returns\n\nNo returns at all.")
    assert [(d.source, d.passages) for d in base.documents("shop")] == [("guide.md", 1)]
    assert [h.text for h in base.search("shop", "returns")] == ["No returns at all."]
    assert base.remove("shop", "guide.md") is True
    assert base.remove("shop", "guide.md") is False
    assert base.documents("shop") == [] and base.profiles() == ["vet"]
    assert base.search("shop", "returns") == []


def test_a_question_on_the_sample_document(base: KnowledgeBase) -> None:
    base.add("vet", DOCUMENT.name, DOCUMENT.read_text(encoding="utf-8"))
    hits = base.search("vet", "Can my dog eat breakfast on the morning of his operation?", min_score=2.0)
    assert hits[0].heading == "Before an operation"
    assert "Do not feed your pet after 10 in the evening" in hits[0].text
    # The calls' default: the answerable question is answered, one that only shares "dog" is not.
    answered = base.search(
        "vet", "Can my dog eat breakfast on the morning of his operation?", min_coverage=MIN_COVERAGE
    )
    assert answered[0].heading == "Before an operation"
    assert base.search("vet", "Do you offer dog grooming or nail clipping?")  # BM25 alone finds "dog"
    assert base.search("vet", "Do you offer dog grooming or nail clipping?", min_coverage=MIN_COVERAGE) == []


def test_read_document_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="no such file"):
        read_document(tmp_path / "missing.md")
    bad = tmp_path / "latin1.md"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(KnowledgeError, match="not UTF-8"):
        read_document(bad)
    bom = tmp_path / "bom.md"
    bom.write_bytes("\ufeff# Title".encode())
    assert read_document(bom) == "# Title"


def test_a_directory_as_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="is a directory"):
        KnowledgeBase(tmp_path).add("shop", "guide.md", GUIDE)


# ------------------------------------------------------------------ the tool's result


async def test_the_tool_result_carries_the_passages_and_names_them(base: KnowledgeBase) -> None:
    base.add("shop", "guide.md", GUIDE)
    found = await KnowledgeSearch(base, "shop", min_score=0.0)("can I get a refund on a gift card")
    assert found.passages[0] == ("guide.md", "Refunds for gift cards")
    assert "[guide.md / Refunds for gift cards]\nGift cards are not refundable." in found.output
    nothing = await KnowledgeSearch(base, "shop")("do you sell bicycles")
    assert (nothing.output, nothing.passages) == (NOTHING_FOUND, ())
    assert tool_output([]).output == NOTHING_FOUND


async def test_the_search_tool_is_offered_only_with_documents_and_names_its_passages(
    base: KnowledgeBase,
) -> None:
    from ari_agent.conversation.tools import ToolRunner, tool_specs
    from ari_agent.profiles import ProfileConfig
    from providers.base import ToolCall

    profile = ProfileConfig(llm=["openai"])
    assert "search_knowledge" not in [s.name for s in tool_specs(profile)]
    assert tool_specs(profile, knowledge=True)[0].name == "search_knowledge"

    async def set_variable(name: str, value: str) -> None:
        raise AssertionError("a search sets no channel variable")

    base.add("shop", "guide.md", GUIDE)
    runner = ToolRunner(profile, set_variable, {}, {}, search=KnowledgeSearch(base, "shop", min_score=0.0))
    assert runner.searches
    outcome = await runner.run(ToolCall("search_knowledge", {"query": "refund on a gift card"}))
    assert outcome.answer_from and outcome.finish is None
    assert outcome.passages[0] == ("guide.md", "Refunds for gift cards")
    assert "Gift cards are not refundable." in outcome.output
    empty = await runner.run(ToolCall("search_knowledge", {"query": " "}))
    assert empty.output.startswith("error:") and empty.passages == ()
    # Without documents the tool is not there: a model that calls it anyway is told so.
    plain = ToolRunner(profile, set_variable, {}, {})
    assert not plain.searches
    refused = await plain.run(ToolCall("search_knowledge", {"query": "refund"}))
    assert refused.output == "error: tool search_knowledge is not available"
    # A search that fails (a locked or damaged index) is a tool error the model answers from,
    # not an exception that would end the call.

    async def locked(query: str) -> Found:
        raise sqlite3.OperationalError("database is locked")

    broken = ToolRunner(profile, set_variable, {}, {}, search=locked)
    failed = await broken.run(ToolCall("search_knowledge", {"query": "refund"}))
    assert failed.output.startswith("error:") and failed.answer_from and failed.passages == ()


# ------------------------------------------------------------------ the CLI


def test_the_cli_adds_lists_searches_and_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "kb" / "knowledge.db"))
    guide = tmp_path / "guide.md"
    guide.write_text(GUIDE, encoding="utf-8")
    assert main(["knowledge", "add", "frontdesk", str(guide), str(DOCUMENT)]) == 0
    out = capsys.readouterr().out
    assert "added guide.md to frontdesk: 4 passage(s)" in out
    assert stat.S_IMODE((tmp_path / "kb" / "knowledge.db").stat().st_mode) == 0o600

    assert main(["knowledge", "list", "frontdesk", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["source"] for d in listed["documents"]] == ["guide.md", DOCUMENT.name]

    assert main(["knowledge", "search", "frontdesk", "how much is a microchip"]) == 0
    out = capsys.readouterr().out
    assert f"{DOCUMENT.name} / Microchipping" in out.splitlines()[0]
    assert main(["knowledge", "search", "frontdesk", "is there wifi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == []
    # A passage that shares only "puppy" is shown, marked as one a call would not be given.
    assert main(["knowledge", "search", "frontdesk", "do you run puppy training classes", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["answered"] is False and shown["best_coverage"] < shown["min_coverage"]
    assert shown["hits"][0]["heading"] == "Vaccinations for dogs" and not shown["hits"][0]["above_threshold"]
    assert main(["knowledge", "search", "frontdesk", "do you run puppy training classes"]) == 0
    assert "a call would be told nothing" in capsys.readouterr().out

    assert main(["knowledge", "remove", "frontdesk", str(guide)]) == 0
    assert main(["knowledge", "remove", "frontdesk", "guide.md"]) == 1
    capsys.readouterr()
    assert main(["knowledge", "list", "frontdesk"]) == 0
    assert "guide.md" not in capsys.readouterr().out


def test_the_cli_refuses_unknown_profiles_and_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "knowledge.db"))
    assert main(["knowledge", "list", "nosuch"]) == 2
    assert "no profile named 'nosuch'" in capsys.readouterr().err
    pdf = tmp_path / "report.pdf"
    pdf.write_text("%PDF", encoding="utf-8")
    guide = tmp_path / "guide.md"
    guide.write_text(GUIDE, encoding="utf-8")
    # One bad file: none of the files is added.
    assert main(["knowledge", "add", "frontdesk", str(guide), str(pdf)]) == 2
    assert "not a Markdown or text file" in capsys.readouterr().err
    assert main(["knowledge", "list", "frontdesk", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == []


def test_check_says_which_profiles_search_and_warns_about_unused_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_KNOWLEDGE__PATH", str(tmp_path / "knowledge.db"))
    base = KnowledgeBase(tmp_path / "knowledge.db")
    base.add("frontdesk", "guide.md", GUIDE)
    base.add("gone", "guide.md", GUIDE)
    assert main(["check"]) == 0
    err = capsys.readouterr().err
    assert "profile frontdesk: search_knowledge offered" in err
    assert "has documents for 'gone', which is not a profile" in err
