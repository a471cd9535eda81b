/**
 * The controller process, wiring only (docs/architecture.md): informers feed the cluster cache
 * (committed in batches, one registry version per burst); every replica keeps it warm, and the one
 * that holds the Lease runs the work queue, whose workers hand each key to its reconciler — the
 * SyncJob and SyncPolicy controllers and the admission scheduler — as controller-runtime's
 * controller does: a queue, workers and one switch over the key's kind.
 */

import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, CustomObjectsApi, KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { type Counter, type Histogram, SpanStatusCode, trace } from "@opentelemetry/api";
import { ClusterCache } from "./cache/cluster.ts";
import { keyOf, type StoredKind, type StoredObject, stored } from "./cache/objects.ts";
import { KubernetesAuth, OPEN_ACCESS } from "./http/auth.ts";
import { type RegistryView, serverPort, startHttpServer } from "./http/server.ts";
import { EventRecorder } from "./kube/events.ts";
import { Informer } from "./kube/informer.ts";
import { LeaderElector } from "./kube/leader.ts";
import {
  describeApiError,
  isNotFound,
  NAMESPACES,
  type ResourceType,
  SYNCJOBS,
  SYNCPOLICIES,
  SYNCRUNS,
} from "./kube/resource.ts";
import { ApiKubeWrites } from "./kube/writes.ts";
import { RunLauncher } from "./launcher/run-launcher.ts";
import { type ReconcileResult, WorkQueue } from "./queue/workqueue.ts";
import { keyText, type ObjectKey, parseKey, SCHEDULER_KEY } from "./reconcile/reconciler.ts";
import { SyncJobController } from "./reconcile/syncjob-controller.ts";
import { SyncPolicyController } from "./reconcile/syncpolicy-controller.ts";
import { BY_KIND_AND_PHASE } from "./registry/indexes.ts";
import type { RegistryEvent } from "./registry/registry.ts";
import {
  createExecutor,
  type ExecutorKind,
  type RunExecutor,
  runnerSettingsEnv,
} from "./runner/executors.ts";
import { AdmissionScheduler } from "./scheduler/scheduler.ts";
import { ShadowActionRunner } from "./shadow/actions.ts";
import { requestGuardState } from "./shadow/request-policy.ts";
import { controllerMetrics } from "./telemetry/controller-metrics.ts";
import { type Logger, logger as rootLogger } from "./telemetry/logger.ts";
import { Telemetry } from "./telemetry/telemetry.ts";

export interface ControllerOptions {
  kubeconfig?: string;
  httpPort: number;
  /**
   * Who may read /metrics and /api/registry: "kubernetes" (default) checks each caller's bearer
   * token and permissions with the API server (http/auth.ts); "none" lets anyone who reaches the port.
   */
  httpAuth?: "kubernetes" | "none";
  workers: number;
  leaseNamespace: string;
  leaseName: string;
  leaseDuration: number;
  renewDeadline: number;
  retryPeriod: number;
  identity?: string;
  /** How admitted runs are executed: InProcess, ChildProcess, Job or External. Default ChildProcess. */
  executor?: ExecutorKind | "External";
  /** Image of runner Jobs (Job executor). */
  runnerImage?: string;
  /** Runner Jobs' pods use the node's network (Job executor; clusters without a pod network). */
  runnerHostNetwork?: boolean;
  /** Directory for runner logs (ChildProcess executor). */
  runnerLogDir?: string;
}

const FIELD_MANAGER = "syncgov-controller";
const SHUTDOWN_GRACE_MS = 10_000;

/** The executor the options ask for; undefined for External (admitted runs are left to `syncgov run`). */
function executorFor(kc: KubeConfig, opts: ControllerOptions): RunExecutor | undefined {
  const kind = opts.executor ?? "ChildProcess";
  if (kind === "External") return undefined;
  if (kind === "Job")
    return createExecutor({
      kind,
      kubeConfig: kc,
      image: opts.runnerImage ?? "ghcr.io/syncgov/syncgov:latest",
      env: runnerSettingsEnv(process.env),
      hostNetwork: opts.runnerHostNetwork ?? false,
    });
  if (kind === "InProcess") return createExecutor({ kind, kubeConfig: kc });
  return createExecutor({
    kind,
    logDir: opts.runnerLogDir ?? join(tmpdir(), "syncgov-runs"),
    ...(opts.kubeconfig ? { kubeconfigPath: opts.kubeconfig } : {}),
  });
}

export class Controller {
  readonly cache = new ClusterCache();
  readonly elector: LeaderElector;
  readonly log: Logger;
  /** The work queue of the current leadership term (a new one per term; none while following). */
  queue: WorkQueue | undefined;
  readonly #kc: KubeConfig;
  readonly #opts: ControllerOptions;
  readonly #informers: Informer[] = [];
  readonly #jobs: SyncJobController;
  readonly #policies: SyncPolicyController;
  readonly #scheduler: AdmissionScheduler;
  readonly #newQueue: () => WorkQueue;
  readonly #tracer = trace.getTracer("syncgov-controller");
  readonly #reconcileTotal: Counter;
  readonly #reconcileDuration: Histogram;
  #pending: RegistryEvent<StoredObject>[] = [];
  #flushScheduled = false;
  #leading: AbortController | undefined;
  #workersDone: Promise<void> | undefined;
  #stopSweep: (() => void) | undefined;

  constructor(kc: KubeConfig, opts: ControllerOptions) {
    this.#kc = kc;
    this.#opts = opts;
    const identity = opts.identity ?? `${hostname()}_${process.pid}`;
    this.log = rootLogger.child({ identity });
    const events = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: identity,
      onError: (err, ev) =>
        this.log.warn({ err: describeApiError(err), reason: ev.reason }, "event not recorded"),
    });
    const kube = new ApiKubeWrites(kc.makeApiClient(CustomObjectsApi), events, FIELD_MANAGER);
    const runs = kc.makeApiClient(CustomObjectsApi);
    const launcher = new RunLauncher({
      executor: executorFor(kc, opts),
      kube,
      log: this.log,
      readRun: async (namespace, name) => {
        try {
          return (await runs.getNamespacedCustomObject({ ...SYNCRUNS, namespace, name })) as KubernetesObject;
        } catch (err) {
          if (isNotFound(err)) return undefined;
          throw err;
        }
      },
      requeue: () => this.queue?.add(keyText(SCHEDULER_KEY)),
    });
    this.#scheduler = new AdmissionScheduler({
      cache: this.cache,
      kube,
      launcher,
      requeue: () => this.queue?.add(keyText(SCHEDULER_KEY)),
    });
    this.#jobs = new SyncJobController({
      cache: this.cache,
      kube,
      shadow: new ShadowActionRunner({
        core: kc.makeApiClient(CoreV1Api),
        kube,
        cache: this.cache,
        cancelRun: (namespace, name) => launcher.cancel(namespace, name),
      }),
      beforeReconcile: () => this.#scheduler.idle(),
      requestGuard: () => requestGuardState(kc),
      cancelRun: (namespace, name) => launcher.cancel(namespace, name),
    });
    this.#policies = new SyncPolicyController({ cache: this.cache, kube });

    const measured = controllerMetrics({
      registryCounts: () => this.cache.snapshot().counts(BY_KIND_AND_PHASE),
      registryVersion: () => this.cache.snapshot().version,
      isLeader: () => this.elector.isLeader(),
    });
    this.#newQueue = () => new WorkQueue({ metrics: measured.queue });
    this.#reconcileTotal = measured.reconcileTotal;
    this.#reconcileDuration = measured.reconcileDuration;
    this.elector = new LeaderElector({
      kubeConfig: kc,
      namespace: opts.leaseNamespace,
      name: opts.leaseName,
      identity,
      leaseDurationMs: opts.leaseDuration * 1000,
      renewDeadlineMs: opts.renewDeadline * 1000,
      retryPeriodMs: opts.retryPeriod * 1000,
      onStartedLeading: (signal) => this.#lead(signal),
      onNewLeader: (id) => this.log.info({ leader: id }, "leader observed"),
      onError: (err) => this.log.warn({ err: describeApiError(err) }, "leader election call failed"),
    });
  }

  /** Starts the informers and waits until each has listed once. */
  async startInformers(): Promise<void> {
    const watch = (kind: StoredKind, resource: ResourceType) => {
      const informer = new Informer<KubernetesObject>({
        kubeConfig: this.#kc,
        resource,
        observer: {
          listed: (i) => this.log.info({ kind, ...i }, "listed"),
          failed: (err, i) =>
            this.log.warn({ kind, err: describeApiError(err), ...i }, "list/watch failed, retrying"),
          handlerFailed: (err, i) => this.log.error({ kind, err: String(err), ...i }, "event handler failed"),
        },
      });
      informer.on({
        add: (o) => this.#ingest("ADDED", kind, o),
        update: (_old, o) => this.#ingest("MODIFIED", kind, o),
        delete: (o) => this.#ingest("DELETED", kind, o),
      });
      this.#informers.push(informer);
      informer.start();
    };
    watch("Namespace", NAMESPACES);
    watch("SyncPolicy", SYNCPOLICIES);
    watch("SyncJob", SYNCJOBS);
    watch("SyncRun", SYNCRUNS);
    await Promise.all(this.#informers.map((i) => i.waitForSync()));
    // The registry holds everything listed before anyone reads it.
    if (this.#pending.length > 0) this.#flush();
    this.#stopSweep = this.cache.registry.startTombstoneSweep(60_000);
  }

  synced(): boolean {
    return this.#informers.length > 0 && this.#informers.every((i) => i.hasSynced());
  }

  /** Queues a watch event; a burst of events is committed to the registry as one version. */
  #ingest(type: RegistryEvent<StoredObject>["type"], kind: StoredKind, object: KubernetesObject): void {
    this.#pending.push({ type, object: stored(kind, object) });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    const batch = this.#pending;
    this.#pending = [];
    this.cache.apply(batch);
    for (const { object: e } of batch) this.#enqueueFor(e);
  }

  /** Which reconciles an object's change calls for (nothing while following: the leader does it). */
  #enqueueFor(e: StoredObject): void {
    const queue = this.queue;
    if (!queue) return;
    const job = (namespace: string | undefined, name: string) => queue.add(keyOf("SyncJob", namespace, name));
    switch (e.kind) {
      case "SyncJob":
        job(e.namespace, e.name);
        queue.add(keyText(SCHEDULER_KEY));
        break;
      case "SyncRun":
        if (e.jobName) job(e.namespace, e.jobName);
        queue.add(keyText(SCHEDULER_KEY));
        break;
      case "SyncPolicy":
        // A policy change can change every job's effective policy.
        queue.add(keyOf("SyncPolicy", undefined, e.name));
        for (const j of this.cache.snapshot().ofKind("SyncJob")) job(j.namespace, j.name);
        queue.add(keyText(SCHEDULER_KEY));
        break;
      case "Namespace":
        for (const j of this.cache.snapshot().ofKind("SyncJob", e.name)) job(j.namespace, j.name);
        break;
    }
  }

  /** Runs the workers while this replica leads; returns when leadership ends. */
  async #lead(signal: AbortSignal): Promise<void> {
    this.log.info("started leading");
    const leading = new AbortController();
    this.#leading = leading;
    signal.addEventListener("abort", () => leading.abort(), { once: true });
    const queue = this.#newQueue();
    this.queue = queue;
    // Level-based: everything known is reconciled once on taking over. Admission first: waiting
    // runs should not wait behind a reconcile of every job.
    queue.add(keyText(SCHEDULER_KEY));
    for (const e of this.cache.snapshot()) this.#enqueueFor(e);
    this.#workersDone = queue.runWorkers(
      this.#opts.workers,
      (key) => this.#reconcile(parseKey(key), leading.signal),
      {
        onError: (key, err, retry) =>
          this.log.warn({ key, err: describeApiError(err), ...retry }, "reconcile failed"),
      },
    );
    await new Promise<void>((resolve) => {
      if (leading.signal.aborted) resolve();
      leading.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    this.queue = undefined;
    queue.shutDown();
    await this.#workersDone;
    this.log.info("stopped leading");
  }

  /** Hands a key to its reconciler, with a span and metrics. */
  async #reconcile(key: ObjectKey, leading: AbortSignal): Promise<ReconcileResult | undefined> {
    const began = performance.now();
    return this.#tracer.startActiveSpan(
      `reconcile ${key.kind}`,
      { attributes: { "syncgov.key": keyText(key) } },
      async (span) => {
        let result = "success";
        try {
          switch (key.kind) {
            case "SyncJob":
              return await this.#jobs.reconcile(key);
            case "SyncPolicy":
              return await this.#policies.reconcile(key);
            case "Scheduler":
              return await this.#scheduler.reconcile(leading);
          }
        } catch (err) {
          result = "error";
          span.recordException(err as Error);
          span.setStatus({ code: SpanStatusCode.ERROR, message: describeApiError(err) });
          throw err;
        } finally {
          span.end();
          this.#reconcileTotal.add(1, { kind: key.kind, result });
          this.#reconcileDuration.record((performance.now() - began) / 1000, { kind: key.kind, result });
        }
      },
    );
  }

  /** Registry view for /api/registry. */
  registryView(): RegistryView {
    const snap = this.cache.snapshot();
    const objects = [...snap].map((e) => ({
      kind: e.kind,
      namespace: e.namespace,
      name: e.name,
      resourceVersion: e.resourceVersion,
      phase: e.phase,
      target: e.target,
    }));
    return { version: snap.version, size: snap.size, objects };
  }

  /** SIGTERM: stop taking work, finish what is in flight, release the lease, stop the informers. */
  async stop(): Promise<void> {
    this.#leading?.abort();
    await this.#workersDone;
    await this.elector.stop();
    await Promise.all(this.#informers.map((i) => i.stop()));
    this.#stopSweep?.();
  }
}

/** `syncgov controller`: runs until SIGTERM or SIGINT. */
export async function runController(opts: ControllerOptions): Promise<void> {
  if (opts.httpAuth !== undefined && opts.httpAuth !== "kubernetes" && opts.httpAuth !== "none")
    throw new Error(`--http-auth: expected kubernetes or none, got ${JSON.stringify(opts.httpAuth)}`);
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromDefault();
  const telemetry = new Telemetry({ serviceName: "syncgov-controller" });
  const controller = new Controller(kc, opts);
  const http = await startHttpServer(
    {
      ready: () => {
        const reasons: string[] = [];
        if (!controller.synced()) reasons.push("informers have not synced");
        if (!controller.elector.isLeader() && controller.elector.leader() === undefined) {
          reasons.push("leadership not decided");
        }
        return { ready: reasons.length === 0, reasons };
      },
      metrics: (req, res) => telemetry.metricsHandler(req, res),
      registry: () => controller.registryView(),
      auth: opts.httpAuth === "none" ? OPEN_ACCESS : new KubernetesAuth(kc),
    },
    opts.httpPort,
  );
  controller.log.info({ port: serverPort(http) }, "http endpoints up");
  await controller.startInformers();
  controller.log.info({ version: controller.cache.snapshot().version }, "informers synced");

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    controller.log.info({ signal }, "shutting down");
    // Releasing the lease needs the API server; when it cannot be reached, give up after a grace
    // period (the lease then expires on its own) rather than hang.
    const grace = new Promise<void>((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS).unref());
    await Promise.race([controller.stop(), grace]);
    http.close();
    await telemetry.shutdown();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  // A replica that lost leadership (its renewals failed past the deadline) campaigns again with a
  // fresh work queue; the informers and the registry stay warm meanwhile.
  while (!stopping) {
    await controller.elector.run();
    if (!stopping) controller.log.warn("lost leadership; campaigning again");
  }
}
