// The server's HTTP API, as the page uses it. Every URL is relative, so the page also
// works behind a proxy that serves it under a path prefix.
//
// A server started with API keys answers 401 without one. The page then asks the person
// for a key (one prompt, however many requests are waiting), sends it as
// `Authorization: Bearer <key>` and keeps it in sessionStorage: it lasts as long as the
// tab, and neither other tabs nor later visits see it. A server without keys never
// answers 401, and the page never asks.

/**
 * @typedef {{status: number, body: any, retryAfter: number | null}} Answer
 * status 0 means the server could not be reached.
 */

const KEY_ITEM = "captioner.apiKey";

/** @type {((wrongKey: boolean) => Promise<string | null>) | null} */
let askForKey = null;
/** @type {Promise<string | null> | null} */
let asking = null;
// After the person closes the prompt, only what they do themselves asks again (an upload,
// a button), never the page's own background requests.
let declined = false;
/** @type {(() => void)[]} */
const keyListeners = [];

/**
 * How the page asks for a key: `ask(wrongKey)` resolves to the key typed, or null if the
 * person declined; `wrongKey` says the server refused the last one.
 */
export function setKeyPrompt(ask) {
  askForKey = ask;
}

/** Call `listener` whenever a new key has been entered. */
export function onKeyEntered(listener) {
  keyListeners.push(listener);
}

/**
 * Ask for a key now (the person asked to enter one), and keep it for the tab.
 * @param {boolean} wrongKey  The server refused the key the tab holds.
 * @returns {Promise<string | null>}  The key, or null if the person declined.
 */
export function requestKey(wrongKey = false) {
  if (askForKey === null) return Promise.resolve(null);
  asking ??= askForKey(wrongKey).then((key) => {
    asking = null;
    declined = !key;
    if (key) {
      sessionStorage.setItem(KEY_ITEM, key);
      for (const listener of keyListeners) listener();
    } else {
      sessionStorage.removeItem(KEY_ITEM);
    }
    return key || null;
  });
  return asking;
}

/**
 * Send a request with the tab's key; on 401, get a key and send it again.
 * @param {(key: string | null) => Promise<Answer>} send
 * @param {boolean} personAsked  The person's own action: worth a prompt even after a decline.
 * @returns {Promise<Answer>}  The last answer: a 401 if no accepted key was given.
 */
async function withKey(send, personAsked) {
  let key = sessionStorage.getItem(KEY_ITEM);
  for (;;) {
    const answer = await send(key);
    if (answer.status !== 401) return answer;
    const current = sessionStorage.getItem(KEY_ITEM);
    if (current !== null && current !== key) {
      key = current; // another request got a new key while this one was on its way
      continue;
    }
    if (declined && !personAsked && asking === null) return answer;
    key = await requestKey(key !== null);
    if (key === null) return answer;
  }
}

function authorization(key) {
  return key === null ? {} : { Authorization: `Bearer ${key}` };
}

/** GET a JSON document. */
export function getJSON(url) {
  return withKey(async (key) => {
    try {
      const headers = { Accept: "application/json", ...authorization(key) };
      const response = await fetch(url, { headers });
      return { status: response.status, body: await parseJSON(response), retryAfter: null };
    } catch {
      return { status: 0, body: null, retryAfter: null };
    }
  }, false);
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
  return withKey((key) => sendImage(file, params, onProgress, signal, key), true);
}

function sendImage(file, params, onProgress, signal, key) {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve({ status: -1, body: null, retryAfter: null }); // removed while a key was asked
      return;
    }
    const query = new URLSearchParams({
      beam_size: String(params.beam_size),
      max_length: String(params.max_length),
    });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `model/predict?${query}`);
    xhr.responseType = "json";
    xhr.setRequestHeader("Accept", "application/json");
    if (key !== null) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
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
