import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestProject } from "vitest/node";
import { type Environment, startEnvironment } from "./services/environment.ts";

/** Addresses of the real components, handed to every integration test file. */
export interface TestEnvironment {
  kubeconfig: string;
  etcd: string;
  kafkaBrokers: string;
  databaseUrl: string;
  runDir: string;
  /** Loopback URL of the environment's control endpoint: POST /restart/<process>?downtimeMs=N. */
  controlUrl: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    syncgov: TestEnvironment;
  }
}

let env: Environment | undefined;
let control: Server | undefined;

/** Lets test files (which run in workers) restart servers that this process owns. */
function startControl(environment: Environment): Promise<string> {
  control = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const m = /^\/restart\/([a-z-]+)$/.exec(url.pathname);
    if (req.method !== "POST" || !m) {
      res.writeHead(404).end();
      return;
    }
    environment.restart(m[1]!, Number(url.searchParams.get("downtimeMs") ?? 0)).then(
      () => res.writeHead(200).end("restarted"),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  return new Promise((resolve) =>
    control!.listen(0, "127.0.0.1", () =>
      resolve(`http://127.0.0.1:${(control!.address() as AddressInfo).port}`),
    ),
  );
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  env = await startEnvironment((line) => console.log(line));
  const controlUrl = await startControl(env);
  project.provide("syncgov", {
    controlUrl,
    kubeconfig: env.kube.kubeconfig,
    etcd: env.kube.etcd,
    kafkaBrokers: env.kafka.brokers,
    databaseUrl: env.postgres.url,
    runDir: env.runDir,
  });
  return async () => {
    const began = Date.now();
    control?.close();
    await env?.stop();
    console.log(
      `syncgov environment stopped in ${((Date.now() - began) / 1000).toFixed(1)} s; logs kept in ${env?.runDir}`,
    );
  };
}
