/**
 * The local default: `npm run dev`. Brings up a real control plane (etcd + kube-apiserver), Kafka and
 * PostgreSQL as local processes, installs the CRDs, the baseline policies and the examples, starts
 * the controller, prints how to reach everything, and keeps it all up until Ctrl-C.
 * `.syncgov/dev.env` receives the addresses as shell variables (mode 0600, since DATABASE_URL
 * carries the password), so another terminal can `source` it.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import pg from "pg";
import { applyManifests, readManifests } from "../../controller/kube/apply.ts";
import { seedExampleData } from "./dev-data.ts";
import { createReaderToken } from "./reader-token.ts";
import { startEnvironment } from "./services/environment.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const DEMO_NAMESPACE = "demo";
const HTTP_PORT = Number(process.env.SYNCGOV_HTTP_PORT ?? 8080);

const env = await startEnvironment();
let controller: ReturnType<typeof spawn> | undefined;
let stopping = false;
async function shutdown(signal: string, code = 0): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping the controller and the environment...`);
  if (controller && controller.exitCode === null) {
    const exited = new Promise((r) => controller?.once("exit", r));
    controller.kill("SIGTERM");
    await exited;
  }
  await env.stop();
  console.log("stopped.");
  process.exit(code);
}
process.on("SIGINT", () => void shutdown("SIGINT"));
process.on("SIGTERM", () => void shutdown("SIGTERM"));

const kc = new KubeConfig();
kc.loadFromFile(env.kube.kubeconfig);
try {
  const core = kc.makeApiClient(CoreV1Api);
  await applyManifests(kc, readManifests([join(root, "crds")]));
  await waitForCrds(kc);
  for (const name of ["syncgov-system", DEMO_NAMESPACE]) {
    await applyManifests(kc, [
      { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: { "syncgov.io/demo": "true" } } },
    ]);
  }
  // The examples name these Secrets; locally they all point at the one PostgreSQL.
  for (const name of ["warehouse-db", "crm-db"]) {
    await core.deleteNamespacedSecret({ name, namespace: DEMO_NAMESPACE }).catch(() => undefined);
    await core.createNamespacedSecret({
      namespace: DEMO_NAMESPACE,
      body: { metadata: { name }, stringData: { url: env.postgres.url } },
    });
  }
  await applyManifests(
    kc,
    readManifests([join(root, "policies", "baseline")]).filter((o) => o.kind === "SyncPolicy"),
  );
  const { ledgerFile } = await seedExampleData({
    databaseUrl: env.postgres.url,
    brokers: env.kafka.brokers,
    dataDir: join(env.runDir, "data"),
  });
  const examples = readManifests([join(root, "test", "examples")]).filter((o) => !o.metadata?.generateName);
  for (const o of examples) {
    // Locally the ledger export is a file this command wrote; in a cluster it is on a volume.
    const spec = (
      o as { spec?: { mode?: string; source?: { file?: { path: string; persistentVolumeClaim?: string } } } }
    ).spec;
    if (spec?.source?.file) {
      spec.source.file.path = ledgerFile;
      delete spec.source.file.persistentVolumeClaim;
    }
    // Run the batch examples once now instead of waiting for their schedules.
    if (spec?.mode === "batch") {
      o.metadata = {
        ...o.metadata,
        annotations: { ...o.metadata?.annotations, "syncgov.io/run-now": "dev" },
      };
    }
  }
  await applyManifests(kc, examples, { namespace: DEMO_NAMESPACE });

  controller = spawn(
    process.execPath,
    [
      join(root, "controller", "cli.ts"),
      "controller",
      "--kubeconfig",
      env.kube.kubeconfig,
      "--http-port",
      String(HTTP_PORT),
      // In-process runs: the local default needs no runner image, and lineage events print here.
      "--executor",
      "InProcess",
    ],
    {
      stdio: ["ignore", "inherit", "inherit"],
      // The example ledger file is the storage granted to file sources here (a volume in a cluster).
      env: {
        ...process.env,
        KAFKA_BROKERS: env.kafka.brokers,
        SYNCGOV_FILE_ROOTS: join(env.runDir, "data"),
      },
    },
  );
  controller.once("exit", (code) => {
    if (!stopping) void shutdown(`the controller exited (${code})`, 1);
  });
} catch (err) {
  console.error(`setup failed: ${err instanceof Error ? err.message : String(err)}`);
  await shutdown("setup failed", 1);
}

const envFile = join(env.runDir, "..", "..", "dev.env");
writeFileSync(
  envFile,
  [
    `export KUBECONFIG=${env.kube.kubeconfig}`,
    `export KAFKA_BROKERS=${env.kafka.brokers}`,
    `export DATABASE_URL='${env.postgres.url}'`,
    // A bearer token for the controller's /metrics and /api/registry (a reader ServiceAccount's).
    `export SYNCGOV_TOKEN=${await createReaderToken(kc)}`,
    "",
  ].join("\n"),
  { mode: 0o600 },
);
const masked = new URL(env.postgres.url);
masked.password = "***";
console.log(`
syncgov local environment is up.
  kubeconfig:  ${env.kube.kubeconfig}
               kubectl --kubeconfig ${env.kube.kubeconfig} get syncjobs -A
  Kafka:       ${env.kafka.brokers}
  PostgreSQL:  ${masked.toString()}
  all three:   source ${envFile}
  controller:  http://127.0.0.1:${HTTP_PORT}/readyz; /metrics and /api/registry need a token:
               curl -H "Authorization: Bearer $SYNCGOV_TOKEN" http://127.0.0.1:${HTTP_PORT}/api/registry
  examples:    namespace ${DEMO_NAMESPACE}; policies: kubectl get syncpolicies
  logs:        ${env.runDir}
Press Ctrl-C to stop.`);

// Every 15 s: how many rows the examples' targets hold.
const counts = new pg.Pool({ connectionString: env.postgres.url, max: 1 });
setInterval(async () => {
  if (stopping) return;
  try {
    const r = await counts.query<{ t: string; n: string }>(
      `SELECT 'analytics.orders' AS t, count(*) AS n FROM analytics.orders
       UNION ALL SELECT 'analytics.customers', count(*) FROM analytics.customers
       UNION ALL SELECT 'finance.ledger', count(*) FROM finance.ledger`,
    );
    console.log(`[syncgov dev] target rows: ${r.rows.map((x) => `${x.t}=${x.n}`).join("  ")}`);
  } catch {
    // the tables appear with the seed data
  }
}, 15_000).unref();
// Keeps the process alive until a signal arrives.
setInterval(() => {}, 1 << 30);

async function waitForCrds(kc: KubeConfig): Promise<void> {
  const { ApiextensionsV1Api } = await import("@kubernetes/client-node");
  const api = kc.makeApiClient(ApiextensionsV1Api);
  for (let i = 0; i < 100; i++) {
    const crds = (await api.listCustomResourceDefinition()).items.filter(
      (c) => c.spec.group === "syncgov.io",
    );
    const established = crds.filter((c) =>
      c.status?.conditions?.some((x) => x.type === "Established" && x.status === "True"),
    );
    if (crds.length >= 3 && established.length === crds.length) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the syncgov CRDs did not become Established");
}
