import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { stopProcess } from "../env/services/process.ts";
import { testEnv } from "./env.ts";
import { repoPath } from "./manifests.ts";
import { readerHeaders } from "./reader-token.ts";

export interface RunningController {
  identity: string;
  port: number;
  process: ChildProcess;
  logFile: string;
  /** SIGKILL: no clean-up, the lease stays held until it expires. */
  kill9(): Promise<void>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  metrics(): Promise<string>;
}

let nextPort = 0;

/**
 * Starts `syncgov controller` as its own process against the test control plane, creating its
 * Lease's namespace first when no earlier test did.
 */
export async function startController(opts: {
  identity: string;
  leaseName: string;
  leaseNamespace?: string;
  leaseDuration?: number;
  renewDeadline?: number;
  retryPeriod?: number;
  extraArgs?: string[];
  /** Default: the test kubeconfig. */
  kubeconfig?: string;
  env?: Record<string, string>;
}): Promise<RunningController> {
  const leaseNamespace = opts.leaseNamespace ?? "syncgov-system";
  const admin = new KubeConfig();
  admin.loadFromFile(testEnv().kubeconfig);
  await admin
    .makeApiClient(CoreV1Api)
    .createNamespace({ body: { metadata: { name: leaseNamespace } } })
    .catch((error: { code?: number }) => {
      if (error.code !== 409) throw error;
    });
  const port = 19000 + (process.pid % 500) * 2 + (nextPort++ % 2);
  const logFile = join(testEnv().runDir, `controller-${opts.identity}.log`);
  const log = createWriteStream(logFile, { flags: "a" });
  const child = spawn(
    process.execPath,
    [
      repoPath("controller/cli.ts"),
      "controller",
      "--kubeconfig",
      opts.kubeconfig ?? testEnv().kubeconfig,
      "--http-port",
      String(port),
      "--identity",
      opts.identity,
      "--lease-namespace",
      leaseNamespace,
      "--lease-name",
      opts.leaseName,
      "--lease-duration",
      String(opts.leaseDuration ?? 4),
      "--renew-deadline",
      String(opts.renewDeadline ?? 3),
      "--retry-period",
      String(opts.retryPeriod ?? 1),
      ...(opts.extraArgs ?? []),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, KAFKA_BROKERS: testEnv().kafkaBrokers, SYNCGOV_LOG_LEVEL: "info", ...opts.env },
    },
  );
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`controller ${opts.identity} exited at start; see ${logFile}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`controller ${opts.identity} did not start; see ${logFile}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    identity: opts.identity,
    port,
    process: child,
    logFile,
    kill9: async () => {
      child.kill("SIGKILL");
      await exited;
    },
    stop: () => stopProcess(child, 20_000),
    metrics: async () =>
      (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: await readerHeaders() })).text(),
  };
}

/** Polls until `check` returns a value (not undefined), or fails with `what` after timeoutMs. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Asks the environment to restart one of its server processes. */
export async function restartServer(
  name: "kube-apiserver" | "etcd" | "postgres" | "kafka",
  downtimeMs = 0,
): Promise<void> {
  const res = await fetch(`${testEnv().controlUrl}/restart/${name}?downtimeMs=${downtimeMs}`, {
    method: "POST",
  });
  if (!res.ok) throw new Error(`restart ${name} failed: ${await res.text()}`);
}
