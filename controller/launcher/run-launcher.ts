/**
 * Starts admitted runs on the configured executor (in-process, child process or Kubernetes Job;
 * none when runs are left to an outside runner) and keeps the handles of the runs this replica
 * executes, so that a Replace or a shadow redirect can cancel them. A run left Running by a replica
 * that died is started again (the runner is idempotent, so a restarted run converges), or, with the
 * Job executor, its Job is adopted and watched. When a runner ends and its run is still Running (the
 * runner wrote no result: killed, OOM-killed, evicted, its Job deleted), the run's runner is lost:
 * decideLostRun (reconcile/job/lost-run.ts) fails it or queues it again with a backoff, naming why.
 */

import type { KubernetesObject } from "@kubernetes/client-node";

import type { SyncRunStatus } from "../api/syncrun.ts";
import type { StoredObject } from "../cache/objects.ts";
import { describeApiError, isNotFound, SYNCRUNS, statusCodeOf } from "../kube/resource.ts";
import type { KubeWrites } from "../kube/writes.ts";
import { decideLostRun } from "../reconcile/job/lost-run.ts";
import type { RunExecutor, RunHandle, RunnerEnd } from "../runner/executors.ts";
import type { Logger } from "../telemetry/logger.ts";

export interface RunLauncherDeps {
  /** Undefined: admitted runs are executed outside the controller (`syncgov run`). */
  readonly executor: RunExecutor | undefined;
  readonly kube: KubeWrites;
  readonly log: Logger;
  /**
   * Reads a run as the API server has it now (undefined when it is gone): after its runner ended,
   * whether it wrote a result. Absent: a runner's end is only logged.
   */
  readonly readRun?: (namespace: string, name: string) => Promise<KubernetesObject | undefined>;
  /** Asks for another admission pass (a run this replica executed has ended, or was queued again). */
  readonly requeue?: () => void;
  readonly now?: () => Date;
}

export class RunLauncher {
  readonly #deps: RunLauncherDeps;
  /** Runs this replica executes, by "namespace/name". */
  readonly #running = new Map<string, RunHandle>();

  constructor(deps: RunLauncherDeps) {
    this.#deps = deps;
  }

  /** Whether this replica executes the run. */
  executes(namespace: string, name: string): boolean {
    return this.#running.has(`${namespace}/${name}`);
  }

  /**
   * Starts every run of the view that is Running (in the registry and as the API server stored it)
   * and that this replica does not execute yet, unless leadership has ended. With the Job executor, a run whose Job exists (status.executor) is left to it.
   */
  startAdmitted(runs: Iterable<StoredObject>, leading: AbortSignal): void {
    const executor = this.#deps.executor;
    if (!executor || leading.aborted) return;
    for (const run of runs) {
      // Admitted as the API server has it: the registry marks a run Running as soon as a pass
      // decides to admit it, before the (conditional) status write, which may still be refused.
      const status = (run.object as { status?: SyncRunStatus }).status;
      if (run.kind !== "SyncRun" || run.phase !== "Running" || status?.phase !== "Running") continue;
      const key = `${run.namespace}/${run.name}`;
      if (this.#running.has(key)) continue;
      const started = status.executor;
      const ref = { namespace: run.namespace ?? "", name: run.name };
      const admittedAt = status.admittedAt;
      this.#running.set(key, {
        executor: { kind: executor.kind },
        done: Promise.resolve(0),
        cancel: async () => {},
      });
      // A Job started before (this controller restarted) is watched, not started again.
      const launch =
        started?.kind === executor.kind && executor.adopt
          ? executor.adopt(ref, started)
          : executor.start(ref);
      void launch.then(
        async (handle) => {
          this.#running.set(key, handle);
          await this.#deps.kube
            .patchStatus({
              resource: SYNCRUNS,
              namespace: ref.namespace,
              name: ref.name,
              status: { executor: handle.executor },
            })
            .catch((err) =>
              this.#deps.log.warn({ run: key, err: describeApiError(err) }, "could not record the executor"),
            );
          const end: RunnerEnd = await (handle.ended ??
            handle.done.then((code) => ({
              code,
              reason: "RunnerExited",
              message: `the runner exited with code ${code}`,
            })));
          this.#deps.log.info({ run: key, code: end.code }, "runner finished");
          await this.#settle(ref, admittedAt, end).catch((err) =>
            this.#deps.log.warn({ run: key, err: describeApiError(err) }, "could not settle the run"),
          );
          this.#running.delete(key);
          this.#deps.requeue?.();
        },
        (err) => {
          this.#running.delete(key);
          this.#deps.log.error({ run: key, err: describeApiError(err) }, "could not start the runner");
        },
      );
    }
  }

  /**
   * After a runner ended: a run still Running in this admission (the runner wrote no result) lost
   * its runner, and is failed or queued again as decideLostRun says, with a write conditional on
   * the run's resourceVersion (a result written meanwhile wins).
   */
  async #settle(
    ref: { namespace: string; name: string },
    admittedAt: string | undefined,
    end: RunnerEnd,
  ): Promise<void> {
    const { readRun, kube, log } = this.#deps;
    if (!readRun) return;
    for (let attempt = 0; attempt < 5; attempt++) {
      const run = await readRun(ref.namespace, ref.name);
      const status = (run as { status?: SyncRunStatus } | undefined)?.status;
      if (!run || status?.phase !== "Running" || status.admittedAt !== admittedAt) return;
      const type = (run as { spec?: { type?: string } }).spec?.type;
      const decision = decideLostRun(
        { type, status },
        { reason: end.reason, message: end.message },
        this.#deps.now?.() ?? new Date(),
      );
      try {
        await kube.patchStatus({
          resource: SYNCRUNS,
          namespace: ref.namespace,
          name: ref.name,
          status: decision.status,
          resourceVersion: run.metadata?.resourceVersion,
        });
      } catch (err) {
        if (isNotFound(err)) return;
        if (statusCodeOf(err) === 409) continue;
        throw err;
      }
      log.warn({ run: `${ref.namespace}/${ref.name}`, retried: decision.retried }, decision.event.note);
      await kube.recordEvent(run, decision.event);
      return;
    }
  }

  /** Stops this replica's execution of the run, if it executes it. */
  async cancel(namespace: string, name: string): Promise<void> {
    await this.#running.get(`${namespace}/${name}`)?.cancel();
  }
}
