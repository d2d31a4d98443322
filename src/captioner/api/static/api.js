// The server's HTTP API, as the page uses it. Every URL is relative, so the page also
// works behind a proxy that serves it under a path prefix.

/**
 * @typedef {{status: number, body: any, retryAfter: number | null}} Answer
 * status 0 means the server could not be reached.
 */

/** GET a JSON document. */
export async function getJSON(url) {
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    return { status: response.status, body: await parseJSON(response), retryAfter: null };
  } catch {
    return { status: 0, body: null, retryAfter: null };
  }
}

async function parseJSON(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * POST one image to /model/predict. XMLHttpRequest rather than fetch: it reports upload
 * progress.
 * @param {File} file
 * @param {{beam_size: number, max_length: number}} params
 * @param {(fraction: number) => void} onProgress  Upload progress, 0 to 1.
 * @param {AbortSignal} signal
 * @returns {Promise<Answer>}
 */
export function postImage(file, params, onProgress, signal) {
  return new Promise((resolve) => {
    const query = new URLSearchParams({
      beam_size: String(params.beam_size),
      max_length: String(params.max_length),
    });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `model/predict?${query}`);
    xhr.responseType = "json";
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    });
    xhr.upload.addEventListener("load", () => onProgress(1));
    xhr.addEventListener("load", () =>
      resolve({
        status: xhr.status,
        body: xhr.response,
        retryAfter: retryAfterSeconds(xhr.getResponseHeader("Retry-After")),
      }),
    );
    xhr.addEventListener("error", () => resolve({ status: 0, body: null, retryAfter: null }));
    xhr.addEventListener("abort", () => resolve({ status: -1, body: null, retryAfter: null }));
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    const form = new FormData();
    form.append("image", file, file.name);
    xhr.send(form);
  });
}

function retryAfterSeconds(header) {
  if (header === null) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(header); // the HTTP-date form
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}
