"""Vocabulary: the original id rules and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioner.errors import VocabularyError
from captioner.vocabulary import Vocabulary


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "word_counts.txt"
    path.write_text(text)
    return path


def test_original_id_rules(tmp_path: Path) -> None:
    # The original's shape: "a" first, then <S>, </S>; the last line has no newline.
    vocab = Vocabulary.from_file(_write(tmp_path, "a 969108\n<S> 586368\n</S> 586368\n. 440479"))
    assert (vocab.start_id, vocab.end_id) == (1, 2)
    assert vocab.unk_id == 4 and len(vocab) == 5
    assert vocab.word_to_id(".") == 3
    assert vocab.word_to_id("zebra") == vocab.unk_id
    assert vocab.id_to_word(0) == "a" and vocab.id_to_word(4) == "<UNK>"
    # Ids past the file (the model has more rows than the file has words) read as <UNK>.
    assert vocab.id_to_word(11999) == "<UNK>"


def test_python3_bytes_lines_are_unwrapped(tmp_path: Path) -> None:
    vocab = Vocabulary.from_file(
        _write(tmp_path, "b'a' 969108\nb'<S>' 586368\nb'</S>' 586368\nb\"don't\" 3\n")
    )
    assert vocab.id_to_word(0) == "a" and vocab.start_id == 1
    assert vocab.word_to_id("don't") == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "holds no words"),
        ("a 1\n<S> 1\n", "no '</S>' word"),
        ("a 1\n<S> 1\n</S> 1\nbroken line here\n", "line 4 is not 'word count'"),
        ("a one\n", "line 1 is not 'word count'"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(VocabularyError, match=match) as info:
        Vocabulary.from_file(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.from_file(tmp_path / "word_counts.txt")


def test_vocabulary_larger_than_the_model_is_refused(tmp_path: Path) -> None:
    from captioner.engine import Captioner
    from captioner.testing import write_random_checkpoint, write_vocabulary

    files = write_random_checkpoint(tmp_path, vocab_rows=20, embedding_size=8, lstm_units=8)
    write_vocabulary(files.vocab, 25)
    with pytest.raises(VocabularyError, match=r"26 words .* only 20 word rows"):
        Captioner.load(files.checkpoint, files.vocab)
