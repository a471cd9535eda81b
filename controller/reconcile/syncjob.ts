import type { KubernetesObject } from "@kubernetes/client-node";
import type { Condition } from "../api/common.ts";
import { semanticErrors } from "../api/semantics.ts";
import type { SyncJobStatus } from "../api/syncjob.ts";
import { describeErrors, validateSyncJob } from "../api/validate.ts";
import type { EventRecord } from "../kube/events.ts";
import { setCondition } from "../kube/status.ts";

/** What reconciling a SyncJob decides: the status to write (if it changed) and the events to record. */
export interface JobDecision {
  /** The status fields to merge; undefined when the stored status is already right. */
  status?: Partial<SyncJobStatus>;
  events: EventRecord[];
}

export const VALID = "Valid";

/**
 * The spec check of a SyncJob: the zod schemas (the same rules the CRD enforces) and the controller's
 * semantic checks. A pure function of the object and the clock; an event is produced only when the
 * Valid condition changes, so repeated reconciles of an unchanged job record nothing.
 */
export function decideJobValidity(object: KubernetesObject, now: Date): JobDecision {
  const current = (object as { status?: SyncJobStatus }).status ?? {};
  const generation = object.metadata?.generation ?? 0;
  const parsed = validateSyncJob(object);
  const errors = parsed.ok ? semanticErrors(parsed.value.spec) : parsed.errors;
  const valid = errors.length === 0;
  const condition = valid
    ? {
        type: VALID,
        status: "True" as const,
        reason: "SpecValid",
        message: "The spec passed validation.",
        observedGeneration: generation,
      }
    : {
        type: VALID,
        status: "False" as const,
        reason: "InvalidSpec",
        message: describeErrors(errors),
        observedGeneration: generation,
      };
  const { conditions, changed } = setCondition(current.conditions, condition, now);
  const phase = valid
    ? current.phase === "Invalid" || current.phase === undefined
      ? "Pending"
      : current.phase
    : "Invalid";
  const events: EventRecord[] = [];
  const previous = current.conditions?.find((c: Condition) => c.type === VALID);
  if (changed && (previous?.status !== condition.status || previous?.message !== condition.message)) {
    events.push(
      valid
        ? { type: "Normal", reason: "SpecValid", note: "The spec passed validation." }
        : { type: "Warning", reason: "InvalidSpec", note: `The spec is invalid: ${condition.message}` },
    );
  }
  if (!changed && current.observedGeneration === generation && current.phase === phase) return { events };
  return { status: { observedGeneration: generation, conditions, phase }, events };
}
