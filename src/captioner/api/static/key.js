// The prompt for an API key, shown when the server answers 401: a modal dialog with one
// password field. It only asks; api.js decides when, and keeps the key.

export class KeyPrompt {
  /** @type {((key: string | null) => void) | null} */
  #resolve = null;

  /** @param {HTMLDialogElement} dialog */
  constructor(dialog) {
    this.dialog = dialog;
    this.input = dialog.querySelector("#key-input");
    this.message = dialog.querySelector("#key-message");
    dialog.querySelector("#key-cancel").addEventListener("click", () => dialog.close());
    // Submitting the form closes the dialog with the submit button's value; Escape and
    // Cancel close it without one.
    dialog.addEventListener("close", () => {
      const key = dialog.returnValue === "use" ? this.input.value.trim() : "";
      this.input.value = "";
      this.#resolve?.(key || null);
      this.#resolve = null;
    });
  }

  /**
   * Show the prompt and wait for the person's answer.
   * @param {boolean} wrongKey  The server refused the key given before.
   * @returns {Promise<string | null>}  The key typed, or null if the prompt was closed.
   */
  ask(wrongKey) {
    this.dialog.dataset.wrong = String(wrongKey);
    this.message.textContent = wrongKey
      ? "The server did not accept that key. Check it and enter it again."
      : "This server asks for an API key before it captions images. Enter the key you " +
        "were given.";
    this.dialog.returnValue = "";
    this.dialog.showModal();
    this.input.focus();
    return new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }
}
