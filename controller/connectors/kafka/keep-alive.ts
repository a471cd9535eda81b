/**
 * What a group member needs while it holds a batch: heartbeats while a slow call runs, the errors
 * that mean the member lost its assignment, an interruptible wait, and error summaries safe to log.
 */

const REBALANCE_ERRORS = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "NOT_COORDINATOR",
  "NOT_COORDINATOR_FOR_GROUP",
  "FENCED_INSTANCE_ID",
]);

/** Whether kafkajs reports that this member no longer owns its assignment as it stands. */
export function isRebalanceError(error: unknown): boolean {
  const type = (error as { type?: unknown } | null)?.type;
  return typeof type === "string" && REBALANCE_ERRORS.has(type);
}

/**
 * Heartbeats on a timer while a chunk is in the sink, so a slow sink does not cost the member its
 * place in the group. A heartbeat that reports a rebalance is kept for the caller to act on once the
 * chunk is committed; other heartbeat errors are left to the next heartbeat.
 */
export class BatchKeepAlive {
  rebalance: Error | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(heartbeat: () => Promise<void>, intervalMs: number) {
    this.#timer = setInterval(
      () => {
        heartbeat().catch((error: unknown) => {
          if (isRebalanceError(error) && this.rebalance === undefined) this.rebalance = error as Error;
        });
      },
      Math.max(100, Math.floor(intervalMs / 2)),
    );
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * What may be logged of an error: its name, message and Kafka error type. Not its other fields:
 * driver errors carry details such as the offending key's value (pg's `detail`).
 */
export function errorSummary(error: unknown): { name: string; message: string; type?: string } {
  if (!(error instanceof Error)) return { name: "Error", message: String(error) };
  const type = (error as { type?: unknown }).type;
  return { name: error.name, message: error.message, ...(typeof type === "string" ? { type } : {}) };
}
