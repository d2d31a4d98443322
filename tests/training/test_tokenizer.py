"""Tokenisation and word_counts.txt as im2txt's build_mscoco_data.py made them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from captioner.training.tokenizer import (
    DEFAULT_MIN_WORD_COUNT,
    caption_words,
    count_words,
    select_vocabulary,
    tokenize,
    write_word_counts,
)
from captioner.vocabulary import Vocabulary

# Expected tokens are NLTK's (Treebank word tokenizer after Punkt sentence splitting) on
# the lower-cased caption, checked against NLTK itself when these cases were written.
NLTK_CASES = [
    ("A dog, running.", ["a", "dog", ",", "running", "."]),
    (
        "A close-up of a double-decker bus on a city street.",
        ["a", "close-up", "of", "a", "double-decker", "bus", "on", "a", "city", "street", "."],
    ),
    ("Two giraffes in a field", ["two", "giraffes", "in", "a", "field"]),
    ("A man's hand.", ["a", "man", "'s", "hand", "."]),
    ("The dogs' bowls", ["the", "dogs", "'", "bowls"]),
    ("A woman who can't find it.", ["a", "woman", "who", "ca", "n't", "find", "it", "."]),
    ("It's a cat on a T-shirt!", ["it", "'s", "a", "cat", "on", "a", "t-shirt", "!"]),
    ("Is that a cake?", ["is", "that", "a", "cake", "?"]),
    (
        'A "Stop" sign on St. James street.',
        ["a", "``", "stop", "''", "sign", "on", "st.", "james", "street", "."],
    ),
    ('"A dog" barking.', ["``", "a", "dog", "''", "barking", "."]),
    (
        "Children (and adults) playing.",
        ["children", "(", "and", "adults", ")", "playing", "."],
    ),
    ("1,000 peas at 12:30", ["1,000", "peas", "at", "12:30"]),
    (
        "A clock at 12:30, near a tower.",
        ["a", "clock", "at", "12:30", ",", "near", "a", "tower", "."],
    ),
    ("A tag: $5 & 50% off.", ["a", "tag", ":", "$", "5", "&", "50", "%", "off", "."]),
    ("A tub/shower combination", ["a", "tub/shower", "combination"]),
    ("A man -- holding a frisbee", ["a", "man", "--", "holding", "a", "frisbee"]),
    ("A beach; blue water", ["a", "beach", ";", "blue", "water"]),
    ("A sign for the U.S. Army.", ["a", "sign", "for", "the", "u.s.", "army", "."]),
    ("A TV on the table..", ["a", "tv", "on", "the", "table.."]),
    ("A car on the road...", ["a", "car", "on", "the", "road", "..."]),
    ("A man who is gonna jump", ["a", "man", "who", "is", "gon", "na", "jump"]),
    ("You cannot park here.", ["you", "can", "not", "park", "here", "."]),
    (
        "They're on a bench; we'll go.",
        ["they", "'re", "on", "a", "bench", ";", "we", "'ll", "go", "."],
    ),
    ("I've got a cat, I'm sure.", ["i", "'ve", "got", "a", "cat", ",", "i", "'m", "sure", "."]),
    ("A photo [edited] of {it}", ["a", "photo", "[", "edited", "]", "of", "{", "it", "}"]),
    ("Fruit: apples and pears.", ["fruit", ":", "apples", "and", "pears", "."]),
    ("An old T.V.", ["an", "old", "t.v", "."]),
    ("A W. Main street sign", ["a", "w.", "main", "street", "sign"]),
]


@pytest.mark.parametrize(("caption", "expected"), NLTK_CASES)
def test_tokenize_matches_nltk_on_ordinary_captions(caption: str, expected: list[str]) -> None:
    assert tokenize(caption) == expected


def test_each_sentence_ends_with_its_own_period_token() -> None:
    # word_tokenize splits sentences first, so a mid-caption full stop is a token too.
    assert tokenize("A dog. It runs.") == ["a", "dog", ".", "it", "runs", "."]
    assert tokenize("  A dog on a bed.\n") == ["a", "dog", "on", "a", "bed", "."]


def test_blank_caption_has_no_tokens() -> None:
    assert tokenize("") == []
    assert tokenize(" \t ") == []


def test_caption_words_wraps_in_start_and_end() -> None:
    assert caption_words("A Dog.") == ["<S>", "a", "dog", ".", "</S>"]


def test_count_words_counts_start_and_end_once_per_caption() -> None:
    counts = count_words(["A dog.", "a DOG runs", "a cat, a dog."])
    assert counts == Counter(
        {"<S>": 3, "</S>": 3, "a": 4, "dog": 3, ".": 2, "runs": 1, "cat": 1, ",": 1}
    )


def test_select_vocabulary_drops_rare_words_and_sorts_by_count_then_word() -> None:
    counts = Counter({"<S>": 5, "</S>": 5, "a": 9, "dog": 4, "cat": 4, "ball": 3, ".": 4})
    assert DEFAULT_MIN_WORD_COUNT == 4
    # Ties: <S>, then </S>, then the other words in code-point order.
    assert select_vocabulary(counts) == [
        ("a", 9),
        ("<S>", 5),
        ("</S>", 5),
        (".", 4),
        ("cat", 4),
        ("dog", 4),
    ]
    assert select_vocabulary(counts, min_word_count=5) == [("a", 9), ("<S>", 5), ("</S>", 5)]


def test_select_vocabulary_keeps_start_and_end_in_tiny_datasets() -> None:
    vocabulary = select_vocabulary(count_words(["a dog", "a cat"]))
    assert sorted(word for word, _ in vocabulary) == ["</S>", "<S>"]
    assert {word for word, _ in select_vocabulary(Counter({"a": 7}))} == {"a", "<S>", "</S>"}


def test_select_vocabulary_refuses_a_minimum_below_one() -> None:
    with pytest.raises(ValueError, match="min_word_count"):
        select_vocabulary(Counter({"a": 1}), min_word_count=0)


def test_word_counts_file_has_im2txts_exact_format(tmp_path: Path) -> None:
    path = tmp_path / "word_counts.txt"
    write_word_counts(path, [("a", 969108), ("<S>", 586368), ("</S>", 586368), ("café", 4)])
    # "\n"-joined, no newline after the last line, UTF-8: as build_mscoco_data.py wrote it.
    assert path.read_bytes() == "a 969108\n<S> 586368\n</S> 586368\ncafé 4".encode()


@pytest.mark.parametrize("word", ["", "two words", "<UNK>", "tab\tword"])
def test_word_counts_refuses_words_that_would_break_the_line_ids(tmp_path: Path, word: str) -> None:
    with pytest.raises(ValueError, match="vocabulary word"):
        write_word_counts(tmp_path / "word_counts.txt", [("<S>", 1), (word, 1)])


def test_the_engine_reads_back_a_trained_vocabulary(tmp_path: Path) -> None:
    captions = ["A dog runs.", "A dog sits.", "A cat runs.", "a dog, a cat."] * 2
    path = tmp_path / "word_counts.txt"
    write_word_counts(path, select_vocabulary(count_words(captions), min_word_count=4))
    assert path.read_text(encoding="utf-8") == "\n".join(
        ["a 10", "<S> 8", "</S> 8", ". 8", "dog 6", "cat 4", "runs 4"]
    )

    vocab = Vocabulary.from_file(path)
    # Ids are line numbers; <UNK> is appended after the last line.
    assert (vocab.start_id, vocab.end_id, vocab.unk_id) == (1, 2, 7)
    assert len(vocab) == 8
    assert [vocab.word_to_id(w) for w in ["a", ".", "dog", "cat", "runs"]] == [0, 3, 4, 5, 6]
    assert vocab.id_to_word(4) == "dog"
    assert vocab.word_to_id("sits") == 7  # seen twice: below the minimum, so <UNK>
    assert vocab.word_to_id(",") == 7
    assert vocab.id_to_word(7) == "<UNK>"


def test_a_coco_like_vocabulary_opens_like_the_original(tmp_path: Path) -> None:
    # "a" outnumbers the captions in COCO, so the original file reads a, <S>, </S>, ...
    captions = ["a man on a horse.", "a dog on a bed", "two cats on a sofa.", "a bird."] * 4
    path = tmp_path / "word_counts.txt"
    write_word_counts(path, select_vocabulary(count_words(captions)))
    vocab = Vocabulary.from_file(path)
    assert [vocab.id_to_word(i) for i in range(6)] == ["a", "<S>", "</S>", ".", "on", "bed"]
    assert (vocab.start_id, vocab.end_id) == (1, 2)
    assert vocab.unk_id == 13  # 5 words above + 8 words seen exactly 4 times
