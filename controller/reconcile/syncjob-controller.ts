/**
 * The SyncJob controller: decides a job's level from one cache snapshot (decideJob, pure) and
 * carries the decision out through the KubeWrites port — shadow-table steps first (their failure
 * leaves the status as it is, so the same step is decided again with backoff), then the runs to
 * create and delete, the status, and the events. Its own writes go into the cache at once. It also
 * watches its Running runs' heartbeats: a runner silent for longer than the bound is lost, and its
 * run is failed or queued again (./job/lost-run.ts), the silent runner stopped.
 */

import type { KubernetesObject } from "@kubernetes/client-node";
import type { SyncRunStatus } from "../api/syncrun.ts";
import type { ClusterCache } from "../cache/cluster.ts";
import { keyOf } from "../cache/objects.ts";
import { controllerReference } from "../kube/ownership.ts";
import { isNotFound, SYNCJOBS, SYNCRUNS, statusCodeOf } from "../kube/resource.ts";
import type { KubeWrites } from "../kube/writes.ts";
import {
  hasPendingRequest,
  type RequestGuard,
  type ShadowStatus,
  shadowStatusPatch,
} from "../shadow/state.ts";
import { decideLostRun, staleHeartbeat } from "./job/lost-run.ts";
import type { ObjectKey, ReconcileResult, Reconciler } from "./reconciler.ts";
import { decideJob, type JobDecision } from "./syncjob.ts";

/** Performs the shadow machine's side effects for a job; resolves with the error of a failed step. */
export interface ShadowActions {
  perform(job: KubernetesObject, decision: JobDecision): Promise<Error | undefined>;
}

export interface SyncJobControllerDeps {
  readonly cache: ClusterCache;
  readonly kube: KubeWrites;
  readonly shadow: ShadowActions;
  readonly now?: () => Date;
  /**
   * Awaited before each reconcile: admission passes writing their decisions hold job reconciles back
   * (their writes, mostly status mirrors, would compete with admission for the API server).
   */
  readonly beforeReconcile?: () => Promise<void>;
  /**
   * Whether the API server guards shadow requests (request-policy.ts); asked only when a job carries
   * an approval or rollback not yet handled. Without it such requests are refused.
   */
  readonly requestGuard?: () => Promise<RequestGuard>;
  /** Stops this replica's runner of a run, if it executes it (a silent runner, once its run is lost). */
  readonly cancelRun?: (namespace: string, name: string) => Promise<void>;
}

export class SyncJobController implements Reconciler {
  readonly #deps: SyncJobControllerDeps;

  constructor(deps: SyncJobControllerDeps) {
    this.#deps = deps;
  }

  async reconcile(key: ObjectKey): Promise<ReconcileResult | undefined> {
    const { cache, kube } = this.#deps;
    await this.#deps.beforeReconcile?.();
    const snap = cache.snapshot();
    const entry = snap.get(keyOf("SyncJob", key.namespace, key.name));
    if (!entry) return undefined; // deleted: owned runs go with it (owner references)
    const namespace = entry.namespace ?? "";
    // A namespace being deleted takes the job with it and refuses new objects: nothing to do.
    if (snap.get(keyOf("Namespace", undefined, namespace))?.phase === "Terminating") return undefined;
    const policies = cache.policies();
    const shadowStatus = (entry.object as { status?: { shadow?: ShadowStatus } }).status?.shadow;
    const requestGuard = hasPendingRequest(shadowStatus, entry.object.metadata?.annotations)
      ? await this.#deps.requestGuard?.()
      : undefined;
    const now = this.#deps.now?.() ?? new Date();
    const checkAt = await this.#failSilentRunners(namespace, entry.name, now);
    const decision = decideJob({
      object: entry.object,
      policies,
      namespace: cache.namespace(namespace),
      runs: cache.runsOf(namespace, entry.name),
      now,
      view: cache.jobView(entry, policies),
      ...(requestGuard ? { requestGuard } : {}),
    });
    if (decision.shadow && decision.job) {
      const failure = await this.#deps.shadow.perform(entry.object, decision);
      if (failure) throw failure;
      if (decision.status?.shadow) {
        (decision.status as Record<string, unknown>).shadow = shadowStatusPatch(decision.shadow.status);
      }
    }
    for (const run of decision.create) {
      const created = await kube.createRun(namespace, {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncRun",
        metadata: {
          name: run.name,
          namespace,
          labels: { "syncgov.io/job": entry.name },
          ownerReferences: [controllerReference(entry.object)],
        },
        spec: { jobName: entry.name, type: run.type, trigger: run.trigger },
      } as KubernetesObject);
      if (!created) continue; // an earlier attempt created it
      cache.wrote("SyncRun", created, "ADDED");
      await kube.recordEvent(entry.object, {
        type: "Normal",
        reason: "RunCreated",
        note: `Created ${run.type} run ${run.name} (${run.trigger.toLowerCase()} trigger).`,
      });
    }
    for (const name of decision.delete) await kube.deleteRun(namespace, name);
    if (decision.status) {
      try {
        const written = await kube.patchStatus({
          resource: SYNCJOBS,
          namespace,
          name: entry.name,
          status: decision.status as Record<string, unknown>,
        });
        cache.wrote("SyncJob", written);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    }
    for (const ev of decision.events) await kube.recordEvent(entry.object, ev);
    const requeue = [
      ...(decision.requeueAfterMs !== undefined ? [decision.requeueAfterMs] : []),
      ...(checkAt !== undefined ? [Math.max(checkAt - now.getTime(), 1000)] : []),
    ];
    return requeue.length > 0 ? { requeueAfter: Math.min(...requeue) } : undefined;
  }

  /**
   * Running runs of the job whose runner stopped beating: each is failed or queued again
   * (decideLostRun), conditional on its resourceVersion, and its runner, if this replica executes
   * it, stopped. Returns when to look again (the soonest time a live runner's heartbeat goes stale).
   */
  async #failSilentRunners(namespace: string, job: string, now: Date): Promise<number | undefined> {
    const { cache, kube } = this.#deps;
    const snap = cache.snapshot();
    let checkAt: number | undefined;
    for (const summary of cache.runsOf(namespace, job)) {
      if (summary.phase !== "Running") continue;
      const run = snap.get(keyOf("SyncRun", namespace, summary.name));
      if (!run) continue;
      const status = (run.object as { status?: SyncRunStatus }).status;
      const stale = staleHeartbeat(status, now);
      if (!stale) continue;
      if ("checkAt" in stale) {
        checkAt = checkAt === undefined ? stale.checkAt : Math.min(checkAt, stale.checkAt);
        continue;
      }
      const decision = decideLostRun({ type: run.runType, status }, stale.loss, now);
      try {
        const written = await kube.patchStatus({
          resource: SYNCRUNS,
          namespace,
          name: run.name,
          status: decision.status,
          resourceVersion: run.resourceVersion,
        });
        cache.wrote("SyncRun", written);
      } catch (err) {
        // Gone, or changed meanwhile (a heartbeat or a result arrived): the next reconcile sees it.
        if (isNotFound(err) || statusCodeOf(err) === 409) continue;
        throw err;
      }
      await kube.recordEvent(run.object, decision.event);
      await this.#deps.cancelRun?.(namespace, run.name);
    }
    return checkAt;
  }
}
