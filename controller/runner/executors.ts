/**
 * Executors start the runner for an admitted SyncRun; configuration chooses one:
 * - InProcess: runs it inside the controller process (small installations, the local default);
 * - ChildProcess: spawns exactly the pod entrypoint, `node controller/cli.ts run <ns>/<run>` (from the
 *   build, dist/controller/cli.js);
 * - Job: creates a batch/v1 Job in the run's namespace, owned by the SyncRun, whose pod runs
 *   `syncgov run <ns>/<run>` (production: Kubernetes spreads the runs over the cluster).
 *
 * Whatever the executor, the runner itself writes the run's status; an executor only starts it,
 * tells when it ended (exit code, 0 for success), and cancels it (Replace policy, stop).
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesObject,
  type V1EnvVar,
  type V1Job,
  type V1Pod,
  type V1ResourceRequirements,
  type V1Volume,
  type V1VolumeMount,
} from "@kubernetes/client-node";
import type { SyncJobSpec } from "../api/syncjob.ts";
import { controllerOf, withControllerReference } from "../kube/ownership.ts";
import { describeApiError, isConflict, isNotFound, SYNCJOBS, SYNCRUNS } from "../kube/resource.ts";
import { type RunRef, runSyncRun } from "./cluster.ts";
import type { LineageSink } from "./lineage.ts";
import type { RunLogger, StreamRunner } from "./types.ts";

export type ExecutorKind = "InProcess" | "ChildProcess" | "Job";

/** How a runner ended, in words for a run it left without a result (RunnerLoss, reconcile/job/lost-run.ts). */
export interface RunnerEnd {
  /** The exit code: 0 when the run succeeded. */
  readonly code: number;
  /** RunnerExited, RunnerPodFailed, RunnerJobGone, RunnerFailed. */
  readonly reason: string;
  /** e.g. "runner process 4242 was killed by SIGKILL (exit 137)", "runner pod p was OOMKilled (exit 137)". */
  readonly message: string;
}

export interface RunHandle {
  /** For status.executor. */
  readonly executor: { readonly kind: ExecutorKind; readonly jobName?: string };
  /** The runner's exit code once it ends: 0 when the run succeeded. */
  readonly done: Promise<number>;
  /** How the runner ended (resolves with done); absent: only the exit code is known. */
  readonly ended?: Promise<RunnerEnd>;
  /** Asks the runner to stop; it ends Cancelled at the next batch boundary. */
  cancel(): Promise<void>;
}

export interface RunExecutor {
  readonly kind: ExecutorKind;
  start(ref: RunRef): Promise<RunHandle>;
  /**
   * Takes up a runner started before (by a controller that has since restarted) without starting a
   * new one: the Job executor watches the run's existing Job. Absent: the run is started again.
   */
  adopt?(ref: RunRef, started: { readonly jobName?: string }): Promise<RunHandle>;
}

/**
 * The path of the syncgov command line in this installation (the pod entrypoint): controller/cli.ts
 * in the source tree, dist/controller/cli.js in the build (`npm run build`), whichever this module is.
 */
export const SYNCGOV_CLI = fileURLToPath(
  new URL(import.meta.url.endsWith(".ts") ? "../cli.ts" : "../cli.js", import.meta.url),
);

export interface InProcessExecutorOptions {
  readonly kubeConfig: KubeConfig;
  readonly log?: RunLogger;
  readonly lineage?: LineageSink;
  readonly stream?: StreamRunner;
}

export class InProcessExecutor implements RunExecutor {
  readonly kind = "InProcess";
  readonly #options: InProcessExecutorOptions;

  constructor(options: InProcessExecutorOptions) {
    this.#options = options;
  }

  async start(ref: RunRef): Promise<RunHandle> {
    const cancel = new AbortController();
    const ended = runSyncRun(ref, { ...this.#options, signal: cancel.signal }).then(
      (outcome): RunnerEnd => ({
        code: outcome.phase === "Succeeded" ? 0 : 1,
        reason: "RunnerExited",
        message: `the in-process runner ended ${outcome.phase}`,
      }),
      (error: unknown): RunnerEnd => {
        this.#options.log?.warn(
          { run: `${ref.namespace}/${ref.name}`, error: describeApiError(error) },
          "the runner could not report the run",
        );
        return {
          code: 1,
          reason: "RunnerFailed",
          message: `the in-process runner failed: ${describeApiError(error)}`,
        };
      },
    );
    return {
      executor: { kind: this.kind },
      done: ended.then((e) => e.code),
      ended,
      cancel: async () => cancel.abort(),
    };
  }
}

export interface ChildProcessExecutorOptions {
  /** Directory of the runners' logs: one file per run, `<namespace>_<run>.log`, appended per attempt. */
  readonly logDir: string;
  /** The syncgov command line; default this installation's, SYNCGOV_CLI. */
  readonly cliPath?: string;
  /** Given to the runner as KUBECONFIG; default the controller's environment. */
  readonly kubeconfigPath?: string;
  /** Extra environment for the runner. */
  readonly env?: Readonly<Record<string, string>>;
  /** Time between SIGTERM and SIGKILL on cancel; default 30 s, as a pod's grace period. */
  readonly killGraceMs?: number;
}

export interface ChildRunHandle extends RunHandle {
  readonly pid: number;
  readonly logFile: string;
}

export class ChildProcessExecutor implements RunExecutor {
  readonly kind = "ChildProcess";
  readonly #options: ChildProcessExecutorOptions;

  constructor(options: ChildProcessExecutorOptions) {
    this.#options = options;
  }

  /** The runner's argv after the node binary: exactly the pod entrypoint. */
  argv(ref: RunRef): string[] {
    return [this.#options.cliPath ?? SYNCGOV_CLI, "run", `${ref.namespace}/${ref.name}`];
  }

  logFileOf(ref: RunRef): string {
    return join(this.#options.logDir, `${ref.namespace}_${ref.name}.log`);
  }

  async start(ref: RunRef): Promise<ChildRunHandle> {
    mkdirSync(this.#options.logDir, { recursive: true });
    const logFile = this.logFileOf(ref);
    const fd = openSync(logFile, "a", 0o600);
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, this.argv(ref), {
        stdio: ["ignore", fd, fd],
        env: {
          ...process.env,
          ...(this.#options.kubeconfigPath ? { KUBECONFIG: this.#options.kubeconfigPath } : {}),
          ...this.#options.env,
        },
      });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    const pid = child.pid;
    const ended = new Promise<RunnerEnd>((resolve) => {
      child.once("error", (error) =>
        resolve({
          code: 127,
          reason: "RunnerExited",
          message: `the runner process could not start: ${error.message}`,
        }),
      );
      child.once("exit", (code, signal) => {
        const exit = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
        resolve({
          code: exit,
          reason: "RunnerExited",
          message: signal
            ? `runner process ${pid} was killed by ${signal} (exit ${exit})`
            : `runner process ${pid} exited with code ${exit}`,
        });
      });
    });
    const done = ended.then((e) => e.code);
    if (pid === undefined) {
      // spawn failed (its error event follows): report it as a runner that never ran.
      return { executor: { kind: this.kind }, done, ended, cancel: async () => {}, pid: -1, logFile };
    }
    const grace = this.#options.killGraceMs ?? 30_000;
    return {
      executor: { kind: this.kind },
      done,
      ended,
      pid,
      logFile,
      cancel: async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), grace);
        await done;
        clearTimeout(timer);
      },
    };
  }
}

export interface JobExecutorOptions {
  readonly kubeConfig: KubeConfig;
  /** The syncgov image; its PATH has `syncgov` (controller/cli.ts). */
  readonly image: string;
  readonly imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
  /** Service account of the runner pods, in the run's namespace; default syncgov-runner. */
  readonly serviceAccountName?: string;
  /** Finished Jobs are deleted after this long; default 3600. */
  readonly ttlSecondsAfterFinished?: number;
  readonly activeDeadlineSeconds?: number;
  /** Default: requests 100m CPU and 256Mi, limit 512Mi. */
  readonly resources?: V1ResourceRequirements;
  /** Default 65532 (the conventional non-root user of distroless images). */
  readonly runAsUser?: number;
  /** How often done() looks at the Job; default 5 s. */
  readonly pollIntervalMs?: number;
  /** Environment of the runner container, e.g. runnerSettingsEnv(process.env). */
  readonly env?: readonly V1EnvVar[];
  /**
   * Runner pods use the node's network (`hostNetwork: true`, DNS policy ClusterFirstWithHostNet):
   * for single-node or local clusters without a pod network. Default false.
   */
  readonly hostNetwork?: boolean;
}

/** Settings the runner reads from its environment, as the controller passes them on. */
const RUNNER_SETTINGS = [
  "SYNCGOV_LOG_LEVEL",
  "SYNCGOV_LINEAGE",
  "SYNCGOV_LINEAGE_URL",
  "SYNCGOV_LINEAGE_TOPIC",
  "SYNCGOV_LINEAGE_KAFKA_BROKERS",
  "SYNCGOV_LINEAGE_NAMESPACE",
  "KAFKA_BROKERS",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_SERVICE_NAME",
  // The storage granted to file sources (api/file-grant.ts): the runner checks its file against it.
  "SYNCGOV_FILE_ROOTS",
  // Where in-cluster clients find the API server. In a cluster the kubelet injects the same values
  // into the controller's pod and the runners'; passing them on carries an explicit override (a
  // cluster whose Service IPs are not routable, e.g. a local node without kube-proxy) to the runners.
  "KUBERNETES_SERVICE_HOST",
  "KUBERNETES_SERVICE_PORT",
] as const;

/**
 * The controller's runner settings (lineage transport, log level, Kafka bootstrap servers, OTLP
 * endpoint) as environment for runner Jobs, so a run in a Job reports as one in a child process
 * does. Only settings pass, never credentials: a Job spec is readable by anyone who can read Jobs in
 * the tenant's namespace, so SYNCGOV_LINEAGE_API_KEY and OTLP headers stay behind, and a URL that
 * carries a user or password is left out (the runner then uses its default).
 */
export function runnerSettingsEnv(source: Readonly<Record<string, string | undefined>>): V1EnvVar[] {
  const env: V1EnvVar[] = [];
  for (const name of RUNNER_SETTINGS) {
    const value = source[name];
    if (value === undefined || value === "" || carriesCredentials(value)) continue;
    env.push({ name, value });
  }
  return env;
}

/** Whether a value holds a URL with a user or password in it. */
function carriesCredentials(value: string): boolean {
  for (const part of value.split(",")) {
    if (!URL.canParse(part.trim())) continue;
    const url = new URL(part.trim());
    if (url.username !== "" || url.password !== "") return true;
  }
  return false;
}

const DEFAULT_RESOURCES: V1ResourceRequirements = {
  requests: { cpu: "100m", memory: "256Mi" },
  limits: { memory: "512Mi" },
};

/** Job names are at most 63 characters (they become pod labels); long run names are cut and hashed. */
export function runnerJobName(runName: string): string {
  const name = `syncrun-${runName}`;
  if (name.length <= 63 && !name.includes(".")) return name;
  const hash = createHash("sha256").update(runName).digest("hex").slice(0, 8);
  return `${name
    .slice(0, 54)
    .replace(/[.-]+$/, "")
    .replaceAll(".", "-")}-${hash}`;
}

/**
 * The batch/v1 Job that runs a SyncRun: the pod runs `syncgov run <ns>/<run>` once (backoffLimit 0:
 * a retry is the controller's decision), under restricted pod security, owned by the SyncRun so it
 * is deleted with it. A file source's PersistentVolumeClaim is mounted read-only at the file's
 * directory.
 */
export function runnerJob(
  run: KubernetesObject,
  jobSpec: SyncJobSpec | undefined,
  options: Omit<JobExecutorOptions, "kubeConfig" | "pollIntervalMs">,
): V1Job {
  const namespace = run.metadata?.namespace;
  const name = run.metadata?.name;
  if (!namespace || !name || !run.metadata?.uid) throw new Error("a SyncRun needs a namespace, name and uid");
  const labels = {
    "app.kubernetes.io/name": "syncgov-runner",
    "app.kubernetes.io/managed-by": "syncgov",
    "syncgov.io/run-uid": run.metadata.uid,
  };
  const volumes: V1Volume[] = [{ name: "tmp", emptyDir: { sizeLimit: "64Mi" } }];
  const mounts: V1VolumeMount[] = [{ name: "tmp", mountPath: "/tmp" }];
  const file = jobSpec?.source.file;
  if (file?.persistentVolumeClaim) {
    volumes.push({
      name: "source-file",
      persistentVolumeClaim: { claimName: file.persistentVolumeClaim, readOnly: true },
    });
    mounts.push({ name: "source-file", mountPath: dirname(file.path), readOnly: true });
  }
  const job: V1Job = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: runnerJobName(name),
      namespace,
      labels,
      annotations: { "syncgov.io/run": `${namespace}/${name}` },
    },
    spec: {
      backoffLimit: 0,
      ttlSecondsAfterFinished: options.ttlSecondsAfterFinished ?? 3600,
      ...(options.activeDeadlineSeconds !== undefined
        ? { activeDeadlineSeconds: options.activeDeadlineSeconds }
        : {}),
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: "Never",
          ...(options.hostNetwork ? { hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet" } : {}),
          serviceAccountName: options.serviceAccountName ?? "syncgov-runner",
          automountServiceAccountToken: true,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: options.runAsUser ?? 65532,
            runAsGroup: options.runAsUser ?? 65532,
            seccompProfile: { type: "RuntimeDefault" },
          },
          volumes,
          containers: [
            {
              name: "runner",
              image: options.image,
              ...(options.imagePullPolicy ? { imagePullPolicy: options.imagePullPolicy } : {}),
              command: ["syncgov", "run", `${namespace}/${name}`],
              ...(options.env && options.env.length > 0 ? { env: [...options.env] } : {}),
              resources: options.resources ?? DEFAULT_RESOURCES,
              securityContext: {
                runAsNonRoot: true,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                privileged: false,
                capabilities: { drop: ["ALL"] },
                seccompProfile: { type: "RuntimeDefault" },
              },
              volumeMounts: mounts,
            },
          ],
        },
      },
    },
  };
  return withControllerReference(job, run);
}

export interface JobRunHandle extends RunHandle {
  readonly job: V1Job;
}

export class JobExecutor implements RunExecutor {
  readonly kind = "Job";
  readonly #options: JobExecutorOptions;
  readonly #batch: BatchV1Api;
  readonly #core: CoreV1Api;
  readonly #custom: CustomObjectsApi;

  constructor(options: JobExecutorOptions) {
    this.#options = options;
    this.#batch = options.kubeConfig.makeApiClient(BatchV1Api);
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Watches the run's existing Job (a controller that restarted); it ended if it is gone. */
  async adopt(ref: RunRef, started: { readonly jobName?: string }): Promise<JobRunHandle> {
    const jobName = started.jobName ?? runnerJobName(ref.name);
    return this.#handle(ref.namespace, jobName, { metadata: { name: jobName, namespace: ref.namespace } });
  }

  /**
   * Creates the run's Job, or adopts it when it exists already and is controlled by this SyncRun
   * (a controller that restarted starts the same run again).
   */
  async start(ref: RunRef): Promise<JobRunHandle> {
    const run = (await this.#custom.getNamespacedCustomObject({
      ...SYNCRUNS,
      ...ref,
    })) as KubernetesObject & {
      spec?: { jobName?: string };
    };
    let jobSpec: SyncJobSpec | undefined;
    if (run.spec?.jobName) {
      try {
        const syncJob = (await this.#custom.getNamespacedCustomObject({
          ...SYNCJOBS,
          namespace: ref.namespace,
          name: run.spec.jobName,
        })) as { spec?: SyncJobSpec };
        jobSpec = syncJob.spec;
      } catch (error) {
        // The runner reports a missing SyncJob in the run's status; the Job is created regardless.
        if (!isNotFound(error)) throw error;
      }
    }
    const desired = runnerJob(run, jobSpec, this.#options);
    let job: V1Job | undefined;
    for (let attempt = 0; !job; attempt++) {
      try {
        job = await this.#batch.createNamespacedJob({ namespace: ref.namespace, body: desired });
      } catch (error) {
        if (!isConflict(error) || attempt >= 10) throw error;
        const existing = await this.#batch.readNamespacedJob({
          namespace: ref.namespace,
          name: desired.metadata!.name!,
        });
        if (controllerOf(existing)?.uid !== run.metadata?.uid) {
          throw new Error(
            `Job ${ref.namespace}/${desired.metadata!.name} exists and does not belong to SyncRun ${ref.name}`,
          );
        }
        if (jobEnd(existing) === undefined) {
          job = existing;
          break;
        }
        // The Job of a runner that was lost (the run is retried): a new attempt needs a new Job.
        await this.#batch
          .deleteNamespacedJob({
            namespace: ref.namespace,
            name: desired.metadata!.name!,
            propagationPolicy: "Background",
          })
          .catch((e: unknown) => {
            if (!isNotFound(e)) throw e;
          });
        await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)));
      }
    }
    return this.#handle(ref.namespace, job.metadata!.name!, job);
  }

  #handle(namespace: string, jobName: string, job: V1Job): JobRunHandle {
    const ref = { namespace };
    const ended = this.#waitForJob(namespace, jobName);
    return {
      executor: { kind: this.kind, jobName },
      job,
      done: ended.then((e) => e.code),
      ended,
      cancel: async () => {
        try {
          await this.#batch.deleteNamespacedJob({
            namespace: ref.namespace,
            name: jobName,
            propagationPolicy: "Background",
          });
        } catch (error) {
          if (!isNotFound(error)) throw error;
        }
      },
    };
  }

  /**
   * Polls the Job until it completes (0) or fails or is deleted (1), and says why: the runner pod's
   * termination (OOMKilled, a signal, evicted) when the controller may list pods, else the Job's
   * Failed condition. Polling one Job per run is cheap at the scale of concurrently running syncs
   * and needs no informer on Jobs.
   */
  async #waitForJob(namespace: string, name: string): Promise<RunnerEnd> {
    const interval = this.#options.pollIntervalMs ?? 5000;
    for (;;) {
      try {
        const job = await this.#batch.readNamespacedJob({ namespace, name });
        const end = jobEnd(job);
        if (end === "Complete")
          return { code: 0, reason: "RunnerExited", message: `runner Job ${name} completed` };
        if (end === "Failed") return await this.#failure(namespace, name, job);
      } catch (error) {
        if (isNotFound(error))
          return {
            code: 1,
            reason: "RunnerJobGone",
            message: `runner Job ${namespace}/${name} was deleted before the run finished`,
          };
        // Transient API errors: look again at the next interval.
      }
      // Unreferenced: a controller shutting down does not wait for its runs' Jobs.
      await new Promise((resolve) => setTimeout(resolve, interval).unref());
    }
  }

  /** A failed Job, in words: its pod's termination if the controller may read it, else the Job's condition. */
  async #failure(namespace: string, name: string, job: V1Job): Promise<RunnerEnd> {
    const failed = job.status?.conditions?.find(
      (c) => (c.type === "Failed" || c.type === "FailureTarget") && c.status === "True",
    );
    const jobWords = `runner Job ${name} failed${failed?.reason ? ` (${failed.reason}${failed.message ? `: ${failed.message}` : ""})` : ""}`;
    try {
      const pods = await this.#core.listNamespacedPod({
        namespace,
        labelSelector: `batch.kubernetes.io/job-name=${name}`,
      });
      const words = pods.items.map(describePodFailure).filter((w) => w !== undefined);
      if (words.length > 0)
        return { code: 1, reason: "RunnerPodFailed", message: `${words.join("; ")}; ${jobWords}` };
    } catch {
      // No right to list pods (the chart grants it): the Job's condition says enough.
    }
    return { code: 1, reason: "RunnerPodFailed", message: jobWords };
  }
}

/** Complete, Failed, or undefined while the Job runs. */
function jobEnd(job: V1Job): "Complete" | "Failed" | undefined {
  const conditions = job.status?.conditions ?? [];
  const holds = (type: string) => conditions.some((c) => c.type === type && c.status === "True");
  if (holds("Complete") || holds("SuccessCriteriaMet")) return "Complete";
  if (holds("Failed") || holds("FailureTarget")) return "Failed";
  return undefined;
}

/** "runner pod p was OOMKilled (exit 137)", "runner pod p was Evicted: …", or undefined for a pod that did not fail. */
export function describePodFailure(pod: V1Pod): string | undefined {
  const name = pod.metadata?.name ?? "?";
  const terminated = pod.status?.containerStatuses?.find((c) => c.name === "runner")?.state?.terminated;
  if (terminated && terminated.exitCode !== 0) {
    const signal = terminated.signal ? `, signal ${terminated.signal}` : "";
    const why = terminated.reason && terminated.reason !== "Error" ? `was ${terminated.reason}` : "failed";
    const detail = terminated.message ? `: ${terminated.message.trim().slice(0, 512)}` : "";
    return `runner pod ${name} ${why} (exit ${terminated.exitCode}${signal})${detail}`;
  }
  if (pod.status?.phase === "Failed")
    return `runner pod ${name} ${pod.status.reason ? `was ${pod.status.reason}` : "failed"}${pod.status.message ? `: ${pod.status.message}` : ""}`;
  return undefined;
}

export type ExecutorConfig =
  | ({ readonly kind: "InProcess" } & InProcessExecutorOptions)
  | ({ readonly kind: "ChildProcess" } & ChildProcessExecutorOptions)
  | ({ readonly kind: "Job" } & JobExecutorOptions);

/** The executor the configuration names. */
export function createExecutor(config: ExecutorConfig): RunExecutor {
  switch (config.kind) {
    case "InProcess":
      return new InProcessExecutor(config);
    case "ChildProcess":
      return new ChildProcessExecutor(config);
    case "Job":
      return new JobExecutor(config);
  }
}
