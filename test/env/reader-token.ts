import { CoreV1Api, type KubeConfig, RbacAuthorizationV1Api } from "@kubernetes/client-node";

/**
 * A bearer token for the controller's /metrics and /api/registry, as Prometheus or a person holds
 * one in a cluster: a ServiceAccount token (TokenRequest) whose account may get /metrics and list
 * syncgov's resources and namespaces everywhere. The controller checks it with a TokenReview and
 * SubjectAccessReviews (controller/http/auth.ts). The tests and `npm run dev` make one per control plane.
 */
const NAMESPACE = "syncgov-system";
const NAME = "syncgov-api-reader";
export async function createReaderToken(kc: KubeConfig): Promise<string> {
  const core = kc.makeApiClient(CoreV1Api);
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const exists = (error: unknown) => (error as { code?: number }).code === 409;
  await core.createNamespace({ body: { metadata: { name: NAMESPACE } } }).catch((e) => {
    if (!exists(e)) throw e;
  });
  await core
    .createNamespacedServiceAccount({ namespace: NAMESPACE, body: { metadata: { name: NAME } } })
    .catch((e) => {
      if (!exists(e)) throw e;
    });
  await rbac
    .createClusterRole({
      body: {
        metadata: { name: NAME },
        rules: [
          { nonResourceURLs: ["/metrics"], verbs: ["get"] },
          { apiGroups: ["syncgov.io"], resources: ["syncjobs", "syncruns", "syncpolicies"], verbs: ["list"] },
          { apiGroups: [""], resources: ["namespaces"], verbs: ["list"] },
        ],
      },
    })
    .catch((e) => {
      if (!exists(e)) throw e;
    });
  await rbac
    .createClusterRoleBinding({
      body: {
        metadata: { name: NAME },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: NAME },
        subjects: [{ kind: "ServiceAccount", name: NAME, namespace: NAMESPACE }],
      },
    })
    .catch((e) => {
      if (!exists(e)) throw e;
    });
  const request = await core.createNamespacedServiceAccountToken({
    namespace: NAMESPACE,
    name: NAME,
    body: {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: { expirationSeconds: 86_400 },
    },
  });
  const value = request.status?.token;
  if (!value) throw new Error("TokenRequest returned no token");
  return value;
}
