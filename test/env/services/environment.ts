import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { request } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  ADDRESS_VARIABLES,
  COMPONENTS,
  type Component,
  chooseProvider,
  type ProviderChoice,
  type ProviderFacts,
} from "./choose.ts";
import type { StartedService } from "./common.ts";
import { startContainer } from "./containers.ts";
import { type KafkaEndpoint, startLocalKafka } from "./kafka.ts";
import { type KubeEndpoint, startLocalKube } from "./kube.ts";
import { type PostgresEndpoint, startLocalPostgres } from "./postgres.ts";
import { ProcessGroup } from "./process.ts";

/** How to reach the three real components of one syncgov environment. */
export interface Environment {
  kube: KubeEndpoint;
  kafka: KafkaEndpoint;
  postgres: PostgresEndpoint;
  /** Directory with this run's server logs. */
  runDir: string;
  logs: string[];
  /** Restarts one locally started server process (e.g. "kube-apiserver") and waits until it answers. */
  restart(name: string, downtimeMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export async function startEnvironment(log: (line: string) => void = console.log): Promise<Environment> {
  const runDir = newRunDir();
  const group = new ProcessGroup(runDir);
  const facts = await gatherFacts();
  const choices = COMPONENTS.map((c) => chooseProvider(c, facts));
  const unavailable = choices.filter((c) => c.kind === "unavailable");
  if (unavailable.length > 0) {
    throw new Error(
      unavailable.map((c) => `${c.component}: ${c.kind === "unavailable" ? c.reason : ""}`).join("\n"),
    );
  }
  log(`syncgov environment: logs in ${runDir}`);
  const started: StartedService<unknown>[] = [];
  const stop = async () => {
    for (const s of started) await s.stop?.();
    await group.stop();
    // Keep the logs, drop the servers' data.
    for (const data of ["kube/etcd", "kafka/data"])
      rmSync(join(runDir, data), { recursive: true, force: true });
  };
  try {
    // The three start in parallel; the kube-apiserver build dominates a first run. All three are
    // awaited even when one fails, so that stop() finds every process that was started.
    const results = await Promise.allSettled([
      provide(choices[0]!, () => startLocalKube(group, runDir), started, log),
      provide(choices[1]!, () => startLocalKafka(group, runDir), started, log),
      provide(choices[2]!, () => startLocalPostgres(group, runDir), started, log),
    ]);
    const failed = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    if (failed.length > 0)
      throw failed.length === 1 ? failed[0] : new AggregateError(failed, failed.map(String).join("\n"));
    const [kube, kafka, postgres] = results.map((r) => (r as PromiseFulfilledResult<unknown>).value);
    return {
      kube: kube as KubeEndpoint,
      kafka: kafka as KafkaEndpoint,
      postgres: postgres as PostgresEndpoint,
      runDir,
      logs: started.flatMap((s) => s.logs),
      restart: async (name, downtimeMs) => {
        const restarted = started.find((s) => s.processes?.includes(name));
        if (!restarted?.ready) throw new Error(`${name} is not a local process of this environment`);
        await group.restart(name, downtimeMs);
        await restarted.ready(name);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function provide(
  choice: ProviderChoice,
  local: () => Promise<StartedService<unknown>>,
  started: StartedService<unknown>[],
  log: (line: string) => void,
): Promise<unknown> {
  if (choice.kind === "address") {
    log(`  ${choice.component}: using ${ADDRESS_VARIABLES[choice.component]} (existing server)`);
    return fromAddress(choice.component, choice.address);
  }
  const service = choice.kind === "local" ? await local() : await startContainer(choice.component);
  started.push(service);
  log(
    `  ${choice.component}: ${service.description}, ready in ${service.seconds.toFixed(1)} s (${choice.kind})`,
  );
  return service.endpoint;
}

function fromAddress(component: Component, address: string): unknown {
  switch (component) {
    case "kube":
      return {
        kubeconfig: address,
        server: "",
        etcd: process.env.ETCD_ENDPOINTS ?? "",
      } satisfies KubeEndpoint;
    case "kafka":
      return { brokers: address } satisfies KafkaEndpoint;
    case "postgres":
      return { url: address } satisfies PostgresEndpoint;
  }
}

/** What the machine offers: the facts `chooseProvider` decides on. */
export async function gatherFacts(env: NodeJS.ProcessEnv = process.env): Promise<ProviderFacts> {
  const firstMissing = (tools: string[]) => tools.find((t) => !onPath(t));
  return {
    env,
    localMissing: {
      kube: firstMissing(["go", "openssl"]),
      kafka: firstMissing(["java", "mvn"]),
      postgres:
        process.platform === "linux" && process.arch === "x64"
          ? undefined
          : `linux-x64 (this is ${process.platform}-${process.arch})`,
    },
    dockerAvailable: await dockerAnswers(env),
  };
}

function onPath(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** True when a Docker engine answers /_ping on its socket within a second. */
function dockerAnswers(env: NodeJS.ProcessEnv): Promise<boolean> {
  const host = env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
  const socketPath = host.startsWith("unix://") ? host.slice("unix://".length) : undefined;
  if (socketPath && !existsSync(socketPath)) return Promise.resolve(false);
  const target = socketPath
    ? { socketPath }
    : {
        host: new URL(host.replace(/^tcp:/, "http:")).hostname,
        port: Number(new URL(host.replace(/^tcp:/, "http:")).port),
      };
  return new Promise((resolve) => {
    const req = request({ ...target, path: "/_ping", timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** `.syncgov/runs/<time>` in the repository; the five newest runs are kept for their logs. */
function newRunDir(): string {
  const runs = join(repoRoot, ".syncgov", "runs");
  mkdirSync(runs, { recursive: true });
  // Keep the newest runs for their logs; never touch a run whose owner is still alive.
  const old = readdirSync(runs).sort().slice(0, -4);
  for (const d of old) {
    const owner = Number(/-(\d+)$/.exec(d)?.[1]);
    if (Number.isInteger(owner) && processAlive(owner)) continue;
    rmSync(join(runs, d), { recursive: true, force: true });
  }
  const dir = join(runs, `${new Date().toISOString().replace(/[:.]/g, "-")}-${process.pid}`);
  mkdirSync(dir);
  return dir;
}
