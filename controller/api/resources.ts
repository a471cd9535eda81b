import type { z } from "zod";
import { GROUP } from "./common.ts";
import { SyncJobSpec, SyncJobStatus } from "./syncjob.ts";
import { SyncPolicySpec, SyncPolicyStatus } from "./syncpolicy.ts";
import { SyncRunSpec, SyncRunStatus } from "./syncrun.ts";

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description: string;
  priority?: number;
}

/** Everything the CRD generator and the API clients need to know about one kind. */
export interface ResourceDefinition {
  kind: "SyncJob" | "SyncRun" | "SyncPolicy";
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Namespaced" | "Cluster";
  description: string;
  spec: z.ZodType;
  status: z.ZodType;
  printerColumns: PrinterColumn[];
}

const age: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "Time since creation.",
};

export const RESOURCES: readonly ResourceDefinition[] = [
  {
    kind: "SyncJob",
    plural: "syncjobs",
    singular: "syncjob",
    shortNames: ["sj", "syncj"],
    scope: "Namespaced",
    description:
      "A SyncJob is a desired data sync from a Kafka topic, a SQL table or a fixed-width file into a SQL table, governed by the SyncPolicies that match it.",
    spec: SyncJobSpec,
    status: SyncJobStatus,
    printerColumns: [
      { name: "Mode", type: "string", jsonPath: ".spec.mode", description: "realtime, batch or hybrid." },
      { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Where the job stands." },
      {
        name: "Circuit",
        type: "string",
        jsonPath: ".status.breaker.state",
        description: "Breaker state of target writes.",
      },
      {
        name: "Shadow",
        type: "string",
        jsonPath: ".status.shadow.state",
        description: "Shadow-table fallback state.",
      },
      {
        name: "Validation",
        type: "string",
        jsonPath: ".status.lastValidation.result",
        description: "Latest validation result.",
      },
      {
        name: "Schedule",
        type: "string",
        jsonPath: ".spec.schedule",
        description: "Cron schedule.",
        priority: 1,
      },
      {
        name: "Target",
        type: "string",
        jsonPath: ".spec.target.sql.table",
        description: "Target table.",
        priority: 1,
      },
      age,
    ],
  },
  {
    kind: "SyncRun",
    plural: "syncruns",
    singular: "syncrun",
    shortNames: ["sr", "syncr"],
    scope: "Namespaced",
    description:
      "A SyncRun is one execution of a SyncJob: a batch copy, a realtime session, a replay, a validation, a shadow fill or a swap.",
    spec: SyncRunSpec,
    status: SyncRunStatus,
    printerColumns: [
      {
        name: "Job",
        type: "string",
        jsonPath: ".spec.jobName",
        description: "The SyncJob this run executes.",
      },
      { name: "Type", type: "string", jsonPath: ".spec.type", description: "Kind of run." },
      { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Where the run stands." },
      {
        name: "Written",
        type: "integer",
        jsonPath: ".status.rowsWritten",
        description: "Rows written to the target.",
      },
      {
        name: "Reason",
        type: "string",
        jsonPath: ".status.queueReason",
        description: "Why the run waits.",
        priority: 1,
      },
      age,
    ],
  },
  {
    kind: "SyncPolicy",
    plural: "syncpolicies",
    singular: "syncpolicy",
    shortNames: ["sp", "syncp"],
    scope: "Cluster",
    description:
      "A SyncPolicy is policy as code for SyncJobs: which jobs it matches, concurrency limits, TTL bounds, batch windows, breaker and shadow rules, and CEL admission rules.",
    spec: SyncPolicySpec,
    status: SyncPolicyStatus,
    printerColumns: [
      {
        name: "Enforcement",
        type: "string",
        jsonPath: ".spec.enforcement",
        description: "Enforce, Warn or Audit.",
      },
      {
        name: "Ready",
        type: "string",
        jsonPath: '.status.conditions[?(@.type=="Ready")].status',
        description: "Rules compile.",
      },
      {
        name: "Matched",
        type: "integer",
        jsonPath: ".status.matchedJobs",
        description: "Jobs the policy applies to.",
      },
      {
        name: "Violations",
        type: "integer",
        jsonPath: ".status.violations",
        description: "Matched jobs in violation.",
      },
      age,
    ],
  },
];

export function resource(kind: ResourceDefinition["kind"]): ResourceDefinition {
  const def = RESOURCES.find((r) => r.kind === kind);
  if (!def) throw new Error(`unknown kind ${kind}`);
  return def;
}

export { GROUP };
