/**
 * What an admission pass writes, as a pure function of its decisions: each run's status (Running
 * with its slot, Queued with the reason, Skipped, or Cancelled when replaced) and the event that says
 * so. Writes that change nothing are left out. An admission is conditional on the resourceVersion it
 * was decided on, so a run changed meanwhile is decided again rather than admitted twice.
 */

import type { SyncRunStatus } from "../api/syncrun.ts";
import type { StoredObject } from "../cache/objects.ts";
import type { EventRecord } from "../kube/events.ts";
import { kubeTime, setCondition } from "../kube/status.ts";
import type { Decision } from "./admission.ts";

export interface AdmissionWrite {
  readonly run: StoredObject;
  readonly status: Partial<SyncRunStatus>;
  /** Write only if the run is still at the resourceVersion decided on. */
  readonly conditional: boolean;
  /** Recorded once every write of the pass is done: decisions go first. */
  readonly event?: EventRecord;
}

export interface Refusal {
  readonly run: StoredObject;
  readonly reason: string;
  readonly message: string;
}

/**
 * `admittedStatus` gives what an admitted run records besides its phase and slot: its job's
 * effective policy (status.policy; the runner enforces that record, so policy is decided once, here)
 * and the trace of its admission (status.traceContext).
 */
export function planAdmissionWrites(
  decisions: readonly Decision[],
  refused: readonly Refusal[],
  byKey: (key: string) => StoredObject | undefined,
  admittedStatus: (run: StoredObject) => Pick<SyncRunStatus, "policy" | "traceContext">,
  now: Date,
): AdmissionWrite[] {
  const writes: AdmissionWrite[] = [];
  const write = (run: StoredObject, status: Partial<SyncRunStatus>, event?: EventRecord) => {
    const current = (run.object as { status?: SyncRunStatus }).status ?? {};
    const same = (Object.keys(status) as (keyof SyncRunStatus)[]).every(
      (k) => k === "conditions" || JSON.stringify(status[k]) === JSON.stringify(current[k]),
    );
    if (same) return;
    writes.push({ run, status, conditional: status.phase === "Running", ...(event ? { event } : {}) });
  };
  const admitted = (run: StoredObject, status: "True" | "False", reason: string, message: string) =>
    setCondition(
      (run.object as { status?: SyncRunStatus }).status?.conditions,
      { type: "Admitted", status, reason, message },
      now,
    ).conditions;
  for (const d of decisions) {
    const run = byKey(d.run.key);
    if (!run) continue;
    if (d.kind === "Admit" || d.kind === "Replace") {
      write(run, {
        phase: "Running",
        target: d.run.target,
        ...admittedStatus(run),
        admittedAt: kubeTime(now),
        conditions: admitted(run, "True", "Admitted", "Admitted within the concurrency limits."),
      });
      for (const key of d.kind === "Replace" ? d.cancel : []) {
        const victim = byKey(key);
        if (!victim) continue;
        const note = `replaced by ${d.run.name} (concurrencyPolicy Replace).`;
        write(
          victim,
          {
            phase: "Cancelled",
            completionTime: kubeTime(now),
            message: `Replaced by ${d.run.name} (concurrencyPolicy Replace).`,
          },
          { type: "Normal", reason: "Replaced", note: `Cancelled: ${note}` },
        );
      }
    } else if (d.kind === "Queue") {
      write(
        run,
        { phase: "Queued", queueReason: d.message, conditions: admitted(run, "False", d.reason, d.message) },
        { type: "Normal", reason: "Queued", note: `Queued: ${d.message}.` },
      );
    } else {
      write(
        run,
        { phase: "Skipped", completionTime: kubeTime(now), message: d.message },
        { type: "Normal", reason: "Skipped", note: `Skipped: ${d.message}.` },
      );
    }
  }
  for (const r of refused) {
    write(
      r.run,
      { phase: "Queued", queueReason: r.message, conditions: admitted(r.run, "False", r.reason, r.message) },
      { type: "Warning", reason: r.reason, note: `Not admitted: ${r.message}.` },
    );
  }
  return writes;
}
