/**
 * The shadow machine's side effects for the SyncJob controller: DDL on the job's target database
 * (its connection from the job's Secret) and restarting the realtime session so that it writes to
 * the table the new state names. A failed step is recorded as an event and returned; the caller
 * leaves the status as it is, so the same step is decided again.
 */

import type { CoreV1Api, KubernetesObject } from "@kubernetes/client-node";
import pg from "pg";
import type { SyncJob } from "../api/syncjob.ts";
import type { ClusterCache } from "../cache/cluster.ts";
import { describeApiError, SYNCRUNS } from "../kube/resource.ts";
import { kubeTime } from "../kube/status.ts";
import type { KubeWrites } from "../kube/writes.ts";
import type { JobDecision } from "../reconcile/syncjob.ts";
import type { ShadowActions } from "../reconcile/syncjob-controller.ts";
import { isDatabaseAction, performDatabaseAction } from "./postgres.ts";

export interface ShadowActionRunnerDeps {
  readonly core: CoreV1Api;
  readonly kube: KubeWrites;
  readonly cache: ClusterCache;
  /** Stops this replica's execution of a run, if it executes it. */
  readonly cancelRun: (namespace: string, name: string) => Promise<void>;
}

export class ShadowActionRunner implements ShadowActions {
  readonly #deps: ShadowActionRunnerDeps;
  readonly #pools = new Map<string, pg.Pool>();

  constructor(deps: ShadowActionRunnerDeps) {
    this.#deps = deps;
  }

  async perform(object: KubernetesObject, decision: JobDecision): Promise<Error | undefined> {
    const job = decision.job!;
    const namespace = object.metadata?.namespace ?? "";
    const name = object.metadata?.name ?? "";
    for (const action of decision.shadow?.actions ?? []) {
      try {
        if (isDatabaseAction(action)) {
          await performDatabaseAction(await this.#targetPool(namespace, job), action);
        } else if (action.kind === "RedirectWrites") {
          for (const run of this.#deps.cache.snapshot().ofKind("SyncRun", namespace)) {
            if (run.jobName !== name || run.runType !== "Realtime" || run.phase !== "Running") continue;
            await this.#deps.cancelRun(namespace, run.name);
            await this.#deps.kube.patchStatus({
              resource: SYNCRUNS,
              namespace,
              name: run.name,
              status: {
                phase: "Cancelled",
                completionTime: kubeTime(new Date()),
                message: `Restarted to write to ${action.to}.`,
              },
            });
          }
        }
      } catch (err) {
        const message = describeApiError(err);
        // One event says what failed (the recorder folds repeats into a series).
        await this.#deps.kube.recordEvent(object, {
          type: "Warning",
          reason: `${action.kind}Failed`,
          note: `Shadow ${action.kind} failed: ${message}; retrying.`,
        });
        return new Error(`shadow ${action.kind} failed: ${message}`);
      }
    }
    return undefined;
  }

  /** A pool to a job's target database, from its connection Secret (cached per Secret version). */
  async #targetPool(namespace: string, job: SyncJob): Promise<pg.Pool> {
    const ref = job.spec.target.sql.connectionSecretRef;
    const secret = await this.#deps.core.readNamespacedSecret({ name: ref.name, namespace });
    const key = `${namespace}/${ref.name}/${ref.key}/${secret.metadata?.resourceVersion}`;
    let pool = this.#pools.get(key);
    if (!pool) {
      const data = secret.data?.[ref.key];
      if (!data) throw new Error(`Secret ${ref.name} has no key ${ref.key}`);
      pool = new pg.Pool({ connectionString: Buffer.from(data, "base64").toString("utf8"), max: 2 });
      pool.on("error", () => undefined);
      this.#pools.set(key, pool);
    }
    return pool;
  }
}
