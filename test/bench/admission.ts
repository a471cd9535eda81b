import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, readdirSync, readFileSync } from "node:fs";
import { request } from "node:https";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  ApiextensionsV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  Watch,
} from "@kubernetes/client-node";
import { GROUP, VERSION } from "../../controller/api/common.ts";
import { applyManifests, readManifests } from "../../controller/kube/apply.ts";
import { SYNCRUNS } from "../../controller/kube/resource.ts";
import { kubeTime, patchStatus } from "../../controller/kube/status.ts";
import { type Environment, startEnvironment } from "../env/services/environment.ts";
import { freePort, stopProcess } from "../env/services/process.ts";
import { integerOption, machineBusySeconds, ownCpuSeconds, processCpuSeconds, table } from "./measure.ts";

/**
 * Admission throughput of the whole controller against a real kube-apiserver + etcd, next to the
 * ceiling that server sets for status writes (the governance issue's acceptance figure: ratio >= 0.8).
 *
 * How it is measured, in one process tree on one machine:
 * 1. Setup (not timed): a fresh environment (startEnvironment; only its API server is used, Kafka and
 *    PostgreSQL idle), the CRDs, the Lease namespace, a namespace labelled team=payments, one
 *    SyncPolicy matching it with maxRunsGlobal = jobs/2 (so half the runs are admitted and half queue)
 *    and three CEL rules in the style of the shipped baseline, then N valid batch SyncJobs (a daily
 *    schedule that does not fire during the bench, each its own target table) and one SyncRun per job
 *    with no status, as `kubectl create` of a SyncRun leaves it, created 32 at a time while no
 *    controller runs. Creating the runs directly keeps run creation by the job reconciler (the
 *    run-now annotation path) out of the figure: what is timed is admission.
 * 2. Controller (timed): `syncgov controller --executor External` is started as a child process with
 *    default settings (4 workers, default heap); the clock runs from its spawn until every SyncRun's
 *    status shows a decision (phase Running, Queued or Skipped). That includes Node's start-up and the
 *    informers' initial lists, as an operator restarting the controller would see it, and everything
 *    the controller does meanwhile (SyncJob status writes and events compete with admission writes).
 *    The bench sees decisions through one watch of the runs' namespace (its paged list happens before
 *    the clock starts), which costs the server one watcher instead of repeated lists. A controller
 *    that stops deciding (no new decision for 2 minutes) fails the bench, after printing what it did.
 * 3. Ceiling (timed): with the controller stopped, N fresh SyncRuns are created (not timed) in another
 *    namespace, then their status is merge-patched in a plain loop with the controller's status-write
 *    concurrency (16) and the same client and patch call (patchStatus), writing the same shape the
 *    admission writes: half Running with target, admittedAt and an Admitted=True condition, half
 *    Queued with a queueReason and an Admitted=False condition.
 * ratio = decisions_per_s / raw_patches_per_s. Beside the figures the bench prints what the API server
 * served in each phase (apiserver_request_total deltas), the controller's reconcile time by kind (its
 * own /metrics), and the CPU time of each process against the machine's busy time, so a low ratio can
 * be traced to extra writes, to the controller's CPU, or to other load on the machine.
 *
 * `npm run bench -- admission [--jobs N] [--cpu-prof]` (default 10000 jobs). `--cpu-prof` has the
 * controller write a V8 CPU profile into the run directory (profiling slows it; figures from such a run
 * are for finding where the time goes, not for the acceptance figure). The last line is the JSON figure.
 */

const STATUS_WRITERS = 16;
/** A controller that has decided nothing new for this long has stopped deciding. */
const STALL_MS = 120_000;
const SETUP_CONCURRENCY = 32;
const NAMESPACE = "admission-bench";
const CEILING_NAMESPACE = "admission-ceiling";
const LEASE_NAMESPACE = "syncgov-system";
const POLICY = "admission-bench";
const DECISION_PHASES: ReadonlySet<string> = new Set(["Running", "Queued", "Skipped"]);
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export async function run(): Promise<void> {
  const jobs = integerOption("jobs", 10_000, 2);
  const cpuProfile = process.argv.includes("--cpu-prof");
  const globalLimit = Math.floor(jobs / 2);
  const began = performance.now();
  const env = await startEnvironment((line) => console.log(line));
  let controller: ChildProcess | undefined;
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(env.kube.kubeconfig);
    const custom = kc.makeApiClient(CustomObjectsApi);

    const setupStart = performance.now();
    await installBase(kc, globalLimit);
    await inPool(jobs, SETUP_CONCURRENCY, (i) =>
      custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: NAMESPACE,
        plural: "syncjobs",
        body: syncJob(i),
      }),
    );
    await inPool(jobs, SETUP_CONCURRENCY, (i) =>
      custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: NAMESPACE,
        plural: "syncruns",
        body: syncRun(i, NAMESPACE),
      }),
    );
    const tracker = new DecisionTracker(kc, jobs);
    await tracker.start();
    const setupSeconds = (performance.now() - setupStart) / 1000;
    console.log(`setup: ${jobs} SyncJobs and ${jobs} SyncRuns in ${setupSeconds.toFixed(1)} s`);

    // Controller phase.
    const servers = serverProcesses(env);
    const cpuBefore = cpuSnapshot(servers);
    const requestsBefore = await apiRequestCounts(kc);
    const port = await freePort();
    const logFile = join(env.runDir, "controller-admission.log");
    const spawnedAt = Date.now();
    controller = startController(env, port, logFile, cpuProfile);
    const marks = watchControllerLog(controller, logFile);
    const exited = new Promise<never>((_, reject) =>
      controller!.once("exit", (code, signal) =>
        reject(new Error(`the controller exited (${code ?? signal}); see ${logFile}`)),
      ),
    );
    const progress = setInterval(async () => {
      const busy = await controllerReconciles(port).catch(() => []);
      const work = busy.map((r) => `${r.kind} ${r.count}`).join(", ");
      console.log(
        `  ${tracker.decided}/${jobs} decided after ${((Date.now() - spawnedAt) / 1000).toFixed(0)} s` +
          (work ? ` (reconciles so far: ${work})` : ""),
      );
    }, 15_000);
    let failure: unknown;
    try {
      await Promise.race([tracker.allDecided(timeoutMs(jobs), STALL_MS), exited]);
    } catch (err) {
      failure = err;
    } finally {
      clearInterval(progress);
    }
    const endedAt = failure === undefined ? tracker.lastDecisionAt! : Date.now();
    const requestsDuring = diffCounts(await apiRequestCounts(kc), requestsBefore);
    const cpuDuring = cpuSnapshot({ ...servers, controller: controller.pid }).since(cpuBefore);
    const reconciles = await controllerReconciles(port).catch(() => []);
    const peakRssMb = peakRss(controller.pid);
    await stopProcess(controller, 30_000);
    controller = undefined;
    await tracker.stop();

    const at = (time: number | undefined) =>
      time === undefined ? "-" : `${((time - spawnedAt) / 1000).toFixed(1)} s`;
    console.log("");
    console.log(
      table(
        ["controller phase (from spawn)", "at"],
        [
          ["informers synced (log)", at(marks.informersSynced)],
          ["started leading (log)", at(marks.startedLeading)],
          ["leadership lost meanwhile (log)", `${marks.leadershipLost} times`],
          ["first decision seen", at(tracker.firstDecisionAt)],
          ["last decision seen", at(tracker.lastDecisionAt)],
        ],
      ),
    );
    const spread = ((tracker.lastDecisionAt ?? 0) - (tracker.firstDecisionAt ?? 0)) / 1000;
    console.log(
      `decisions: ${[...tracker.byPhase()].map(([phase, n]) => `${n} ${phase}`).join(", ") || "none"}; ` +
        `first to last ${spread.toFixed(1)} s (${spread > 0 ? (tracker.decided / spread).toFixed(0) : "-"} /s)`,
    );
    for (const [key, reason] of tracker.examples) console.log(`  e.g. ${key}: ${reason}`);
    console.log("");
    console.log(
      `controller reconciles until ${failure === undefined ? "the last decision" : "it was stopped"} (its /metrics):`,
    );
    console.log(
      table(
        ["kind", "reconciles", "seconds (sum)"],
        reconciles.map((r) => [r.kind, String(r.count), r.seconds.toFixed(1)]),
      ),
    );
    console.log(`controller peak RSS: ${peakRssMb === undefined ? "-" : `${peakRssMb.toFixed(0)} MB`}`);
    if (cpuProfile)
      console.log(`controller CPU profile (*.cpuprofile) in ${env.runDir}; figures slowed by profiling`);
    if (failure !== undefined) {
      console.log("");
      console.log("API server requests served in the controller phase (apiserver_request_total delta):");
      console.log(requestTable(requestsDuring, new Map(), jobs));
      console.log(cpuTable(cpuDuring, new Map()));
      throw failure;
    }
    const controllerSeconds = (endedAt - spawnedAt) / 1000;

    // Ceiling phase.
    await inPool(jobs, SETUP_CONCURRENCY, (i) =>
      custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: CEILING_NAMESPACE,
        plural: "syncruns",
        body: syncRun(i, CEILING_NAMESPACE),
      }),
    );
    const ceilingCpuBefore = cpuSnapshot(servers);
    const ceilingRequestsBefore = await apiRequestCounts(kc);
    const ceilingStart = performance.now();
    const now = new Date();
    await inPool(jobs, STATUS_WRITERS, (i) =>
      patchStatus(
        custom,
        { resource: SYNCRUNS, namespace: CEILING_NAMESPACE, name: runName(i) },
        i < globalLimit ? admittedStatus(i, now) : queuedStatus(globalLimit, now),
        { fieldManager: "syncgov-bench" },
      ),
    );
    const ceilingSeconds = (performance.now() - ceilingStart) / 1000;
    const ceilingRequests = diffCounts(await apiRequestCounts(kc), ceilingRequestsBefore);
    const ceilingCpu = cpuSnapshot(servers).since(ceilingCpuBefore);

    const decisionsPerSecond = jobs / controllerSeconds;
    const rawPerSecond = jobs / ceilingSeconds;
    console.log("");
    console.log("API server requests served (apiserver_request_total delta, top 10):");
    console.log(requestTable(requestsDuring, ceilingRequests, jobs));
    console.log("");
    console.log(cpuTable(cpuDuring, ceilingCpu));
    console.log("");
    console.log(
      table(
        ["phase", "seconds", "per s"],
        [
          ["setup (jobs + runs, not timed)", setupSeconds.toFixed(1), ((2 * jobs) / setupSeconds).toFixed(0)],
          ["controller: spawn to last decision", controllerSeconds.toFixed(1), decisionsPerSecond.toFixed(0)],
          ["ceiling: plain status patches", ceilingSeconds.toFixed(1), rawPerSecond.toFixed(0)],
        ],
      ),
    );
    const admitted = tracker.byPhase().get("Running (Admitted)") ?? 0;
    const ok = admitted === globalLimit;
    console.log(
      `${ok ? "met   " : "MISSED"}  admitted exactly maxRunsGlobal: ${admitted} Running for a limit of ${globalLimit}`,
    );
    const ratio = decisionsPerSecond / rawPerSecond;
    console.log(`${ratio >= 0.8 ? "met   " : "MISSED"}  ratio >= 0.8: ${ratio.toFixed(3)}`);
    console.log(`(${((performance.now() - began) / 1000).toFixed(0)} s in all; Node ${process.version})`);
    console.log(
      JSON.stringify({
        bench: "admission",
        jobs,
        seconds: round(controllerSeconds, 2),
        decisions_per_s: round(decisionsPerSecond, 1),
        raw_patches_per_s: round(rawPerSecond, 1),
        ratio: round(ratio, 3),
        admitted,
        max_runs_global: globalLimit,
      }),
    );
    // Over- or under-admitting is a wrong decision, not a slow one: the bench fails.
    if (!ok) process.exitCode = 1;
  } finally {
    if (controller) await stopProcess(controller, 30_000);
    await env.stop();
  }
}

/** Generous: the bench fails rather than waiting forever on a controller that stalls. */
function timeoutMs(jobs: number): number {
  return Math.max(300_000, jobs * 120);
}

function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

async function installBase(kc: KubeConfig, globalLimit: number): Promise<void> {
  await applyManifests(kc, readManifests([join(root, "crds")]));
  await waitForCrds(kc);
  await applyManifests(kc, [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: LEASE_NAMESPACE } },
    { apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE, labels: { team: "payments" } } },
    { apiVersion: "v1", kind: "Namespace", metadata: { name: CEILING_NAMESPACE } },
    {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: "SyncPolicy",
      metadata: { name: POLICY },
      spec: {
        match: { namespaces: [NAMESPACE] },
        enforcement: "Enforce",
        concurrency: { maxRunsGlobal: globalLimit },
        rules: [
          {
            name: "target-schema-qualified",
            expression: "object.spec.target.sql.table.contains('.')",
            message: "the target table must be schema-qualified",
          },
          {
            name: "team-label",
            expression:
              "has(object.metadata.labels) && 'team' in object.metadata.labels && object.metadata.labels['team'] != ''",
            message: "the job must carry a team label",
          },
          {
            name: "team-matches-namespace",
            expression:
              "!has(namespaceObject.metadata.labels) || !('team' in namespaceObject.metadata.labels) || " +
              "(has(object.metadata.labels) && 'team' in object.metadata.labels && " +
              "object.metadata.labels['team'] == namespaceObject.metadata.labels['team'])",
            message: "the job's team label must name the namespace's team",
          },
        ],
      },
    } as KubernetesObject,
  ]);
}

async function waitForCrds(kc: KubeConfig): Promise<void> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  for (let i = 0; i < 100; i++) {
    const crds = (await api.listCustomResourceDefinition()).items.filter((c) => c.spec.group === GROUP);
    const established = crds.filter((c) =>
      c.status?.conditions?.some((x) => x.type === "Established" && x.status === "True"),
    );
    if (crds.length >= 3 && established.length === crds.length) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the syncgov CRDs did not become Established");
}

function jobName(i: number): string {
  return `orders-${i}`;
}

function runName(i: number): string {
  return `orders-${i}-manual`;
}

/**
 * A daily schedule whose next fire is 11 to 12 hours away, so that no scheduled run joins the manual
 * ones during the bench (batch jobs must have a schedule).
 */
const nightlySchedule = `0 ${(new Date().getUTCHours() + 12) % 24} * * *`;

/** A valid batch job with its own target table (so only the global limit binds), compliant with the policy. */
function syncJob(i: number): KubernetesObject {
  return {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: "SyncJob",
    metadata: { name: jobName(i), labels: { team: "payments", tier: "gold" } },
    spec: {
      source: {
        sql: {
          connectionSecretRef: { name: "crm-db" },
          table: `crm.orders_${i}`,
          keyColumns: ["order_id"],
          cursorColumn: "updated_at",
        },
      },
      target: {
        sql: {
          connectionSecretRef: { name: "warehouse-db" },
          table: `analytics.orders_${i}`,
          keyColumns: ["order_id"],
        },
      },
      mode: "batch",
      schedule: nightlySchedule,
      concurrencyPolicy: "Forbid",
    },
  } as KubernetesObject;
}

/** A run as `kubectl create` of a SyncRun leaves it: no status yet. */
function syncRun(i: number, namespace: string): KubernetesObject {
  return {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: "SyncRun",
    metadata: { name: runName(i), namespace },
    spec: { jobName: jobName(i), type: "Batch", trigger: "Manual" },
  } as KubernetesObject;
}

/** The status an admission writes for an admitted run (manager.ts writeDecisions). */
function admittedStatus(i: number, now: Date): Record<string, unknown> {
  return {
    phase: "Running",
    target: `${CEILING_NAMESPACE}/warehouse-db/analytics.orders_${i}`,
    admittedAt: kubeTime(now),
    conditions: [
      {
        type: "Admitted",
        status: "True",
        reason: "Admitted",
        message: "Admitted within the concurrency limits.",
        lastTransitionTime: kubeTime(now),
      },
    ],
  };
}

/** The status an admission writes for a run over the global limit. */
function queuedStatus(globalLimit: number, now: Date): Record<string, unknown> {
  const message = `${globalLimit}/${globalLimit} running in the cluster`;
  return {
    phase: "Queued",
    queueReason: message,
    conditions: [
      {
        type: "Admitted",
        status: "False",
        reason: "GlobalLimit",
        message,
        lastTransitionTime: kubeTime(now),
      },
    ],
  };
}

/** Runs `task(0..n-1)` with at most `concurrency` in flight; the first failure fails the whole. */
async function inPool(n: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

interface RunList {
  items?: KubernetesObject[];
  metadata?: { resourceVersion?: string; continue?: string };
}

/**
 * Watches the bench namespace's SyncRuns and notes when each first shows a decision. A paged list and
 * a raw watch rather than the controller's Informer, so that what the bench observes does not depend
 * on the code under test.
 */
class DecisionTracker {
  readonly #custom: CustomObjectsApi;
  readonly #watch: Watch;
  readonly #expected: number;
  /** Phase and Admitted reason of each decided run, by name. */
  readonly #phases = new Map<string, string>();
  #resourceVersion = "";
  #stopped = false;
  #current: AbortController | undefined;
  #watching: Promise<void> | undefined;
  decided = 0;
  listed = 0;
  /** One queueReason per kind of decision, for the report. */
  readonly examples = new Map<string, string>();
  firstDecisionAt: number | undefined;
  lastDecisionAt: number | undefined;
  #done: (() => void) | undefined;

  constructor(kc: KubeConfig, expected: number) {
    this.#expected = expected;
    this.#custom = kc.makeApiClient(CustomObjectsApi);
    this.#watch = new Watch(kc);
  }

  /** Lists the runs (before the clock starts) and keeps watching; every run must still be undecided. */
  async start(): Promise<void> {
    await this.#list();
    if (this.listed !== this.#expected || this.decided !== 0)
      throw new Error(
        `expected ${this.#expected} undecided runs, listed ${this.listed} (${this.decided} decided)`,
      );
    this.#watching = this.#watchLoop();
  }

  async #list(): Promise<void> {
    let token: string | undefined;
    let listed = 0;
    do {
      const page = (await this.#custom.listNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: NAMESPACE,
        plural: "syncruns",
        limit: 500,
        ...(token ? { _continue: token } : {}),
      })) as RunList;
      for (const item of page.items ?? []) this.#seen(item);
      listed += page.items?.length ?? 0;
      this.#resourceVersion = page.metadata?.resourceVersion ?? this.#resourceVersion;
      token = page.metadata?.continue || undefined;
    } while (token);
    this.listed = listed;
  }

  /** Watches from the list's resourceVersion; resumes after the server closes the watch, relists after an error. */
  async #watchLoop(): Promise<void> {
    const path = `/apis/${GROUP}/${VERSION}/namespaces/${NAMESPACE}/syncruns`;
    while (!this.#stopped) {
      let failed = false;
      const ended = new Promise<void>((resolve) => {
        this.#watch
          .watch(
            path,
            { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 600 },
            (type, object: KubernetesObject) => {
              if (type === "ERROR") {
                failed = true;
                return;
              }
              this.#resourceVersion = object.metadata?.resourceVersion ?? this.#resourceVersion;
              if (type !== "BOOKMARK") this.#seen(object);
            },
            (err: unknown) => {
              // client-node ends a watch that delivered nothing for 30 s; that one just resumes.
              if (err && (err as { name?: string }).name !== "TimeoutError") failed = true;
              resolve();
            },
          )
          .then(
            (controller) => {
              this.#current = controller;
            },
            () => {
              failed = true;
              resolve();
            },
          );
      });
      await ended;
      // After an error (a 410 among them) the runs are listed again; decisions seen then count from then.
      if (failed && !this.#stopped) {
        await new Promise((r) => setTimeout(r, 1000));
        await this.#list().catch(() => undefined);
      }
    }
  }

  #seen(object: KubernetesObject): void {
    const status = (
      object as {
        status?: { phase?: string; queueReason?: string; conditions?: { type: string; reason: string }[] };
      }
    ).status;
    const phase = status?.phase;
    const name = object.metadata?.name ?? "";
    if (phase === undefined || !DECISION_PHASES.has(phase)) return;
    const first = !this.#phases.has(name);
    const reason = status?.conditions?.find((c) => c.type === "Admitted")?.reason;
    const key = reason ? `${phase} (${reason})` : phase;
    this.#phases.set(name, key);
    if (status?.queueReason && !this.examples.has(key)) this.examples.set(key, status.queueReason);
    if (!first) return;
    const now = Date.now();
    this.decided += 1;
    this.firstDecisionAt ??= now;
    this.lastDecisionAt = now;
    if (this.decided === this.#expected) this.#done?.();
  }

  /**
   * Resolves when every run has a decision. Fails after `timeoutMs`, or when, once deciding has begun,
   * no new decision has been seen for `stallMs` (a controller that stopped deciding, not a slow one).
   */
  allDecided(timeoutMs: number, stallMs: number): Promise<void> {
    if (this.decided === this.#expected) return Promise.resolve();
    const began = Date.now();
    return new Promise((resolve, reject) => {
      let lastCount = this.decided;
      let lastChange = began;
      const check = setInterval(() => {
        const now = Date.now();
        if (this.decided !== lastCount) {
          lastCount = this.decided;
          lastChange = now;
        }
        const why =
          now - began > timeoutMs
            ? `after ${timeoutMs / 1000} s`
            : this.decided > 0 && now - lastChange > stallMs
              ? `and none more for ${stallMs / 1000} s`
              : undefined;
        if (why) {
          clearInterval(check);
          reject(new Error(`only ${this.decided}/${this.#expected} runs decided ${why}: ${this.#summary()}`));
        }
      }, 1000);
      this.#done = () => {
        clearInterval(check);
        resolve();
      };
    });
  }

  #summary(): string {
    return [...this.byPhase()].map(([key, n]) => `${n} ${key}`).join(", ") || "none";
  }

  /** Counts of the decided runs by "phase (Admitted reason)", as last seen (a queued run may have been admitted since). */
  byPhase(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const phase of this.#phases.values()) counts.set(phase, (counts.get(phase) ?? 0) + 1);
    return counts;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#current?.abort();
    await this.#watching;
  }
}

function startController(env: Environment, port: number, logFile: string, cpuProfile: boolean): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      ...(cpuProfile ? ["--cpu-prof", "--cpu-prof-dir", env.runDir] : []),
      join(root, "controller", "cli.ts"),
      "controller",
      "--kubeconfig",
      env.kube.kubeconfig,
      "--http-port",
      String(port),
      // The bench's own loopback control plane: its reconcile counts are read from /metrics unauthenticated.
      "--http-auth",
      "none",
      "--executor",
      "External",
      "--lease-namespace",
      LEASE_NAMESPACE,
      "--lease-name",
      "syncgov-admission-bench",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SYNCGOV_LOG_LEVEL: "info" } },
  );
  const log = createWriteStream(logFile, { flags: "a" });
  child.stderr?.pipe(log);
  child.once("exit", () => log.end());
  return child;
}

interface ControllerMarks {
  informersSynced?: number;
  /** The first time it started leading. */
  startedLeading?: number;
  /** Times it lost leadership (and campaigned again). */
  leadershipLost: number;
}

/** Copies the controller's JSON log to `logFile` and notes when it says it synced and leads. */
function watchControllerLog(child: ChildProcess, logFile: string): ControllerMarks {
  const marks: ControllerMarks = { leadershipLost: 0 };
  const log = createWriteStream(logFile, { flags: "a" });
  const lines = createInterface({ input: child.stdout! });
  lines.on("line", (line) => {
    log.write(`${line}\n`);
    try {
      const entry = JSON.parse(line) as { msg?: string; time?: number };
      if (entry.msg === "informers synced") marks.informersSynced = entry.time;
      if (entry.msg === "started leading") marks.startedLeading ??= entry.time;
      if (entry.msg === "lost leadership; campaigning again") marks.leadershipLost += 1;
    } catch {
      // not a log line of the controller's logger
    }
  });
  lines.once("close", () => log.end());
  return marks;
}

/** GET on the API server with the kubeconfig's credentials, as text (for /metrics, which has no typed client). */
async function apiGet(kc: KubeConfig, path: string): Promise<string> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error("the kubeconfig names no server");
  const options: Parameters<typeof request>[1] = {};
  await kc.applyToHTTPSOptions(options);
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, server), options, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: ${res.statusCode}`)),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

/** Prometheus text lines `name{labels} value` of one metric, with their labels. */
function samples(text: string, name: string): { labels: Map<string, string>; value: number }[] {
  const out: { labels: Map<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf("}");
    const labels = new Map(
      [...line.slice(name.length + 1, close).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]),
    );
    out.push({ labels, value: Number(line.slice(close + 1).trim()) });
  }
  return out;
}

/** Requests the API server has served, by "VERB resource[/subresource]". */
async function apiRequestCounts(kc: KubeConfig): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const { labels, value } of samples(await apiGet(kc, "/metrics"), "apiserver_request_total")) {
    const sub = labels.get("subresource");
    const key = `${labels.get("verb")} ${labels.get("resource") ?? ""}${sub ? `/${sub}` : ""}`;
    counts.set(key, (counts.get(key) ?? 0) + value);
  }
  return counts;
}

function diffCounts(after: Map<string, number>, before: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, n] of after) {
    const d = n - (before.get(key) ?? 0);
    if (d > 0) out.set(key, d);
  }
  return out;
}

function requestTable(during: Map<string, number>, ceiling: Map<string, number>, jobs: number): string {
  const keys = [...new Set([...during.keys(), ...ceiling.keys()])]
    .sort(
      (a, b) => (during.get(b) ?? 0) + (ceiling.get(b) ?? 0) - (during.get(a) ?? 0) - (ceiling.get(a) ?? 0),
    )
    .slice(0, 10);
  const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  return table(
    ["request", "controller phase", "per run", "ceiling phase"],
    [
      ...keys.map((k) => [
        k,
        String(during.get(k) ?? 0),
        ((during.get(k) ?? 0) / jobs).toFixed(2),
        String(ceiling.get(k) ?? 0),
      ]),
      ["all requests", String(total(during)), (total(during) / jobs).toFixed(2), String(total(ceiling))],
    ],
  );
}

function cpuTable(controllerPhase: Map<string, number>, ceilingPhase: Map<string, number>): string {
  return [
    "CPU seconds (utime+stime) per process, and the machine's busy core-seconds:",
    table(
      ["process", "controller phase", "ceiling phase"],
      [...controllerPhase.keys()].map((name) => [
        name,
        controllerPhase.get(name)!.toFixed(1),
        ceilingPhase.get(name)?.toFixed(1) ?? "-",
      ]),
    ),
  ].join("\n");
}

/** The controller's reconcile count and time by kind, from its Prometheus endpoint. */
async function controllerReconciles(
  port: number,
): Promise<{ kind: string; count: number; seconds: number }[]> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const byKind = new Map<string, { count: number; seconds: number }>();
  const add = (name: string, field: "count" | "seconds") => {
    for (const { labels, value } of samples(text, name)) {
      const kind = labels.get("kind") ?? "?";
      const entry = byKind.get(kind) ?? { count: 0, seconds: 0 };
      entry[field] += value;
      byKind.set(kind, entry);
    }
  };
  add("syncgov_reconcile_duration_seconds_count", "count");
  add("syncgov_reconcile_duration_seconds_sum", "seconds");
  return [...byKind].map(([kind, v]) => ({ kind, ...v }));
}

/** The environment's local server processes (found by their run directory in the command line; Linux only). */
function serverProcesses(env: Environment): Record<string, number | undefined> {
  const found: Record<string, number | undefined> = { "kube-apiserver": undefined, etcd: undefined };
  let pids: string[] = [];
  try {
    pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  } catch {
    return found;
  }
  for (const pid of pids) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (!cmdline.includes(env.runDir)) continue;
    const command = cmdline.split("\0")[0] ?? "";
    for (const name of Object.keys(found)) if (command.endsWith(`/${name}`)) found[name] = Number(pid);
  }
  return found;
}

/** CPU seconds of the given processes, this bench and the whole machine, to subtract later. */
function cpuSnapshot(pids: Record<string, number | undefined>) {
  const values = new Map<string, number | undefined>();
  for (const [name, pid] of Object.entries(pids)) values.set(name, processCpuSeconds(pid));
  values.set("bench (this process)", ownCpuSeconds());
  values.set("machine busy (all processes)", machineBusySeconds());
  return {
    values,
    /** Per process, the CPU seconds since `before` (0 for a process that `before` did not have). */
    since(before: { values: Map<string, number | undefined> }): Map<string, number> {
      const out = new Map<string, number>();
      for (const [name, v] of values) {
        if (v === undefined) continue;
        out.set(name, v - (before.values.get(name) ?? 0));
      }
      return out;
    },
  };
}

function peakRss(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}
