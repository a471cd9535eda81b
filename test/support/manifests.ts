import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export const EXAMPLE_FILES = [
  "test/examples/realtime-orders.yaml",
  "test/examples/batch-customers.yaml",
  "test/examples/fixedwidth-ledger.yaml",
  "test/examples/manual-run.yaml",
  "policies/baseline/baseline.yaml",
];

type Manifest = Record<string, unknown>;

export function loadYaml(relativePath: string): Manifest[] {
  return parseAllDocuments(readFileSync(join(root, relativePath), "utf8")).map((d) => d.toJS() as Manifest);
}

export function repoPath(relativePath: string): string {
  return join(root, relativePath);
}

/** A valid batch SyncJob to start mutations from. */
export function baseJob(): Manifest {
  return structuredClone(loadYaml("test/examples/batch-customers.yaml")[0]!);
}

export interface InvalidCase {
  name: string;
  manifest: Manifest;
  /** The field both validators must name. */
  field: string;
}

// biome-ignore lint/suspicious/noExplicitAny: the table mutates manifests freely, including into invalid shapes.
type LooseSpec = Record<string, any>;

function job(name: string, field: string, mutate: (spec: LooseSpec) => void): InvalidCase {
  const manifest = baseJob();
  (manifest.metadata as Record<string, unknown>).name = `invalid-${name}`;
  mutate(manifest.spec as LooseSpec);
  return { name, manifest, field };
}

const kafkaSource = { kafka: { topic: "orders.cdc" } };

/**
 * Distinct invalid manifests that the API server (CRD schema + CEL rules) and the zod schemas must
 * both reject, each naming `field`.
 */
export const INVALID_CASES: InvalidCase[] = [
  job("no-source", "spec.source", (s) => {
    delete s.source;
  }),
  job("empty-source", "spec.source", (s) => {
    s.source = {};
  }),
  job("two-sources", "spec.source", (s) => {
    s.source.kafka = { topic: "orders" };
  }),
  job("table-semicolon", "spec.target.sql.table", (s) => {
    s.target.sql.table = "orders; DROP TABLE users";
  }),
  job("table-quote", "spec.target.sql.table", (s) => {
    s.target.sql.table = 'analytics."orders"';
  }),
  job("table-comment", "spec.target.sql.table", (s) => {
    s.target.sql.table = "orders--";
  }),
  job("table-block-comment", "spec.source.sql.table", (s) => {
    s.source.sql.table = "crm/**/customers";
  }),
  job("table-lookalike", "spec.target.sql.table", (s) => {
    s.target.sql.table = "analytics.\u043erders"; // Cyrillic o
  }),
  job("table-overlong", "spec.target.sql.table", (s) => {
    s.target.sql.table = `t${"x".repeat(63)}`;
  }),
  job("table-three-parts", "spec.target.sql.table", (s) => {
    s.target.sql.table = "db.analytics.orders";
  }),
  job("keys-empty", "spec.target.sql.keyColumns", (s) => {
    s.target.sql.keyColumns = [];
  }),
  job("key-space", "spec.target.sql.keyColumns[0]", (s) => {
    s.target.sql.keyColumns = ["customer id"];
  }),
  job("cursor-injection", "spec.source.sql.cursorColumn", (s) => {
    s.source.sql.cursorColumn = "updated_at) OR 1=1 --";
  }),
  job("mode-unknown", "spec.mode", (s) => {
    s.mode = "streaming";
  }),
  job("batch-no-schedule", "spec.schedule", (s) => {
    delete s.schedule;
  }),
  job("realtime-sql-source", "spec.mode", (s) => {
    s.mode = "realtime";
  }),
  job("cron-words", "spec.schedule", (s) => {
    s.schedule = "every night at two";
  }),
  job("cron-injection", "spec.schedule", (s) => {
    s.schedule = "0 2 * * *; curl evil";
  }),
  job("timezone-injection", "spec.timeZone", (s) => {
    s.timeZone = "Europe/Berlin; rm -rf";
  }),
  job("concurrency-unknown", "spec.concurrencyPolicy", (s) => {
    s.concurrencyPolicy = "Sometimes";
  }),
  job("ttl-negative", "spec.ttlSecondsAfterFinished", (s) => {
    s.ttlSecondsAfterFinished = -1;
  }),
  job("priority-too-high", "spec.priority", (s) => {
    s.priority = 5000;
  }),
  job("topic-slash", "spec.source.kafka.topic", (s) => {
    s.source = { kafka: { topic: "orders/cdc" } };
  }),
  job("topic-dot", "spec.source.kafka.topic", (s) => {
    s.source = { kafka: { topic: ".." } };
    s.mode = "realtime";
  }),
  job("secret-uppercase", "spec.target.sql.connectionSecretRef.name", (s) => {
    s.target.sql.connectionSecretRef.name = "Warehouse_DB";
  }),
  job("unknown-field", "spec.parallelism", (s) => {
    s.parallelism = 4;
  }),
  job("breaker-rate", "spec.breaker.slowCallRateThreshold", (s) => {
    s.breaker = { slowCallRateThreshold: 150 };
  }),
  job("masking-key-redacted", "spec.masking", (s) => {
    s.masking = [{ column: "customer_id", transform: "redact" }];
  }),
  job("regex-without-pattern", "spec.masking[0].pattern", (s) => {
    s.masking = [{ column: "email", transform: "regexReplace" }];
  }),
  job("file-duplicate-fields", "spec.source.file.fields[1]", (s) => {
    s.source = {
      file: {
        path: "/data/x.dat",
        fields: [
          { name: "a", start: 0, length: 2 },
          { name: "a", start: 2, length: 2 },
        ],
      },
    };
  }),
  job("file-relative-path", "spec.source.file.path", (s) => {
    s.source = { file: { path: "../etc/passwd", fields: [{ name: "a", start: 0, length: 2 }] } };
  }),
  job("hybrid-kafka-no-schedule", "spec.schedule", (s) => {
    s.source = kafkaSource;
    s.mode = "hybrid";
    delete s.schedule;
  }),
  {
    name: "policy-ttl-bounds",
    field: "spec.ttl",
    manifest: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: "invalid-policy-ttl-bounds" },
      spec: { ttl: { defaultSecondsAfterFinished: 7200, maxSecondsAfterFinished: 3600 } },
    },
  },
  {
    name: "policy-enforcement",
    field: "spec.enforcement",
    manifest: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: "invalid-policy-enforcement" },
      spec: { enforcement: "Block" },
    },
  },
  {
    name: "run-type",
    field: "spec.type",
    manifest: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncRun",
      metadata: { name: "invalid-run-type" },
      spec: { jobName: "customers-nightly", type: "Everything" },
    },
  },
];

/** Identifier injection attempts; each must be rejected as a target table by both validators. */
export const INJECTION_ATTEMPTS = [
  "orders'; DROP TABLE orders; --",
  'orders" OR "1"="1',
  "orders/*x*/",
  "orders -- comment",
  "orders;",
  "ord`ers",
  "orders\u0000",
  "orders\n",
  "\u043erders", // Cyrillic o
  "ordеrs", // Cyrillic e
  "ｏrders", // fullwidth o
  "orders\u200b", // zero-width space
  "x".repeat(64),
  `${"a".repeat(63)}.${"b".repeat(64)}`,
  "1orders",
  "",
  " orders",
  "a.b.c",
];
