/**
 * Approval and rollback requests as a person makes them: what the SyncJob says, whether the request
 * can be acted on now, and what it will do. Pure, so that `syncgov approve`, `syncgov rollback` (and a
 * web console) refuse and explain exactly as the controller's state machine will decide: both use
 * approvalRefusal and rollbackRefusal from ./state.ts.
 *
 * A request is a patch of the SyncJob's annotations made with the requester's own credentials; the
 * API server admits it only from a user with the RBAC verb approve (rollback) on the job, who names
 * themself in syncgov.io/requested-by (api/admission.ts) — editing the job is not enough.
 */

import type { KubernetesObject } from "@kubernetes/client-node";
import { sqlTableRe } from "../api/identifiers.ts";
import { shadowTableName } from "./names.ts";
import {
  APPROVE_SWAP_ANNOTATION,
  approvalRefusal,
  REQUESTED_BY_ANNOTATION,
  ROLLBACK_ANNOTATION,
  retiredExpiry,
  rollbackRefusal,
  type ShadowState,
  type ShadowStatus,
} from "./state.ts";

/** The default of spec.shadow.retiredTableTtlSeconds. */
export const DEFAULT_RETIRED_TABLE_TTL_SECONDS = 604_800;

export type ShadowRequestKind = "approve" | "rollback";

/** What a request needs to know of a SyncJob. */
export interface ShadowJobView {
  readonly namespace: string;
  readonly name: string;
  readonly resourceVersion?: string | undefined;
  /** spec.target.sql.table. */
  readonly target: string;
  readonly retiredTableTtlSeconds: number;
  readonly shadow: ShadowStatus | undefined;
}

export type RequestPlan =
  | { readonly allowed: true; readonly annotation: string; readonly plan: readonly string[] }
  | { readonly allowed: false; readonly refusal: string };

const STATES: ReadonlySet<string> = new Set(["None", "Filling", "AwaitingApproval", "Swapping", "Swapped"]);

/**
 * Reads the fields a request needs from a SyncJob as the API server returns it. Throws with a
 * sentence when the object lacks them (no SQL target table).
 */
export function shadowJobView(object: KubernetesObject): ShadowJobView {
  const o = object as KubernetesObject & {
    spec?: { target?: { sql?: { table?: unknown } }; shadow?: { retiredTableTtlSeconds?: unknown } };
    status?: { shadow?: Record<string, unknown> };
  };
  const namespace = o.metadata?.namespace ?? "";
  const name = o.metadata?.name ?? "";
  const target = o.spec?.target?.sql?.table;
  if (typeof target !== "string" || !sqlTableRe.test(target)) {
    throw new Error(`SyncJob ${namespace}/${name} has no valid spec.target.sql.table`);
  }
  const ttl = o.spec?.shadow?.retiredTableTtlSeconds;
  const raw = o.status?.shadow;
  const text = (v: unknown) => (typeof v === "string" ? v : undefined);
  const shadow: ShadowStatus | undefined =
    raw && typeof raw.state === "string" && STATES.has(raw.state)
      ? {
          state: raw.state as ShadowState,
          table: text(raw.table),
          retiredTable: text(raw.retiredTable),
          fillRun: text(raw.fillRun),
        }
      : undefined;
  return {
    namespace,
    name,
    resourceVersion: o.metadata?.resourceVersion,
    target,
    retiredTableTtlSeconds:
      typeof ttl === "number" && Number.isInteger(ttl) && ttl >= 0 ? ttl : DEFAULT_RETIRED_TABLE_TTL_SECONDS,
    shadow,
  };
}

function ttlText(seconds: number): string {
  const unit = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  if (seconds > 0 && seconds % 86400 === 0) return unit(seconds / 86400, "day");
  if (seconds > 0 && seconds % 3600 === 0) return unit(seconds / 3600, "hour");
  return unit(seconds, "second");
}

/** Whether an approval would start the swap now, and what the swap will do. */
export function planApproval(job: ShadowJobView): RequestPlan {
  const refusal = approvalRefusal(job.shadow);
  if (refusal !== undefined) return { allowed: false, refusal };
  const shadow = job.shadow?.table ?? shadowTableName(job.target);
  const ref = `${job.namespace}/${job.name}`;
  const plan = [
    `In one transaction, ${job.target} is renamed to ${job.target}__retired_<time of approval> and ${shadow} to ${job.target}; readers of ${job.target} wait for the lock for a moment and then read the new table.`,
    `The retired table is kept for rollback for ${ttlText(job.retiredTableTtlSeconds)} (spec.shadow.retiredTableTtlSeconds): syncgov rollback ${ref}.`,
    `Writes go to ${job.target} again and validation resumes on it.`,
  ];
  const previous = job.shadow?.retiredTable;
  if (previous) plan.push(`${previous}, retired by the previous swap, is dropped.`);
  return { allowed: true, annotation: APPROVE_SWAP_ANNOTATION, plan };
}

/** Whether a rollback would be done now, and what it will do. */
export function planRollback(job: ShadowJobView, now: Date): RequestPlan {
  const refusal = rollbackRefusal(job.shadow, job.target, job.retiredTableTtlSeconds, now);
  if (refusal !== undefined) return { allowed: false, refusal };
  const retired = job.shadow!.retiredTable!;
  const expiry = retiredExpiry(retired, job.retiredTableTtlSeconds);
  const displaced = shadowTableName(job.target);
  return {
    allowed: true,
    annotation: ROLLBACK_ANNOTATION,
    plan: [
      `In one transaction, ${job.target} (the table swapped in) is renamed to ${displaced} and ${retired} to ${job.target}; readers wait for the lock for a moment and then read the restored table.`,
      `${displaced} is kept until the next shadow fill replaces it${expiry ? `; without this rollback, ${retired} would have been dropped at ${expiry.toISOString()}` : ""}.`,
    ],
  };
}

export function planRequest(kind: ShadowRequestKind, job: ShadowJobView, now: Date): RequestPlan {
  return kind === "approve" ? planApproval(job) : planRollback(job, now);
}

/**
 * A fresh request value: the time and some randomness, so that two requests never share a value
 * (the controller acts on a value once).
 */
export function requestToken(now: Date, entropy: string): string {
  return `${now.toISOString()}-${entropy}`;
}

/**
 * The JSON merge patch that makes the request. It carries the resourceVersion the plan was made
 * from, so that the API server refuses it (409) if the job changed in between, and the requester
 * never approves a state they did not see.
 */
export function requestPatch(
  job: ShadowJobView,
  annotation: string,
  token: string,
  user: string,
): { metadata: { resourceVersion?: string; annotations: Record<string, string> } } {
  return {
    metadata: {
      ...(job.resourceVersion ? { resourceVersion: job.resourceVersion } : {}),
      // The API server admits the request only from a user with the verb approve (rollback), and
      // the requester only as that user's own name (api/admission.ts).
      annotations: { [annotation]: token, [REQUESTED_BY_ANNOTATION]: user },
    },
  };
}
