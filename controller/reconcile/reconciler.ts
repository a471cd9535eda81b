/**
 * The reconciler contract, as controller-runtime's (pkg/reconcile): a reconciler is given only an
 * object's key, never an event, and makes the cluster match what the object asks for as of now
 * (level-based): reading the current state from the cache snapshot, it writes what differs and is
 * idempotent, so being called twice, or after a missed event, is harmless.
 * - Resolving with undefined: done until the next change of an object it watches.
 * - Resolving with `requeueAfter`: look again after that many ms (a cron fire, a TTL, a window).
 * - Rejecting: the work queue retries the key with per-key exponential backoff.
 * The work queue never hands the same key to two workers at once.
 */

import type { ReconcileResult } from "../queue/workqueue.ts";

export type { ReconcileResult };

/** The kinds the controller reconciles; "Scheduler" is the one admission key, not an object. */
export type ReconcileKind = "SyncJob" | "SyncPolicy" | "Scheduler";

export interface ObjectKey {
  readonly kind: ReconcileKind;
  /** Absent for cluster-scoped objects and the scheduler. */
  readonly namespace?: string | undefined;
  readonly name: string;
}

export interface Reconciler {
  reconcile(key: ObjectKey, signal: AbortSignal): Promise<ReconcileResult | undefined>;
}

/** The admission scheduler's key: one pass decides every waiting run. */
export const SCHEDULER_KEY: ObjectKey = { kind: "Scheduler", name: "admission" };

/** The work queue's string form: `Kind/namespace/name`, or `Kind/name` (the registry's key form). */
export function keyText(key: ObjectKey): string {
  return key.namespace ? `${key.kind}/${key.namespace}/${key.name}` : `${key.kind}/${key.name}`;
}

/** Reads a key back from its string form; throws on a kind that is not reconciled. */
export function parseKey(text: string): ObjectKey {
  const parts = text.split("/");
  const kind = parts[0];
  if (kind !== "SyncJob" && kind !== "SyncPolicy" && kind !== "Scheduler")
    throw new Error(`not a reconcile key: ${text}`);
  return parts.length >= 3
    ? { kind, namespace: parts[1], name: parts.slice(2).join("/") }
    : { kind, name: parts[1] ?? "" };
}
