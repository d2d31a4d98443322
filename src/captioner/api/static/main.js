// The page: images in, captions out. Wires the server's API to the gallery, the detail
// view, the word filter and the downloads.
import { getJSON, onKeyEntered, postImage, requestKey, setKeyPrompt } from "./api.js";
import { DetailView } from "./detail.js";
import { download, toCSV, toJSON } from "./export.js";
import { formatBytes, sentence } from "./format.js";
import { Gallery, isPending } from "./gallery.js";
import { KeyPrompt } from "./key.js";
import { Scheduler } from "./scheduler.js";
import { hasWord, rankWords } from "./words.js";

// metadata id of the model bundled for trying the server without downloads.
const DEMO_MODEL_ID = "captioner-demo";
// Browsers open at most six connections to one server over HTTP/1.1.
const MAX_IN_FLIGHT = 6;
// How often one image is sent to a server that keeps answering "busy" before giving up.
const MAX_ATTEMPTS = 30;
// Wait before retrying a busy answer that names no Retry-After.
const DEFAULT_RETRY_S = 2;
// A multipart body is the file plus its part's headers; this covers them generously.
const MULTIPART_OVERHEAD_BYTES = 512;
const WORDS_SHOWN = 40;

const $ = (selector) => document.querySelector(selector);

const state = {
  limits: null, // GET /limits, once known
  model: null, // GET /model/metadata, once ready
  items: new Map(), // id -> item, in the order added
  nextId: 1,
  word: null, // the word the gallery is filtered by
  waitingForKey: new Set(), // the polls stopped by a 401, run again once a key is entered
};

const scheduler = new Scheduler(captionItem, 2);
const gallery = new Gallery($("#gallery"), $("#card-template"), {
  copy: (item, button) => copyText(sentence(item.predictions[0].caption), button),
  details: (item, button) => detail.open(item, button),
  retry: (item) => {
    send(item);
    gallery.focusTarget(item)?.focus(); // the pressed button is hidden now
  },
  remove: removeItem,
});
const detail = new DetailView($("#detail"), {
  copy: copyText,
  rerun: (item, params) => {
    item.params = params;
    send(item);
  },
});

// --- the server --------------------------------------------------------------------------

const keyPrompt = new KeyPrompt($("#key-dialog"));
setKeyPrompt((wrongKey) => keyPrompt.ask(wrongKey));
onKeyEntered(() => {
  const stopped = [...state.waitingForKey];
  state.waitingForKey.clear();
  for (const poll of stopped) poll();
});

/** The server wants a key the page does not have: say so, and stop `poll` until one comes. */
function waitForKey(poll) {
  state.waitingForKey.add(poll);
  setModelStatus("offline", "API key needed");
  showNotice("error", "This server needs an API key to caption images.", {
    label: "Enter API key",
    run: () => requestKey(),
  });
}

async function loadLimits() {
  const answer = await getJSON("limits");
  if (answer.status === 401) {
    waitForKey(loadLimits);
    return;
  }
  if (answer.status !== 200) {
    setTimeout(loadLimits, 5000);
    return;
  }
  state.limits = answer.body;
  scheduler.setConcurrency(Math.max(1, Math.min(MAX_IN_FLIGHT, state.limits.max_batch_size)));
  detail.setLimits(state.limits);
  $("#limits").textContent =
    `Up to ${formatBytes(state.limits.max_upload_bytes)} per image. ` +
    `${state.limits.default_beam_size} captions each, more on request.`;
}

async function watchModel() {
  const ready = await getJSON("v2/health/ready");
  if (ready.status === 200) {
    const metadata = await getJSON("model/metadata");
    if (metadata.status === 200) {
      showModel(metadata.body);
      return;
    }
    if (metadata.status === 401) {
      waitForKey(watchModel);
      return;
    }
  }
  if (ready.status === 0) {
    setModelStatus("offline", "Server unreachable");
    showNotice("error", "The server cannot be reached. Is it still running? Trying again…");
    setTimeout(watchModel, 5000);
    return;
  }
  const reason = ready.body?.message ?? "the model is not ready";
  setModelStatus("loading", `Model not ready: ${reason}`);
  showNotice(
    "info",
    `The model is not ready yet (${reason}). Images you add now wait, and are captioned ` +
      "as soon as it is.",
  );
  setTimeout(watchModel, 2000);
}

function showModel(metadata) {
  state.model = metadata;
  setModelStatus("ready", `Model: ${metadata.name}`);
  $("#model").title = metadata.description;
  if (metadata.id === DEMO_MODEL_ID) {
    showNotice("warning", metadata.description); // the server's own words: one copy
  } else {
    $("#notice").hidden = true;
  }
}

function setModelStatus(kind, text) {
  $("#model-dot").dataset.state = kind;
  $("#model-text").textContent = text;
}

/**
 * @param {string} kind  info, warning or error.
 * @param {string} text
 * @param {{label: string, run: () => void} | null} action  A button under the text.
 */
function showNotice(kind, text, action = null) {
  $("#notice").dataset.kind = kind;
  $("#notice-text").textContent = text;
  const button = $("#notice-action");
  button.hidden = action === null;
  button.textContent = action?.label ?? "";
  button.onclick = action?.run ?? null;
  $("#notice").hidden = false;
}

// --- adding images -----------------------------------------------------------------------

function addFiles(files) {
  const added = [];
  for (const file of files) {
    const limits = state.limits;
    const item = {
      id: state.nextId++,
      name: file.name || "image",
      file,
      url: null,
      state: "waiting",
      progress: 0,
      message: "",
      retryable: true,
      predictions: null,
      params: {
        beam_size: limits?.default_beam_size ?? 3,
        max_length: limits?.default_max_length ?? 20,
      },
      attempts: 0,
      controller: null,
    };
    const problem = checkFile(file);
    if (file.type === "" || file.type.startsWith("image/")) item.url = URL.createObjectURL(file);
    state.items.set(item.id, item);
    gallery.add(item);
    if (problem) fail(item, problem, false);
    else send(item);
    added.push(item);
  }
  if (added.length === 0) return;
  $("#results").hidden = false;
  refresh();
  announce(`${added.length} image${added.length === 1 ? "" : "s"} added.`);
}

/** What stops a file from being sent at all, checked here to spare the upload. */
function checkFile(file) {
  if (file.type !== "" && !file.type.startsWith("image/")) {
    return `Not an image: this is a ${file.type} file. Choose a photo or picture file.`;
  }
  const limit = state.limits?.max_upload_bytes;
  const nameBytes = new TextEncoder().encode(file.name).length;
  if (limit !== undefined && file.size + nameBytes + MULTIPART_OVERHEAD_BYTES > limit) {
    return (
      `Too large: ${formatBytes(file.size)}, and this server accepts images up to ` +
      `${formatBytes(limit - MULTIPART_OVERHEAD_BYTES)}. Make it smaller and add it again.`
    );
  }
  return null;
}

function send(item) {
  item.attempts = 0;
  item.state = "waiting";
  item.message = "";
  scheduler.add(item);
  changed(item);
}

/** Caption one item (the scheduler's job). Resolves `{retryAfter}` when the server is busy. */
async function captionItem(item) {
  if (!state.items.has(item.id)) return undefined;
  item.attempts += 1;
  item.controller = new AbortController();
  item.state = "uploading";
  item.progress = 0;
  changed(item);
  const answer = await postImage(
    item.file,
    item.params,
    (fraction) => {
      if (item.state !== "uploading" && item.state !== "captioning") return;
      item.state = fraction >= 1 ? "captioning" : "uploading";
      item.progress = fraction;
      changed(item);
    },
    item.controller.signal,
  );
  item.controller = null;
  if (!state.items.has(item.id) || answer.status === -1) return undefined; // removed

  if (answer.status === 200 && answer.body?.predictions?.length) {
    item.predictions = answer.body.predictions;
    item.state = "done";
    item.message = "";
    changed(item);
    announce(`${item.name}: ${sentence(item.predictions[0].caption)}`);
    return undefined;
  }
  if (answer.status === 503 && item.attempts < MAX_ATTEMPTS) {
    const wait = answer.retryAfter ?? DEFAULT_RETRY_S;
    item.state = "queued";
    item.message =
      `Queued: ${serverMessage(answer, "the server is busy")}. ` +
      `Trying again in ${Math.ceil(wait)} s.`;
    changed(item);
    return { retryAfter: wait };
  }
  const [message, retryable] = failure(answer);
  // A 400 for a file the page let through means the server could not decode it: a browser
  // may still draw part of it (a truncated JPEG), so the card shows the broken-file icon.
  item.unreadable = answer.status === 400;
  fail(item, message, retryable);
  return undefined;
}

/** A clear message for an answer that is not a caption, and whether retrying may help. */
function failure(answer) {
  const said = serverMessage(answer, "");
  switch (answer.status) {
    case 0:
      return ["The server cannot be reached. Is it still running?", true];
    case 400:
      return [`The server cannot caption this file: ${said || "it is unreadable"}.`, false];
    case 401:
      return ["The server needs an API key. Choose Try again to enter it.", true];
    case 413:
      return [`Too large: ${said || "the server refused the upload"}.`, false];
    case 503:
      return [`The server stayed busy after ${MAX_ATTEMPTS} tries: ${said}.`, true];
    case 504:
      return ["The server was too busy to caption this image in time.", true];
    default:
      return [`The server answered ${answer.status}${said ? `: ${said}` : ""}.`, true];
  }
}

function serverMessage(answer, fallback) {
  const message = answer.body?.message;
  return typeof message === "string" && message ? message.replace(/\.$/, "") : fallback;
}

function fail(item, message, retryable) {
  item.state = "error";
  item.message = message;
  item.retryable = retryable;
  changed(item);
  announce(`${item.name}: ${message}`);
}

function removeItem(item) {
  const items = [...state.items.values()];
  const next = items[items.indexOf(item) + 1] ?? items[items.indexOf(item) - 1];
  item.controller?.abort();
  scheduler.remove(item);
  if (detail.isShowing(item)) detail.close();
  gallery.remove(item);
  state.items.delete(item.id);
  if (item.url) URL.revokeObjectURL(item.url);
  refresh();
  announce(`${item.name} removed.`);
  const target = next ? gallery.focusTarget(next) : null;
  (target ?? $("#pick")).focus();
}

function clearAll() {
  scheduler.clear();
  detail.close();
  for (const item of state.items.values()) {
    item.controller?.abort();
    if (item.url) URL.revokeObjectURL(item.url);
  }
  state.items.clear();
  state.word = null;
  gallery.clear();
  $("#results").hidden = true;
  refresh();
  announce("All images cleared.");
  $("#pick").focus();
}

// --- showing -----------------------------------------------------------------------------

function changed(item) {
  gallery.update(item);
  detail.render(item);
  refresh();
}

/** Everything that depends on all items: summary, word list, filter, export buttons. */
function refresh() {
  const items = [...state.items.values()];
  const done = items.filter((item) => item.predictions);
  const pending = items.filter(isPending).length;
  const failed = items.filter((item) => item.state === "error").length;
  const parts = [`${done.length} of ${items.length} captioned`];
  if (pending) parts.push(`${pending} in progress`);
  if (failed) parts.push(`${failed} failed`);
  setText($("#summary"), parts.join(" · ")); // a live region: only real changes are read out
  $("#export-json").disabled = done.length === 0;
  $("#export-csv").disabled = done.length === 0;
  renderWords(done);
  applyFilter();
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

// What the word list shows now: it is rebuilt only when this changes (not on every
// progress update), and keeps the focus on the word that had it.
let wordsShown = "";

function renderWords(done) {
  const ranked = rankWords(done.map((item) => item.predictions[0].caption));
  if (state.word && !ranked.some(({ word }) => word === state.word)) state.word = null;
  const shown = ranked.slice(0, WORDS_SHOWN);
  const key = JSON.stringify([shown, state.word]);
  if (key === wordsShown) return;
  wordsShown = key;
  const focused = $("#word-list").contains(document.activeElement)
    ? document.activeElement.dataset.word
    : null;
  $("#words").hidden = shown.length === 0;
  const most = shown[0]?.count ?? 1;
  $("#word-list").replaceChildren(
    ...shown.map(({ word, count }) => {
      const entry = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "word";
      button.dataset.word = word;
      // Five sizes, by share of the most frequent word: a word cloud in list form.
      button.dataset.weight = String(Math.ceil((count / most) * 5));
      button.setAttribute("aria-pressed", String(word === state.word));
      button.setAttribute("aria-label", `${word}, in ${count} caption${count === 1 ? "" : "s"}`);
      const label = document.createElement("span");
      label.textContent = word;
      const badge = document.createElement("span");
      badge.className = "count";
      badge.textContent = String(count);
      button.append(label, badge);
      button.addEventListener("click", () => selectWord(word === state.word ? null : word, word));
      entry.append(button);
      return entry;
    }),
  );
  // New counts rebuild the list: the focus stays on the same word.
  if (focused) wordButton(focused)?.focus();
}

function wordButton(word) {
  return [...$("#word-list").querySelectorAll("button")].find((b) => b.dataset.word === word);
}

/** Filter by `word` (null: show all), then put the focus back on `focusWord`'s button. */
function selectWord(word, focusWord) {
  state.word = word;
  refresh();
  (wordButton(focusWord) ?? $("#word-list button"))?.focus();
}

let filterShown = "";

function applyFilter() {
  const items = [...state.items.values()];
  const word = state.word;
  const shown = gallery.filter(
    items,
    word ? (item) => item.predictions !== null && hasWord(item.predictions[0].caption, word) : null,
  );
  const text = word
    ? `Showing ${shown} of ${items.length} image${items.length === 1 ? "" : "s"}: ` +
      `those whose caption contains “${word}”. `
    : "";
  if (text === filterShown) return;
  filterShown = text;
  const status = $("#filter-status");
  if (!word) {
    status.replaceChildren();
    return;
  }
  const all = document.createElement("button");
  all.type = "button";
  all.className = "link-button";
  all.textContent = "Show all images";
  all.addEventListener("click", () => selectWord(null, word));
  status.replaceChildren(text, all);
}

let announceTimer = null;
/** Tell screen reader users what changed out of sight (one polite live region). */
function announce(text) {
  const region = $("#announcer");
  region.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    region.textContent = text;
  }, 50);
}

async function copyText(text, button) {
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    // No clipboard API (a plain-HTTP address other than localhost): select and copy.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "sr-only";
    document.body.append(area);
    area.select();
    copied = document.execCommand("copy");
    area.remove();
    button.focus();
  }
  const label = button.textContent;
  button.textContent = copied ? "Copied" : "Copy failed";
  announce(copied ? `Copied: ${text}` : "The browser did not allow copying.");
  setTimeout(() => {
    button.textContent = label;
  }, 1500);
}

function exportResults(format) {
  const results = [...state.items.values()]
    .filter((item) => item.predictions)
    .map((item) => ({
      image: item.name,
      beam_size: item.params.beam_size,
      max_length: item.params.max_length,
      predictions: item.predictions,
    }));
  if (format === "json") {
    download("captions.json", toJSON(results, state.model), "application/json");
  } else {
    download("captions.csv", toCSV(results), "text/csv");
  }
  announce(`Downloaded ${results.length} result${results.length === 1 ? "" : "s"}.`);
}

// --- input: picker, drag and drop, paste -------------------------------------------------

function imagesOf(dataTransfer) {
  return [...(dataTransfer?.files ?? [])];
}

let pasted = 0;
function wireInput() {
  const input = $("#file-input");
  $("#pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = ""; // the same file can be picked again
  });

  let depth = 0; // dragenter/dragleave fire for every child element crossed
  const dropzone = $("#dropzone");
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer?.types.includes("Files")) return;
    depth += 1;
    dropzone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) dropzone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    depth = 0;
    dropzone.classList.remove("dragging");
    const files = imagesOf(event.dataTransfer);
    if (files.length === 0) return;
    event.preventDefault();
    addFiles(files);
  });

  document.addEventListener("paste", (event) => {
    const files = imagesOf(event.clipboardData).filter((file) => file.type.startsWith("image/"));
    if (files.length === 0) return; // text pasted into a field stays text
    event.preventDefault();
    addFiles(
      files.map((file) => {
        pasted += 1;
        const extension = file.type.split("/")[1]?.replace(/\W.*$/, "") || "png";
        return new File([file], `pasted-image-${pasted}.${extension}`, { type: file.type });
      }),
    );
  });

  $("#export-json").addEventListener("click", () => exportResults("json"));
  $("#export-csv").addEventListener("click", () => exportResults("csv"));
  $("#clear").addEventListener("click", clearAll);
}

wireInput();
loadLimits();
watchModel();
