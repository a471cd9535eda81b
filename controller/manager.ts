import { hostname } from "node:os";
import { CustomObjectsApi, KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { type Counter, type Histogram, metrics, SpanStatusCode, trace } from "@opentelemetry/api";
import { serverPort, startHttpServer } from "./http/server.ts";
import { EventRecorder } from "./kube/events.ts";
import { Informer } from "./kube/informer.ts";
import { LeaderElector } from "./kube/leader.ts";
import { describeApiError, isNotFound, type ResourceType } from "./kube/resource.ts";
import { patchStatus } from "./kube/status.ts";
import { type ReconcileResult, WorkQueue } from "./queue/workqueue.ts";
import {
  keyOf,
  NAMESPACES,
  newRegistry,
  type StoredKind,
  type StoredObject,
  SYNCJOBS,
  SYNCPOLICIES,
  SYNCRUNS,
  type SyncRegistry,
  stored,
} from "./reconcile/objects.ts";
import { decideJobValidity } from "./reconcile/syncjob.ts";
import { BY_KIND_AND_PHASE } from "./registry/indexes.ts";
import type { RegistryEvent } from "./registry/registry.ts";
import { type Logger, logger as rootLogger } from "./telemetry/logger.ts";
import { Telemetry } from "./telemetry/telemetry.ts";

export interface ControllerOptions {
  kubeconfig?: string;
  httpPort: number;
  workers: number;
  leaseNamespace: string;
  leaseName: string;
  leaseDuration: number;
  renewDeadline: number;
  retryPeriod: number;
  identity?: string;
}

const FIELD_MANAGER = "syncgov-controller";
const SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * The controller process. Every replica runs the informers and keeps the registry warm; only the
 * leader runs reconcile workers. Informer events are committed to the registry in batches (one
 * version per burst) and turned into work-queue keys; the reconcilers read the registry snapshot and
 * write status back to the API server.
 */
export class Controller {
  readonly registry: SyncRegistry = newRegistry();
  /** The work queue of the current leadership term (a new one per term; none while following). */
  queue: WorkQueue | undefined;
  private readonly newQueue: () => WorkQueue;
  readonly elector: LeaderElector;
  readonly log: Logger;
  private readonly kc: KubeConfig;
  private readonly custom: CustomObjectsApi;
  private readonly events: EventRecorder;
  private readonly informers: Informer[] = [];
  private pending: RegistryEvent<StoredObject>[] = [];
  private flushScheduled = false;
  private leading: AbortController | undefined;
  private workersDone: Promise<void> | undefined;
  private readonly tracer = trace.getTracer("syncgov-controller");
  private readonly reconcileTotal: Counter;
  private readonly reconcileDuration: Histogram;

  private readonly opts: ControllerOptions;

  constructor(kc: KubeConfig, opts: ControllerOptions) {
    this.kc = kc;
    this.opts = opts;
    this.custom = kc.makeApiClient(CustomObjectsApi);
    const identity = opts.identity ?? `${hostname()}_${process.pid}`;
    this.log = rootLogger.child({ identity });
    this.events = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: identity,
      onError: (err, ev) =>
        this.log.warn({ err: describeApiError(err), reason: ev.reason }, "event not recorded"),
    });
    const meter = metrics.getMeter("syncgov-controller");
    const depth = { value: 0 };
    meter
      .createObservableGauge("syncgov_workqueue_depth", { description: "Keys waiting in the work queue" })
      .addCallback((r) => r.observe(depth.value));
    const queueLatency = meter.createHistogram("syncgov_workqueue_queue_duration_seconds", {
      description: "Time a key waits before a worker takes it",
      unit: "s",
      advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
    });
    const retries = meter.createCounter("syncgov_workqueue_retries_total", {
      description: "Keys re-queued after an error",
    });
    this.newQueue = () =>
      new WorkQueue({
        metrics: {
          depth: (n) => {
            depth.value = n;
          },
          queueLatency: (s) => queueLatency.record(s),
          retried: () => retries.add(1),
        },
      });
    meter
      .createObservableGauge("syncgov_registry_entries", {
        description: "Objects in the registry, by kind and phase",
      })
      .addCallback((r) => {
        for (const [key, n] of this.registry.snapshot().counts(BY_KIND_AND_PHASE)) {
          const [kind, phase] = key.split("/");
          r.observe(n, { kind, phase: phase || "None" });
        }
      });
    meter
      .createObservableGauge("syncgov_registry_version", { description: "Version of the registry snapshot" })
      .addCallback((r) => r.observe(this.registry.snapshot().version));
    meter
      .createObservableGauge("syncgov_leader", { description: "1 while this replica leads" })
      .addCallback((r) => r.observe(this.elector.isLeader() ? 1 : 0));
    this.reconcileTotal = meter.createCounter("syncgov_reconcile_total", {
      description: "Reconciles by kind and result",
    });
    this.reconcileDuration = meter.createHistogram("syncgov_reconcile_duration_seconds", {
      description: "Reconcile duration by kind and result",
      unit: "s",
      advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
    });
    this.elector = new LeaderElector({
      kubeConfig: kc,
      namespace: opts.leaseNamespace,
      name: opts.leaseName,
      identity,
      leaseDurationMs: opts.leaseDuration * 1000,
      renewDeadlineMs: opts.renewDeadline * 1000,
      retryPeriodMs: opts.retryPeriod * 1000,
      onStartedLeading: (signal) => this.lead(signal),
      onNewLeader: (id) => this.log.info({ leader: id }, "leader observed"),
      onError: (err) => this.log.warn({ err: describeApiError(err) }, "leader election call failed"),
    });
  }

  /** Starts the informers and waits until each has listed once. */
  async startInformers(): Promise<void> {
    const watch = (kind: StoredKind, resource: ResourceType) => {
      const informer = new Informer<KubernetesObject>({
        kubeConfig: this.kc,
        resource,
        observer: {
          listed: (i) => this.log.info({ kind, ...i }, "listed"),
          failed: (err, i) =>
            this.log.warn({ kind, err: describeApiError(err), ...i }, "list/watch failed, retrying"),
          handlerFailed: (err, i) => this.log.error({ kind, err: String(err), ...i }, "event handler failed"),
        },
      });
      informer.on({
        add: (o) => this.ingest("ADDED", kind, o),
        update: (_old, o) => this.ingest("MODIFIED", kind, o),
        delete: (o) => this.ingest("DELETED", kind, o),
      });
      this.informers.push(informer);
      informer.start();
    };
    watch("Namespace", NAMESPACES);
    watch("SyncPolicy", SYNCPOLICIES);
    watch("SyncJob", SYNCJOBS);
    watch("SyncRun", SYNCRUNS);
    await Promise.all(this.informers.map((i) => i.waitForSync()));
  }

  synced(): boolean {
    return this.informers.length > 0 && this.informers.every((i) => i.hasSynced());
  }

  /** Queues a watch event; a burst of events is committed to the registry as one version. */
  private ingest(
    type: RegistryEvent<StoredObject>["type"],
    kind: StoredKind,
    object: KubernetesObject,
  ): void {
    this.pending.push({ type, object: stored(kind, object) });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    this.registry.applyBatch(batch);
    for (const { object: e } of batch) this.enqueueFor(e);
  }

  /** Which reconciles an object's change calls for (nothing while following: the leader does it). */
  private enqueueFor(e: StoredObject): void {
    const queue = this.queue;
    if (!queue) return;
    switch (e.kind) {
      case "SyncJob":
        queue.add(keyOf("SyncJob", e.namespace, e.name));
        break;
      case "SyncRun": {
        const jobName = (e.object as { spec?: { jobName?: string } }).spec?.jobName;
        if (jobName) queue.add(keyOf("SyncJob", e.namespace, jobName));
        break;
      }
      case "SyncPolicy":
      case "Namespace":
        break;
    }
  }

  /** Runs the workers while this replica leads; returns when leadership ends. */
  private async lead(signal: AbortSignal): Promise<void> {
    this.log.info("started leading");
    const leading = new AbortController();
    this.leading = leading;
    signal.addEventListener("abort", () => leading.abort(), { once: true });
    const queue = this.newQueue();
    this.queue = queue;
    // Level-based: everything known is reconciled once on taking over.
    for (const e of this.registry.snapshot()) this.enqueueFor(e);
    this.workersDone = queue.runWorkers(this.opts.workers, (key, s) => this.reconcile(key, s), {
      onError: (key, err, retry) =>
        this.log.warn({ key, err: describeApiError(err), ...retry }, "reconcile failed"),
    });
    await new Promise<void>((resolve) => {
      if (leading.signal.aborted) resolve();
      leading.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    this.queue = undefined;
    queue.shutDown();
    await this.workersDone;
    this.log.info("stopped leading");
  }

  /** Dispatches a key to its reconciler, with a span and metrics. */
  private async reconcile(key: string, _signal: AbortSignal): Promise<ReconcileResult | undefined> {
    const kind = key.slice(0, key.indexOf("/"));
    const began = performance.now();
    return this.tracer.startActiveSpan(
      `reconcile ${kind}`,
      { attributes: { "syncgov.key": key } },
      async (span) => {
        let result = "success";
        try {
          switch (kind) {
            case "SyncJob":
              return await this.reconcileJob(key);
            default:
              return undefined;
          }
        } catch (err) {
          result = "error";
          span.recordException(err as Error);
          span.setStatus({ code: SpanStatusCode.ERROR, message: describeApiError(err) });
          throw err;
        } finally {
          span.end();
          this.reconcileTotal.add(1, { kind, result });
          this.reconcileDuration.record((performance.now() - began) / 1000, { kind, result });
        }
      },
    );
  }

  private async reconcileJob(key: string): Promise<ReconcileResult | undefined> {
    const entry = this.registry.snapshot().get(key);
    if (!entry) return undefined; // deleted: owned runs go with it (owner references)
    const decision = decideJobValidity(entry.object, new Date());
    if (decision.status) {
      try {
        const written = await patchStatus(
          this.custom,
          { resource: SYNCJOBS, namespace: entry.namespace, name: entry.name },
          decision.status,
          { fieldManager: FIELD_MANAGER },
        );
        // Our own write is in the registry before its watch event arrives, so that the next
        // reconcile of this key does not decide on the status we just replaced.
        this.registry.applyBatch([
          { type: "MODIFIED", object: stored("SyncJob", written as KubernetesObject) },
        ]);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    }
    for (const ev of decision.events) await this.events.record(entry.object, ev);
    return undefined;
  }

  /** Registry view for /api/registry. */
  registryView(): unknown {
    const snap = this.registry.snapshot();
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
    this.leading?.abort();
    await this.workersDone;
    await this.elector.stop();
    await Promise.all(this.informers.map((i) => i.stop()));
  }
}

/** `syncgov controller`: runs until SIGTERM or SIGINT. */
export async function runController(opts: ControllerOptions): Promise<void> {
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
    },
    opts.httpPort,
  );
  controller.log.info({ port: serverPort(http) }, "http endpoints up");
  await controller.startInformers();
  controller.log.info({ version: controller.registry.snapshot().version }, "informers synced");

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    controller.log.info({ signal }, "shutting down");
    await controller.stop();
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
