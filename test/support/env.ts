import { KubeConfig } from "@kubernetes/client-node";
import { inject } from "vitest";
import type { TestEnvironment } from "../env/global-setup.ts";

/** The real components started by the global setup. */
export function testEnv(): TestEnvironment {
  return inject("syncgov");
}

export function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(testEnv().kubeconfig);
  return kc;
}

/** A name unique to this test run, valid as a namespace, topic or SQL identifier. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}
