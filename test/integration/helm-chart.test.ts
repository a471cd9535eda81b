import { spawn } from "node:child_process";
import { createWriteStream, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments, stringify } from "yaml";
import { freePort, stopProcess } from "../env/services/process.ts";
import { eventually } from "../support/controller.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { type CommandResult, type Helm, obtainHelm } from "../support/helm.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";
import { baseJob, repoPath } from "../support/manifests.ts";

// The chart is proven with the real helm CLI (built from the Go module proxy by the obtain script)
// against the real API server: it lints, renders, installs, and grants the controller exactly what
// the controller's code calls, which the controller itself then exercises under the chart's account.

const CHART = repoPath("charts/syncgov");
const PACKAGE_VERSION = (JSON.parse(readFileSync(repoPath("package.json"), "utf8")) as { version: string })
  .version;

const suffix = uniqueName("x").slice(2);
// Release names are unique per run: the ClusterRoles and their bindings are cluster-scoped.
const release = `syncgov-${suffix}`;
const namespace = `helm-chart-${suffix}`;
const overrideRelease = `syncgov-b-${suffix}`;
const overrideNamespace = `helm-chart-b-${suffix}`;
const tenantNamespace = `helm-tenant-${suffix}`;
const serviceAccount = `system:serviceaccount:${namespace}:${release}`;
const runnerAccount = `system:serviceaccount:${tenantNamespace}:syncgov-runner`;

/**
 * Every permission the controller's code uses (controller/manager.ts, kube/, runner/), and where:
 * across the cluster, or in the release namespace (the leader-election Lease). The ClusterRole and
 * Role must grant exactly these.
 */
interface Permission {
  group: string;
  resource: string;
  verbs: string[];
  scope: "cluster" | "release-namespace";
  /** Only these names (a Role's resourceNames). */
  names?: string[];
  /** Only with this executor (controller.executor). */
  executor?: string;
}

const LEASE = "syncgov-controller";
const CONTROLLER_NEEDS: Permission[] = [
  { group: "syncgov.io", resource: "syncjobs", verbs: ["get", "list", "watch"], scope: "cluster" },
  {
    group: "syncgov.io",
    resource: "syncruns",
    verbs: ["get", "list", "watch", "create", "delete"],
    scope: "cluster",
  },
  { group: "syncgov.io", resource: "syncpolicies", verbs: ["list", "watch"], scope: "cluster" },
  { group: "syncgov.io", resource: "syncjobs/status", verbs: ["patch"], scope: "cluster" },
  { group: "syncgov.io", resource: "syncruns/status", verbs: ["patch"], scope: "cluster" },
  { group: "syncgov.io", resource: "syncpolicies/status", verbs: ["patch"], scope: "cluster" },
  { group: "syncgov.io", resource: "syncjobs/finalizers", verbs: ["update"], scope: "cluster" },
  { group: "syncgov.io", resource: "syncruns/finalizers", verbs: ["update"], scope: "cluster" },
  { group: "", resource: "namespaces", verbs: ["get", "list", "watch"], scope: "cluster" },
  { group: "", resource: "secrets", verbs: ["get"], scope: "cluster" },
  { group: "batch", resource: "jobs", verbs: ["get", "create", "delete"], scope: "cluster", executor: "Job" },
  // Why a runner Job's pod ended (OOMKilled, a signal, evicted), for the run's status.
  { group: "", resource: "pods", verbs: ["list"], scope: "cluster", executor: "Job" },
  { group: "events.k8s.io", resource: "events", verbs: ["create", "patch"], scope: "cluster" },
  // Callers of /metrics and /api/registry, checked with the API server (controller/http/auth.ts).
  { group: "authentication.k8s.io", resource: "tokenreviews", verbs: ["create"], scope: "cluster" },
  { group: "authorization.k8s.io", resource: "subjectaccessreviews", verbs: ["create"], scope: "cluster" },
  // Is the admission policy guarding shadow approvals installed? (controller/shadow/request-policy.ts)
  {
    group: "admissionregistration.k8s.io",
    resource: "validatingadmissionpolicies",
    verbs: ["get"],
    scope: "cluster",
    names: ["syncgov-shadow-requests"],
  },
  {
    group: "admissionregistration.k8s.io",
    resource: "validatingadmissionpolicybindings",
    verbs: ["get"],
    scope: "cluster",
    names: ["syncgov-shadow-requests"],
  },
  { group: "coordination.k8s.io", resource: "leases", verbs: ["create"], scope: "release-namespace" },
  {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: ["get", "update", "list", "watch"],
    scope: "release-namespace",
    names: [LEASE],
  },
];

/** What `syncgov run` needs in its run's namespace, and cluster-wide (Job executor). */
const RUNNER_NEEDS: { group: string; resource: string; verb: string; namespaced: boolean }[] = [
  { group: "syncgov.io", resource: "syncruns", verb: "get", namespaced: true },
  { group: "syncgov.io", resource: "syncruns", verb: "list", namespaced: true },
  { group: "syncgov.io", resource: "syncruns/status", verb: "patch", namespaced: true },
  { group: "syncgov.io", resource: "syncjobs", verb: "get", namespaced: true },
  { group: "", resource: "secrets", verb: "get", namespaced: true },
  { group: "events.k8s.io", resource: "events", verb: "create", namespaced: true },
  { group: "events.k8s.io", resource: "events", verb: "patch", namespaced: true },
];

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** The output of `helm template`: the text, and the objects parsed from it. */
interface Rendering {
  text: string;
  objects: K8sObject[];
}

interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  verbs: string[];
}

interface Container {
  name: string;
  image: string;
  command?: string[];
  args: string[];
  env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
  securityContext: Record<string, unknown> & { capabilities?: { drop?: string[] } };
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts: { name: string; mountPath: string }[];
}

interface PodSpec {
  serviceAccountName: string;
  hostNetwork?: boolean;
  dnsPolicy?: string;
  securityContext: Record<string, unknown>;
  containers: Container[];
  volumes: { name: string; emptyDir?: unknown }[];
  nodeSelector?: Record<string, string>;
  tolerations?: unknown[];
  imagePullSecrets?: { name: string }[];
  affinity?: Record<string, unknown>;
}

let helmClient: Helm | undefined;
let workDir = "";

const helm = (args: string[]): Promise<CommandResult> => helmClient!.run(args);
const helmOk = (args: string[]): Promise<string> => helmClient!.ok(args);

let valuesFiles = 0;
function valuesFile(values: object): string {
  const path = join(workDir, `values-${valuesFiles++}.yaml`);
  writeFileSync(path, stringify(values));
  return path;
}

/** `helm template` of the chart: the text and its objects. */
async function render(
  name: string,
  ns: string,
  values: object = {},
  flags: string[] = [],
): Promise<Rendering> {
  const text = await helmOk(["template", name, CHART, "--namespace", ns, "-f", valuesFile(values), ...flags]);
  const docs = parseAllDocuments(text);
  for (const doc of docs) if (doc.errors.length > 0) throw new Error(`unparsable output: ${doc.errors[0]}`);
  const objects = docs.map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
  return { text, objects };
}

function only(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name ?? ""}, found ${found.length}`);
  return found[0]!;
}

function podSpec(objects: K8sObject[]): PodSpec {
  return (only(objects, "Deployment") as unknown as { spec: { template: { spec: PodSpec } } }).spec.template
    .spec;
}

/** `--name=value` arguments as a map (the chart passes every flag in that form). */
function flagsOf(args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const arg of args) {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (m) flags.set(m[1]!, m[2]!);
  }
  return flags;
}

/** The (group, resource, verb[, name]) tuples a set of rules grants; a wildcard anywhere is an error. */
function grants(rules: PolicyRule[]): Set<string> {
  const out = new Set<string>();
  for (const rule of rules) {
    const all = [...(rule.apiGroups ?? []), ...(rule.resources ?? []), ...rule.verbs];
    if (all.includes("*")) throw new Error(`wildcard rule ${JSON.stringify(rule)}`);
    for (const group of rule.apiGroups ?? [])
      for (const resource of rule.resources ?? [])
        for (const verb of rule.verbs)
          for (const name of rule.resourceNames ?? [""]) out.add(`${group}|${resource}|${verb}|${name}`);
  }
  return out;
}

function needed(scope: Permission["scope"], executor = "ChildProcess"): Set<string> {
  const out = new Set<string>();
  for (const p of CONTROLLER_NEEDS.filter((n) => n.scope === scope && (n.executor ?? executor) === executor))
    for (const verb of p.verbs)
      for (const name of p.names ?? [""]) out.add(`${p.group}|${p.resource}|${verb}|${name}`);
  return out;
}

/** `kubectl auth can-i` as `user`: true for "yes". */
async function canI(
  user: string,
  verb: string,
  group: string,
  resource: string,
  where: { namespace?: string; allNamespaces?: boolean; name?: string },
): Promise<boolean> {
  const [plural, subresource] = resource.split("/");
  const target = `${group ? `${plural}.${group}` : plural}${where.name ? `/${where.name}` : ""}`;
  const args = ["auth", "can-i", verb, target, `--as=${user}`];
  if (subresource) args.push(`--subresource=${subresource}`);
  if (where.allNamespaces) args.push("--all-namespaces");
  else if (where.namespace) args.push("--namespace", where.namespace);
  const r = await kubectl(args);
  const answer = r.stdout.trim();
  if (answer !== "yes" && answer !== "no") throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return answer === "yes";
}

const overrideValues = {
  replicaCount: 3,
  image: { tag: "9.9.9" },
  imagePullSecrets: [{ name: "registry-credentials" }],
  controller: {
    workers: 8,
    executor: "Job",
    runnerImage: "registry.example/syncgov-runner:9.9.9",
    logLevel: "debug",
  },
  kafkaBrokers: "kafka-0.kafka:9092,kafka-1.kafka:9092",
  telemetry: { otlpEndpoint: "http://otel-collector.observability:4318" },
  lineage: { transport: "http", url: "http://marquez.lineage:5000" },
  extraEnv: [{ name: "SYNCGOV_EXTRA", value: "from-values" }],
  runner: { namespaces: [tenantNamespace], hostNetwork: true },
  hostNetwork: true,
  nodeSelector: { "kubernetes.io/os": "linux" },
  tolerations: [{ key: "dedicated", operator: "Equal", value: "platform", effect: "NoSchedule" }],
  serviceMonitor: { enabled: false },
};

let defaults: Rendering = { text: "", objects: [] };
let overridden: Rendering = { text: "", objects: [] };

beforeAll(async () => {
  // Built once from the Go module proxy (minutes), cached in ~/.cache/syncgov afterwards.
  workDir = join(testEnv().runDir, `helm-chart-${suffix}`);
  helmClient = await obtainHelm(workDir);
  defaults = await render(release, namespace);
  overridden = await render(overrideRelease, overrideNamespace, overrideValues);
  for (const ns of [namespace, overrideNamespace, tenantNamespace])
    await kubectlOk(["create", "namespace", ns]);
}, 30 * 60_000);

afterAll(async () => {
  if (!helmClient) return;
  await helm(["uninstall", overrideRelease, "--namespace", overrideNamespace]);
  const clusterScoped = defaults.objects
    .filter((o) => o.kind === "ClusterRole" || o.kind === "ClusterRoleBinding")
    .map((o) => `${o.kind.toLowerCase()}/${o.metadata.name}`);
  if (clusterScoped.length > 0)
    await kubectl(["delete", ...clusterScoped, "--ignore-not-found", "--wait=false"]);
  for (const ns of [namespace, overrideNamespace, tenantNamespace])
    await kubectl(["delete", "namespace", ns, "--wait=false"]);
});

describe("helm lint", () => {
  it("passes with the default values and with overrides, in strict mode", async () => {
    for (const values of [{}, overrideValues, { baselinePolicies: { enabled: true } }]) {
      const r = await helm(["lint", "--strict", CHART, "-f", valuesFile(values)]);
      expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain("0 chart(s) failed");
    }
  });

  it("rejects values the schema or the controller would refuse, at lint and at install", async () => {
    // Schema errors fail lint; a template's `fail` is only reported by lint (lint renders leniently),
    // so install-time rendering is checked for every case.
    const bad: { values: object; message: RegExp; schema: boolean }[] = [
      { values: { lineage: { transport: "http" } }, message: /url/, schema: true },
      { values: { controller: { executor: "Thread" } }, message: /executor/, schema: true },
      { values: { controler: { workers: 2 } }, message: /controler/, schema: true },
      {
        values: { controller: { leaderElection: { leaseDuration: 10, renewDeadline: 10 } } },
        message: /leaseDuration must be longer than renewDeadline/,
        schema: false,
      },
      {
        values: { controller: { leaderElection: { renewDeadline: 6, retryPeriod: 5 } } },
        message: /renewDeadline must be longer than 1.2 × retryPeriod/,
        schema: false,
      },
    ];
    for (const { values, message, schema } of bad) {
      const file = valuesFile(values);
      const rendered = await helm(["template", release, CHART, "-f", file]);
      expect(rendered.code, JSON.stringify(values)).not.toBe(0);
      expect(rendered.stderr, JSON.stringify(values)).toMatch(message);
      if (!schema) continue;
      const linted = await helm(["lint", CHART, "-f", file]);
      expect(linted.code, JSON.stringify(values)).not.toBe(0);
      expect(`${linted.stdout}${linted.stderr}`, JSON.stringify(values)).toMatch(message);
    }
  });
});

describe("helm template", () => {
  it("renders the controller's objects, labelled for the release", () => {
    expect(defaults.objects.map((o) => o.kind).sort()).toEqual([
      "ClusterRole",
      // <release>-shadow-approver: the verbs approve and rollback, for a RoleBinding per namespace.
      "ClusterRole",
      // <release>-metrics-reader: get /metrics, for Prometheus's ServiceAccount.
      "ClusterRole",
      "ClusterRoleBinding",
      // The Grafana dashboard (grafana_dashboard label), on by default.
      "ConfigMap",
      "Deployment",
      "PodDisruptionBudget",
      "Role",
      "RoleBinding",
      "Service",
      "ServiceAccount",
    ]);
    for (const o of defaults.objects) {
      expect(o.metadata.labels?.["app.kubernetes.io/instance"], o.kind).toBe(release);
      expect(o.metadata.labels?.["app.kubernetes.io/name"], o.kind).toBe("syncgov");
      expect(o.metadata.labels?.["app.kubernetes.io/managed-by"], o.kind).toBe("Helm");
      expect(o.metadata.labels?.["app.kubernetes.io/version"], o.kind).toBe(PACKAGE_VERSION);
    }
  });

  it("runs `syncgov controller` with leader election under each pod's name, probes and restricted security", () => {
    const deployment = only(defaults.objects, "Deployment") as unknown as { spec: { replicas: number } };
    expect(deployment.spec.replicas).toBe(2);
    const pod = podSpec(defaults.objects);
    expect(pod.serviceAccountName).toBe(release);
    const [container] = pod.containers;
    expect(container!.image).toBe(`ghcr.io/syncgov/syncgov:${PACKAGE_VERSION}`);
    expect(container!.command).toEqual(["syncgov"]);
    expect(container!.args[0]).toBe("controller");
    const flags = flagsOf(container!.args);
    expect(Object.fromEntries(flags)).toEqual({
      "http-port": "8080",
      "http-auth": "kubernetes",
      workers: "4",
      executor: "ChildProcess",
      "runner-log-dir": "/tmp/syncgov-runs",
      "lease-namespace": namespace,
      "lease-name": LEASE,
      "lease-duration": "15",
      "renew-deadline": "10",
      "retry-period": "2",
      identity: "$(POD_NAME)",
    });
    expect(container!.env).toContainEqual({
      name: "POD_NAME",
      valueFrom: { fieldRef: { fieldPath: "metadata.name" } },
    });
    expect(container!.ports).toContainEqual(expect.objectContaining({ name: "http", containerPort: 8080 }));
    expect(container!.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(container!.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(container!.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      privileged: false,
      capabilities: { drop: ["ALL"] },
    });
    expect(container!.resources.requests).toBeDefined();
    expect(container!.resources.limits?.memory).toBeDefined();
    // The read-only root needs a writable /tmp (runner logs, Node's temp files).
    expect(container!.volumeMounts).toContainEqual({ name: "tmp", mountPath: "/tmp" });
    expect(pod.volumes.find((v) => v.name === "tmp")?.emptyDir).toBeDefined();
    // The pod network, not the node's: host networking is for clusters without one.
    expect(pod.hostNetwork).toBeUndefined();
    expect(pod.dnsPolicy).toBeUndefined();
    expect(container!.args).not.toContain("--runner-host-network");

    const service = only(defaults.objects, "Service") as unknown as {
      spec: { selector: Record<string, string>; ports: { name: string; targetPort: string }[] };
    };
    const podLabels = (
      only(defaults.objects, "Deployment") as unknown as {
        spec: { template: { metadata: { labels: Record<string, string> } } };
      }
    ).spec.template.metadata.labels;
    expect(podLabels).toMatchObject(service.spec.selector);
    expect(service.spec.ports).toContainEqual(expect.objectContaining({ name: "http", targetPort: "http" }));
  });

  it("grants exactly the verbs the controller uses: cluster-wide, and on its Lease in the release namespace", () => {
    const clusterRole = only(defaults.objects, "ClusterRole", release) as unknown as { rules: PolicyRule[] };
    const role = only(defaults.objects, "Role") as unknown as {
      metadata: { namespace: string };
      rules: PolicyRule[];
    };
    expect(grants(clusterRole.rules)).toEqual(needed("cluster"));
    // Only the Job executor may touch batch/v1 Jobs.
    const jobExecutorRole = only(overridden.objects, "ClusterRole", overrideRelease) as unknown as {
      rules: PolicyRule[];
    };
    expect(grants(jobExecutorRole.rules)).toEqual(needed("cluster", "Job"));
    expect([...grants(clusterRole.rules)].filter((g) => g.startsWith("batch|"))).toEqual([]);
    expect(role.metadata.namespace).toBe(namespace);
    expect(grants(role.rules)).toEqual(needed("release-namespace"));
    const subject = { kind: "ServiceAccount", name: release, namespace };
    for (const kind of ["ClusterRoleBinding", "RoleBinding"]) {
      expect((only(defaults.objects, kind) as unknown as { subjects: unknown[] }).subjects).toEqual([
        subject,
      ]);
    }
  });

  it("carries the CRDs exactly as generated", async () => {
    const { objects } = await render(release, namespace, {}, ["--include-crds"]);
    // crds/ also holds the admission policies that guard the CRDs' objects; Helm installs them alike.
    const kinds = new Set([
      "CustomResourceDefinition",
      "ValidatingAdmissionPolicy",
      "ValidatingAdmissionPolicyBinding",
    ]);
    const byName = (a: K8sObject, b: K8sObject) =>
      `${a.kind}/${a.metadata.name}`.localeCompare(`${b.kind}/${b.metadata.name}`);
    const crds = objects.filter((o) => kinds.has(o.kind));
    const generated = readdirSync(repoPath("crds")).flatMap((file) =>
      parseAllDocuments(readFileSync(repoPath(`crds/${file}`), "utf8")).map((d) => d.toJS() as K8sObject),
    );
    expect(crds.filter((o) => o.kind === "CustomResourceDefinition")).toHaveLength(3);
    expect(crds.sort(byName)).toEqual(generated.sort(byName));
  });

  it("applies overrides: replicas, executor, image, environment, scheduling, host network and runner accounts", () => {
    const { objects } = overridden;
    expect((only(objects, "Deployment") as unknown as { spec: { replicas: number } }).spec.replicas).toBe(3);
    const pod = podSpec(objects);
    const container = pod.containers[0]!;
    expect(container.image).toBe("ghcr.io/syncgov/syncgov:9.9.9");
    const flags = flagsOf(container.args);
    expect(flags.get("executor")).toBe("Job");
    expect(flags.get("runner-image")).toBe("registry.example/syncgov-runner:9.9.9");
    expect(flags.get("workers")).toBe("8");
    expect(flags.has("runner-log-dir")).toBe(false);
    expect(container.args).toContain("--runner-host-network");
    expect(pod).toMatchObject({ hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet" });
    expect(flags.get("lease-namespace")).toBe(overrideNamespace);
    const env = Object.fromEntries(
      container.env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value]),
    );
    expect(env).toMatchObject({
      SYNCGOV_LOG_LEVEL: "debug",
      KAFKA_BROKERS: overrideValues.kafkaBrokers,
      OTEL_EXPORTER_OTLP_ENDPOINT: overrideValues.telemetry.otlpEndpoint,
      SYNCGOV_LINEAGE: "http",
      SYNCGOV_LINEAGE_URL: overrideValues.lineage.url,
      SYNCGOV_EXTRA: "from-values",
    });
    expect(pod.nodeSelector).toEqual(overrideValues.nodeSelector);
    expect(pod.tolerations).toEqual(overrideValues.tolerations);
    expect(pod.imagePullSecrets).toEqual(overrideValues.imagePullSecrets);
    expect(objects.some((o) => o.kind === "ServiceMonitor")).toBe(false);
    expect(only(objects, "PodDisruptionBudget")).toBeDefined();

    const runnerAccountObject = only(objects, "ServiceAccount", "syncgov-runner");
    expect(runnerAccountObject.metadata.namespace).toBe(tenantNamespace);
    const runnerBinding = only(objects, "RoleBinding", `${overrideRelease}-runner`) as unknown as {
      metadata: { namespace: string };
      roleRef: { kind: string; name: string };
    };
    expect(runnerBinding.metadata.namespace).toBe(tenantNamespace);
    expect(runnerBinding.roleRef).toMatchObject({ kind: "ClusterRole", name: `${overrideRelease}-runner` });
  });

  it("renders a ServiceMonitor for the Service's metrics port when asked", async () => {
    const { objects } = await render(release, namespace, {
      serviceMonitor: { enabled: true, labels: { a: "b" } },
    });
    const monitor = only(objects, "ServiceMonitor") as unknown as {
      metadata: { labels: Record<string, string> };
      spec: {
        selector: { matchLabels: Record<string, string> };
        endpoints: { port: string; path: string }[];
      };
    };
    const service = only(objects, "Service") as unknown as {
      metadata: { labels: Record<string, string> };
      spec: { ports: { name: string }[] };
    };
    expect(monitor.metadata.labels.a).toBe("b");
    expect(service.metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(monitor.spec.endpoints).toEqual([
      expect.objectContaining({ port: service.spec.ports[0]!.name, path: "/metrics" }),
    ]);
  });

  it("renders the shipped baseline policies unchanged when enabled, and none by default", async () => {
    expect(defaults.objects.some((o) => o.kind === "SyncPolicy")).toBe(false);
    const { objects } = await render(release, namespace, { baselinePolicies: { enabled: true } });
    const rendered = objects.filter((o) => o.kind === "SyncPolicy");
    const shipped = readdirSync(repoPath("policies/baseline"))
      .filter((f) => f.endsWith(".yaml"))
      .map((f) => parse(readFileSync(repoPath(`policies/baseline/${f}`), "utf8")) as K8sObject);
    expect(rendered.map((p) => p.metadata.name).sort()).toEqual(shipped.map((p) => p.metadata.name).sort());
    for (const policy of shipped) {
      const copy = rendered.find((p) => p.metadata.name === policy.metadata.name)!;
      expect(copy.spec, policy.metadata.name).toEqual(policy.spec);
      expect(copy.metadata.labels?.["app.kubernetes.io/instance"]).toBe(release);
    }
  });
});

describe("on a real API server", () => {
  beforeAll(async () => {
    // Helm installs crds/ first; here the CRDs go first by hand, as `helm template` leaves them out.
    await installCrds(join(CHART, "crds"));
  }, 120_000);

  it("accepts every rendered object (server-side apply of the default rendering)", async () => {
    const out = await kubectlOk(
      ["apply", "--server-side", "--namespace", namespace, "-f", "-"],
      defaults.text,
    );
    // kubectl names each object as <kind>.<group>/<name>; every one must have been applied and stored.
    const names = defaults.objects.map((o) => {
      const group = o.apiVersion.includes("/") ? `.${o.apiVersion.split("/")[0]}` : "";
      return `${o.kind.toLowerCase()}${group}/${o.metadata.name}`;
    });
    for (const name of names) expect(out).toContain(`${name} serverside-applied`);
    const stored = await kubectlOk(["get", "--namespace", namespace, "-f", "-", "-o", "name"], defaults.text);
    expect(stored.trim().split("\n").sort()).toEqual([...names].sort());
    const deployment = await kubectlOk(["get", "deployment", release, "-n", namespace, "-o", "json"]);
    expect((JSON.parse(deployment) as { spec: { replicas: number } }).spec.replicas).toBe(2);
  });

  it("installs with `helm install` and the override values", async () => {
    const out = await helmOk([
      "install",
      overrideRelease,
      CHART,
      "--namespace",
      overrideNamespace,
      "-f",
      valuesFile(overrideValues),
    ]);
    expect(out).toContain("STATUS: deployed");
    expect(out).toContain(`in: ${tenantNamespace}`); // NOTES.txt names the runner namespaces
    const status = parse(
      await helmOk(["status", overrideRelease, "--namespace", overrideNamespace, "-o", "yaml"]),
    ) as { info: { status: string } };
    expect(status.info.status).toBe("deployed");
    await kubectlOk(["get", "serviceaccount", "syncgov-runner", "-n", tenantNamespace]);
  });

  it("accepts the baseline policies (server-side dry run: stored, they would govern every namespace)", async () => {
    const { objects } = await render(release, namespace, { baselinePolicies: { enabled: true } });
    const policies = objects.filter((o) => o.kind === "SyncPolicy");
    expect(policies.length).toBeGreaterThan(0);
    const r = await kubectl(
      ["apply", "--dry-run=server", "-f", "-"],
      policies.map((p) => stringify(p)).join("---\n"),
    );
    expect(r.code, r.stderr).toBe(0);
    for (const p of policies) expect(r.stdout).toContain(`syncpolicy.syncgov.io/${p.metadata.name}`);
  });

  it("renders NetworkPolicies for the controller and each runner namespace that the API server accepts", async () => {
    const egress = [{ to: [{ ipBlock: { cidr: "10.0.0.1/32" } }], ports: [{ port: 443, protocol: "TCP" }] }];
    const metricsFrom = [
      { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } },
    ];
    const { objects } = await render(release, namespace, {
      networkPolicy: { enabled: true, metricsFrom, egress },
      runner: { namespaces: [tenantNamespace] },
    });
    const policies = objects.filter((o) => o.kind === "NetworkPolicy") as unknown as {
      metadata: { name: string; namespace: string };
      spec: { podSelector: unknown; policyTypes: string[]; ingress: unknown[]; egress?: unknown[] };
    }[];
    expect(policies.map((p) => `${p.metadata.namespace}/${p.metadata.name}`)).toEqual([
      `${namespace}/${release}`,
      `${tenantNamespace}/${release}-runner`,
    ]);
    const [controller, runner] = policies;
    expect(controller!.spec).toMatchObject({
      podSelector: { matchLabels: { "app.kubernetes.io/component": "controller" } },
      policyTypes: ["Ingress", "Egress"],
      ingress: [{ ports: [{ port: "http", protocol: "TCP" }], from: metricsFrom }],
    });
    expect(controller!.spec.egress).toEqual(expect.arrayContaining(egress));
    expect(runner!.spec).toMatchObject({
      podSelector: { matchLabels: { "app.kubernetes.io/name": "syncgov-runner" } },
      ingress: [],
    });
    expect(runner!.spec.egress).toEqual(expect.arrayContaining(egress));
    // Off by default: a NetworkPolicy without the cluster's egress needs would cut the controller off.
    expect(defaults.objects.some((o) => o.kind === "NetworkPolicy")).toBe(false);
    const r = await kubectl(
      ["apply", "--dry-run=server", "-f", "-"],
      policies.map((p) => stringify(p)).join("---\n"),
    );
    expect(r.code, r.stderr).toBe(0);
  });

  it("lets the controller's account do everything the controller does", async () => {
    // The release installed here runs the default executor (ChildProcess).
    for (const p of CONTROLLER_NEEDS.filter((n) => (n.executor ?? "ChildProcess") === "ChildProcess")) {
      for (const verb of p.verbs) {
        // Informers list and watch across all namespaces; single objects are asked for in a
        // tenant's namespace; cluster-scoped kinds have none.
        const acrossNamespaces = verb === "list" || verb === "watch";
        const namespacedResource = ![
          "namespaces",
          "syncpolicies",
          "syncpolicies/status",
          "validatingadmissionpolicies",
          "validatingadmissionpolicybindings",
          "tokenreviews",
          "subjectaccessreviews",
        ].includes(p.resource);
        const where =
          p.scope === "release-namespace"
            ? { namespace, ...(p.names ? { name: p.names[0] } : {}) }
            : !namespacedResource
              ? p.names
                ? { name: p.names[0] }
                : {}
              : acrossNamespaces
                ? { allNamespaces: true }
                : { namespace: tenantNamespace };
        expect(await canI(serviceAccount, verb, p.group, p.resource, where), `${verb} ${p.resource}`).toBe(
          true,
        );
      }
    }
  });

  it("denies the controller's account what the controller never does", async () => {
    const denied: [string, string, string, { namespace?: string; allNamespaces?: boolean; name?: string }][] =
      [
        // Only the Job executor creates Jobs; this release runs ChildProcess.
        ["create", "batch", "jobs", { namespace: tenantNamespace }],
        ["delete", "", "secrets", { namespace: tenantNamespace }],
        ["list", "", "secrets", { allNamespaces: true }],
        ["watch", "", "secrets", { allNamespaces: true }],
        ["update", "syncgov.io", "syncjobs", { namespace: tenantNamespace }],
        ["delete", "syncgov.io", "syncjobs", { namespace: tenantNamespace }],
        ["create", "syncgov.io", "syncpolicies", {}],
        ["create", "", "pods", { namespace: tenantNamespace }],
        ["update", "", "namespaces", {}],
        ["get", "coordination.k8s.io", "leases", { namespace: "kube-system", name: LEASE }],
        ["update", "coordination.k8s.io", "leases", { namespace, name: "someone-elses-lease" }],
      ];
    for (const [verb, group, resource, where] of denied) {
      expect(await canI(serviceAccount, verb, group, resource, where), `${verb} ${resource}`).toBe(false);
    }
  });

  it("lets runner Jobs' account do what `syncgov run` does in its namespace, and no more", async () => {
    for (const n of RUNNER_NEEDS) {
      const where = n.namespaced ? { namespace: tenantNamespace } : {};
      expect(await canI(runnerAccount, n.verb, n.group, n.resource, where), `${n.verb} ${n.resource}`).toBe(
        true,
      );
    }
    expect(await canI(runnerAccount, "get", "", "secrets", { namespace: overrideNamespace })).toBe(false);
    expect(
      await canI(runnerAccount, "create", "syncgov.io", "syncruns", { namespace: tenantNamespace }),
    ).toBe(false);
    expect(
      await canI(runnerAccount, "patch", "syncgov.io", "syncjobs/status", { namespace: tenantNamespace }),
    ).toBe(false);
    // Policy is decided by the controller and recorded on the run: the runner reads no policy.
    expect(await canI(runnerAccount, "list", "syncgov.io", "syncpolicies", {})).toBe(false);
    expect(await canI(runnerAccount, "get", "", "namespaces", {})).toBe(false);
  });

  it("is enough for the real controller: started with the chart's arguments as the chart's account, it syncs, leads and writes status", async () => {
    // The admin kubeconfig, impersonating the chart's ServiceAccount: every request is authorized as
    // the controller's pod would be.
    const kubeconfig = parse(readFileSync(testEnv().kubeconfig, "utf8")) as {
      users: { user: Record<string, unknown> }[];
    };
    for (const u of kubeconfig.users) u.user.as = serviceAccount;
    const impersonating = join(workDir, "controller-sa.kubeconfig");
    writeFileSync(impersonating, stringify(kubeconfig), { mode: 0o600 });

    const identity = `${release}-pod-0`;
    const port = await freePort();
    const args = podSpec(defaults.objects).containers[0]!.args.map((arg) =>
      arg
        .replace("$(POD_NAME)", identity)
        .replace(/^--http-port=.*/, `--http-port=${port}`)
        // Admitted runs are left alone: other test files' SyncJobs are in the same cluster.
        .replace(/^--executor=.*/, "--executor=External"),
    );
    const logFile = join(workDir, "controller.log");
    const child = spawn(
      process.execPath,
      [repoPath("controller/cli.ts"), ...args, "--kubeconfig", impersonating],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, SYNCGOV_LOG_LEVEL: "info", SYNCGOV_LINEAGE: "none" },
      },
    );
    const log = createWriteStream(logFile);
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    try {
      await eventually(
        "the controller is ready (informers synced as the ServiceAccount, leader known)",
        async () => {
          if (child.exitCode !== null) throw new Error(`controller exited; see ${logFile}`);
          return (await fetch(`http://127.0.0.1:${port}/readyz`)).ok ? true : undefined;
        },
        60_000,
      );
      const holder = await eventually("the controller holds the Lease", async () => {
        const r = await kubectl([
          "get",
          "lease",
          LEASE,
          "-n",
          namespace,
          "-o",
          "jsonpath={.spec.holderIdentity}",
        ]);
        return r.stdout === identity ? r.stdout : undefined;
      });
      expect(holder).toBe(identity);

      const job = baseJob() as K8sObject & { spec: Record<string, unknown> };
      job.metadata.name = "chart-rbac-probe";
      job.spec.suspend = true;
      await kubectlOk(["apply", "-n", namespace, "-f", "-"], stringify(job));
      const status = await eventually(
        "the controller writes the SyncJob's status",
        async () => {
          const stored = JSON.parse(
            await kubectlOk(["get", "syncjob", job.metadata.name, "-n", namespace, "-o", "json"]),
          ) as { metadata: { generation: number }; status?: { observedGeneration?: number } };
          return stored.status?.observedGeneration === stored.metadata.generation ? stored.status : undefined;
        },
        60_000,
      );
      expect(status.observedGeneration).toBe(1);
      // An RBAC denial names the account; other 403s (a namespace being deleted) are not the chart's.
      expect(readFileSync(logFile, "utf8")).not.toMatch(/forbidden: User \\?"system:serviceaccount/);
    } finally {
      await stopProcess(child, 20_000);
    }
  }, 150_000);
});
