/**
 * Installing or upgrading syncgov's CRDs from the schemas this binary was built with (the same
 * zod schemas that generate crds/): Helm installs a chart's crds/ on first install only and never
 * upgrades them, so an upgrade applies them first with `syncgov crds apply` (or `kubectl apply
 * --server-side -f crds/`), then runs `helm upgrade`.
 */

import { ApiextensionsV1Api, type KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { requestPolicyObjects } from "../api/admission.ts";
import { customResourceDefinition } from "../api/crd.ts";
import { RESOURCES } from "../api/resources.ts";
import { applyManifests } from "./apply.ts";

/** The CRDs this binary serves, as objects. */
export function currentCrds(): KubernetesObject[] {
  return RESOURCES.map((def) => customResourceDefinition(def) as unknown as KubernetesObject);
}

/**
 * Server-side applies the CRDs (every x-kubernetes-* key kept) and waits until the API server
 * reports each one Established, or throws after `timeoutMs`.
 */
export async function applyCrds(kc: KubeConfig, options: { timeoutMs?: number } = {}): Promise<string[]> {
  const applied = await applyManifests(kc, currentCrds(), { fieldManager: "syncgov-crds" });
  const api = kc.makeApiClient(ApiextensionsV1Api);
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const names = applied.map((o) => o.metadata?.name ?? "");
  for (const name of names) {
    for (;;) {
      const crd = await api.readCustomResourceDefinition({ name });
      const established = crd.status?.conditions?.some(
        (c) => c.type === "Established" && c.status === "True",
      );
      if (established) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} did not become Established`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  // The admission policies that guard the CRDs' objects (api/admission.ts) come with them.
  await applyManifests(kc, requestPolicyObjects() as KubernetesObject[], { fieldManager: "syncgov-crds" });
  return names;
}
