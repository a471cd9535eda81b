/** Row counts of a run, as SyncRun status reports them. */
export interface RunCounts {
  /** Rows (or file lines) read from the source, rejected ones included. */
  readonly rowsRead: number;
  /** Rows the target inserted or updated. */
  readonly rowsWritten: number;
  /** Rows or lines that could not be parsed or coerced, set aside and reported. */
  readonly rowsRejected: number;
}

export const ZERO_COUNTS: RunCounts = { rowsRead: 0, rowsWritten: 0, rowsRejected: 0 };

/**
 * Accumulates a run's counts and passes them to a listener at most once per interval, so a status
 * writer is not flooded by a fast copy. A listener that throws is not allowed to stop the run.
 */
export class ProgressMeter {
  #counts: RunCounts = ZERO_COUNTS;
  #lastEmit = Number.NEGATIVE_INFINITY;
  #dirty = false;
  readonly #listener: ((counts: RunCounts) => void) | undefined;
  readonly #intervalMs: number;
  readonly #now: () => number;

  constructor(
    listener: ((counts: RunCounts) => void) | undefined,
    options: { intervalMs?: number; now?: () => number } = {},
  ) {
    this.#listener = listener;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#now = options.now ?? (() => performance.now());
  }

  get counts(): RunCounts {
    return this.#counts;
  }

  /** Adds to the counts; reports them if the interval has passed since the last report. */
  add(delta: Partial<RunCounts>): void {
    this.#counts = {
      rowsRead: this.#counts.rowsRead + (delta.rowsRead ?? 0),
      rowsWritten: this.#counts.rowsWritten + (delta.rowsWritten ?? 0),
      rowsRejected: this.#counts.rowsRejected + (delta.rowsRejected ?? 0),
    };
    this.#dirty = true;
    if (this.#now() - this.#lastEmit >= this.#intervalMs) this.#emit();
  }

  /** Reports counts not yet reported, whatever the interval; the end of a run calls it. */
  flush(): void {
    if (this.#dirty) this.#emit();
  }

  #emit(): void {
    this.#lastEmit = this.#now();
    this.#dirty = false;
    try {
      this.#listener?.(this.#counts);
    } catch {
      // Progress is advisory; the final result carries the counts again.
    }
  }
}
