"""Documents into passages: one per heading section (Markdown) or per run of paragraphs (text).

Pure: text in, passages out. A passage is what the LLM is given and what a
record names, so it keeps its heading (the nearest one above it) and stays
under a size cap: a long section is cut at paragraph ends, a long paragraph
at sentence ends, so each piece still reads on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 1200  # about 250 words: a few sentences an agent can read out, a prompt can hold

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MARKDOWN_SUFFIXES = (".md", ".markdown")
TEXT_SUFFIXES = (".txt", ".text")


@dataclass(frozen=True)
class Passage:
    source: str  # the document's file name
    heading: str  # the nearest heading above it; "" in a text file
    text: str
    seq: int  # its place in the document, from 0


def split_sentences(text: str) -> list[str]:
    """The text's sentences, reflowed (a line break inside a sentence is layout)."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def vector_texts(heading: str, text: str) -> list[str]:
    """What is embedded for one passage, whole first: the heading and body together, the heading
    alone, the heading with the first sentence, and each sentence alone (duplicates dropped).

    A short question ("what's your address?") is like the one sentence that answers it far more
    than like a whole passage of several topics; the heading names the topic a body may never
    repeat. The passage's similarity is the best of its vectors (fusion.passage_similarities).
    """
    sentences = split_sentences(text)
    texts = [f"{heading}\n{text}" if heading else text]
    if heading:
        texts.append(heading)
        if sentences:
            texts.append(f"{heading}\n{sentences[0]}")
    texts.extend(sentences)
    return list(dict.fromkeys(t for t in texts if t.strip()))


def split_document(source: str, text: str, max_chars: int = MAX_CHARS) -> list[Passage]:
    """The passages of a Markdown (.md, .markdown) or plain text document named ``source``."""
    if max_chars < 80:
        raise ValueError(f"max_chars must be at least 80, got {max_chars}")
    lowered = source.lower()
    if lowered.endswith(MARKDOWN_SUFFIXES):
        sections = _markdown_sections(text)
    elif lowered.endswith(TEXT_SUFFIXES):
        sections = [("", text)]
    else:
        raise ValueError(
            f"{source}: not a Markdown or text file (known endings: "
            f"{', '.join(MARKDOWN_SUFFIXES + TEXT_SUFFIXES)})"
        )
    passages: list[Passage] = []
    for heading, body in sections:
        for piece in _pieces(body, max_chars):
            passages.append(Passage(source, heading, piece, len(passages)))
    return passages


def _markdown_sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) in document order; text before the first heading has the heading ""."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced  # a "# comment" inside a code block is not a heading
        match = None if fenced else _HEADING.match(line)
        if match:
            sections.append((match.group(2).strip(), []))
        else:
            sections[-1][1].append(line)
    return [(heading, "\n".join(lines)) for heading, lines in sections]


def _pieces(body: str, max_chars: int) -> list[str]:
    """The body as pieces under ``max_chars``, joined from whole paragraphs (or sentences)."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", body):
        flat = " ".join(paragraph.split())  # reflow: line breaks inside a paragraph are layout
        if not flat:
            continue
        units.extend(_cut(flat, max_chars) if len(flat) > max_chars else [flat])
    pieces: list[str] = []
    for unit in units:
        if pieces and len(pieces[-1]) + 2 + len(unit) <= max_chars:
            pieces[-1] += "\n\n" + unit
        else:
            pieces.append(unit)
    return pieces


def _cut(paragraph: str, max_chars: int) -> list[str]:
    """A long paragraph at sentence ends; a sentence longer than the cap at word ends."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split(" ") if len(sentence) > max_chars else [sentence]
        for word in words:
            if out and len(out[-1]) + 1 + len(word) <= max_chars:
                out[-1] += " " + word
            else:
                out.append(word[:max_chars])
    return out
