"""Caption tokenisation and the ``word_counts.txt`` vocabulary file, the way im2txt made them.

im2txt's ``build_mscoco_data.py`` lower-cased each caption, split it with NLTK's
``word_tokenize`` (Punkt sentences, then Penn Treebank rules), wrapped it in ``<S>`` ...
``</S>``, counted words over the training captions, kept those seen at least 4 times and
wrote them as ``word count`` lines, most frequent first. A model trained on our file must
read its vocabulary exactly like the pretrained one, so the same rules are reproduced here
with a few regular expressions instead of the NLTK dependency. They agree with NLTK on
ordinary English captions; exotic text (nested quotes, rare abbreviations in the middle of
a caption) may differ in a token or two, which only changes that caption's rare words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from captioner.vocabulary import END_WORD, START_WORD, UNKNOWN_WORD

__all__ = [
    "DEFAULT_MIN_WORD_COUNT",
    "caption_words",
    "count_words",
    "select_vocabulary",
    "tokenize",
    "write_word_counts",
]

# im2txt's --min_word_count default.
DEFAULT_MIN_WORD_COUNT = 4

# Order among words of equal count (see select_vocabulary).
_TIE_RANK = {START_WORD: 0, END_WORD: 1}

# Words whose trailing period is part of the word, not a sentence end, in the middle of a
# caption. Punkt knows these from its English model; captions use only a handful.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "ave", "jr", "sr", "vs", "mt", "ft"})

# A period that ends a word which is followed by more text: "a dog. it runs".
_INNER_PERIOD = re.compile(r"(?<=[^\s.])\.(?=\s)")
# The caption's last period, possibly followed by closing brackets or quotes: "... ball.)"
_FINAL_PERIOD = re.compile(r"([^.])\.([\])}>\"']*)\s*$")

# Applied in order to the lower-cased caption, after sentence-final periods are split off.
# Each inserts spaces around a piece that Penn Treebank tokenisation makes its own token.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Opening double quotes become ``, closing ones '' (Treebank convention).
    (re.compile(r'([\s(\[{<])"'), r"\1 `` "),
    # A comma or colon is its own token unless a digit follows ("1,000", "12:30").
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    # An ellipsis is one token, but a doubled period stays on its word ("table..").
    (re.compile(r"\.\.\."), " ... "),
    (re.compile(r"[;@#$%&?!]"), r" \g<0> "),
    (re.compile(r"[\]\[(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), " -- "),
    # A single quote that closes a word ("the dogs' bowl").
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r'"'), " '' "),
    # Clitics become tokens of their own: "man's" -> man 's, "can't" -> ca n't.
    (re.compile(r"([^' ])('s|'m|'d|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'re|'ve|n't) "), r"\1 \2 "),
)

# Whole words that Treebank splits although no rule above touches them.
_SPLIT_WORDS: dict[str, tuple[str, str]] = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "gotta": ("got", "ta"),
    "wanna": ("wan", "na"),
    "gimme": ("gim", "me"),
    "lemme": ("lem", "me"),
    "more'n": ("more", "'n"),
    "d'ye": ("d", "'ye"),
    "'tis": ("'t", "is"),
    "'twas": ("'t", "was"),
}


def _split_inner_period(match: re.Match[str]) -> str:
    """Split off a mid-caption period unless it belongs to an abbreviation or an initial."""
    word = match.string[: match.start()].rsplit(maxsplit=1)[-1]
    if len(word) == 1 or "." in word or word.lower() in _ABBREVIATIONS:
        return "."
    return " ."


def tokenize(caption: str) -> list[str]:
    """Split a caption into im2txt's lower-case tokens.

    Punctuation becomes tokens of its own, hyphenated words stay whole, clitics are split
    the Treebank way: ``"A dog's ball, red."`` -> ``["a", "dog", "'s", "ball", ",", "red",
    "."]``.

    Args:
        caption: One caption, any case, any surrounding whitespace.

    Returns:
        The tokens, without ``<S>``/``</S>``; empty for a blank caption.
    """
    text = caption.lower().strip()
    text = _INNER_PERIOD.sub(_split_inner_period, text)
    text = _FINAL_PERIOD.sub(r"\1 . \2", text)
    # The clitic rules look for a following space, so the last word needs one too.
    text = f" {text} "
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return [piece for token in text.split() for piece in _SPLIT_WORDS.get(token, (token,))]


def caption_words(caption: str) -> list[str]:
    """The caption as the model sees it in training: ``[<S>, *tokenize(caption), </S>]``."""
    return [START_WORD, *tokenize(caption), END_WORD]


def count_words(captions: Iterable[str]) -> Counter[str]:
    """Count every word of every caption, ``<S>`` and ``</S>`` included (one each a caption).

    Args:
        captions: The training captions (not the held-out ones: im2txt counted train only).

    Returns:
        Word -> number of occurrences.
    """
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(caption_words(caption))
    return counts


def select_vocabulary(
    counts: Counter[str], min_word_count: int = DEFAULT_MIN_WORD_COUNT
) -> list[tuple[str, int]]:
    """Keep the words seen at least ``min_word_count`` times, most frequent first.

    Ties are broken by the word itself so the file is the same on every run (im2txt relied
    on dict order), except that ``<S>`` precedes ``</S>`` and both precede other words of
    their count: with "a" in most captions that gives the original's ``a, <S>, </S>``
    opening (ids 0, 1, 2). ``<S>`` and ``</S>`` are always kept, even in a dataset of fewer than
    ``min_word_count`` captions, because the engine cannot caption without them.

    Args:
        counts: Word counts from :func:`count_words`.
        min_word_count: The rarest count kept; rarer words will read as ``<UNK>``.

    Returns:
        ``(word, count)`` pairs in file order: a word's id is its index.

    Raises:
        ValueError: If ``min_word_count`` is below 1.
    """
    if min_word_count < 1:
        raise ValueError(f"min_word_count must be at least 1, got {min_word_count}")
    kept = [
        (word, count)
        for word, count in counts.items()
        if count >= min_word_count or word in (START_WORD, END_WORD)
    ]
    for marker in (START_WORD, END_WORD):
        if marker not in counts:
            kept.append((marker, 0))
    kept.sort(key=lambda pair: (-pair[1], _TIE_RANK.get(pair[0], len(_TIE_RANK)), pair[0]))
    return kept


def write_word_counts(path: Path | str, vocabulary: list[tuple[str, int]]) -> None:
    """Write ``word_counts.txt`` in im2txt's exact format.

    One ``word count`` line per word, in the given order, ``\\n``-separated with no newline
    after the last line (as ``build_mscoco_data.py`` wrote it), UTF-8. ``<UNK>`` is not
    written: readers append it.

    Args:
        path: The file to (over)write.
        vocabulary: ``(word, count)`` pairs from :func:`select_vocabulary`.

    Raises:
        ValueError: If a word is empty, contains whitespace, or is ``<UNK>``, any of
            which would corrupt the line-number ids.
    """
    for word, _ in vocabulary:
        if not word or word.split() != [word] or word == UNKNOWN_WORD:
            raise ValueError(f"cannot write {word!r} as a vocabulary word")
    text = "\n".join(f"{word} {count}" for word, count in vocabulary)
    Path(path).write_text(text, encoding="utf-8")
