import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import {
  CoordinationV1Api,
  type KubeConfig,
  type KubernetesObject,
  type V1Lease,
  type V1LeaseSpec,
  V1MicroTime,
} from "@kubernetes/client-node";
import { Informer } from "./informer.ts";
import { abortable, isConflict, isNotFound, type ResourceType } from "./resource.ts";

/** The fields of a Lease that leader election reads (times as the API server sends them). */
export interface LeaseRecord {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string | Date;
  renewTime?: string | Date;
  leaseTransitions?: number;
}

/**
 * Whether another candidate holds the lease and it has not expired. As in client-go, expiry is
 * judged on the local clock only: the lease is expired when its record has not changed for its
 * duration since this candidate first observed that record. Comparing the holder's renewTime with
 * the local wall clock would trust two clocks to agree.
 */
export function heldByOther(
  record: LeaseRecord,
  identity: string,
  observedAtMs: number,
  nowMs: number,
  defaultDurationSeconds: number,
): boolean {
  const holder = record.holderIdentity ?? "";
  if (holder === "" || holder === identity) return false;
  const durationMs = (record.leaseDurationSeconds ?? defaultDurationSeconds) * 1000;
  return observedAtMs + durationMs > nowMs;
}

/**
 * The spec that takes or renews the lease for `identity`: a renewal keeps acquireTime and the
 * transition count, a takeover restarts acquireTime and counts one more transition.
 */
export function claimedLease(
  current: LeaseRecord | undefined,
  identity: string,
  now: Date,
  leaseDurationSeconds: number,
): V1LeaseSpec {
  const renewing = current?.holderIdentity === identity && current.acquireTime !== undefined;
  const at = new V1MicroTime(now.getTime());
  return {
    holderIdentity: identity,
    leaseDurationSeconds,
    acquireTime: renewing ? microTime(current.acquireTime!) : at,
    renewTime: at,
    leaseTransitions: renewing ? (current.leaseTransitions ?? 0) : (current?.leaseTransitions ?? -1) + 1,
  };
}

/**
 * The spec a leader writes when it steps down on purpose (client-go's release): no holder and a
 * one-second duration, so that the next candidate takes over at its next try.
 */
export function releasedLease(current: LeaseRecord | undefined, now: Date): V1LeaseSpec {
  const at = new V1MicroTime(now.getTime());
  return {
    holderIdentity: "",
    leaseDurationSeconds: 1,
    acquireTime: at,
    renewTime: at,
    leaseTransitions: current?.leaseTransitions ?? 0,
  };
}

/**
 * Lease times are MicroTime ("…05.123456Z"); client-node 2.x hands them back as strings and only
 * writes the microsecond form for V1MicroTime instances (a plain Date is rejected by the server).
 */
function microTime(value: string | Date): V1MicroTime {
  return new V1MicroTime(value instanceof Date ? value.getTime() : Date.parse(value));
}

/** A record's identity: two reads of an unchanged Lease give the same key (times compared to the millisecond). */
function recordKey(record: LeaseRecord): string {
  const time = (t: string | Date | undefined) => (t === undefined ? null : new Date(t).getTime());
  return JSON.stringify([
    record.holderIdentity ?? "",
    record.leaseDurationSeconds ?? null,
    time(record.acquireTime),
    time(record.renewTime),
    record.leaseTransitions ?? 0,
  ]);
}

/**
 * The records of one Lease a candidate has seen, each with the local time it was first seen, and
 * the one taken as current. The watch and the candidate's own reads both report records, and a read
 * that raced the watch can return a record older than one the watch already delivered; such a
 * record keeps its first sighting and does not become current again, so a late duplicate neither
 * restarts the expiry clock nor announces a past holder. Only equality of records is used, never an
 * order of resourceVersions, which the API defines as opaque.
 */
export class LeaseSightings {
  readonly #firstSeen = new Map<string, number>();
  readonly #memory: number;
  #current: LeaseRecord | undefined;
  #currentSince = Number.NEGATIVE_INFINITY;

  /** `memory`: how many past records are remembered; a stale record older than these counts as new (later expiry, so safe). */
  constructor(memory = 16) {
    this.#memory = memory;
  }

  /** The current record; undefined before any sighting or after the Lease was seen deleted. */
  get current(): LeaseRecord | undefined {
    return this.#current;
  }

  /** When the current record (or the deletion) was first seen. */
  get currentSince(): number {
    return this.#currentSince;
  }

  /** Records a sighting at `nowMs`; `fresh` when the record was never seen before and so is now current. */
  see(record: LeaseRecord, nowMs: number): { firstSeenMs: number; fresh: boolean } {
    const key = recordKey(record);
    const seen = this.#firstSeen.get(key);
    if (seen !== undefined) return { firstSeenMs: seen, fresh: false };
    this.#firstSeen.set(key, nowMs);
    // A Map iterates in insertion order: the first key is the oldest sighting.
    if (this.#firstSeen.size > this.#memory) this.#firstSeen.delete(this.#firstSeen.keys().next().value!);
    this.#current = record;
    this.#currentSince = nowMs;
    return { firstSeenMs: nowMs, fresh: true };
  }

  /** The Lease was seen deleted at `nowMs`. */
  gone(nowMs: number): void {
    this.#current = undefined;
    this.#currentSince = nowMs;
  }
}

/**
 * When a candidate should next try to acquire the lease: at once when the current record is free
 * (no holder, or this candidate) or the Lease is gone, at the instant it expires on the local clock
 * when another holds it, and never later than the next poll. A due time at or before the start of
 * the latest attempt was covered by that attempt, so only the poll is left: a failing call cannot
 * turn into a loop of immediate retries.
 */
export function nextAttemptAt(input: {
  /** The current record; undefined when the Lease is gone or not seen yet. */
  record: LeaseRecord | undefined;
  /** When that record (or the deletion) was first seen, on the local monotonic clock. */
  observedAtMs: number;
  identity: string;
  defaultDurationSeconds: number;
  /** When the latest attempt started (-Infinity before the first). */
  lastAttemptMs: number;
  /** When the fallback poll is due. */
  nextPollMs: number;
}): number {
  const { record, observedAtMs, identity } = input;
  const holder = record?.holderIdentity ?? "";
  const due =
    holder === "" || holder === identity
      ? observedAtMs
      : observedAtMs + (record?.leaseDurationSeconds ?? input.defaultDurationSeconds) * 1000;
  return due > input.lastAttemptMs ? Math.min(due, input.nextPollMs) : input.nextPollMs;
}

/** The raw Lease objects the watch delivers (times as strings). */
type LeaseObject = KubernetesObject & { spec?: LeaseRecord };

const LEASES: ResourceType = {
  group: "coordination.k8s.io",
  version: "v1",
  plural: "leases",
  namespaced: true,
};

export interface LeaderElectorOptions {
  kubeConfig: KubeConfig;
  /** The Lease object: coordination.k8s.io/v1 in this namespace, with this name. */
  namespace: string;
  name: string;
  /** Unique per candidate. Default: hostname, pid and a random suffix. */
  identity?: string;
  /** How long a lease holds without renewal before others may take it. Default 15 s. */
  leaseDurationMs?: number;
  /** How long the leader keeps trying to renew before it steps down. Default 10 s. */
  renewDeadlineMs?: number;
  /** Pause between attempts to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  /** Whether stop() hands the lease over at once (empty holder) instead of letting it expire. Default true. */
  releaseOnStop?: boolean;
  /**
   * Called when this candidate becomes leader. `signal` aborts when leadership ends; the work it
   * starts must stop then, because another candidate may already lead.
   */
  onStartedLeading(signal: AbortSignal): void | Promise<void>;
  /** Called once leadership has ended (after the lease was released, if it is). */
  onStoppedLeading?(): void;
  /** Called when the observed holder changes to a non-empty identity (this one included). */
  onNewLeader?(identity: string): void;
  /** Failed Lease calls and failures of the Lease watch, for logs; election carries on. */
  onError?(error: unknown): void;
}

/**
 * Lease-based leader election, after client-go's leaderelection package: a candidate acquires the
 * Lease when it is free or expired, the leader renews it every retryPeriod and steps down when no
 * renewal has succeeded for renewDeadline. Updates carry the resourceVersion that was read, so
 * of two candidates racing for one Lease exactly one wins; the other gets 409 Conflict.
 *
 * Unlike client-go, a candidate also watches the Lease. Expiry is still judged on the local clock
 * from when the candidate first saw the record, but the watch makes that sighting milliseconds
 * after the write instead of up to a retryPeriod later, and the next attempt is timed for the
 * instant of expiry (or made at once when the lease is released) instead of the next poll. So a
 * crashed leader is replaced within leaseDuration of its last renewal, plus the calls. The poll
 * every retryPeriod stays, so a watch that breaks or stalls only falls back to client-go's timing.
 *
 * run() resolves when leadership is lost or stop() is called. A process that lost leadership
 * usually exits (as controller-runtime does); run() may also simply be called again.
 */
export class LeaderElector {
  readonly identity: string;
  readonly #options: LeaderElectorOptions;
  readonly #api: CoordinationV1Api;
  readonly #leaseDurationMs: number;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  #stopped = new AbortController();
  #running: Promise<void> | undefined;
  #leading = false;
  #sightings = new LeaseSightings();
  /** The Lease as last read or written, for its resourceVersion. */
  #lease: V1Lease | undefined;
  #leader: string | undefined;
  /** Ends the campaign's current pause early: a sighting may have moved the next attempt. */
  #wake: (() => void) | undefined;

  constructor(options: LeaderElectorOptions) {
    this.#options = options;
    this.identity = options.identity ?? `${hostname()}_${process.pid}_${randomBytes(3).toString("hex")}`;
    this.#leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryPeriodMs = options.retryPeriodMs ?? 2_000;
    if (this.#leaseDurationMs <= this.#renewDeadlineMs) {
      throw new Error("leaseDuration must be longer than renewDeadline");
    }
    if (this.#renewDeadlineMs <= this.#retryPeriodMs * 1.2) {
      throw new Error("renewDeadline must be longer than 1.2 × retryPeriod");
    }
    this.#api = options.kubeConfig.makeApiClient(CoordinationV1Api);
  }

  isLeader(): boolean {
    return this.#leading;
  }

  /** The holder this candidate last observed (undefined if none). */
  leader(): string | undefined {
    return this.#leader;
  }

  /** Campaigns, then leads until leadership is lost or stop() is called. */
  run(): Promise<void> {
    if (this.#running) throw new Error("leader election is already running");
    if (this.#stopped.signal.aborted) this.#stopped = new AbortController();
    this.#running = this.#campaign().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Ends the campaign or leadership; releases the lease first unless releaseOnStop is false. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    await this.#running;
  }

  async #campaign(): Promise<void> {
    const stopped = this.#stopped.signal;
    // A new campaign starts from nothing: records seen in an earlier one say nothing about when.
    this.#sightings = new LeaseSightings();
    const watch = this.#watchLease();
    await this.#acquire();
    // A leader learns the Lease from its own writes; the watch would only hold a connection open.
    // It closes in the background, and run() resolves only once it has.
    const watchClosed = watch.stop();
    try {
      if (stopped.aborted) {
        // stop() may have come while an attempt that won the lease was in flight.
        if (this.#options.releaseOnStop ?? true) await this.#release();
        return;
      }
      await this.#lead();
    } finally {
      await watchClosed;
    }
  }

  /** Tries until this candidate holds the lease or stop() is called. */
  async #acquire(): Promise<void> {
    const stopped = this.#stopped.signal;
    const durationSeconds = Math.ceil(this.#leaseDurationMs / 1000);
    let lastAttemptMs = Number.NEGATIVE_INFINITY;
    let nextPollMs = Number.NEGATIVE_INFINITY;
    while (!stopped.aborted) {
      const attemptAt = nextAttemptAt({
        record: this.#sightings.current,
        observedAtMs: this.#sightings.currentSince,
        identity: this.identity,
        defaultDurationSeconds: durationSeconds,
        lastAttemptMs,
        nextPollMs,
      });
      const waitMs = attemptAt - performance.now();
      if (waitMs > 0) {
        // Woken early by a new sighting, which may bring the attempt forward; then recomputed.
        await this.#pause(waitMs);
        continue;
      }
      lastAttemptMs = performance.now();
      if (await this.#tryAcquireOrRenew(this.#retryPeriodMs)) return;
      nextPollMs = performance.now() + this.#retryPeriodMs * (1 + Math.random() * 0.2);
    }
  }

  async #lead(): Promise<void> {
    const stopped = this.#stopped.signal;
    this.#leading = true;
    const leadership = new AbortController();
    try {
      const started = this.#options.onStartedLeading(leadership.signal);
      if (started instanceof Promise) started.catch((error: unknown) => this.#report(error));
    } catch (error) {
      this.#report(error);
    }

    let lastRenew = performance.now();
    while (!stopped.aborted) {
      await sleep(this.#retryPeriodMs, stopped);
      if (stopped.aborted) break;
      const remaining = this.#renewDeadlineMs - (performance.now() - lastRenew);
      if (remaining > 0 && (await this.#tryAcquireOrRenew(remaining))) {
        lastRenew = performance.now();
      } else if (performance.now() - lastRenew >= this.#renewDeadlineMs) {
        break;
      }
    }

    this.#leading = false;
    leadership.abort();
    if (stopped.aborted && (this.#options.releaseOnStop ?? true)) await this.#release();
    try {
      this.#options.onStoppedLeading?.();
    } catch (error) {
      this.#report(error);
    }
  }

  /**
   * Watches this one Lease through the informer (list, then watch; relist on 410 Gone; backoff on
   * errors) so that every change is seen as it happens. Backoff is capped at the lease duration: a
   * watch that is down longer than that no longer helps anyway, the poll carries on meanwhile.
   */
  #watchLease(): Informer<LeaseObject> {
    const { kubeConfig, namespace, name } = this.#options;
    const informer = new Informer<LeaseObject>({
      kubeConfig,
      resource: LEASES,
      namespace,
      fieldSelector: `metadata.name=${name}`,
      backoff: { initialMs: Math.min(800, this.#retryPeriodMs), maxMs: this.#leaseDurationMs },
      observer: {
        failed: (error) => {
          if (!this.#stopped.signal.aborted) this.#report(error);
        },
        handlerFailed: (error) => this.#report(error),
      },
    });
    informer.on({
      add: (lease) => this.#observe(lease.spec ?? {}),
      update: (_previous, lease) => this.#observe(lease.spec ?? {}),
      delete: () => {
        this.#sightings.gone(performance.now());
        this.#wake?.();
      },
    });
    informer.start();
    return informer;
  }

  /** One attempt (client-go's tryAcquireOrRenew); false when another holds the lease or a call fails. */
  async #tryAcquireOrRenew(timeoutMs: number): Promise<boolean> {
    const deadline = AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs)));
    const options = abortable(AbortSignal.any([this.#stopped.signal, deadline]));
    const { namespace, name } = this.#options;
    // The Lease stores whole seconds.
    const durationSeconds = Math.ceil(this.#leaseDurationMs / 1000);
    try {
      let lease: V1Lease;
      try {
        lease = await this.#api.readNamespacedLease({ namespace, name }, options);
      } catch (error) {
        if (!isNotFound(error)) throw error;
        const spec = claimedLease(undefined, this.identity, new Date(), durationSeconds);
        this.#lease = await this.#api.createNamespacedLease(
          { namespace, body: { metadata: { namespace, name }, spec } },
          options,
        );
        this.#observe(spec);
        return true;
      }
      const record: LeaseRecord = lease.spec ?? {};
      // Judged by when this very record was first seen (by the watch, usually): the update below
      // carries its resourceVersion, so it can only overwrite this record.
      const observedAt = this.#observe(record);
      this.#lease = lease;
      if (heldByOther(record, this.identity, observedAt, performance.now(), durationSeconds)) {
        return false;
      }
      const spec = claimedLease(record, this.identity, new Date(), durationSeconds);
      this.#lease = await this.#api.replaceNamespacedLease(
        { namespace, name, body: { ...lease, spec } },
        options,
      );
      this.#observe(spec);
      return true;
    } catch (error) {
      // 409: another candidate wrote the Lease since it was read; it won this round.
      if (!isConflict(error) && !this.#stopped.signal.aborted) this.#report(error);
      return false;
    }
  }

  async #release(): Promise<void> {
    const { namespace, name } = this.#options;
    const options = abortable(AbortSignal.timeout(Math.ceil(this.#renewDeadlineMs)));
    let lease = this.#lease;
    // Twice at most: a renewal cut short by stop() may have landed after all, making the
    // resourceVersion at hand stale; the Lease is then read again and released if still ours.
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        if (attempt > 0) lease = await this.#api.readNamespacedLease({ namespace, name }, options);
        if (!lease || lease.spec?.holderIdentity !== this.identity) return;
        this.#lease = await this.#api.replaceNamespacedLease(
          { namespace, name, body: { ...lease, spec: releasedLease(lease.spec, new Date()) } },
          options,
        );
        this.#observe(this.#lease.spec ?? {});
        return;
      } catch (error) {
        if (!isConflict(error)) {
          this.#report(error);
          return;
        }
      }
    }
  }

  /** Records a sighting of `record`; returns when it was first seen on the local clock. */
  #observe(record: LeaseRecord): number {
    const { firstSeenMs, fresh } = this.#sightings.see(record, performance.now());
    if (!fresh) return firstSeenMs;
    const holder = record.holderIdentity || undefined;
    if (holder !== this.#leader) {
      this.#leader = holder;
      if (holder) {
        try {
          this.#options.onNewLeader?.(holder);
        } catch (error) {
          this.#report(error);
        }
      }
    }
    this.#wake?.();
    return firstSeenMs;
  }

  /** Waits `ms`, or less if stop() is called or a sighting wakes the campaign. */
  #pause(ms: number): Promise<void> {
    const stopped = this.#stopped.signal;
    return new Promise((resolve) => {
      if (stopped.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        stopped.removeEventListener("abort", done);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      // Timers have whole milliseconds; rounding up means the attempt is never early.
      const timer = setTimeout(done, Math.ceil(ms));
      stopped.addEventListener("abort", done, { once: true });
      this.#wake = done;
    });
  }

  #report(error: unknown): void {
    try {
      this.#options.onError?.(error);
    } catch {
      // Reporting is for logs only.
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
