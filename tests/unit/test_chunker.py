from ari_agent.conversation.chunker import SentenceChunker


def feed(chunker: SentenceChunker, text: str, step: int = 3) -> list[str]:
    out: list[str] = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i : i + step])
    return out + chunker.flush()


def test_sentences_come_out_as_they_complete() -> None:
    c = SentenceChunker()
    assert c.push("We are open Monday to Friday") == []
    assert c.push(". From nine") == ["We are open Monday to Friday."]
    assert c.push(" in the morning to five in the evening. ") == [
        "From nine in the morning to five in the evening."
    ]
    assert c.flush() == []


def test_first_piece_may_end_on_a_clause_later_ones_not() -> None:
    c = SentenceChunker()
    pieces = feed(c, "Thanks for waiting on the line, let me check that for you, it takes a moment. Done.")
    assert pieces[0] == "Thanks for waiting on the line,"
    assert pieces[1] == "let me check that for you, it takes a moment."
    assert pieces[-1] == "Done."


def test_short_sentences_merge_and_rest_is_flushed() -> None:
    assert feed(SentenceChunker(), "Yes. Sure. We can do that for you today. Right. ok") == [
        "Yes. Sure. We can do that for you today.",
        "Right. ok",
    ]


def test_numbers_and_abbreviations_without_space_do_not_cut() -> None:
    assert feed(SentenceChunker(), "It costs 12.50 dollars and that is final.") == [
        "It costs 12.50 dollars and that is final."
    ]


def test_runaway_text_is_cut_at_a_space() -> None:
    c = SentenceChunker(max_chars=40)
    pieces = feed(c, "word " * 30)
    assert all(len(p) <= 40 for p in pieces)
    assert " ".join(pieces).split() == ["word"] * 30


def test_first_sentence_leaves_without_waiting_for_the_next_word() -> None:
    c = SentenceChunker()
    assert c.push("Good question") == []
    assert c.push(".") == ["Good question."]
    # Not after a number: "12." may be "12.50".
    c = SentenceChunker()
    assert c.push("The price is 12.") == []
    assert c.push("50 dollars. And") == ["The price is 12.50 dollars."]
