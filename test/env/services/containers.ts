import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Component } from "./choose.ts";
import type { StartedService } from "./common.ts";

/**
 * The testcontainers fallback, for machines with a Docker engine but without the toolchains the
 * local providers need. `testcontainers` and `@testcontainers/k3s` are optional: they are loaded
 * only on this path, so machines without Docker never install them.
 */
export async function startContainer(component: Component): Promise<StartedService<unknown>> {
  const began = Date.now();
  switch (component) {
    case "postgres": {
      const tc = await load<Testcontainers>("testcontainers");
      const password = randomBytes(12).toString("hex");
      const c = await new tc.GenericContainer("postgres:18")
        .withEnvironment({ POSTGRES_USER: "syncgov", POSTGRES_PASSWORD: password, POSTGRES_DB: "syncgov" })
        .withExposedPorts(5432)
        .withWaitStrategy(tc.Wait.forLogMessage(/database system is ready to accept connections/, 2))
        .start();
      const address = `${c.getHost()}:${c.getMappedPort(5432)}`;
      return {
        endpoint: { url: `postgres://syncgov:${password}@${address}/syncgov` },
        description: `PostgreSQL 18 container at ${address}`,
        seconds: (Date.now() - began) / 1000,
        logs: [],
        stop: () => c.stop(),
      };
    }
    case "kafka": {
      const tc = await load<Testcontainers>("testcontainers");
      // apache/kafka's default configuration is a single-node KRaft broker on 9092.
      const c = await new tc.GenericContainer("apache/kafka:3.9.1")
        .withExposedPorts(9092)
        .withWaitStrategy(tc.Wait.forLogMessage(/Kafka Server started/))
        .start();
      const brokers = `${c.getHost()}:${c.getMappedPort(9092)}`;
      return {
        endpoint: { brokers },
        description: `Kafka 3.9.1 container at ${brokers}`,
        seconds: (Date.now() - began) / 1000,
        logs: [],
        stop: () => c.stop(),
      };
    }
    case "kube": {
      const k3s = await load<K3sModule>("@testcontainers/k3s");
      const c = await new k3s.K3sContainer("rancher/k3s:v1.34.1-k3s1").start();
      const kubeconfig = join(mkdtempSync(join(tmpdir(), "syncgov-k3s-")), "kubeconfig");
      writeFileSync(kubeconfig, c.getKubeConfig(), { mode: 0o600 });
      return {
        endpoint: { kubeconfig, server: "", etcd: "" },
        description: "k3s container",
        seconds: (Date.now() - began) / 1000,
        logs: [],
        stop: () => c.stop(),
      };
    }
  }
}

async function load<T>(name: string): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch {
    throw new Error(
      `a Docker engine answers but '${name}' is not installed: run 'npm install --no-save ${name}'`,
    );
  }
}

interface StartedContainer {
  getHost(): string;
  getMappedPort(port: number): number;
  stop(): Promise<void>;
}

interface GenericContainerBuilder {
  withEnvironment(env: Record<string, string>): GenericContainerBuilder;
  withExposedPorts(...ports: number[]): GenericContainerBuilder;
  withWaitStrategy(strategy: unknown): GenericContainerBuilder;
  start(): Promise<StartedContainer>;
}

interface Testcontainers {
  GenericContainer: new (image: string) => GenericContainerBuilder;
  Wait: { forLogMessage(message: RegExp, times?: number): unknown };
}

interface K3sModule {
  K3sContainer: new (image: string) => { start(): Promise<StartedContainer & { getKubeConfig(): string }> };
}
