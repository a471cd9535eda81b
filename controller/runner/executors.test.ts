import { describe, expect, it } from "vitest";
import { SyncJobSpec } from "../api/syncjob.ts";
import { parseRunRef } from "./cluster.ts";
import {
  ChildProcessExecutor,
  runnerJob,
  runnerJobName,
  runnerSettingsEnv,
  SYNCGOV_CLI,
} from "./executors.ts";

const run = {
  apiVersion: "syncgov.io/v1alpha1",
  kind: "SyncRun",
  metadata: { name: "ledger-import-28", namespace: "finance", uid: "5f0c6a1e-0000-4000-8000-000000000001" },
};

const fileJob = SyncJobSpec.parse({
  source: {
    file: {
      path: "/data/exports/ledger.dat",
      persistentVolumeClaim: "ledger-exports",
      fields: [{ name: "entry_id", start: 0, length: 10, type: "bigint" }],
    },
  },
  target: {
    sql: { connectionSecretRef: { name: "warehouse-db" }, table: "finance.ledger", keyColumns: ["entry_id"] },
  },
  mode: "batch",
  schedule: "30 6 * * 1-5",
});

describe("runnerJob", () => {
  const job = runnerJob(run, fileJob, {
    image: "ghcr.io/syncgov/syncgov:0.1.0",
    serviceAccountName: "finance-runner",
    ttlSecondsAfterFinished: 600,
    resources: { requests: { cpu: "250m", memory: "128Mi" }, limits: { memory: "256Mi" } },
  });
  const pod = job.spec!.template.spec!;
  const container = pod.containers[0]!;

  it("runs `syncgov run <ns>/<run>` once, in the run's namespace, owned by the SyncRun", () => {
    expect(job.metadata).toMatchObject({ name: "syncrun-ledger-import-28", namespace: "finance" });
    expect(job.metadata!.ownerReferences).toEqual([
      {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncRun",
        name: "ledger-import-28",
        uid: run.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(container.command).toEqual(["syncgov", "run", "finance/ledger-import-28"]);
    expect(container.image).toBe("ghcr.io/syncgov/syncgov:0.1.0");
    expect(job.spec).toMatchObject({ backoffLimit: 0, ttlSecondsAfterFinished: 600 });
    expect(pod.restartPolicy).toBe("Never");
    expect(pod.serviceAccountName).toBe("finance-runner");
    expect(container.resources).toEqual({
      requests: { cpu: "250m", memory: "128Mi" },
      limits: { memory: "256Mi" },
    });
  });

  it("meets the restricted pod security standard", () => {
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(container.securityContext).toEqual({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      privileged: false,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(pod.volumes?.every((v) => v.hostPath === undefined)).toBe(true);
    expect(pod.hostNetwork).toBeUndefined();
  });

  it("uses the node's network only when asked (clusters without a pod network)", () => {
    const onHost = runnerJob(run, fileJob, { image: "x", hostNetwork: true }).spec!.template.spec!;
    expect(onHost).toMatchObject({ hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet" });
    const onPods = runnerJob(run, fileJob, { image: "x", hostNetwork: false }).spec!.template.spec!;
    expect(onPods.hostNetwork).toBeUndefined();
    expect(onPods.dnsPolicy).toBeUndefined();
  });

  it("mounts a file source's claim read-only at the file's directory", () => {
    expect(pod.volumes).toContainEqual({
      name: "source-file",
      persistentVolumeClaim: { claimName: "ledger-exports", readOnly: true },
    });
    expect(container.volumeMounts).toContainEqual({
      name: "source-file",
      mountPath: "/data/exports",
      readOnly: true,
    });
  });
});

describe("runnerJobName", () => {
  it("keeps short names and shortens long ones to a unique, valid 63-character name", () => {
    expect(runnerJobName("orders-1")).toBe("syncrun-orders-1");
    const long = `${"a".repeat(60)}.b`;
    const other = `${"a".repeat(60)}.c`;
    const name = runnerJobName(long);
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    expect(runnerJobName(other)).not.toBe(name);
  });
});

describe("ChildProcessExecutor", () => {
  it("starts exactly the pod entrypoint: node controller/cli.ts run <ns>/<run>", () => {
    const executor = new ChildProcessExecutor({ logDir: "/tmp/syncgov-runs" });
    expect(SYNCGOV_CLI).toMatch(/controller\/cli\.ts$/);
    expect(executor.argv({ namespace: "finance", name: "ledger-import-28" })).toEqual([
      SYNCGOV_CLI,
      "run",
      "finance/ledger-import-28",
    ]);
  });
});

describe("parseRunRef", () => {
  it("accepts <namespace>/<name> only", () => {
    expect(parseRunRef("finance/ledger-import-28")).toEqual({
      namespace: "finance",
      name: "ledger-import-28",
    });
    expect(() => parseRunRef("ledger-import-28")).toThrow(/expected <namespace>\/<run>/);
    expect(() => parseRunRef("Finance/x")).toThrow();
    expect(() => parseRunRef("a/b/c")).toThrow();
  });
});

describe("runnerSettingsEnv", () => {
  it("passes the runner's settings on and keeps credentials behind", () => {
    const env = runnerSettingsEnv({
      SYNCGOV_LINEAGE: "http",
      SYNCGOV_LINEAGE_URL: "https://marquez.example:5000",
      SYNCGOV_LINEAGE_API_KEY: "s3cret-key",
      SYNCGOV_LOG_LEVEL: "debug",
      KAFKA_BROKERS: "kafka-0.kafka:9092,kafka-1.kafka:9092",
      OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector:4318",
      OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer s3cret",
      DATABASE_URL: "postgres://app:s3cret@db/app",
      HOME: "/home/syncgov",
    });
    expect(env).toEqual([
      { name: "SYNCGOV_LOG_LEVEL", value: "debug" },
      { name: "SYNCGOV_LINEAGE", value: "http" },
      { name: "SYNCGOV_LINEAGE_URL", value: "https://marquez.example:5000" },
      { name: "KAFKA_BROKERS", value: "kafka-0.kafka:9092,kafka-1.kafka:9092" },
      { name: "OTEL_EXPORTER_OTLP_ENDPOINT", value: "https://collector:4318" },
    ]);
    expect(JSON.stringify(env)).not.toContain("s3cret");
  });

  it("passes on where the API server is, so that an override of the injected address reaches the runners", () => {
    expect(
      runnerSettingsEnv({ KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: "6443" }),
    ).toEqual([
      { name: "KUBERNETES_SERVICE_HOST", value: "127.0.0.1" },
      { name: "KUBERNETES_SERVICE_PORT", value: "6443" },
    ]);
  });

  it("leaves out a URL that carries a user or password", () => {
    expect(
      runnerSettingsEnv({
        SYNCGOV_LINEAGE_URL: "https://lineage:hunter2@marquez.example",
        OTEL_EXPORTER_OTLP_ENDPOINT: "https://user@collector:4318",
        SYNCGOV_LINEAGE_NAMESPACE: "prod",
      }),
    ).toEqual([{ name: "SYNCGOV_LINEAGE_NAMESPACE", value: "prod" }]);
  });

  it("becomes the runner container's environment", () => {
    const job = runnerJob(run, fileJob, {
      image: "ghcr.io/syncgov/syncgov:0.1.0",
      env: runnerSettingsEnv({ SYNCGOV_LINEAGE: "kafka", SYNCGOV_LINEAGE_TOPIC: "lineage" }),
    });
    expect(job.spec!.template.spec!.containers[0]!.env).toEqual([
      { name: "SYNCGOV_LINEAGE", value: "kafka" },
      { name: "SYNCGOV_LINEAGE_TOPIC", value: "lineage" },
    ]);
    expect(runnerJob(run, fileJob, { image: "x" }).spec!.template.spec!.containers[0]!.env).toBeUndefined();
  });
});
