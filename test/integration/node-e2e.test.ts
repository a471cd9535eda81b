/**
 * The chart on a real node, end to end: `helm install` puts the controller in a real pod (the image
 * built from the repository's Dockerfile), with the Job executor; a realtime SyncJob's session and
 * a Validation run each run as a runner Job, a pod from the same image under the ServiceAccount
 * syncgov-runner in the tenant's namespace, syncing a Kafka topic of the suite's into a PostgreSQL
 * table of the suite's. A runner pod deleted mid-session is then a real event.
 *
 * Like node.test.ts the file starts a control plane of its own (with the ServiceAccount admission
 * plugin) and a node on it: a controller-manager on the suite's API server would make pods for every
 * Job the other files create. There is no pod network here (no CNI plugin, no kube-proxy): the chart
 * runs the controller and the runner Jobs with host networking (values hostNetwork and
 * runner.hostNetwork), and points in-cluster clients at the API server on 127.0.0.1 through
 * KUBERNETES_SERVICE_HOST/PORT in extraEnv (the kubernetes Service's IP is not routable; runner Jobs
 * inherit the controller's values).
 *
 * Without podman, runc or mmdebstrap, or containerd or the CNI plugins (and no way to install them)
 * the file is skipped with a message naming what is missing.
 */

import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  BatchV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1Pod,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import type { SyncRunStatus } from "../../controller/api/syncrun.ts";
import { ensureTopic, jobConsumerGroup, produceJson } from "../../controller/connectors/kafka/cluster.ts";
import { SYNCJOBS, SYNCRUNS } from "../../controller/kube/resource.ts";
import { buildImage, obtainImageBase, testImageTag } from "../env/services/image.ts";
import { startLocalKube } from "../env/services/kube.ts";
import { type LocalNode, obtainNodeBinaries, startLocalNode } from "../env/services/node.ts";
import { freePort, ProcessGroup } from "../env/services/process.ts";
import { eventually } from "../support/controller.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { type Helm, obtainHelm } from "../support/helm.ts";
import { kafkaToPostgres } from "../support/kafka.ts";
import { mergePatch } from "../support/kube.ts";
import { repoPath } from "../support/manifests.ts";
import { OtlpReceiver, pointLabel } from "../support/otlp.ts";

const base = await obtainImageBase();
const binaries = await obtainNodeBinaries();
const skipReason = !base.ok ? base.missing : !binaries.ok ? binaries.reason : "";
if (skipReason) console.warn(`node end-to-end tests skipped: ${skipReason}`);

const CHART = repoPath("charts/syncgov");
const RELEASE = "syncgov";
const RELEASE_NAMESPACE = "syncgov-system";
const LEASE = "syncgov-controller";
const RUNNER_ACCOUNT = "syncgov-runner";
const DATABASE_SECRET = "warehouse";
/** Processes on this machine whose command line holds `syncgov run <ref>` (a runner container's). */
function runnerProcesses(ref: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const at = argv.indexOf("run");
      if (at > 0 && argv[at + 1] === ref) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Distinct keys of the topic; each is written ROUNDS times, the last value wins. */
const KEYS = 1000;
const ROUNDS = 3;

interface SyncRun {
  metadata: { name: string; creationTimestamp?: string };
  spec: { type?: string; jobName?: string };
  status?: SyncRunStatus;
}

interface SyncJobStatus {
  phase?: string;
  conditions?: { type: string; status: string; message?: string }[];
  lastValidation?: {
    result: string;
    sourceRows: number;
    targetRows: number;
    sourceChecksum?: string;
    targetChecksum?: string;
  };
}

describe.skipIf(skipReason !== "")("the chart on a real node: controller pod, runner Job pods", () => {
  const env = testEnv();
  // Registered first: its after-all hook (topics, groups, tables) runs after this file's own.
  const streams = kafkaToPostgres();
  const image = testImageTag();
  const suffix = uniqueName("x").slice(2);
  const runDir = join(env.runDir, `node-e2e-${suffix}`);
  const group = new ProcessGroup(runDir);
  const tenant = `tenant-${suffix}`;
  const jobName = "orders";
  const topic = `node-e2e-${suffix}.orders`;
  let node: LocalNode | undefined;
  let helm: Helm | undefined;
  let kubeconfig = "";
  let installed = false;
  let core: CoreV1Api;
  let batch: BatchV1Api;
  let custom: CustomObjectsApi;
  let leases: CoordinationV1Api;
  let table = "";
  // The collector the chart's telemetry.otlpEndpoint names: runner pods (host network) push to it.
  const otlp = new OtlpReceiver();

  beforeAll(async () => {
    mkdirSync(runDir, { recursive: true });
    await otlp.start();
    const kube = await startLocalKube(group, runDir, {
      serviceAccountAdmission: true,
      kubeletPreferredAddressTypes: ["Hostname"],
    });
    kubeconfig = kube.endpoint.kubeconfig;
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    batch = kc.makeApiClient(BatchV1Api);
    custom = kc.makeApiClient(CustomObjectsApi);
    leases = kc.makeApiClient(CoordinationV1Api);
    const [built, started, obtainedHelm] = await Promise.all([
      buildImage({ base: base.ok ? base.image : "", tag: image, logFile: join(runDir, "image-build.log") }),
      startLocalNode(group, runDir, kube.endpoint),
      obtainHelm(join(runDir, "helm")),
    ]);
    if (!started.ok) throw new Error(started.reason);
    node = started.node;
    helm = obtainedHelm;
    const importing = Date.now();
    await node.endpoint.importImage(built.image);
    console.log(
      `node-e2e: ${node.description}, Ready in ${node.seconds.toFixed(1)} s; image built in ${built.seconds.toFixed(1)} s, imported in ${((Date.now() - importing) / 1000).toFixed(1)} s; logs in ${runDir}`,
    );

    // The tenant's namespace and connection Secret; the chart adds the runner account there.
    await core.createNamespace({ body: { metadata: { name: tenant } } });
    await core.createNamespace({ body: { metadata: { name: RELEASE_NAMESPACE } } });
    await core.createNamespacedSecret({
      namespace: tenant,
      body: { metadata: { name: DATABASE_SECRET }, stringData: { url: env.databaseUrl } },
    });

    const [repository, tag] = [
      image.slice(0, image.lastIndexOf(":")),
      image.slice(image.lastIndexOf(":") + 1),
    ];
    const values = {
      replicaCount: 1,
      image: { repository, tag, pullPolicy: "Never" },
      hostNetwork: true,
      controller: {
        executor: "Job",
        // A port on the node (host network): any free one.
        httpPort: await freePort(),
        logLevel: "info",
      },
      runner: { namespaces: [tenant], hostNetwork: true },
      kafkaBrokers: env.kafkaBrokers,
      lineage: { transport: "none" },
      telemetry: { otlpEndpoint: otlp.endpoint },
      // The kubernetes Service's IP (10.0.0.1) is not routable here: in-cluster clients go to the
      // API server on loopback (its certificate names 127.0.0.1). Runner Jobs inherit these.
      extraEnv: [
        { name: "KUBERNETES_SERVICE_HOST", value: "127.0.0.1" },
        { name: "KUBERNETES_SERVICE_PORT", value: new URL(kube.endpoint.server).port },
      ],
      dashboards: { enabled: false },
    };
    const valuesFile = join(runDir, "values.yaml");
    writeFileSync(valuesFile, stringify(values));
    const out = await helm.ok([
      "install",
      RELEASE,
      CHART,
      "--kubeconfig",
      kubeconfig,
      "--namespace",
      RELEASE_NAMESPACE,
      "-f",
      valuesFile,
    ]);
    installed = true;
    expect(out).toContain("STATUS: deployed");
  }, 1_800_000);

  afterAll(async () => {
    await otlp.stop();
    const began = Date.now();
    try {
      if (core) await saveLogs();
    } catch (error) {
      console.warn(`node-e2e: could not save the pods' logs: ${String(error)}`);
    }
    if (installed)
      await helm?.run(["uninstall", RELEASE, "--kubeconfig", kubeconfig, "--namespace", RELEASE_NAMESPACE]);
    await node?.stop();
    await group.stop();
    console.log(`node-e2e: stopped in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  }, 180_000);

  /** Every pod's log in the release and tenant namespaces, into the run directory. */
  async function saveLogs(): Promise<void> {
    for (const namespace of [RELEASE_NAMESPACE, tenant]) {
      const pods = await core.listNamespacedPod({ namespace }).catch(() => ({ items: [] as V1Pod[] }));
      for (const pod of pods.items) {
        const name = pod.metadata!.name!;
        const log = await core.readNamespacedPodLog({ namespace, name }).catch((e: unknown) => String(e));
        writeFileSync(join(runDir, `pod-${namespace}-${name}.log`), `${JSON.stringify(pod.status)}\n${log}`);
      }
    }
  }

  async function controllerPod(): Promise<V1Pod | undefined> {
    const pods = await core.listNamespacedPod({
      namespace: RELEASE_NAMESPACE,
      labelSelector: `app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=controller`,
    });
    return pods.items[0];
  }

  async function runs(): Promise<SyncRun[]> {
    const list = (await custom.listNamespacedCustomObject({ ...SYNCRUNS, namespace: tenant })) as {
      items: SyncRun[];
    };
    return list.items.filter((r) => r.spec.jobName === jobName);
  }

  async function run(name: string): Promise<SyncRun> {
    return (await custom.getNamespacedCustomObject({ ...SYNCRUNS, namespace: tenant, name })) as SyncRun;
  }

  /** The pod of a runner Job (there is one: backoffLimit 0). */
  async function runnerPod(job: string): Promise<V1Pod | undefined> {
    const pods = await core.listNamespacedPod({
      namespace: tenant,
      labelSelector: `batch.kubernetes.io/job-name=${job}`,
    });
    return pods.items[0];
  }

  /** Realtime sessions the tests have ended already. */
  const sessionsSeen: string[] = [];

  /** The Realtime session that is Running in a runner Job with a running pod, not one already ended. */
  async function runningSession(): Promise<{ run: SyncRun; job: string; pod: V1Pod }> {
    return eventually(
      "a Realtime session Running in a runner pod",
      async () => {
        for (const r of await runs()) {
          if (r.spec.type !== "Realtime" || sessionsSeen.includes(r.metadata.name)) continue;
          const job = r.status?.executor?.jobName;
          if (r.status?.phase !== "Running" || r.status.executor?.kind !== "Job" || !job) continue;
          const pod = await runnerPod(job);
          if (pod?.status?.phase === "Running") return { run: r, job, pod };
        }
        return undefined;
      },
      120_000,
    );
  }

  /** Once the runner Job has failed: its Failed condition, as "Failed=True <reason>: <message>". */
  async function jobFailed(name: string): Promise<string> {
    return eventually(
      `Job ${name} to fail`,
      async () => {
        const job = await batch.readNamespacedJob({ namespace: tenant, name });
        const c = job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
        return c ? `Failed=True ${c.reason}: ${c.message}` : undefined;
      },
      60_000,
    );
  }

  async function produceRounds(rounds: number[]): Promise<void> {
    const records = rounds.flatMap((round) =>
      Array.from({ length: KEYS }, (_, i) => ({
        id: i + 1,
        name: `customer ${i + 1} round ${round}`,
        seq: round * KEYS + i + 1,
      })),
    );
    await produceJson(
      streams.kafka,
      topic,
      records.map((r) => ({ key: String(r.id), value: r })),
    );
  }

  /** Waits until every key holds the value of round `round`. */
  async function tableAtRound(round: number, timeoutMs: number): Promise<void> {
    await eventually(
      `every key of ${table} at round ${round}`,
      async () => {
        const r = await streams.tables.pool.query<{ n: string; done: string }>(
          `SELECT count(*) AS n, count(*) FILTER (WHERE seq = ${round * KEYS} + id) AS done FROM ${table}`,
        );
        return r.rows[0]!.n === String(KEYS) && r.rows[0]!.done === String(KEYS) ? true : undefined;
      },
      timeoutMs,
    );
  }

  it("runs the chart's controller as a real pod: Ready, leading, user 65532 on a read-only root", async () => {
    const pod = await eventually(
      "the controller pod to be Ready",
      async () => {
        const p = await controllerPod();
        const ready = p?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        if (p?.status?.phase === "Failed")
          throw new Error(`the controller pod failed: ${JSON.stringify(p.status)}`);
        return ready ? p : undefined;
      },
      180_000,
    );
    const name = pod.metadata!.name!;
    expect(pod.spec?.nodeName).toBe(node!.endpoint.nodeName);
    expect(pod.spec).toMatchObject({ hostNetwork: true, serviceAccountName: RELEASE });
    expect(pod.spec?.securityContext).toMatchObject({ runAsUser: 65532, runAsNonRoot: true });
    expect(pod.spec?.containers[0]).toMatchObject({
      image,
      imagePullPolicy: "Never",
      securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
    });
    expect(pod.status?.containerStatuses?.[0]?.restartCount).toBe(0);
    const holder = await eventually("the controller pod holds the Lease", async () => {
      const lease = await leases.readNamespacedLease({ namespace: RELEASE_NAMESPACE, name: LEASE });
      return lease.spec?.holderIdentity === name ? lease.spec.holderIdentity : undefined;
    });
    expect(holder).toBe(name);
  }, 240_000);

  it("syncs Kafka → PostgreSQL in a runner pod of the image, and validates in another", async () => {
    streams.topics.push(topic, `syncgov.buffer.${tenant}.${jobName}`, `syncgov.dlq.${tenant}.${jobName}`);
    streams.groups.push(jobConsumerGroup(tenant, jobName), `syncgov.buffer.${tenant}.${jobName}.replay`);
    await ensureTopic(streams.admin, topic, { partitions: 3 });
    table = await streams.tables.create(
      "node_e2e",
      "id int8 PRIMARY KEY, name text NOT NULL, seq int8 NOT NULL",
    );
    await produceRounds(Array.from({ length: ROUNDS }, (_, i) => i));
    await custom.createNamespacedCustomObject({
      ...SYNCJOBS,
      namespace: tenant,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncJob",
        metadata: { name: jobName },
        spec: {
          mode: "realtime",
          source: { kafka: { topic, startFrom: "earliest" } },
          target: { sql: { connectionSecretRef: { name: DATABASE_SECRET }, table, keyColumns: ["id"] } },
        },
      },
    });

    // The controller starts the job's session as a runner Job; its pod runs `syncgov run`.
    const session = await runningSession();
    const pod = session.pod;
    expect(pod.spec?.nodeName).toBe(node!.endpoint.nodeName);
    expect(pod.spec).toMatchObject({
      hostNetwork: true,
      dnsPolicy: "ClusterFirstWithHostNet",
      serviceAccountName: RUNNER_ACCOUNT,
      restartPolicy: "Never",
    });
    expect(pod.spec?.securityContext).toMatchObject({
      runAsUser: 65532,
      runAsGroup: 65532,
      runAsNonRoot: true,
    });
    const container = pod.spec!.containers[0]!;
    expect(container.image).toBe(image);
    expect(container.command).toEqual(["syncgov", "run", `${tenant}/${session.run.metadata.name}`]);
    expect(container.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    // The override of the API server's address reached the runner through the controller.
    expect(container.env).toEqual(
      expect.arrayContaining([
        { name: "KUBERNETES_SERVICE_HOST", value: "127.0.0.1" },
        { name: "KAFKA_BROKERS", value: env.kafkaBrokers },
      ]),
    );

    await tableAtRound(ROUNDS - 1, 120_000);
    const sums = await streams.tables.pool.query<{ n: string; seq: string }>(
      `SELECT count(*) AS n, sum(seq)::text AS seq FROM ${table}`,
    );
    const lastRound = (ROUNDS - 1) * KEYS;
    expect(sums.rows[0]).toEqual({
      n: String(KEYS),
      seq: String(KEYS * lastRound + (KEYS * (KEYS + 1)) / 2),
    });
    const streaming = await run(session.run.metadata.name);
    expect(streaming.status?.phase).toBe("Running");

    // A run by hand of a Kafka job is a Validation run: another runner Job, which ends Succeeded.
    await custom.patchNamespacedCustomObject(
      {
        ...SYNCJOBS,
        namespace: tenant,
        name: jobName,
        body: { metadata: { annotations: { "syncgov.io/run-now": "check-1" } } },
      },
      mergePatch,
    );
    const validation = await eventually(
      "the Validation run to finish",
      async () => {
        const v = (await runs()).find((r) => r.spec.type === "Validation");
        if (v?.status?.phase === "Failed") throw new Error(`the Validation run failed: ${v.status.message}`);
        return v?.status?.phase === "Succeeded" ? v : undefined;
      },
      120_000,
    );
    expect(validation.status?.executor?.kind).toBe("Job");
    // The runner writes the run's status, then exits 0: its pod ends Succeeded.
    const validationPod = await eventually("the Validation run's pod to end", async () => {
      const p = await runnerPod(validation.status!.executor!.jobName!);
      return p?.status?.phase === "Succeeded" || p?.status?.phase === "Failed" ? p : undefined;
    });
    expect(validationPod.spec?.serviceAccountName).toBe(RUNNER_ACCOUNT);
    expect(validationPod.status?.phase).toBe("Succeeded");
    expect(validationPod.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(0);
    const job = await eventually("the job's lastValidation", async () => {
      const j = (await custom.getNamespacedCustomObject({
        ...SYNCJOBS,
        namespace: tenant,
        name: jobName,
      })) as {
        status?: SyncJobStatus;
      };
      return j.status?.lastValidation ? j.status : undefined;
    });
    expect(job.lastValidation).toMatchObject({ result: "Passed", sourceRows: KEYS, targetRows: KEYS });
    expect(job.lastValidation!.sourceChecksum).toBeDefined();
    expect(job.lastValidation!.sourceChecksum).toBe(job.lastValidation!.targetChecksum);

    // The runner pods push their metrics to the collector the controller passed on: the validation's
    // result as its pod exits, and the rows the session writes at the session's export interval.
    expect(otlp.metricsOf("syncgov-runner").some((m) => m.name === "syncgov_validation_results_total")).toBe(
      true,
    );
    const written = await eventually(
      "the session's written rows at the collector",
      async () => {
        const total = otlp
          .metricsOf("syncgov-runner")
          .filter((m) => m.name === "syncgov_run_rows_total")
          .flatMap((m) => m.sum!.dataPoints)
          .filter((p) => pointLabel(p, "direction") === "written" && pointLabel(p, "job") === jobName)
          .reduce((n, p) => Math.max(n, Number(p.asInt ?? p.asDouble ?? 0)), 0);
        return total >= KEYS ? total : undefined;
      },
      45_000,
    );
    expect(written).toBeGreaterThanOrEqual(KEYS);
  }, 360_000);

  it("reports a runner pod deleted mid-session as a Cancelled run, and the next session carries on", async () => {
    const before = await runningSession();
    sessionsSeen.push(before.run.metadata.name);
    const deletedAt = Date.now();
    // As `kubectl delete pod` does: the kubelet sends SIGTERM, and the runner ends the run at the next
    // chunk boundary within the pod's grace period.
    await core.deleteNamespacedPod({ namespace: tenant, name: before.pod.metadata!.name! });
    const ended = await eventually(
      "the session whose pod was deleted to end",
      async () => {
        const r = await run(before.run.metadata.name);
        return r.status?.phase && r.status.phase !== "Running" ? r : undefined;
      },
      120_000,
    );
    const failed = await jobFailed(before.job);
    console.log(
      `node-e2e: deleted runner pod ${before.pod.metadata!.name}: ${((Date.now() - deletedAt) / 1000).toFixed(1)} s later the run is ${ended.status?.phase} ("${ended.status?.message ?? ""}"), its Job ${failed}`,
    );
    // The run says it was cancelled, as a stop or a Replace would; nothing in it names the deleted pod.
    expect(ended.status?.phase).toBe("Cancelled");
    expect(ended.status?.message).toMatch(/was cancelled after reading \d+ and writing \d+ rows/);

    // The controller starts the next session in a new runner pod; it takes the next round.
    const after = await runningSession();
    expect(after.pod.metadata!.name).not.toBe(before.pod.metadata!.name);
    await produceRounds([ROUNDS]);
    await tableAtRound(ROUNDS, 120_000);
  }, 360_000);

  it("fails the run of a runner killed outright (SIGKILL, as the OOM killer does) with the pod's end, and the next session carries on", async () => {
    const session = await runningSession();
    sessionsSeen.push(session.run.metadata.name);
    const pids = runnerProcesses(`${tenant}/${session.run.metadata.name}`);
    expect(pids.length, "the runner's process on this machine").toBeGreaterThan(0);
    for (const pid of pids) process.kill(pid, "SIGKILL");
    const killedAt = Date.now();
    const pod = await eventually(
      "the runner pod to fail",
      async () => {
        const p = await core.readNamespacedPod({ namespace: tenant, name: session.pod.metadata!.name! });
        return p.status?.phase === "Failed" ? p : undefined;
      },
      60_000,
    );
    expect(pod.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(137);
    const failed = await jobFailed(session.job);
    expect(failed).toMatch(/^Failed=True/);
    // The Job executor notices within its poll interval (5 s) and fails the run, naming the pod's end.
    const after = await eventually(
      "the run of the killed runner to fail",
      async () => {
        const r = await run(session.run.metadata.name);
        return r.status?.phase === "Failed" ? r : undefined;
      },
      60_000,
    );
    console.log(
      `node-e2e: SIGKILLed runner of ${session.run.metadata.name}: pod Failed (exit code 137), Job ${failed}; ${((Date.now() - killedAt) / 1000).toFixed(1)} s later the run is ${after.status?.phase} ("${after.status?.message ?? ""}")`,
    );
    expect(after.status?.message).toContain(`runner pod ${session.pod.metadata!.name} `);
    expect(after.status?.message).toContain("(exit 137");
    expect(after.status?.conditions).toContainEqual(
      expect.objectContaining({ type: "Failed", status: "True", reason: "RunnerPodFailed" }),
    );
    expect(Date.now() - killedAt).toBeLessThan(60_000);

    // The job's next session (after the session backoff) runs in a new runner pod and takes the next round.
    const next = await runningSession();
    expect(next.pod.metadata!.name).not.toBe(session.pod.metadata!.name);
    await produceRounds([ROUNDS + 1]);
    await tableAtRound(ROUNDS + 1, 120_000);
  }, 360_000);
});
