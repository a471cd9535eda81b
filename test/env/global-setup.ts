import type { TestProject } from "vitest/node";
import { type Environment, startEnvironment } from "./services/environment.ts";

/** Addresses of the real components, handed to every integration test file. */
export interface TestEnvironment {
  kubeconfig: string;
  etcd: string;
  kafkaBrokers: string;
  databaseUrl: string;
  runDir: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    syncgov: TestEnvironment;
  }
}

let env: Environment | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  env = await startEnvironment((line) => console.log(line));
  project.provide("syncgov", {
    kubeconfig: env.kube.kubeconfig,
    etcd: env.kube.etcd,
    kafkaBrokers: env.kafka.brokers,
    databaseUrl: env.postgres.url,
    runDir: env.runDir,
  });
  return async () => {
    const began = Date.now();
    await env?.stop();
    console.log(
      `syncgov environment stopped in ${((Date.now() - began) / 1000).toFixed(1)} s; logs kept in ${env?.runDir}`,
    );
  };
}
