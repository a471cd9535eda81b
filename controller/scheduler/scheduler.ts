/**
 * The admission scheduler, as Kueue's: one pass decides every waiting run on one registry snapshot
 * (decideAdmissions, pure), commits the admitted runs' slots to the registry with a compare-and-swap
 * on the snapshot's version (a conflict means another writer changed it: decide again on the new
 * snapshot), so no two passes can over-admit; then writes the plan (planAdmissionWrites, pure) to
 * the runs' status through the KubeWrites port, records the events, cancels replaced runs and
 * starts the admitted ones.
 */

import { context, type Span, trace } from "@opentelemetry/api";
import type { SyncRunStatus } from "../api/syncrun.ts";
import type { ClusterCache } from "../cache/cluster.ts";
import { keyOf, type StoredObject } from "../cache/objects.ts";
import { isNotFound, SYNCRUNS, statusCodeOf } from "../kube/resource.ts";
import type { KubeWrites } from "../kube/writes.ts";
import type { RunLauncher } from "../launcher/run-launcher.ts";
import { admittedPolicy } from "../policy/admitted.ts";
import type { ReconcileResult } from "../queue/workqueue.ts";
import { traceparentOf } from "../telemetry/trace-context.ts";
import { decideAdmissions } from "./admission.ts";
import { admissionInput, type JobAdmission } from "./input.ts";
import { type AdmissionWrite, planAdmissionWrites } from "./plan.ts";
import { untilNextMinute } from "./windows.ts";

const tracer = trace.getTracer("syncgov-controller");

/** Status writes in parallel, bounded, as a controller's client would be. */
const STATUS_WRITERS = 16;
const EVENT_WRITERS = 4;
const MAX_ATTEMPTS = 10;

export interface AdmissionSchedulerDeps {
  readonly cache: ClusterCache;
  readonly kube: KubeWrites;
  readonly launcher: RunLauncher;
  /** Asks for another pass (a conditional admission found its run changed). */
  readonly requeue: () => void;
  readonly now?: () => Date;
}

export class AdmissionScheduler {
  readonly #deps: AdmissionSchedulerDeps;
  #writing = 0;
  #writesDone: PromiseWithResolvers<void> | undefined;

  constructor(deps: AdmissionSchedulerDeps) {
    this.#deps = deps;
  }

  /**
   * Resolves when no pass is writing decisions. Waiting runs are what users wait on, so job
   * reconciles hold back while a pass writes (10,000 decisions take about a minute on a small
   * server) and go on once it is done.
   */
  async idle(): Promise<void> {
    while (this.#writing > 0) {
      this.#writesDone ??= Promise.withResolvers<void>();
      await this.#writesDone.promise;
    }
  }

  /** One admission pass; `signal` ends with leadership (a replica that stopped leading writes nothing more). */
  async reconcile(signal: AbortSignal): Promise<ReconcileResult | undefined> {
    const { cache, launcher } = this.#deps;
    const now = this.#deps.now?.() ?? new Date();
    const policies = cache.policies();
    const admissions = new Map<string, JobAdmission | undefined>();
    const admissionOf = (namespace: string, jobName: string): JobAdmission | undefined => {
      const k = `${namespace}/${jobName}`;
      if (!admissions.has(k)) admissions.set(k, jobAdmission(cache, namespace, jobName, policies));
      return admissions.get(k);
    };
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const snap = cache.snapshot();
      const { input, refused, retryAt } = admissionInput(snap, admissionOf, now);
      const decisions = decideAdmissions(input);
      const byKey = (k: string) =>
        snap.get(keyOf("SyncRun", k.slice(0, k.indexOf("/")), k.slice(k.indexOf("/") + 1)));
      const committed = cache.registry.commit(snap.version, (draft) => {
        for (const d of decisions) {
          const e = byKey(d.run.key);
          if (!e) continue;
          if (d.kind === "Admit" || d.kind === "Replace")
            draft.upsert({ ...e, phase: "Running", target: d.run.target });
          if (d.kind === "Replace") {
            for (const c of d.cancel) {
              const victim = byKey(c);
              if (victim) draft.upsert({ ...victim, phase: "Cancelled" });
            }
          }
        }
      });
      if (!committed.ok) continue;
      // Each admission is a span of the pass's trace; the run records it, so the runner's spans join it.
      const admissions: Span[] = [];
      const admittedStatus = (run: StoredObject) => {
        const effective = admissionOf(run.namespace ?? "", run.jobName ?? "")?.effective;
        // A trace of its own per run (a realtime session lives for days), linked to the pass that admitted it.
        const pass = trace.getSpanContext(context.active());
        const span = tracer.startSpan(`admit ${run.namespace}/${run.name}`, {
          root: true,
          attributes: { "syncgov.run": `${run.namespace}/${run.name}` },
          ...(pass ? { links: [{ context: pass }] } : {}),
        });
        admissions.push(span);
        const traceContext = traceparentOf(trace.setSpan(context.active(), span));
        return {
          ...(effective ? { policy: admittedPolicy(effective) } : {}),
          ...(traceContext ? { traceContext } : {}),
        };
      };
      try {
        await this.#write(planAdmissionWrites(decisions, refused, byKey, admittedStatus, now), signal);
      } finally {
        for (const span of admissions) span.end();
      }
      await this.#recordLegacyAdmissions(admissionOf, signal);
      for (const d of decisions) {
        if (d.kind !== "Replace") continue;
        for (const c of d.cancel)
          await launcher.cancel(c.slice(0, c.indexOf("/")), c.slice(c.indexOf("/") + 1));
      }
      launcher.startAdmitted(cache.snapshot().ofKind("SyncRun"), signal);
      const waitingForWindow = decisions.some((d) => d.kind === "Queue" && d.reason === "OutsideBatchWindow");
      const after = [
        ...(waitingForWindow ? [untilNextMinute(now)] : []),
        // A run queued again after its runner was lost is admitted once its backoff has passed.
        ...(retryAt !== undefined ? [Math.max(retryAt - now.getTime(), 100)] : []),
      ];
      return after.length > 0 ? { requeueAfter: Math.min(...after) } : undefined;
    }
    throw new Error("admission kept conflicting with other registry writes; retrying");
  }

  /**
   * Runs a previous syncgov version admitted without recording their policy (status.policy): the
   * runner refuses to run them, so their policy is recorded now, before the launcher (re)starts
   * them, as their job's effective policy says today.
   */
  async #recordLegacyAdmissions(
    admissionOf: (namespace: string, jobName: string) => JobAdmission | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    const writes: AdmissionWrite[] = [];
    for (const run of this.#deps.cache.snapshot().ofKind("SyncRun")) {
      const status = (run.object as { status?: SyncRunStatus }).status;
      if (status?.phase !== "Running" || status.policy) continue;
      const admission = admissionOf(run.namespace ?? "", run.jobName ?? "");
      if (!admission?.effective || admission.refusal) continue;
      writes.push({ run, status: { policy: admittedPolicy(admission.effective) }, conditional: true });
    }
    if (writes.length > 0) await this.#write(writes, signal);
  }

  async #write(plan: readonly AdmissionWrite[], signal: AbortSignal): Promise<void> {
    const { cache, kube } = this.#deps;
    const events: AdmissionWrite[] = [];
    let next = 0;
    const worker = async () => {
      while (next < plan.length && !signal.aborted) {
        const w = plan[next++]!;
        try {
          const written = await kube.patchStatus({
            resource: SYNCRUNS,
            namespace: w.run.namespace,
            name: w.run.name,
            status: w.status as Record<string, unknown>,
            ...(w.conditional ? { resourceVersion: w.run.resourceVersion } : {}),
          });
          cache.wrote("SyncRun", written);
          if (w.event) events.push(w);
        } catch (err) {
          if (isNotFound(err)) continue;
          if (statusCodeOf(err) === 409) {
            this.#deps.requeue();
            continue;
          }
          throw err;
        }
      }
    };
    this.#writing++;
    try {
      await Promise.all(Array.from({ length: Math.min(STATUS_WRITERS, plan.length) }, worker));
    } finally {
      if (--this.#writing === 0) {
        this.#writesDone?.resolve();
        this.#writesDone = undefined;
      }
    }
    // Events go out behind the decisions and are not awaited: a slow event write never delays admission.
    let nextEvent = 0;
    const recorder = async () => {
      while (nextEvent < events.length) {
        const w = events[nextEvent++]!;
        await kube.recordEvent(w.run.object, w.event!);
      }
    };
    void Promise.all(Array.from({ length: Math.min(EVENT_WRITERS, events.length) }, recorder));
  }
}

/** What the scheduler needs of a job with waiting runs: the job and its effective policy, or why not. */
function jobAdmission(
  cache: ClusterCache,
  namespace: string,
  jobName: string,
  policies: ReturnType<ClusterCache["policies"]>,
): JobAdmission | undefined {
  const entry: StoredObject | undefined = cache.snapshot().get(keyOf("SyncJob", namespace, jobName));
  if (!entry) return undefined;
  // Fails closed, as masking must: a policy whose masking requirement cannot be read may cover any job.
  const unreadable = cache.invalidMaskingPolicies();
  if (unreadable.length > 0)
    return {
      refusal: `SyncPolicy ${unreadable.join(", ")} is invalid and requires masking; no run is admitted until it is fixed (see its Ready condition)`,
    };
  const view = cache.jobView(entry, policies);
  if (!view.job || !view.effective) return { refusal: `job ${jobName} is invalid (see its Valid condition)` };
  return {
    job: view.job,
    effective: view.effective,
    refusal:
      view.effective.verdict === "Block"
        ? `job ${jobName} is blocked by policy: ${view.effective.violations.map((v) => `${v.policy}/${v.rule}`).join(", ")}`
        : view.job.spec.suspend
          ? `job ${jobName} is suspended`
          : undefined,
  };
}
