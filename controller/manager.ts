import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, CustomObjectsApi, KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { type Counter, type Histogram, metrics, SpanStatusCode, trace } from "@opentelemetry/api";
import pg from "pg";
import type { SyncJob } from "./api/syncjob.ts";
import type { SyncPolicy } from "./api/syncpolicy.ts";
import type { SyncRunStatus } from "./api/syncrun.ts";
import { validateSyncPolicy } from "./api/validate.ts";
import {
  keyOf,
  newRegistry,
  type StoredKind,
  type StoredObject,
  type SyncRegistry,
  stored,
} from "./cache/objects.ts";
import { serverPort, startHttpServer } from "./http/server.ts";
import { EventRecorder } from "./kube/events.ts";
import { Informer } from "./kube/informer.ts";
import { LeaderElector } from "./kube/leader.ts";
import { controllerReference } from "./kube/ownership.ts";
import {
  describeApiError,
  isNotFound,
  NAMESPACES,
  type ResourceType,
  SYNCJOBS,
  SYNCPOLICIES,
  SYNCRUNS,
  statusCodeOf,
} from "./kube/resource.ts";
import { kubeTime, patchStatus, setCondition } from "./kube/status.ts";
import type { NamedPolicy, NamespaceSubject } from "./policy/effective.ts";
import { ruleCompileErrors } from "./policy/policy-files.ts";
import { type ReconcileResult, WorkQueue } from "./queue/workqueue.ts";
import {
  decideJob,
  type JobDecision,
  type JobPolicyView,
  jobPolicyView,
  type RunSummary,
} from "./reconcile/syncjob.ts";
import { BY_KIND_AND_PHASE } from "./registry/indexes.ts";
import type { RegistryEvent } from "./registry/registry.ts";
import {
  createExecutor,
  type ExecutorKind,
  type RunExecutor,
  type RunHandle,
  runnerSettingsEnv,
} from "./runner/executors.ts";
import { type Decision, decideAdmissions } from "./scheduler/admission.ts";
import { admissionInput, type JobAdmission } from "./scheduler/input.ts";
import { untilNextMinute } from "./scheduler/windows.ts";
import { isDatabaseAction, performDatabaseAction } from "./shadow/postgres.ts";
import { shadowStatusPatch } from "./shadow/state.ts";
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
  /** How admitted runs are executed: InProcess, ChildProcess, Job or External. Default ChildProcess. */
  executor?: ExecutorKind | "External";
  /** Image of runner Jobs (Job executor). */
  runnerImage?: string;
  /** Directory for runner logs (ChildProcess executor). */
  runnerLogDir?: string;
}

const FIELD_MANAGER = "syncgov-controller";
const SCHEDULER_KEY = "Scheduler/admission";
const STATUS_WRITERS = 16;
const EVENT_WRITERS = 4;
const SHUTDOWN_GRACE_MS = 10_000;
const GVR_RUNS = { group: "syncgov.io", version: "v1alpha1", plural: "syncruns" };
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
  private readonly core: CoreV1Api;
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
  private readonly executor: RunExecutor | undefined;
  /** Runs this replica is executing, by "namespace/name". */
  private readonly running = new Map<string, RunHandle>();

  constructor(kc: KubeConfig, opts: ControllerOptions) {
    this.kc = kc;
    this.opts = opts;
    const kind = opts.executor ?? "ChildProcess";
    // External: admitted runs are left to a runner outside the controller (`syncgov run`).
    this.executor =
      kind === "External"
        ? undefined
        : kind === "Job"
          ? createExecutor({
              kind,
              kubeConfig: kc,
              image: opts.runnerImage ?? "ghcr.io/syncgov/syncgov:latest",
              env: runnerSettingsEnv(process.env),
            })
          : kind === "InProcess"
            ? createExecutor({ kind, kubeConfig: kc })
            : createExecutor({
                kind,
                logDir: opts.runnerLogDir ?? join(tmpdir(), "syncgov-runs"),
                ...(opts.kubeconfig ? { kubeconfigPath: opts.kubeconfig } : {}),
              });
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
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
    // The registry holds everything listed before anyone reads it.
    if (this.pending.length > 0) this.flush();
    this.stopSweep = this.registry.startTombstoneSweep(60_000);
  }
  private stopSweep: (() => void) | undefined;

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
    this.apply(batch);
    for (const { object: e } of batch) this.enqueueFor(e);
  }

  /**
   * Commits events to the registry and keeps the runs-by-job lookup in step, in the same synchronous
   * step, so that a reader of the new snapshot finds every run of a job without scanning them all.
   */
  private apply(events: RegistryEvent<StoredObject>[]): void {
    this.registry.applyBatch(events);
    for (const { type, object: e } of events) {
      if (e.kind !== "SyncRun" || !e.jobName) continue;
      const job = `${e.namespace}/${e.jobName}`;
      const key = keyOf("SyncRun", e.namespace, e.name);
      let runs = this.runsByJob.get(job);
      if (type === "DELETED") {
        runs?.delete(key);
        if (runs?.size === 0) this.runsByJob.delete(job);
      } else {
        if (!runs) {
          runs = new Set();
          this.runsByJob.set(job, runs);
        }
        runs.add(key);
      }
    }
  }
  private readonly runsByJob = new Map<string, Set<string>>();

  /** Which reconciles an object's change calls for (nothing while following: the leader does it). */
  private enqueueFor(e: StoredObject): void {
    const queue = this.queue;
    if (!queue) return;
    switch (e.kind) {
      case "SyncJob":
        queue.add(keyOf("SyncJob", e.namespace, e.name));
        queue.add(SCHEDULER_KEY);
        break;
      case "SyncRun":
        if (e.jobName) queue.add(keyOf("SyncJob", e.namespace, e.jobName));
        queue.add(SCHEDULER_KEY);
        break;
      case "SyncPolicy":
        // A policy change can change every job's effective policy.
        queue.add(keyOf("SyncPolicy", undefined, e.name));
        for (const job of this.registry.snapshot().ofKind("SyncJob"))
          queue.add(keyOf("SyncJob", job.namespace, job.name));
        queue.add(SCHEDULER_KEY);
        break;
      case "Namespace":
        for (const job of this.registry.snapshot().ofKind("SyncJob", e.name))
          queue.add(keyOf("SyncJob", job.namespace, job.name));
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
    // Admission first: waiting runs should not wait behind a reconcile of every job.
    queue.add(SCHEDULER_KEY);
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
  private async reconcile(key: string, signal: AbortSignal): Promise<ReconcileResult | undefined> {
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
            case "SyncPolicy":
              return await this.reconcilePolicy(key);
            case "Scheduler":
              return await this.reconcileScheduler(signal);
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

  /** SyncPolicies of the snapshot, parsed once per resourceVersion; invalid ones are left out. */
  private policies(): NamedPolicy[] {
    const out: NamedPolicy[] = [];
    for (const e of this.registry.snapshot().ofKind("SyncPolicy")) {
      const cached = this.policyCache.get(e.name);
      if (cached && cached.rv === e.resourceVersion) {
        if (cached.policy) out.push(cached.policy);
        continue;
      }
      const parsed = validateSyncPolicy(e.object);
      const policy = parsed.ok ? { name: e.name, spec: (parsed.value as SyncPolicy).spec } : undefined;
      this.policyCache.set(e.name, { rv: e.resourceVersion, policy });
      if (policy) out.push(policy);
    }
    return out;
  }
  private readonly policyCache = new Map<
    string,
    { rv: string | undefined; policy: NamedPolicy | undefined }
  >();

  private namespaceSubject(name: string): NamespaceSubject {
    const ns = this.registry.snapshot().get(keyOf("Namespace", undefined, name));
    return { name, labels: { "kubernetes.io/metadata.name": name, ...(ns?.object.metadata?.labels ?? {}) } };
  }

  private decide(entry: StoredObject, now: Date): JobDecision {
    const snap = this.registry.snapshot();
    const runs = [...(this.runsByJob.get(`${entry.namespace}/${entry.name}`) ?? [])]
      .map((key) => snap.get(key))
      .filter((r): r is StoredObject => r !== undefined && r.jobName === entry.name)
      .map((r) => ({
        name: r.name,
        phase: r.phase,
        type: r.runType,
        createdAt: Date.parse(String(r.object.metadata?.creationTimestamp ?? "")) || 0,
        completionTime: (r.object as { status?: SyncRunStatus }).status?.completionTime,
        validation: (r.object as { status?: SyncRunStatus }).status?.validation,
        breaker: (r.object as { status?: { breaker?: RunSummary["breaker"] } }).status?.breaker,
      }));
    const policies = this.policies();
    const namespace = this.namespaceSubject(entry.namespace ?? "");
    return decideJob({
      object: entry.object,
      policies,
      namespace,
      runs,
      now,
      view: this.jobView(entry, policies, namespace),
    });
  }

  /**
   * The job's jobPolicyView, kept per stored object while the policies and the namespace's labels
   * stay the same: validation and CEL rules then run once per change of the job, not once per
   * admission pass and reconcile (an admission pass asks for every job with a waiting run).
   */
  private jobView(
    entry: StoredObject,
    policies: readonly NamedPolicy[],
    namespace: NamespaceSubject,
  ): JobPolicyView {
    const labels = JSON.stringify(namespace.labels);
    const kept = this.jobViews.get(entry.object);
    if (
      kept &&
      kept.labels === labels &&
      kept.policies.length === policies.length &&
      kept.policies.every((p, i) => p === policies[i])
    ) {
      return kept.view;
    }
    const view = jobPolicyView(entry.object, policies, namespace);
    this.jobViews.set(entry.object, { policies: [...policies], labels, view });
    return view;
  }
  private readonly jobViews = new WeakMap<
    object,
    { policies: readonly NamedPolicy[]; labels: string; view: JobPolicyView }
  >();

  /**
   * Admission passes writing their decisions, and what waits for them. Waiting runs are what users
   * wait on, so while a pass writes, job reconciles hold back (their writes, mostly status mirrors
   * and first-time conditions, would compete with it for the API server) and go on once it is done;
   * passes end, so nothing waits for long (10,000 decisions take about a minute on a small server).
   */
  private admissionWrites = 0;
  private admissionWritesDone: PromiseWithResolvers<void> | undefined;

  private async admissionWritesIdle(): Promise<void> {
    while (this.admissionWrites > 0) {
      this.admissionWritesDone ??= Promise.withResolvers<void>();
      await this.admissionWritesDone.promise;
    }
  }

  private async reconcileJob(key: string): Promise<ReconcileResult | undefined> {
    await this.admissionWritesIdle();
    const snap = this.registry.snapshot();
    const entry = snap.get(key);
    if (!entry) return undefined; // deleted: owned runs go with it (owner references)
    // A namespace being deleted takes the job with it and refuses new objects: nothing to do.
    if (snap.get(keyOf("Namespace", undefined, entry.namespace ?? ""))?.phase === "Terminating")
      return undefined;
    const decision = this.decide(entry, new Date());
    const namespace = entry.namespace ?? "";
    if (decision.shadow && decision.job) {
      const failure = await this.performShadowActions(entry, decision);
      if (failure) throw failure; // status unchanged: the same step is decided again, with backoff
      if (decision.status?.shadow) {
        (decision.status as Record<string, unknown>).shadow = shadowStatusPatch(decision.shadow.status);
      }
    }
    for (const run of decision.create) {
      try {
        const created = (await this.custom.createNamespacedCustomObject({
          ...GVR_RUNS,
          namespace,
          body: {
            apiVersion: "syncgov.io/v1alpha1",
            kind: "SyncRun",
            metadata: {
              name: run.name,
              namespace,
              labels: { "syncgov.io/job": entry.name },
              ownerReferences: [controllerReference(entry.object)],
            },
            spec: { jobName: entry.name, type: run.type, trigger: run.trigger },
          },
        })) as KubernetesObject;
        this.apply([{ type: "ADDED", object: stored("SyncRun", created) }]);
        await this.events.record(entry.object, {
          type: "Normal",
          reason: "RunCreated",
          note: `Created ${run.type} run ${run.name} (${run.trigger.toLowerCase()} trigger).`,
        });
      } catch (err) {
        if (statusCodeOf(err) !== 409) throw err; // 409: created by an earlier attempt
      }
    }
    for (const name of decision.delete) {
      try {
        await this.custom.deleteNamespacedCustomObject({
          ...GVR_RUNS,
          namespace,
          name,
          propagationPolicy: "Background",
        });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    if (decision.status) {
      try {
        const written = await patchStatus(
          this.custom,
          { resource: SYNCJOBS, namespace, name: entry.name },
          decision.status,
          { fieldManager: FIELD_MANAGER },
        );
        // Our own write is in the registry before its watch event arrives, so that the next
        // reconcile of this key does not decide on the status we just replaced.
        this.apply([{ type: "MODIFIED", object: stored("SyncJob", written as KubernetesObject) }]);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    }
    for (const ev of decision.events) await this.events.record(entry.object, ev);
    return decision.requeueAfterMs !== undefined ? { requeueAfter: decision.requeueAfterMs } : undefined;
  }

  /**
   * The shadow machine's side effects, before its new status is written: DDL on the target database
   * (connection from the job's Secret) and restarting the realtime session so that it writes to the
   * table the new state names. A failure is recorded as a condition and event and returned.
   */
  private async performShadowActions(entry: StoredObject, decision: JobDecision): Promise<Error | undefined> {
    const job = decision.job!;
    for (const action of decision.shadow!.actions) {
      try {
        if (isDatabaseAction(action)) {
          await performDatabaseAction(await this.targetPool(entry.namespace ?? "", job), action);
        } else if (action.kind === "RedirectWrites") {
          for (const run of this.registry.snapshot().ofKind("SyncRun", entry.namespace)) {
            if (run.jobName !== entry.name || run.runType !== "Realtime" || run.phase !== "Running") continue;
            const key = `${run.namespace}/${run.name}`;
            await this.running.get(key)?.cancel();
            await patchStatus(
              this.custom,
              { resource: SYNCRUNS, namespace: run.namespace, name: run.name },
              {
                phase: "Cancelled",
                completionTime: kubeTime(new Date()),
                message: `Restarted to write to ${action.to}.`,
              },
              { fieldManager: FIELD_MANAGER },
            );
          }
        }
      } catch (err) {
        const message = describeApiError(err);
        // The stored status stays, so the same step is decided again; one event says what failed
        // (the recorder folds repeats into a series).
        await this.events.record(entry.object, {
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
  private async targetPool(namespace: string, job: SyncJob): Promise<pg.Pool> {
    const ref = job.spec.target.sql.connectionSecretRef;
    const secret = await this.core.readNamespacedSecret({ name: ref.name, namespace });
    const key = `${namespace}/${ref.name}/${ref.key}/${secret.metadata?.resourceVersion}`;
    let pool = this.pools.get(key);
    if (!pool) {
      const data = secret.data?.[ref.key];
      if (!data) throw new Error(`Secret ${ref.name} has no key ${ref.key}`);
      pool = new pg.Pool({ connectionString: Buffer.from(data, "base64").toString("utf8"), max: 2 });
      pool.on("error", () => undefined);
      this.pools.set(key, pool);
    }
    return pool;
  }
  private readonly pools = new Map<string, pg.Pool>();

  /** SyncPolicy status: Ready (every rule compiles, with positions when not), matched jobs, violations. */
  private async reconcilePolicy(key: string): Promise<ReconcileResult | undefined> {
    const entry = this.registry.snapshot().get(key);
    if (!entry) return undefined;
    const now = new Date();
    const status = (entry.object as { status?: Record<string, unknown> }).status ?? {};
    const parsed = validateSyncPolicy(entry.object);
    const generation = entry.object.metadata?.generation ?? 0;
    const ruleErrors = parsed.ok
      ? ruleCompileErrors({ name: entry.name, spec: (parsed.value as SyncPolicy).spec }).map((e) => ({
          rule: e.rule,
          ...(e.position ? { position: e.position } : {}),
          reason: e.reason,
        }))
      : [];
    let matched = 0;
    let violating = 0;
    for (const job of this.registry.snapshot().ofKind("SyncJob")) {
      const eff = (
        job.object as { status?: { effectivePolicy?: { policies?: string[]; violations?: string[] } } }
      ).status?.effectivePolicy;
      if (!eff?.policies?.includes(entry.name)) continue;
      matched++;
      if (eff.violations?.some((v) => v.startsWith(`${entry.name}/`))) violating++;
    }
    const ready = ruleErrors.length === 0;
    const message = ready
      ? "All rules compile."
      : ruleErrors.map((e) => `rule ${e.rule}: ${e.position ? `${e.position}: ` : ""}${e.reason}`).join("; ");
    const { conditions, changed } = setCondition(
      status.conditions as never,
      {
        type: "Ready",
        status: ready ? "True" : "False",
        reason: ready ? "RulesCompiled" : "InvalidRule",
        message,
        observedGeneration: generation,
      },
      now,
    );
    const next = {
      observedGeneration: generation,
      conditions,
      matchedJobs: matched,
      violations: violating,
      ruleErrors,
    };
    const same =
      !changed &&
      status.observedGeneration === generation &&
      status.matchedJobs === matched &&
      status.violations === violating &&
      JSON.stringify(status.ruleErrors ?? []) === JSON.stringify(ruleErrors);
    if (same) return undefined;
    const written = await patchStatus(this.custom, { resource: SYNCPOLICIES, name: entry.name }, next, {
      fieldManager: FIELD_MANAGER,
    });
    this.apply([{ type: "MODIFIED", object: stored("SyncPolicy", written as KubernetesObject) }]);
    if (changed && !ready) {
      await this.events.record(entry.object, { type: "Warning", reason: "InvalidRule", note: message });
    }
    return undefined;
  }

  /**
   * Admission: one decision over one registry snapshot, committed with a compare-and-swap on the
   * snapshot's version (the admitted runs take their slots in the registry's indexes before any
   * status is written), then written to the runs' status. A conflict means another writer changed
   * the registry meanwhile: decide again on the new snapshot.
   */
  private async reconcileScheduler(signal: AbortSignal): Promise<ReconcileResult | undefined> {
    const now = new Date();
    const policies = this.policies();
    const admissions = new Map<string, JobAdmission | undefined>();
    const admissionOf = (namespace: string, jobName: string): JobAdmission | undefined => {
      const k = `${namespace}/${jobName}`;
      if (admissions.has(k)) return admissions.get(k);
      const entry = this.registry.snapshot().get(keyOf("SyncJob", namespace, jobName));
      let a: JobAdmission | undefined;
      if (entry) {
        const d = this.jobView(entry, policies, this.namespaceSubject(namespace));
        if (!d.job || !d.effective) {
          a = { refusal: `job ${jobName} is invalid (see its Valid condition)` };
        } else {
          a = {
            job: d.job,
            effective: d.effective,
            refusal:
              d.effective.verdict === "Block"
                ? `job ${jobName} is blocked by policy: ${d.effective.violations.map((v) => `${v.policy}/${v.rule}`).join(", ")}`
                : d.job.spec.suspend
                  ? `job ${jobName} is suspended`
                  : undefined,
          };
        }
      }
      admissions.set(k, a);
      return a;
    };
    for (let attempt = 0; attempt < 10; attempt++) {
      const snap = this.registry.snapshot();
      const { input, refused } = admissionInput(snap, admissionOf, now);
      const decisions = decideAdmissions(input);
      const byKey = (k: string) =>
        snap.get(keyOf("SyncRun", k.slice(0, k.indexOf("/")), k.slice(k.indexOf("/") + 1)));
      const committed = this.registry.commit(snap.version, (draft) => {
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
      await this.writeDecisions(decisions, refused, byKey, now, signal);
      for (const d of decisions) {
        if (d.kind === "Replace") for (const c of d.cancel) await this.running.get(c)?.cancel();
      }
      this.startAdmittedRuns();
      const waitingForWindow = decisions.some((d) => d.kind === "Queue" && d.reason === "OutsideBatchWindow");
      return waitingForWindow ? { requeueAfter: untilNextMinute(now) } : undefined;
    }
    throw new Error("admission kept conflicting with other registry writes; retrying");
  }

  private async writeDecisions(
    decisions: Decision[],
    refused: { run: StoredObject; reason: string; message: string }[],
    byKey: (k: string) => StoredObject | undefined,
    now: Date,
    signal: AbortSignal,
  ): Promise<void> {
    const writes: (() => Promise<void>)[] = [];
    const events: {
      object: KubernetesObject;
      event: { type: "Normal" | "Warning"; reason: string; note: string };
    }[] = [];
    const write = (
      e: StoredObject,
      status: Partial<SyncRunStatus>,
      event?: { type: "Normal" | "Warning"; reason: string; note: string },
    ) => {
      const current = (e.object as { status?: SyncRunStatus }).status ?? {};
      const same = (Object.keys(status) as (keyof SyncRunStatus)[]).every(
        (k) => k === "conditions" || JSON.stringify(status[k]) === JSON.stringify(current[k]),
      );
      if (same) return;
      writes.push(async () => {
        try {
          const written = await patchStatus(
            this.custom,
            { resource: SYNCRUNS, namespace: e.namespace, name: e.name },
            status,
            // Admission is conditional on the version decided on: a run changed meanwhile is decided again.
            {
              fieldManager: FIELD_MANAGER,
              ...(status.phase === "Running" ? { resourceVersion: e.resourceVersion } : {}),
            },
          );
          this.apply([{ type: "MODIFIED", object: stored("SyncRun", written as KubernetesObject) }]);
          // Events wait until every decision of this pass is written: decisions go first.
          if (event) events.push({ object: e.object, event });
        } catch (err) {
          if (isNotFound(err)) return;
          if (statusCodeOf(err) === 409) {
            this.queue?.add(SCHEDULER_KEY);
            return;
          }
          throw err;
        }
      });
    };
    const condition = (e: StoredObject, status: "True" | "False", reason: string, message: string) =>
      setCondition(
        (e.object as { status?: SyncRunStatus }).status?.conditions,
        { type: "Admitted", status, reason, message },
        now,
      ).conditions;
    for (const d of decisions) {
      const e = byKey(d.run.key);
      if (!e) continue;
      switch (d.kind) {
        case "Admit":
        case "Replace":
          write(e, {
            phase: "Running",
            target: d.run.target,
            admittedAt: kubeTime(now),
            conditions: condition(e, "True", "Admitted", "Admitted within the concurrency limits."),
          });
          for (const c of d.kind === "Replace" ? d.cancel : []) {
            const victim = byKey(c);
            if (victim)
              write(
                victim,
                {
                  phase: "Cancelled",
                  completionTime: kubeTime(now),
                  message: `Replaced by ${d.run.name} (concurrencyPolicy Replace).`,
                },
                {
                  type: "Normal",
                  reason: "Replaced",
                  note: `Cancelled: replaced by ${d.run.name} (concurrencyPolicy Replace).`,
                },
              );
          }
          break;
        case "Queue":
          write(
            e,
            {
              phase: "Queued",
              queueReason: d.message,
              conditions: condition(e, "False", d.reason, d.message),
            },
            { type: "Normal", reason: "Queued", note: `Queued: ${d.message}.` },
          );
          break;
        case "Skip":
          write(
            e,
            { phase: "Skipped", completionTime: kubeTime(now), message: d.message },
            { type: "Normal", reason: "Skipped", note: `Skipped: ${d.message}.` },
          );
          break;
      }
    }
    for (const r of refused) {
      write(
        r.run,
        {
          phase: "Queued",
          queueReason: r.message,
          conditions: condition(r.run, "False", r.reason, r.message),
        },
        { type: "Warning", reason: r.reason, note: `Not admitted: ${r.message}.` },
      );
    }
    // Status writes in parallel, bounded, as a controller's client would be.
    let next = 0;
    // A replica that stopped leading writes nothing more: another may already decide.
    const worker = async () => {
      while (next < writes.length && !signal.aborted) await writes[next++]!();
    };
    this.admissionWrites++;
    try {
      await Promise.all(Array.from({ length: Math.min(STATUS_WRITERS, writes.length) }, worker));
    } finally {
      if (--this.admissionWrites === 0) {
        this.admissionWritesDone?.resolve();
        this.admissionWritesDone = undefined;
      }
    }
    let nextEvent = 0;
    const recorder = async () => {
      while (nextEvent < events.length) {
        const { object, event } = events[nextEvent++]!;
        await this.events.record(object, event);
      }
    };
    void Promise.all(Array.from({ length: Math.min(EVENT_WRITERS, events.length) }, recorder));
  }

  /**
   * Starts every admitted run that nobody executes: just admitted, or left Running by a replica
   * that died (the runner is idempotent, so a restarted run converges). With the Job executor, a
   * run whose Job exists is left to it.
   */
  private startAdmittedRuns(): void {
    if (!this.executor || !this.leading || this.leading.signal.aborted) return;
    for (const run of this.registry.snapshot().ofKind("SyncRun")) {
      if (run.phase !== "Running") continue;
      const key = `${run.namespace}/${run.name}`;
      if (this.running.has(key)) continue;
      const started = (run.object as { status?: SyncRunStatus }).status?.executor;
      if (started?.kind === "Job" && this.executor.kind === "Job") continue;
      const ref = { namespace: run.namespace ?? "", name: run.name };
      const placeholder: RunHandle = {
        executor: { kind: this.executor.kind },
        done: Promise.resolve(0),
        cancel: async () => {},
      };
      this.running.set(key, placeholder);
      void this.executor.start(ref).then(
        async (handle) => {
          this.running.set(key, handle);
          await patchStatus(
            this.custom,
            { resource: SYNCRUNS, namespace: ref.namespace, name: ref.name },
            { executor: handle.executor },
            {
              fieldManager: FIELD_MANAGER,
            },
          ).catch((err) =>
            this.log.warn({ run: key, err: describeApiError(err) }, "could not record the executor"),
          );
          const code = await handle.done;
          this.log.info({ run: key, code }, "runner finished");
          this.running.delete(key);
        },
        (err) => {
          this.running.delete(key);
          this.log.error({ run: key, err: describeApiError(err) }, "could not start the runner");
        },
      );
    }
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
    this.stopSweep?.();
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
