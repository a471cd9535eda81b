/**
 * Starts admitted runs on the configured executor (in-process, child process or Kubernetes Job;
 * none when runs are left to an outside runner) and keeps the handles of the runs this replica
 * executes, so that a Replace or a shadow redirect can cancel them. A run left Running by a replica
 * that died is started again: the runner is idempotent, so a restarted run converges.
 */

import type { SyncRunStatus } from "../api/syncrun.ts";
import type { StoredObject } from "../cache/objects.ts";
import { describeApiError, SYNCRUNS } from "../kube/resource.ts";
import type { KubeWrites } from "../kube/writes.ts";
import type { RunExecutor, RunHandle } from "../runner/executors.ts";
import type { Logger } from "../telemetry/logger.ts";

export interface RunLauncherDeps {
  /** Undefined: admitted runs are executed outside the controller (`syncgov run`). */
  readonly executor: RunExecutor | undefined;
  readonly kube: KubeWrites;
  readonly log: Logger;
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
      if (started?.kind === "Job" && executor.kind === "Job") continue;
      const ref = { namespace: run.namespace ?? "", name: run.name };
      this.#running.set(key, {
        executor: { kind: executor.kind },
        done: Promise.resolve(0),
        cancel: async () => {},
      });
      void executor.start(ref).then(
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
          const code = await handle.done;
          this.#deps.log.info({ run: key, code }, "runner finished");
          this.#running.delete(key);
        },
        (err) => {
          this.#running.delete(key);
          this.#deps.log.error({ run: key, err: describeApiError(err) }, "could not start the runner");
        },
      );
    }
  }

  /** Stops this replica's execution of the run, if it executes it. */
  async cancel(namespace: string, name: string): Promise<void> {
    await this.#running.get(`${namespace}/${name}`)?.cancel();
  }
}
