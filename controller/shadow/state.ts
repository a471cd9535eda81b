/**
 * The shadow-table fallback of a SyncJob as a pure state machine (docs/architecture.md, Data plane: shadow fallback). Given the job's
 * shadow status, the validations observed, the approval and rollback annotations and the clock,
 * decideShadow() says what the status becomes, what to do (DDL, runs, redirected writes), which
 * conditions hold and which events to record. It performs nothing itself.
 *
 *   None ──N consecutive failed validations──▶ Filling ──fill run Succeeded──▶ AwaitingApproval
 *     ▲                                          │ (fill run failed: retried with backoff)  │
 *     │                              shadow disabled / target changed ◀──────────────────────┤
 *     │                                                                  new approval token │
 *     │                                                                                     ▼
 *     ├───── retired table's TTL passed (DropRetired) ◀── Swapped ◀──Swap committed── Swapping
 *     └───── new rollback token, retired table still kept (Rollback) ◀──┘
 *
 * Swapped also starts a new cycle (→ Filling) after N more failures, keeping its retired table until
 * its TTL or the next approval; a cycle abandoned while that table is kept returns to Swapped.
 *
 * Where the job's writes go (writeTableOf): the target in None and Swapped; the shadow table in
 * Filling, AwaitingApproval and Swapping. A writer learns of a change through a RedirectWrites action.
 *
 * Contract for the caller (the SyncJob reconciler):
 * - Level-based and idempotent: the decision depends only on the input, and every action is safe to
 *   repeat (the DDL in ./postgres.ts recognises work already done; run names are deterministic, so a
 *   repeated create answers 409).
 * - Perform `actions` in order, then write `status` (through shadowStatusPatch). When an action
 *   fails, write nothing of this decision but shadowActionFailed()'s instead and requeue with
 *   backoff: the next reconcile decides the same step again, which is how a swap blocked by a lock
 *   timeout is retried.
 * - Each state transition yields exactly one event; requests that are refused or ignored yield one
 *   event each, once, because their token is recorded as handled.
 * - A request is a new value of its annotation (any string; `syncgov approve` writes a timestamped
 *   token). A value equal to the last one handled is not a request, so an annotation left in place
 *   never acts twice, and removing it acts never.
 * - Approvals count only in AwaitingApproval. One arriving earlier (while Filling) is ignored with an
 *   event, never remembered: a person approves a shadow table they could have reviewed.
 */

import { APPROVE_SWAP_ANNOTATION, REQUESTED_BY_ANNOTATION, ROLLBACK_ANNOTATION } from "../api/admission.ts";
import { isFinishedPhase } from "../api/phases.ts";
import { requestMark } from "../api/request-mark.ts";
import type { EventRecord } from "../kube/events.ts";
import { type ConditionUpdate, kubeTime } from "../kube/status.ts";
import { fillRunName, isRetiredTableOf, retiredAtOf, retiredTableName, shadowTableName } from "./names.ts";

/** The request annotations, guarded by the API server (api/admission.ts). */
export { APPROVE_SWAP_ANNOTATION, REQUESTED_BY_ANNOTATION, ROLLBACK_ANNOTATION };

/** Whether the API server guards request annotations (./request-policy.ts checks it). */
export type RequestGuard =
  | { readonly installed: true }
  | { readonly installed: false; readonly reason: string };

export const SHADOW_MODE_CONDITION = "ShadowMode";
export const AWAITING_APPROVAL_CONDITION = "AwaitingApproval";

export type ShadowState = "None" | "Filling" | "AwaitingApproval" | "Swapping" | "Swapped";

/**
 * The SyncJob's status.shadow. The first four fields are in the published schema; the others are
 * the machine's memory, which the schema must carry too (a status field the CRD does not declare is
 * pruned by the API server).
 */
export interface ShadowStatus {
  state: ShadowState;
  /** The shadow table, from Filling to Swapping. */
  table?: string | undefined;
  /** Swapped: the table swapped out, kept for rollback until its TTL. Swapping: the name the target is being renamed to. Filling/AwaitingApproval: the previous swap's, while it lasts. */
  retiredTable?: string | undefined;
  /** Counted in None and Swapped; frozen while the shadow takes the writes. */
  consecutiveFailedValidations?: number | undefined;
  /** The newest validation already taken into account; older or equal ones are never counted again. */
  countedThrough?: { run: string; finishedAt: string } | undefined;
  /** The ShadowFill run of the current attempt (Filling). */
  fillRun?: string | undefined;
  /** 1-based attempt of fillRun. */
  fillAttempt?: number | undefined;
  /** The last approve-swap annotation value acted on or ignored. */
  handledApproval?: string | undefined;
  /** The last rollback annotation value acted on or refused. */
  handledRollback?: string | undefined;
  /** Who approved the latest swap (syncgov.io/requested-by, as the API server admitted it). */
  approvedBy?: string | undefined;
  /** Who requested the latest rollback. */
  rolledBackBy?: string | undefined;
}

/** A finished run's validation: Validation runs, and Batch runs that validate at their end. */
export interface ValidationOutcome {
  readonly run: string;
  readonly result: "Passed" | "Failed";
  /** completionTime of the run (RFC 3339). */
  readonly finishedAt: string;
}

/** The SyncRun named status.shadow.fillRun, as observed. */
export interface FillRunObservation {
  readonly name: string;
  readonly phase?: string | undefined;
  readonly completionTime?: string | undefined;
  /** The run's status message (scrubbed by the runner). */
  readonly message?: string | undefined;
}

export interface ShadowSettings {
  /** spec.shadow.enabled (default true), or true when a matching policy requires the fallback. */
  readonly enabled: boolean;
  /** status.effectivePolicy.failedValidationsBeforeShadow (default 3). */
  readonly failedValidationsBeforeShadow: number;
  /** spec.shadow.retiredTableTtlSeconds (default 604800). */
  readonly retiredTableTtlSeconds: number;
}

export interface ShadowInput {
  readonly job: { readonly namespace: string; readonly name: string; readonly generation?: number };
  /** spec.target.sql.table. */
  readonly target: string;
  readonly settings: ShadowSettings;
  /** status.shadow as stored; undefined for a job never seen. */
  readonly status: ShadowStatus | undefined;
  /** metadata.annotations. */
  readonly annotations: Readonly<Record<string, string>> | undefined;
  /**
   * Whether the API server guards the request annotations; requests are refused without it (the
   * default), since then anyone who may edit the job could have set them.
   */
  readonly requestGuard?: RequestGuard | undefined;
  /** Validations of this job's finished runs, in any order; those already counted are skipped. */
  readonly validations: readonly ValidationOutcome[];
  /** The run named status.fillRun, when the informer has it. */
  readonly fillRun?: FillRunObservation | undefined;
  readonly now: Date;
}

export type ShadowAction =
  /** Drop a leftover `<table>__shadow`, create it LIKE the target (keys, defaults, grants). */
  | { readonly kind: "CreateShadow"; readonly target: string; readonly shadow: string }
  /** Restart the job's writers (the realtime session) so that they write to `to`. */
  | { readonly kind: "RedirectWrites"; readonly from: string; readonly to: string }
  /** Create the SyncRun `run` (type ShadowFill, trigger Controller): a full reload into `shadow`. */
  | { readonly kind: "StartShadowFill"; readonly run: string; readonly shadow: string }
  /** One transaction: target → retired, shadow → target. */
  | { readonly kind: "Swap"; readonly target: string; readonly shadow: string; readonly retired: string }
  /** One transaction: target → displaced, retired → target. */
  | {
      readonly kind: "Rollback";
      readonly target: string;
      readonly retired: string;
      readonly displaced: string;
    }
  | { readonly kind: "DropRetired"; readonly table: string }
  | { readonly kind: "DropShadow"; readonly table: string };

export interface ShadowDecision {
  /** The status to store (complete, not a delta; write it with shadowStatusPatch). */
  readonly status: ShadowStatus;
  /** Whether status differs from the stored one. */
  readonly changed: boolean;
  /** In order; see the contract above. */
  readonly actions: readonly ShadowAction[];
  /** ShadowMode and AwaitingApproval, always both; merge them with setCondition. */
  readonly conditions: readonly ConditionUpdate[];
  readonly events: readonly EventRecord[];
  /** The table the job's writes (and validations) go to once the actions are done. */
  readonly writeTable: string;
  /** When to look again: a retired table's expiry, a fill retry. */
  readonly requeueAfterMs?: number | undefined;
}

const FILL_RETRY_BASE_MS = 30_000;
const FILL_RETRY_MAX_MS = 600_000;

/** The table a job writes to in a state. */
export function writeTableOf(state: ShadowState, target: string, shadow: string | undefined): string {
  return (state === "Filling" || state === "AwaitingApproval" || state === "Swapping") && shadow
    ? shadow
    : target;
}

/** Why an approval would be ignored now, as a sentence; undefined when it would start the swap. */
export function approvalRefusal(status: ShadowStatus | undefined): string | undefined {
  const s = status ?? { state: "None" };
  switch (s.state) {
    case "AwaitingApproval":
      return undefined;
    case "Filling":
      return `shadow table ${s.table ?? "(unknown)"} is still being filled${s.fillRun ? ` by run ${s.fillRun}` : ""}; approve once the job is AwaitingApproval`;
    case "Swapping":
      return "the swap is already approved and in progress";
    case "Swapped":
      return "the shadow table was already swapped in; nothing awaits approval";
    default:
      return "no shadow table awaits approval (shadow state None)";
  }
}

/**
 * Why a rollback would be refused now, as a sentence; undefined when it would swap the retired
 * table back in. Possible only in Swapped, while the retired table is within its TTL and belongs to
 * the current target.
 */
export function rollbackRefusal(
  status: ShadowStatus | undefined,
  target: string,
  retiredTableTtlSeconds: number,
  now: Date,
): string | undefined {
  const s = status ?? { state: "None" };
  const retired = s.retiredTable;
  if (!retired || s.state === "Swapping") {
    return `there is no retired table to roll back to (shadow state ${s.state})`;
  }
  if (s.state !== "Swapped") {
    return `a new shadow cycle is in progress (shadow state ${s.state}); rollback to ${retired} is possible only while the job is Swapped`;
  }
  if (!isRetiredTableOf(retired, target)) {
    return `retired table ${retired} was not retired from the job's current target ${target}`;
  }
  const expiry = retiredExpiry(retired, retiredTableTtlSeconds);
  if (expiry !== undefined && expiry.getTime() <= now.getTime()) {
    return `retired table ${retired} expired at ${kubeTime(expiry)} (retiredTableTtlSeconds=${retiredTableTtlSeconds}) and is dropped; there is nothing to roll back to`;
  }
  return undefined;
}

/** When a retired table may be dropped: the time in its name plus the TTL. */
export function retiredExpiry(retired: string, ttlSeconds: number): Date | undefined {
  const at = retiredAtOf(retired);
  return at === undefined ? undefined : new Date(at.getTime() + ttlSeconds * 1000);
}

/** Who made a request, or why it cannot be attributed to anyone and is refused. */
function requester(input: ShadowInput): { user: string } | { refusal: string } {
  const guard = input.requestGuard ?? {
    installed: false,
    reason: "the controller has not verified that the API server guards shadow requests",
  };
  if (!guard.installed) return { refusal: guard.reason };
  const user = input.annotations?.[REQUESTED_BY_ANNOTATION];
  if (user === undefined || user === "")
    return {
      refusal: `${REQUESTED_BY_ANNOTATION} does not name who made it ('syncgov approve' and 'syncgov rollback' set it)`,
    };
  return { user };
}

/** Whether the job carries an approval or rollback not yet handled (decideShadow then needs the guard). */
export function hasPendingRequest(
  status: ShadowStatus | undefined,
  annotations: Readonly<Record<string, string>> | undefined,
): boolean {
  return (
    newToken(annotations?.[APPROVE_SWAP_ANNOTATION], status?.handledApproval) !== undefined ||
    newToken(annotations?.[ROLLBACK_ANNOTATION], status?.handledRollback) !== undefined
  );
}

/** The mark (api/request-mark.ts) of a request value not handled yet, or undefined. */
function newToken(value: string | undefined, handled: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  const mark = requestMark(value);
  return mark !== handled ? mark : undefined;
}

function newerThan(v: ValidationOutcome, cursor: ShadowStatus["countedThrough"]): boolean {
  if (!cursor) return true;
  const a = Date.parse(v.finishedAt);
  const b = Date.parse(cursor.finishedAt);
  return a > b || (a === b && v.run > cursor.run);
}

function byCompletion(a: ValidationOutcome, b: ValidationOutcome): number {
  return Date.parse(a.finishedAt) - Date.parse(b.finishedAt) || (a.run < b.run ? -1 : a.run > b.run ? 1 : 0);
}

function fillRetryDelayMs(attempt: number): number {
  return Math.min(FILL_RETRY_BASE_MS * 2 ** Math.max(0, attempt - 1), FILL_RETRY_MAX_MS);
}

function ttlText(seconds: number): string {
  if (seconds % 86400 === 0 && seconds > 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0 && seconds > 0) return `${seconds / 3600}h`;
  return `${seconds}s`;
}

/** A note that replaces the ShadowMode condition's reason and message (a failure being retried). */
interface ShadowModeNote {
  reason: string;
  message: string;
}

export function decideShadow(input: ShadowInput): ShadowDecision {
  const { target, settings, now } = input;
  const jobRef = `${input.job.namespace}/${input.job.name}`;
  const prev: ShadowStatus = clean(input.status ?? { state: "None" });
  const shadow = shadowTableName(target);
  let next: ShadowStatus = { ...prev };
  const actions: ShadowAction[] = [];
  const events: EventRecord[] = [];
  let transitioned = false;
  let note: ShadowModeNote | undefined;
  let requeueAt: number | undefined;
  const wakeAt = (t: number) => {
    requeueAt = requeueAt === undefined ? t : Math.min(requeueAt, t);
  };
  const transition = (to: Partial<ShadowStatus> & { state: ShadowState }, event: EventRecord) => {
    next = { ...next, ...to };
    events.push(event);
    transitioned = true;
  };
  const idle = (state: "None" | "Swapped") => ({
    state,
    table: undefined,
    fillRun: undefined,
    fillAttempt: undefined,
  });

  // Validations: counted in None and Swapped (the target takes the writes), passed over otherwise.
  const counting = prev.state === "None" || prev.state === "Swapped";
  const fresh = input.validations
    .filter((v) => !Number.isNaN(Date.parse(v.finishedAt)) && newerThan(v, prev.countedThrough))
    .sort(byCompletion);
  let failures = prev.consecutiveFailedValidations ?? 0;
  for (const v of fresh) {
    if (counting) failures = v.result === "Passed" ? 0 : failures + 1;
  }
  const latest = fresh[fresh.length - 1];
  if (latest) next.countedThrough = { run: latest.run, finishedAt: latest.finishedAt };
  next.consecutiveFailedValidations = failures;

  // A rollback request: acted on only in Swapped, refused (once, with an event) anywhere else.
  const rollback = newToken(input.annotations?.[ROLLBACK_ANNOTATION], prev.handledRollback);
  if (rollback !== undefined) {
    next.handledRollback = rollback;
    const by = requester(input);
    const refusal =
      "refusal" in by ? by.refusal : rollbackRefusal(prev, target, settings.retiredTableTtlSeconds, now);
    if (refusal !== undefined || "refusal" in by) {
      events.push({
        type: "Warning",
        reason: "RollbackRefused",
        note: `Rollback of ${jobRef} refused: ${refusal}.`,
      });
    } else {
      const retired = prev.retiredTable!;
      actions.push({ kind: "Rollback", target, retired, displaced: shadow });
      transition(
        { ...idle("None"), retiredTable: undefined, consecutiveFailedValidations: 0, rolledBackBy: by.user },
        {
          type: "Normal",
          reason: "RolledBack",
          note: `Rolled back on request of ${by.user}: ${retired} is ${target} again; the table it replaced is kept as ${shadow} until the next shadow fill.`,
        },
      );
    }
  }

  // Why a pending shadow cycle can no longer go on.
  const pending = prev.state === "Filling" || prev.state === "AwaitingApproval" || prev.state === "Swapping";
  const targetChanged = pending && prev.table !== undefined && prev.table !== shadow;
  const abandonReason = targetChanged
    ? `the job's target changed to ${target}`
    : pending && prev.state !== "Swapping" && !settings.enabled
      ? "the shadow-table fallback was disabled"
      : undefined;

  // An approval request: starts the swap only in AwaitingApproval.
  const approval = newToken(input.annotations?.[APPROVE_SWAP_ANNOTATION], prev.handledApproval);
  if (approval !== undefined) {
    next.handledApproval = approval;
    const by = requester(input);
    const refusal = abandonReason ?? approvalRefusal(prev);
    if ("refusal" in by) {
      events.push({
        type: "Warning",
        reason: "ApprovalRefused",
        note: `Swap approval for ${jobRef} refused: ${by.refusal}.`,
      });
    } else if (refusal !== undefined) {
      events.push({
        type: "Warning",
        reason: "ApprovalIgnored",
        note: `Swap approval for ${jobRef} by ${by.user} ignored: ${refusal}.`,
      });
    } else {
      const previous = prev.retiredTable;
      if (previous) actions.push({ kind: "DropRetired", table: previous });
      const retired = retiredTableName(target, now);
      transition(
        { state: "Swapping", retiredTable: retired, approvedBy: by.user },
        {
          type: "Normal",
          reason: "SwapApproved",
          note: `Swap approved by ${by.user}: ${target} becomes ${retired} (kept for rollback for ${ttlText(settings.retiredTableTtlSeconds)}) and ${prev.table} becomes ${target}${previous ? `; ${previous}, retired by the previous swap, is dropped` : ""}.`,
        },
      );
    }
  }

  if (!transitioned && abandonReason !== undefined) {
    const stale = prev.table ?? shadow;
    actions.push({ kind: "RedirectWrites", from: stale, to: target });
    actions.push({ kind: "DropShadow", table: stale });
    // A table retired by an earlier swap stays available for rollback: back to Swapped, not None.
    const keepsRetired = prev.state !== "Swapping" && prev.retiredTable !== undefined;
    transition(
      {
        ...(keepsRetired ? idle("Swapped") : { ...idle("None"), retiredTable: undefined }),
        // Failures counted against another table say nothing about the new target.
        ...(targetChanged ? { consecutiveFailedValidations: 0 } : {}),
      },
      {
        type: "Normal",
        reason: "ShadowAbandoned",
        note: `Shadow mode ended without a swap because ${abandonReason}: writes go to ${target} again and ${stale} is dropped; ${target} lacks the writes made while ${stale} took them.`,
      },
    );
  }

  // A retired table past its TTL is dropped in any state but Swapping (whose retiredTable is a name to be).
  const retired = next.retiredTable;
  if (retired && next.state !== "Swapping") {
    const expiry = retiredExpiry(retired, settings.retiredTableTtlSeconds);
    if (expiry === undefined || expiry.getTime() <= now.getTime()) {
      actions.push({ kind: "DropRetired", table: retired });
      const event: EventRecord = {
        type: "Normal",
        reason: "RetiredTableDropped",
        note: `Dropped retired table ${retired}: its rollback window (retiredTableTtlSeconds=${settings.retiredTableTtlSeconds}) is over.`,
      };
      if (next.state === "Swapped" && !transitioned)
        transition({ ...idle("None"), retiredTable: undefined }, event);
      else {
        next.retiredTable = undefined;
        events.push(event);
      }
    } else {
      wakeAt(expiry.getTime());
    }
  }

  if (!transitioned) {
    switch (prev.state) {
      case "None":
      case "Swapped": {
        if (settings.enabled && failures >= settings.failedValidationsBeforeShadow) {
          const run = fillRunName(input.job.name, `${shadow}/${next.countedThrough?.run ?? kubeTime(now)}`);
          actions.push({ kind: "CreateShadow", target, shadow });
          actions.push({ kind: "RedirectWrites", from: target, to: shadow });
          actions.push({ kind: "StartShadowFill", run, shadow });
          transition(
            { state: "Filling", table: shadow, fillRun: run, fillAttempt: 1 },
            {
              type: "Warning",
              reason: "ShadowModeStarted",
              note: `${failures} consecutive validations failed (latest: run ${next.countedThrough?.run ?? "unknown"}), the limit is ${settings.failedValidationsBeforeShadow}: writes now go to shadow table ${shadow}, which run ${run} reloads from the source; ${target} is no longer written.`,
            },
          );
        }
        break;
      }
      case "Filling": {
        const table = prev.table ?? shadow;
        const attempt = prev.fillAttempt ?? 1;
        const run = prev.fillRun ?? fillRunName(input.job.name, `${table}/${kubeTime(now)}`);
        next.table = table;
        next.fillRun = run;
        next.fillAttempt = attempt;
        const observed = input.fillRun?.name === run ? input.fillRun : undefined;
        if (!observed) {
          // Not created yet, or deleted: creating it again under its own name is harmless (409 when it exists).
          actions.push({ kind: "StartShadowFill", run, shadow: table });
        } else if (observed.phase === "Succeeded") {
          transition(
            { state: "AwaitingApproval", fillRun: run },
            {
              type: "Normal",
              reason: "ShadowFilled",
              note: `Run ${run} filled shadow table ${table}${observed.message ? ` (${observed.message.replace(/\.$/, "")})` : ""}. Review it, then approve the swap: syncgov approve ${jobRef}.`,
            },
          );
        } else if (isFinishedPhase(observed.phase)) {
          const finished = Date.parse(observed.completionTime ?? "");
          const due = (Number.isNaN(finished) ? now.getTime() : finished) + fillRetryDelayMs(attempt);
          if (due <= now.getTime()) {
            const retry = fillRunName(input.job.name, run);
            actions.push({ kind: "StartShadowFill", run: retry, shadow: table });
            transition(
              { state: "Filling", fillRun: retry, fillAttempt: attempt + 1 },
              {
                type: "Warning",
                reason: "ShadowFillRetried",
                note: `Run ${run} did not fill shadow table ${table} (${observed.phase}${observed.message ? `: ${observed.message}` : ""}); attempt ${attempt + 1} is run ${retry}.`,
              },
            );
          } else {
            wakeAt(due);
            note = {
              reason: "ShadowFillFailed",
              message: `Run ${run} did not fill shadow table ${table} (${observed.phase}${observed.message ? `: ${observed.message}` : ""}); attempt ${attempt + 1} starts at ${kubeTime(new Date(due))}. Writes go to ${table}.`,
            };
          }
        }
        break;
      }
      case "Swapping": {
        const table = prev.table ?? shadow;
        const retiredName = prev.retiredTable ?? retiredTableName(target, now);
        actions.push({ kind: "Swap", target, shadow: table, retired: retiredName });
        actions.push({ kind: "RedirectWrites", from: table, to: target });
        const expiry = retiredExpiry(retiredName, settings.retiredTableTtlSeconds);
        if (expiry) wakeAt(expiry.getTime());
        transition(
          { ...idle("Swapped"), retiredTable: retiredName, consecutiveFailedValidations: 0 },
          {
            type: "Normal",
            reason: "ShadowSwapped",
            note: `Swapped ${table} in as ${target}; the previous table is kept as ${retiredName} for rollback until ${expiry ? kubeTime(expiry) : "its TTL"} (syncgov rollback ${jobRef}). Validation resumes on ${target}.`,
          },
        );
        break;
      }
      default:
        break;
    }
  }

  next = clean(next);
  return {
    status: next,
    changed: !sameStatus(prev, next) || input.status === undefined,
    actions,
    conditions: conditionsOf(next, input, note),
    events,
    writeTable: writeTableOf(next.state, target, next.table),
    requeueAfterMs: requeueAt === undefined ? undefined : Math.max(requeueAt - now.getTime(), 1000),
  };
}

/**
 * The decision to record instead of `decision` when performing `action` failed: the stored status
 * stays (so the same step is decided again on the next reconcile), ShadowMode says what failed, and
 * one Warning event is recorded (the event recorder folds repeats into a series).
 */
export function shadowActionFailed(
  input: ShadowInput,
  decision: ShadowDecision,
  action: ShadowAction,
  message: string,
): ShadowDecision {
  const status = clean(input.status ?? { state: "None" });
  const reason = `${action.kind}Failed`;
  const text = `${describeAction(action)} failed: ${message.replace(/\.$/, "")}; retrying.`;
  return {
    status,
    changed: false,
    actions: [],
    conditions: conditionsOf(status, input, { reason, message: text }),
    events: [{ type: "Warning", reason, note: text }],
    writeTable: writeTableOf(status.state, input.target, status.table),
    requeueAfterMs: decision.requeueAfterMs,
  };
}

function describeAction(a: ShadowAction): string {
  switch (a.kind) {
    case "CreateShadow":
      return `Creating shadow table ${a.shadow} like ${a.target}`;
    case "RedirectWrites":
      return `Redirecting writes from ${a.from} to ${a.to}`;
    case "StartShadowFill":
      return `Starting fill run ${a.run} of ${a.shadow}`;
    case "Swap":
      return `Swapping ${a.shadow} in as ${a.target} (retiring it as ${a.retired})`;
    case "Rollback":
      return `Rolling ${a.target} back to ${a.retired}`;
    case "DropRetired":
      return `Dropping retired table ${a.table}`;
    case "DropShadow":
      return `Dropping shadow table ${a.table}`;
  }
}

function conditionsOf(
  s: ShadowStatus,
  input: ShadowInput,
  note: ShadowModeNote | undefined,
): ConditionUpdate[] {
  const { target, settings } = input;
  const jobRef = `${input.job.namespace}/${input.job.name}`;
  const generation = input.job.generation;
  const g = generation === undefined ? {} : { observedGeneration: generation };
  const failures = s.consecutiveFailedValidations ?? 0;
  const expiry = s.retiredTable ? retiredExpiry(s.retiredTable, settings.retiredTableTtlSeconds) : undefined;
  let mode: ConditionUpdate;
  let approval: ConditionUpdate;
  switch (s.state) {
    case "Filling":
      mode = {
        type: SHADOW_MODE_CONDITION,
        status: "True",
        reason: "ShadowFilling",
        message: `Writes go to shadow table ${s.table} while run ${s.fillRun} (attempt ${s.fillAttempt ?? 1}) reloads it from the source; ${target} is no longer written.`,
      };
      approval = {
        type: AWAITING_APPROVAL_CONDITION,
        status: "False",
        reason: "ShadowFilling",
        message: `Shadow table ${s.table} is being filled; the swap can be approved once it is full.`,
      };
      break;
    case "AwaitingApproval":
      mode = {
        type: SHADOW_MODE_CONDITION,
        status: "True",
        reason: "AwaitingApproval",
        message: `Shadow table ${s.table} is filled and takes the writes; ${target} is no longer written until the swap is approved.`,
      };
      approval = {
        type: AWAITING_APPROVAL_CONDITION,
        status: "True",
        reason: "SwapApprovalRequired",
        message: `Review ${s.table}, then approve the swap with 'syncgov approve ${jobRef}' (or set the annotation ${APPROVE_SWAP_ANNOTATION} to a new value); ${target} will be kept for rollback for ${ttlText(settings.retiredTableTtlSeconds)}.`,
      };
      break;
    case "Swapping":
      mode = {
        type: SHADOW_MODE_CONDITION,
        status: "True",
        reason: "Swapping",
        message: `The swap is approved: ${target} becomes ${s.retiredTable} and ${s.table} becomes ${target}, in one transaction.`,
      };
      approval = {
        type: AWAITING_APPROVAL_CONDITION,
        status: "False",
        reason: "SwapApproved",
        message: "The swap was approved.",
      };
      break;
    case "Swapped":
      mode = {
        type: SHADOW_MODE_CONDITION,
        status: "False",
        reason: "ShadowSwappedIn",
        message: `The shadow table was swapped in as ${target}; the previous table is kept as ${s.retiredTable} for rollback until ${expiry ? kubeTime(expiry) : "its TTL"}. ${failures} of ${settings.failedValidationsBeforeShadow} consecutive validations failed since.`,
      };
      approval = {
        type: AWAITING_APPROVAL_CONDITION,
        status: "False",
        reason: "SwapApproved",
        message: "The swap was approved and done.",
      };
      break;
    default:
      mode = {
        type: SHADOW_MODE_CONDITION,
        status: "False",
        reason: settings.enabled ? "TargetActive" : "ShadowDisabled",
        message: `Writes go to ${target}; ${failures} consecutive validations failed${settings.enabled ? ` (shadow mode starts at ${settings.failedValidationsBeforeShadow})` : " (the shadow-table fallback is disabled)"}.`,
      };
      approval = {
        type: AWAITING_APPROVAL_CONDITION,
        status: "False",
        reason: "NoShadowTable",
        message: "No shadow table awaits approval.",
      };
  }
  if (note) mode = { ...mode, reason: note.reason, message: note.message };
  return [
    { ...mode, ...g },
    { ...approval, ...g },
  ];
}

const FIELDS = [
  "state",
  "table",
  "retiredTable",
  "consecutiveFailedValidations",
  "countedThrough",
  "fillRun",
  "fillAttempt",
  "handledApproval",
  "handledRollback",
  "approvedBy",
  "rolledBackBy",
] as const satisfies readonly (keyof ShadowStatus)[];

/** Drops absent fields, so that comparisons and patches see no `undefined` keys. */
function clean(s: ShadowStatus): ShadowStatus {
  const out: ShadowStatus = { state: s.state };
  for (const key of FIELDS) {
    if (s[key] !== undefined) (out as unknown as Record<string, unknown>)[key] = s[key];
  }
  return out;
}

function sameStatus(a: ShadowStatus, b: ShadowStatus): boolean {
  return FIELDS.every((k) => JSON.stringify(a[k]) === JSON.stringify(b[k]));
}

/**
 * status.shadow as a JSON merge patch value: every field, absent ones as null. A merge patch merges
 * nested objects key by key, so a field the new status lacks (the shadow table after a swap) must
 * be deleted explicitly or the stored one would stay.
 */
export function shadowStatusPatch(status: ShadowStatus): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const key of FIELDS) patch[key] = status[key] ?? null;
  return patch;
}
