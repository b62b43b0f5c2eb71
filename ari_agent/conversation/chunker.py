"""Cut a stream of LLM text into pieces worth synthesising on their own.

The first piece leaves as soon as a clause is long enough to sound natural,
so speech starts while the model is still writing; later pieces wait for a
sentence end, which gives the voice better prosody.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?;:](?=\s)|\n")
_CLAUSE_END = re.compile(r"[,\u2014](?=\s)")
_FINAL_SENTENCE_END = re.compile(r"(?<=[^\W\d])[.!?]$")


class SentenceChunker:
    def __init__(self, *, first_min_chars: int = 12, min_chars: int = 30, max_chars: int = 240) -> None:
        self.first_min_chars = first_min_chars
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buffer = ""
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces now complete (possibly none)."""
        self._buffer += text
        pieces: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return pieces
            pieces.append(piece)

    def flush(self) -> list[str]:
        """The rest, at the end of the stream."""
        rest = self._buffer.strip()
        self._buffer = ""
        return [rest] if rest else []

    def _next_piece(self) -> str | None:
        minimum = self.first_min_chars if self._emitted == 0 else self.min_chars
        cut = None
        for match in _SENTENCE_END.finditer(self._buffer):
            if match.end() >= minimum:
                cut = match.end()
                break
        if cut is None and self._emitted == 0 and len(self._buffer) >= minimum:
            # The first sentence may leave before the next word shows it was the end:
            # one token sooner to speech. Not after a digit ("12." may go on as "12.50").
            end = _FINAL_SENTENCE_END.search(self._buffer)
            if end is not None:
                cut = end.end()
        if cut is None and self._emitted == 0:
            # Only the first piece may end on a clause: time to first audio matters most there.
            for match in _CLAUSE_END.finditer(self._buffer):
                if match.end() >= max(minimum, 24):
                    cut = match.end()
                    break
        if cut is None and len(self._buffer) > self.max_chars:
            space = self._buffer.rfind(" ", 0, self.max_chars)
            cut = space if space > 0 else self.max_chars
        if cut is None:
            return None
        piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        if not piece:
            return None
        self._emitted += 1
        return piece
