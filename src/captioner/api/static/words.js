// The words of captions: what the word filter lists and matches.

// Words that say nothing about an image's content.
const STOP_WORDS = new Set([
  "a", "an", "the", "of", "to", "on", "in", "into", "onto", "at", "by", "for", "from",
  "with", "without", "and", "or", "is", "are", "was", "be", "being", "it", "its", "this",
  "that", "there", "their", "his", "her", "some", "up", "down", "out", "over", "under",
  "next", "near", "while", "as", "has", "have", "other", "each", "very", "who", "which",
]);

/** The distinct content words of a caption, lower case, in order of appearance. */
export function contentWords(caption) {
  const words = caption.toLowerCase().match(/[\p{L}\p{N}]+(?:['-][\p{L}\p{N}]+)*/gu) ?? [];
  return [...new Set(words.filter((word) => word.length > 1 && !STOP_WORDS.has(word)))];
}

/**
 * Content words ranked by how many captions contain them, then alphabetically.
 * @param {string[]} captions
 * @returns {{word: string, count: number}[]}
 */
export function rankWords(captions) {
  const counts = new Map();
  for (const caption of captions) {
    for (const word of contentWords(caption)) counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  return [...counts]
    .map(([word, count]) => ({ word, count }))
    .sort((a, b) => b.count - a.count || a.word.localeCompare(b.word));
}

/** Whether a caption contains a word (whole words only: "car" does not match "cart"). */
export function hasWord(caption, word) {
  return contentWords(caption).includes(word);
}
