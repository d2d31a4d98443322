// The gallery: one card per image, showing its state and its best caption.
import { formatPercent, sentence } from "./format.js";

/**
 * @typedef {object} Item  One image the user added.
 * @property {number} id
 * @property {string} name  The file name shown and exported.
 * @property {File} file
 * @property {string | null} url  Object URL of the file, for thumbnails (null: not an image).
 * @property {"waiting"|"queued"|"uploading"|"captioning"|"done"|"error"} state
 * @property {number} progress  Upload progress, 0 to 1.
 * @property {string} message  Why it waits, or what went wrong.
 * @property {boolean} retryable  Whether "Try again" can help after an error.
 * @property {boolean} [unreadable]  The server could not decode the file.
 * @property {{caption: string, probability: number, logprob: number}[] | null} predictions
 * @property {{beam_size: number, max_length: number}} params
 */

/** What a card says under its caption, by state. */
export function stateText(item) {
  switch (item.state) {
    case "waiting":
      return "Waiting to be sent";
    case "uploading":
      return `Uploading… ${Math.round(item.progress * 100)} %`;
    case "captioning":
      return item.predictions ? "Captioning again…" : "Captioning…";
    case "done":
      return `Probability ${formatPercent(item.predictions[0].probability)}`;
    default:
      return item.message;
  }
}

/** Whether the item is on its way to a caption (so it cannot be re-run yet). */
export function isPending(item) {
  return ["waiting", "queued", "uploading", "captioning"].includes(item.state);
}

export class Gallery {
  #cards = new Map();

  /**
   * @param {HTMLUListElement} list
   * @param {HTMLTemplateElement} template
   * @param {Record<string, (item: Item, button: HTMLButtonElement) => void>} actions
   *   Handlers by the `data-action` of a card's buttons: copy, details, retry, remove.
   */
  constructor(list, template, actions) {
    this.list = list;
    this.template = template;
    this.actions = actions;
  }

  add(item) {
    const card = this.template.content.firstElementChild.cloneNode(true);
    card.dataset.id = String(item.id);
    const image = card.querySelector("img");
    if (item.url) {
      image.src = item.url;
      image.addEventListener("error", () => card.classList.add("no-image"), { once: true });
    } else {
      card.classList.add("no-image");
    }
    card.querySelector(".thumb").addEventListener("click", () => {
      if (item.url) this.actions.details(item, card.querySelector('[data-action="details"]'));
    });
    for (const button of card.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => this.actions[button.dataset.action](item, button));
    }
    this.#cards.set(item.id, card);
    this.list.append(card);
    this.update(item);
  }

  update(item) {
    const card = this.#cards.get(item.id);
    if (!card) return;
    const best = item.predictions?.[0] ?? null;
    card.dataset.state = item.state;
    if (item.unreadable) card.classList.add("no-image");
    card.querySelector(".name").textContent = item.name;
    card.querySelector(".name").title = item.name;
    card.querySelector(".caption").textContent = best ? sentence(best.caption) : "";
    card.querySelector("img").alt = best ? sentence(best.caption) : `${item.name}, no caption yet`;
    card.querySelector(".state-text").textContent = stateText(item);

    const progress = card.querySelector("progress");
    progress.hidden = !["uploading", "captioning", "queued"].includes(item.state);
    progress.setAttribute("aria-label", `Progress of ${item.name}`);
    if (item.state === "uploading") progress.value = Math.round(item.progress * 100);
    else progress.removeAttribute("value"); // indeterminate: waiting for the server

    const button = (action) => card.querySelector(`[data-action="${action}"]`);
    button("copy").hidden = !best;
    button("copy").setAttribute("aria-label", `Copy caption of ${item.name}`);
    button("details").hidden = !item.url || (!best && item.state === "error" && !item.retryable);
    button("details").setAttribute("aria-label", `All captions of ${item.name}`);
    button("retry").hidden = !(item.state === "error" && item.retryable);
    button("retry").setAttribute("aria-label", `Try again: ${item.name}`);
    button("remove").setAttribute("aria-label", `Remove ${item.name}`);
    button("remove").title = "Remove";
  }

  remove(item) {
    this.#cards.get(item.id)?.remove();
    this.#cards.delete(item.id);
  }

  clear() {
    this.list.replaceChildren();
    this.#cards.clear();
  }

  /** The first button of an item's card, to move focus to. */
  focusTarget(item) {
    return [...(this.#cards.get(item.id)?.querySelectorAll("button") ?? [])].find(
      (button) => !button.hidden,
    );
  }

  /** Show only the items `keep` accepts (all when `keep` is null); returns how many show. */
  filter(items, keep) {
    let shown = 0;
    for (const item of items) {
      const card = this.#cards.get(item.id);
      if (!card) continue;
      card.hidden = keep !== null && !keep(item);
      if (!card.hidden) shown += 1;
    }
    return shown;
  }
}
