// Sends the page's images a few at a time, and backs off when the server says it is busy.

/**
 * Runs jobs with at most `concurrency` in flight. A job that answers `{retryAfter: s}`
 * (the server said 503) goes back to the head of the line, and no job starts for `s`
 * seconds: one busy answer pauses the whole page, so it never hammers a full queue.
 */
export class Scheduler {
  #queue = [];
  #running = new Set();
  #pausedUntil = 0;
  #timer = null;

  /**
   * @param {(job: any) => Promise<{retryAfter: number} | undefined>} run  Never rejects.
   * @param {number} concurrency
   */
  constructor(run, concurrency) {
    this.run = run;
    this.concurrency = concurrency;
  }

  /** Queue a job (at the back). */
  add(job) {
    this.#queue.push(job);
    this.#pump();
  }

  /** Drop a job that has not started; one in flight is the caller's to abort. */
  remove(job) {
    const index = this.#queue.indexOf(job);
    if (index >= 0) this.#queue.splice(index, 1);
  }

  /** Drop every job that has not started. */
  clear() {
    this.#queue.length = 0;
  }

  setConcurrency(concurrency) {
    this.concurrency = concurrency;
    this.#pump();
  }

  #pump() {
    const wait = this.#pausedUntil - Date.now();
    if (wait > 0) {
      this.#timer ??= setTimeout(() => {
        this.#timer = null;
        this.#pump();
      }, wait);
      return;
    }
    while (this.#running.size < this.concurrency && this.#queue.length > 0) {
      const job = this.#queue.shift();
      this.#running.add(job);
      this.run(job).then((outcome) => {
        this.#running.delete(job);
        if (outcome?.retryAfter !== undefined) {
          const until = Date.now() + outcome.retryAfter * 1000;
          this.#pausedUntil = Math.max(this.#pausedUntil, until);
          this.#queue.unshift(job);
        }
        this.#pump();
      });
    }
  }
}
