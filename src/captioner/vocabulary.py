"""The caption vocabulary: ``word_counts.txt`` lines -> word ids and back, im2txt's rules.

The id of a word is its line number from 0. ``<UNK>`` is not in the file: it is appended,
so its id is the number of lines (a file that lists it keeps its line). Ids past the file
(the model has more rows than the file has words: 12,000 vs 11,519 for the original) read
as ``<UNK>``. Lines written by Python 3 as ``b'word' 123`` are unwrapped.
"""

from __future__ import annotations

import ast
from pathlib import Path

from captioner.errors import VocabularyError

__all__ = ["END_WORD", "START_WORD", "UNKNOWN_WORD", "Vocabulary"]

START_WORD = "<S>"
END_WORD = "</S>"
UNKNOWN_WORD = "<UNK>"


class Vocabulary:
    """An immutable word list with im2txt's start, end and unknown ids."""

    def __init__(self, words: list[str]) -> None:
        """Build from the file's words in order; ``<UNK>`` is appended unless listed.

        Raises:
            VocabularyError: the start or end word is missing.
        """
        for required in (START_WORD, END_WORD):
            if required not in words:
                raise VocabularyError(f"the vocabulary has no {required!r} word")
        self._words = words if UNKNOWN_WORD in words else [*words, UNKNOWN_WORD]
        # As the original: a word listed twice takes the id of its last line.
        self._ids = {word: i for i, word in enumerate(self._words)}
        self.start_id = self._ids[START_WORD]
        self.end_id = self._ids[END_WORD]
        self.unk_id = self._ids[UNKNOWN_WORD]

    @classmethod
    def from_file(cls, path: Path | str) -> Vocabulary:
        """Read a ``word_counts.txt`` file (``word count`` per line).

        Raises:
            VocabularyError: missing or unreadable file, a malformed line (named by number),
                no words, or no start/end word.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VocabularyError("vocabulary file not found", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"cannot read vocabulary file: {exc}", path=path) from exc
        words = []
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise VocabularyError(
                    f"line {number} is not 'word count': {line[:60]!r}", path=path
                )
            words.append(_unwrap_bytes_literal(parts[0]))
        if not words:
            raise VocabularyError("vocabulary file holds no words", path=path)
        try:
            return cls(words)
        except VocabularyError as exc:
            raise VocabularyError(str(exc), path=path) from None

    def __len__(self) -> int:
        """Number of words, ``<UNK>`` included."""
        return len(self._words)

    def word_to_id(self, word: str) -> int:
        """The id of ``word``, or the ``<UNK>`` id for a word not in the vocabulary."""
        return self._ids.get(word, self.unk_id)

    def id_to_word(self, word_id: int) -> str:
        """The word for ``word_id``; ids past the file read as ``<UNK>``."""
        if 0 <= word_id < len(self._words):
            return self._words[word_id]
        return UNKNOWN_WORD


def _unwrap_bytes_literal(token: str) -> str:
    """``b'a'`` -> ``a``: some circulating copies were written with ``str(bytes)``."""
    if len(token) >= 3 and token[0] == "b" and token[1] in "'\"" and token[-1] == token[1]:
        try:
            value = ast.literal_eval(token)
        except (ValueError, SyntaxError):
            return token
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return token
