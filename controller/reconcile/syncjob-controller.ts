/**
 * The SyncJob controller: decides a job's level from one cache snapshot (decideJob, pure) and
 * carries the decision out through the KubeWrites port — shadow-table steps first (their failure
 * leaves the status as it is, so the same step is decided again with backoff), then the runs to
 * create and delete, the status, and the events. Its own writes go into the cache at once.
 */

import type { KubernetesObject } from "@kubernetes/client-node";
import type { ClusterCache } from "../cache/cluster.ts";
import { keyOf } from "../cache/objects.ts";
import { controllerReference } from "../kube/ownership.ts";
import { isNotFound, SYNCJOBS } from "../kube/resource.ts";
import type { KubeWrites } from "../kube/writes.ts";
import {
  hasPendingRequest,
  type RequestGuard,
  type ShadowStatus,
  shadowStatusPatch,
} from "../shadow/state.ts";
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
    const decision = decideJob({
      object: entry.object,
      policies,
      namespace: cache.namespace(namespace),
      runs: cache.runsOf(namespace, entry.name),
      now: this.#deps.now?.() ?? new Date(),
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
    return decision.requeueAfterMs !== undefined ? { requeueAfter: decision.requeueAfterMs } : undefined;
  }
}
