import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api, type V1PolicyRule } from "@kubernetes/client-node";
import { parse, stringify } from "yaml";
import { kubeConfig, testEnv, uniqueName } from "./env.ts";

/**
 * An ordinary tenant as the security suite acts: an application team whose user holds a namespaced
 * Role in its own namespace and nothing else. The test environment's admin client certificate
 * impersonates the user (`as:` in its kubeconfig), so the real API server's RBAC decides every
 * request exactly as it would for the team's own credentials.
 */
export interface Tenant {
  readonly namespace: string;
  readonly user: string;
  /** client-node configuration acting as the tenant. */
  readonly kubeConfig: KubeConfig;
  /** A kubeconfig file acting as the tenant, for kubectl and the CLI. */
  readonly kubeconfigPath: string;
}

/**
 * What an application team is usually granted on syncgov in its namespace: it writes SyncJobs and
 * SyncRuns (not their status), reads SyncPolicies, and manages its own Secrets and ConfigMaps.
 */
export const TENANT_RULES: readonly V1PolicyRule[] = [
  {
    apiGroups: ["syncgov.io"],
    resources: ["syncjobs", "syncruns"],
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"],
  },
  { apiGroups: ["syncgov.io"], resources: ["syncpolicies"], verbs: ["get", "list", "watch"] },
  {
    apiGroups: [""],
    resources: ["secrets", "configmaps"],
    verbs: ["get", "list", "create", "update", "delete"],
  },
  { apiGroups: [""], resources: ["events"], verbs: ["get", "list", "watch"] },
];

/**
 * Creates a namespace (labelled as the platform labels it) and a user bound to `rules` there.
 * Cleaning up is deleting the namespace.
 */
export async function createTenant(
  prefix: string,
  options: { rules?: readonly V1PolicyRule[]; labels?: Record<string, string>; user?: string } = {},
): Promise<Tenant> {
  const admin = kubeConfig();
  const core = admin.makeApiClient(CoreV1Api);
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  const namespace = uniqueName(prefix);
  const user = options.user ?? `${namespace}-dev`;
  await core.createNamespace({
    body: { metadata: { name: namespace, ...(options.labels ? { labels: options.labels } : {}) } },
  });
  await rbac.createNamespacedRole({
    namespace,
    body: { metadata: { name: "app-team" }, rules: [...(options.rules ?? TENANT_RULES)] },
  });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name: "app-team" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "app-team" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: user }],
    },
  });
  return { namespace, user, ...actingAs(user) };
}

/**
 * Credentials acting as `user`: the admin's client certificate with `as: <user>`, so the API server
 * authorizes every request as that user (and the user's name is what admission sees).
 */
export function actingAs(user: string): { kubeConfig: KubeConfig; kubeconfigPath: string } {
  const config = parse(readFileSync(testEnv().kubeconfig, "utf8")) as {
    users: { user: Record<string, unknown> }[];
  };
  for (const entry of config.users) entry.user.as = user;
  const kubeconfigPath = join(mkdtempSync(join(tmpdir(), "syncgov-tenant-")), "kubeconfig");
  writeFileSync(kubeconfigPath, stringify(config), { mode: 0o600 });
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return { kubeConfig: kc, kubeconfigPath };
}

/** Deletes the tenant's namespace (and with it what the tenant made there). */
export async function deleteTenant(tenant: Tenant): Promise<void> {
  await kubeConfig()
    .makeApiClient(CoreV1Api)
    .deleteNamespace({ name: tenant.namespace })
    .catch(() => undefined);
}
