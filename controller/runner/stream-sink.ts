/**
 * The write path of a realtime session: every chunk the Kafka source hands over goes either straight
 * into the target through a SlowCallBreaker, or into the job's buffer topic. Nothing is dropped: a
 * chunk is written, diverted, or refused (the source offers it again).
 *
 * Modes:
 * - Direct: each chunk is one breaker-guarded upsert. A chunk the breaker refuses goes to the buffer;
 *   a chunk whose write fails goes to the buffer when the failure opened the breaker, and is refused
 *   otherwise (the source retries it with backoff).
 * - Diverting: entered as the breaker opens (or at start, when the buffer still holds rows). Every
 *   chunk goes to the buffer while the breaker is not closed. Once it has closed, the next chunk
 *   waits until the buffer has drained (a Compensation run replayed it: pendingCount() == 0) and is
 *   then written directly; the session is Direct again. Waiting rather than diverting on is what lets
 *   a replay finish under a steady stream: the buffer stops growing once the target is healthy.
 *   With no chunk to wait, a supervisor switches back as soon as it sees the buffer drained.
 *
 * Per key, an older value never overwrites a newer one. The source hands over each partition's
 * chunks in partition order, one at a time (chunks of different partitions may be in write() at
 * once); producers key records by row key, so a key's values come in order, all in one partition.
 * Direct writes of a partition are in that order; once a chunk does not go direct, every later chunk
 * (of every partition) goes to the buffer, in that order (the buffer keeps per-key order,
 * ../connectors/kafka/buffer.ts); and no chunk is written directly again until every diverted row
 * was replayed, judged by a pending count read while no divert was in flight and after the last one
 * completed. A chunk of another partition still in flight when the mode changed cannot break this:
 * it holds none of the keys whose later values it could overtake. That holds without a version
 * column, provided one session writes at a time and Compensation runs only replay what a session
 * diverted. The target's version guard
 * (PostgresTarget versionColumn) covers what ordering cannot: a chunk the source re-delivers after a
 * crash (at least once) and a hand-over between two sessions. Without a version column such a
 * re-delivery re-applies the chunk whose commit did not land, so a key may briefly show that chunk's
 * value again until the records after it are re-read.
 *
 * Rows the target refuses: a chunk whose write fails with a data error (SQLSTATE class 22 or 23: a
 * value out of range, a string too long, a CHECK, a NOT NULL; ../connectors/postgres/row-errors.ts)
 * would fail the same way on every retry and stop its partition. The target's salvage() splits it
 * until the refused rows are found and writes the rest, in order; write() resolves with the refused
 * rows, which the caller sets aside (the dead-letter topic) before the chunk counts as taken. For the
 * breaker that call is a success lasting until the target answered with the data error: the target
 * did its work, the rows were wrong, and neither a refusal nor the time the split takes says anything
 * about the target's health. An error the split meets that is not a data error (the connection lost
 * halfway) is the call's failure, recorded and handled as any other (divert or retry the chunk).
 *
 * Half-open probing: while Diverting, row writes never go to the target — a trial write of real rows
 * would overtake the older values waiting in the buffer. Instead the breaker's trial calls are
 * probes: once the open-state wait has elapsed, the supervisor asks for permission (moving the breaker
 * to HALF_OPEN) and runs probes back to back until the trial calls decide CLOSED or OPEN again. A
 * probe takes the target's write path and writes nothing (the session's probe is the job's upsert
 * with no rows), so its duration and errors tell what a write would meet.
 */

import { sleep } from "../connectors/kafka/keep-alive.ts";
import type { KeyedRow, SinkOutcome } from "../connectors/kafka/source.ts";
import { isRowDataError } from "../connectors/postgres/row-errors.ts";
import type { RefusedRow } from "../connectors/postgres/target.ts";
import { type BreakerClock, type SlowCallBreaker, systemClock } from "../resilience/slow-call-breaker.ts";

/**
 * What the sink moves: a chunk of rows, in whatever form the session hands it over (the realtime
 * session's SourceChunk, whose rows may stay undecoded until needed); the sink only counts it.
 */
export interface SinkChunk {
  readonly length: number;
}

export interface SinkTarget<C extends SinkChunk = readonly KeyedRow[]> {
  /** Idempotent upserts by key; resolves with the rows the target inserted or updated. */
  upsert(rows: C): Promise<{ readonly written: number }>;
  /** A trial call that takes the target's write path and writes nothing. */
  probe(): Promise<void>;
  /**
   * The rows of a chunk whose upsert failed with `error`, a data error: written but for the rows the
   * target refuses, which come back by their index in the chunk (PostgresTarget upsertSettingAside).
   * Without it a data error is a failure like any other.
   */
  salvage?(rows: C, error: unknown): Promise<SalvagedChunk>;
}

export interface SalvagedChunk {
  readonly written: number;
  readonly refused: readonly RefusedRow[];
}

export interface SinkBuffer<C extends SinkChunk = readonly KeyedRow[]> {
  /**
   * Resolves once the buffer holds every row, in order, except rows it could not hold and the
   * caller set aside elsewhere (the dead-letter path): `buffered` then says how many it holds.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a divert resolving with nothing buffered every row.
  divert(rows: C): Promise<{ readonly buffered: number } | void>;
  /** Rows diverted and not yet replayed. */
  pendingCount(): Promise<number>;
}

export type WriteMode = "Direct" | "Diverting";

export interface SinkResult {
  readonly outcome: SinkOutcome;
  /** Rows the target inserted or updated (0 when diverted). */
  readonly written: number;
  /** Rows of the chunk the target refused (SinkTarget.salvage); the caller sets them aside. */
  readonly refused?: readonly RefusedRow[];
}

/** Thrown by write() when the session stops while a chunk waits for the buffer to drain. */
export class SinkStopped extends Error {
  override readonly name = "SinkStopped";
}

export interface DivertingSinkOptions<C extends SinkChunk = readonly KeyedRow[]> {
  readonly breaker: SlowCallBreaker;
  readonly target: SinkTarget<C>;
  readonly buffer: SinkBuffer<C>;
  /** The breaker's clock: call durations and the open-state wait are measured on it. */
  readonly clock?: BreakerClock;
  /** How often the supervisor probes, reads the buffer's pending count, and a waiting chunk looks again; default 1000 ms. */
  readonly pollIntervalMs?: number;
  /** A probe that takes longer is recorded as a failed (and slow) call; default 10 s. */
  readonly probeTimeoutMs?: number;
  /** Called when the mode or the pending count changed. */
  readonly onChange?: () => void;
  /** Called with errors the supervisor survives (a failed pending count); never with row data. */
  readonly onError?: (what: string, error: unknown) => void;
  /** Whether a write error is about the rows (salvaged) rather than the target; default SQLSTATE class 22 or 23. */
  readonly isRowError?: (error: unknown) => boolean;
}

export class DivertingSink<C extends SinkChunk = readonly KeyedRow[]> {
  readonly #breaker: SlowCallBreaker;
  readonly #target: SinkTarget<C>;
  readonly #buffer: SinkBuffer<C>;
  readonly #clock: BreakerClock;
  readonly #pollMs: number;
  readonly #probeTimeoutMs: number;
  readonly #onChange: () => void;
  readonly #onError: (what: string, error: unknown) => void;
  readonly #isRowError: (error: unknown) => boolean;
  readonly #unsubscribe: () => void;
  #mode: WriteMode = "Direct";
  /** Records waiting in the buffer, as last counted (plus what this sink diverted since). */
  #pending = 0;
  #nextProbeAt = Number.NEGATIVE_INFINITY;
  /** write() calls in progress (at most one per source partition). */
  #writing = 0;
  /** Diverts in progress: a pending count read meanwhile may miss their rows. */
  #diverting = 0;
  /** Counts completed diverts, so a pending count can be told to have been read after the last one. */
  #diverts = 0;
  #rowsDiverted = 0;

  constructor(options: DivertingSinkOptions<C>) {
    this.#breaker = options.breaker;
    this.#target = options.target;
    this.#buffer = options.buffer;
    this.#clock = options.clock ?? systemClock;
    this.#pollMs = options.pollIntervalMs ?? 1000;
    this.#probeTimeoutMs = options.probeTimeoutMs ?? 10_000;
    this.#onChange = options.onChange ?? (() => {});
    this.#onError = options.onError ?? (() => {});
    this.#isRowError = options.isRowError ?? isRowDataError;
    this.#unsubscribe = this.#breaker.onStateTransition((transition) => {
      if (transition.to !== "OPEN") return;
      this.#nextProbeAt = this.#clock.now() + this.#breaker.config.waitDurationInOpenStateMs;
      // From here on nothing goes direct until the buffer has drained.
      this.#setMode("Diverting");
    });
  }

  get mode(): WriteMode {
    return this.#mode;
  }

  /** Records waiting in the buffer topic, as last counted (plus rows diverted since). */
  get pending(): number {
    return this.#pending;
  }

  /** Rows this sink diverted to the buffer. */
  get rowsDiverted(): number {
    return this.#rowsDiverted;
  }

  /** Reads the buffer's pending count: a buffer that still holds rows starts the sink Diverting. */
  async prepare(): Promise<void> {
    const pending = await this.#buffer.pendingCount();
    this.#pending = pending;
    if (pending > 0) this.#setMode("Diverting");
    else this.#onChange();
  }

  /**
   * Takes one chunk, in order. Resolves once it is written or diverted; rejects when it was neither
   * (the caller offers it again), or with SinkStopped when the signal fires while it waits for the
   * buffer to drain. Calls may overlap only for chunks of different source partitions.
   */
  async write(rows: C, signal: AbortSignal): Promise<SinkResult> {
    this.#writing++;
    try {
      if (this.#mode === "Diverting") {
        if (this.#breaker.state !== "CLOSED") return await this.#divert(rows);
        await this.#awaitDrained(signal);
        this.#setMode("Direct");
      }
      return await this.#writeDirect(rows);
    } finally {
      this.#writing--;
    }
  }

  /**
   * Until the signal fires: probes the target while the breaker is not closed and its wait has
   * elapsed, keeps the pending count fresh while Diverting, and switches back to Direct when the
   * breaker is closed, the buffer has drained and no chunk is in hand.
   */
  async supervise(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await sleep(this.#pollMs, signal);
      if (signal.aborted || this.#mode === "Direct") continue;
      try {
        await this.#probeIfDue(signal);
        if (this.#writing > 0) continue;
        const diverts = this.#diverts;
        const pending = await this.#buffer.pendingCount();
        // A divert that completed meanwhile may be missing from the count: look again next time.
        if (this.#writing > 0 || diverts !== this.#diverts || this.mode === "Direct") continue;
        this.#setPending(pending);
        if (pending === 0 && this.#breaker.state === "CLOSED") this.#setMode("Direct");
      } catch (error) {
        this.#onError("supervise", error);
      }
    }
  }

  /** Stops listening to the breaker. */
  close(): void {
    this.#unsubscribe();
  }

  async #writeDirect(rows: C): Promise<SinkResult> {
    if (!this.#breaker.tryAcquirePermission()) {
      this.#setMode("Diverting");
      return this.#divert(rows);
    }
    const started = this.#clock.now();
    let written: number;
    try {
      written = (await this.#target.upsert(rows)).written;
    } catch (upsertError) {
      let error = upsertError;
      if (this.#target.salvage && this.#isRowError(error)) {
        const answeredMs = this.#clock.now() - started;
        try {
          const salvaged = await this.#target.salvage(rows, error);
          this.#breaker.onResult(answeredMs);
          return { outcome: "written", written: salvaged.written, refused: salvaged.refused };
        } catch (salvageError) {
          error = salvageError;
        }
      }
      this.#breaker.onResult(this.#clock.now() - started, error);
      // The failure opened the breaker: this chunk is the first of those the buffer keeps.
      if (this.#mode === "Diverting") return this.#divert(rows);
      throw error;
    }
    this.#breaker.onResult(this.#clock.now() - started);
    return { outcome: "written", written };
  }

  async #divert(rows: C): Promise<SinkResult> {
    this.#diverting++;
    let buffered = rows.length;
    try {
      buffered = (await this.#buffer.divert(rows))?.buffered ?? rows.length;
    } finally {
      this.#diverting--;
    }
    this.#diverts++;
    // Another partition's chunk may have switched to Direct while this one was diverting: the rows
    // just buffered must be replayed before this partition's next chunk may go direct.
    if (this.#mode === "Direct") this.#setMode("Diverting");
    this.#rowsDiverted += buffered;
    this.#setPending(this.#pending + buffered);
    return { outcome: "diverted", written: 0 };
  }

  /**
   * Waits until the buffer has drained: a pending count of zero, read while no divert was in flight
   * and none completed (another partition's chunk may be diverting meanwhile).
   */
  async #awaitDrained(signal: AbortSignal): Promise<void> {
    for (;;) {
      if (signal.aborted) throw new SinkStopped("the session stopped while waiting for the buffer to drain");
      const diverts = this.#diverts;
      const quiet = this.#diverting === 0;
      const pending = await this.#buffer.pendingCount();
      if (quiet && this.#diverting === 0 && diverts === this.#diverts) {
        this.#setPending(pending);
        if (pending === 0) return;
      }
      await sleep(this.#pollMs, signal);
    }
  }

  async #probeIfDue(signal: AbortSignal): Promise<void> {
    if (this.#breaker.state === "OPEN" && this.#clock.now() < this.#nextProbeAt) return;
    // OPEN past its wait moves to HALF_OPEN on this request; probes run until the trials decide.
    while (!signal.aborted && this.#breaker.state !== "CLOSED" && this.#breaker.tryAcquirePermission()) {
      const started = this.#clock.now();
      try {
        await withTimeout(this.#target.probe(), this.#probeTimeoutMs);
      } catch (error) {
        this.#breaker.onResult(this.#clock.now() - started, error);
        continue;
      }
      this.#breaker.onResult(this.#clock.now() - started);
    }
  }

  #setMode(mode: WriteMode): void {
    if (mode === "Direct") this.#pending = 0;
    if (this.#mode === mode) return;
    this.#mode = mode;
    this.#onChange();
  }

  #setPending(pending: number): void {
    if (pending === this.#pending) return;
    this.#pending = pending;
    this.#onChange();
  }
}

class ProbeTimeout extends Error {
  override readonly name = "ProbeTimeout";
}

/** The probe's outcome, or a ProbeTimeout after ms; a probe writes nothing, so abandoning it is safe. */
function withTimeout(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ProbeTimeout(`the probe took longer than ${ms} ms`)), ms);
  });
  work.catch(() => {});
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
