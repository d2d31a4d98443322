// The detail view: every caption of one image with its probability, and a re-run.
import { formatPercent, sentence } from "./format.js";
import { isPending, stateText } from "./gallery.js";

export class DetailView {
  #item = null;
  #opener = null;
  #rows = null; // the predictions the caption list shows

  /**
   * @param {HTMLDialogElement} dialog
   * @param {object} actions
   * @param {(text: string, button: HTMLButtonElement) => void} actions.copy
   * @param {(item: object, params: {beam_size: number, max_length: number}) => void} actions.rerun
   */
  constructor(dialog, actions) {
    this.dialog = dialog;
    this.actions = actions;
    this.form = dialog.querySelector("#rerun");
    this.beamSize = dialog.querySelector("#beam-size");
    this.maxLength = dialog.querySelector("#max-length");
    dialog.querySelector("#detail-close").addEventListener("click", () => this.close());
    // A click on the backdrop (outside the dialog's box) closes it too.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) this.close();
    });
    dialog.addEventListener("close", () => {
      this.#item = null;
      this.#opener?.focus();
      this.#opener = null;
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      // Not disabled while a caption is on its way: a disabled button would lose the focus.
      if (!this.#item || isPending(this.#item) || !this.form.reportValidity()) return;
      this.actions.rerun(this.#item, {
        beam_size: this.beamSize.valueAsNumber,
        max_length: this.maxLength.valueAsNumber,
      });
    });
  }

  /** Bounds of the re-run fields, from the server's limits. */
  setLimits(limits) {
    this.beamSize.max = String(limits.max_beam_size);
    this.maxLength.min = String(limits.min_max_length);
    this.maxLength.max = String(limits.max_max_length);
    this.dialog.querySelector("#beam-size-hint").textContent =
      `Beam size (1 to ${limits.max_beam_size}): how many candidate captions the search ` +
      "keeps, and the most it returns.";
    this.dialog.querySelector("#max-length-hint").textContent =
      `Max length (${limits.min_max_length} to ${limits.max_max_length}): the longest ` +
      "caption in tokens, " +
      "counting its start and end: at most max length - 2 words.";
  }

  open(item, opener) {
    this.#item = item;
    this.#opener = opener;
    this.#rows = null;
    this.beamSize.value = String(item.params.beam_size);
    this.maxLength.value = String(item.params.max_length);
    this.render(item);
    if (!this.dialog.open) this.dialog.showModal();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  isShowing(item) {
    return this.dialog.open && this.#item?.id === item.id;
  }

  render(item) {
    if (this.#item?.id !== item.id) return;
    this.dialog.querySelector("#detail-title").textContent = item.name;
    const image = this.dialog.querySelector("#detail-image");
    image.src = item.url ?? "";
    image.alt = item.predictions ? sentence(item.predictions[0].caption) : item.name;
    const stateLine = this.dialog.querySelector("#detail-state");
    stateLine.textContent = item.state === "done" ? this.#settingsText(item) : stateText(item);
    stateLine.dataset.state = item.state;
    // Rebuilt only for new captions, so progress updates keep the focus where it is.
    if (this.#rows !== item.predictions) {
      this.#rows = item.predictions;
      this.dialog
        .querySelector("#detail-captions")
        .replaceChildren(
          ...(item.predictions ?? []).map((prediction, rank) => this.#row(prediction, rank)),
        );
    }
  }

  #settingsText(item) {
    const count = item.predictions.length;
    return (
      `${count} caption${count === 1 ? "" : "s"} from beam size ${item.params.beam_size}, ` +
      `max length ${item.params.max_length}.`
    );
  }

  #row(prediction, rank) {
    const row = document.createElement("li");
    row.className = "caption-row";
    const text = document.createElement("p");
    text.className = "caption-text";
    text.textContent = sentence(prediction.caption);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    // CSSOM, not a style attribute: the Content-Security-Policy forbids inline styles.
    fill.style.setProperty("--share", String(Math.min(1, Math.max(0, prediction.probability))));
    bar.append(fill);
    const probability = document.createElement("p");
    probability.className = "probability";
    probability.textContent = `Probability ${formatPercent(prediction.probability)}`;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "button small";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", `Copy caption ${rank + 1}`);
    copy.addEventListener("click", () => this.actions.copy(text.textContent, copy));
    row.append(text, bar, probability, copy);
    return row;
  }
}
