// Text for people: captions as sentences, file sizes, probabilities.

const UNITS = ["bytes", "KiB", "MiB", "GiB"];

/** A size in bytes as "812 KiB" or "10 MiB" (powers of 1024, so named as such). */
export function formatBytes(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 || Number.isInteger(value) ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** A probability in [0, 1] as a percentage with the digits that matter: "38.8 %", "0.042 %". */
export function formatPercent(probability) {
  const percent = probability * 100;
  if (percent === 0) return "0 %";
  if (percent < 0.001) return "< 0.001 %";
  if (percent >= 10) return `${percent.toFixed(1)} %`;
  return `${percent.toPrecision(2)} %`;
}

/**
 * A caption as a sentence: "a dog on a couch ." becomes "A dog on a couch." The API's
 * text keeps the model's tokens (a space before the full stop); downloads keep that text.
 */
export function sentence(caption) {
  const text = caption.trim().replace(/\s+([.,!?;:])/g, "$1");
  return text.charAt(0).toUpperCase() + text.slice(1);
}
