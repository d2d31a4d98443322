// Results as files: JSON for programs, CSV for spreadsheets (one row per caption).

/**
 * @typedef {{caption: string, probability: number, logprob: number}} Prediction
 * @typedef {{image: string, beam_size: number, max_length: number,
 *            predictions: Prediction[]}} Result
 */

/** A JSON document of every result, with the model that made them. */
export function toJSON(results, model) {
  const document = {
    model: model ? { id: model.id, name: model.name } : null,
    images: results.map((result) => ({
      image: result.image,
      beam_size: result.beam_size,
      max_length: result.max_length,
      captions: result.predictions.map(({ caption, probability, logprob }) => ({
        caption,
        probability,
        logprob,
      })),
    })),
  };
  return `${JSON.stringify(document, null, 2)}\n`;
}

/** CSV (RFC 4180): image, rank (1 = best), caption, probability, logprob. */
export function toCSV(results) {
  const rows = [["image", "rank", "caption", "probability", "logprob"]];
  for (const result of results) {
    result.predictions.forEach((prediction, rank) => {
      rows.push([
        result.image,
        String(rank + 1),
        prediction.caption,
        String(prediction.probability),
        String(prediction.logprob),
      ]);
    });
  }
  return rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

function csvCell(value) {
  // A spreadsheet would run a file name like "=cmd()" as a formula: make it text.
  const text = /^[=+\-@\t\r]/.test(value) && Number.isNaN(Number(value)) ? `'${value}` : value;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Offer text as a file download. */
export function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
