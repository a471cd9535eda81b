import { z } from "zod";
import { API_VERSION, Conditions, objectName } from "./common.ts";
import { BreakerSettings, ObjectMeta } from "./syncjob.ts";

export const RunType = z.enum(["Batch", "Realtime", "Compensation", "Validation", "ShadowFill", "Swap"]);
export type RunType = z.infer<typeof RunType>;

export const SyncRunSpec = z
  .strictObject({
    jobName: objectName.describe("The SyncJob (same namespace) this run executes."),
    type: RunType.default("Batch").describe("Batch, Realtime, Compensation, Validation, ShadowFill or Swap."),
    trigger: z
      .enum(["Schedule", "Manual", "Stream", "Controller"])
      .default("Manual")
      .describe(
        "What started the run: Schedule, Manual (kubectl create or an annotation), Stream or Controller.",
      ),
    incremental: z
      .boolean()
      .optional()
      .describe("Copy only rows changed since the last successful run (SQL sources with a cursorColumn)."),
    priority: z
      .int()
      .min(-1000)
      .max(1000)
      .optional()
      .describe("Overrides the job's priority for queue order."),
  })
  .describe("One execution of a SyncJob.");
export type SyncRunSpec = z.infer<typeof SyncRunSpec>;

/**
 * What the policies decided for a run when it was admitted (as Kueue records admission in a
 * Workload's status): the runner enforces this and never evaluates SyncPolicies itself.
 */
export const AdmittedPolicy = z
  .strictObject({
    policies: z
      .array(objectName.describe("Name of a SyncPolicy."))
      .max(256)
      .describe("The SyncPolicies that matched the job when the run was admitted, by name."),
    requiredMasking: z
      .array(
        z
          .strictObject({
            policy: objectName.describe("The Enforce-mode SyncPolicy that requires it."),
            columnPattern: z
              .string()
              .min(1)
              .max(256)
              .describe("Regular expression over column names, matched case-insensitively."),
            transforms: z
              .array(z.enum(["hash", "redact", "regexReplace"]).describe("hash, redact or regexReplace."))
              .min(1)
              .max(3)
              .describe("The transforms that satisfy the requirement."),
          })
          .describe("A masking requirement of one Enforce-mode policy."),
      )
      .max(256)
      .describe("Columns the run must mask before writing; the runner refuses to write them unmasked."),
    hashKeyRequired: z
      .boolean()
      .optional()
      .describe(
        "An Enforce-mode policy requires keyed hash masking: the runner refuses a hash rule without a key (spec.maskingKeySecretRef).",
      ),
    breaker: BreakerSettings.describe(
      "The strictest breaker settings of the matching policies: bounds the job's own settings cannot loosen.",
    ),
  })
  .describe("The effective policy recorded when the run was admitted; the runner enforces it.");
export type AdmittedPolicy = z.infer<typeof AdmittedPolicy>;

export const RunPhase = z.enum([
  "Pending",
  "Queued",
  "Running",
  "Succeeded",
  "Failed",
  "Cancelled",
  "Skipped",
]);
export type RunPhase = z.infer<typeof RunPhase>;

/** The circuit breaker around a realtime session's target writes, as the runner last saw it. */
export const RunBreakerStatus = z
  .strictObject({
    state: z.enum(["Closed", "Open", "HalfOpen"]).describe("Closed, Open or HalfOpen."),
    slowCallRate: z
      .number()
      .min(0)
      .max(100)
      .optional()
      .describe("Percent of slow writes in the window; absent while it holds fewer than the minimum calls."),
    failureRate: z
      .number()
      .min(0)
      .max(100)
      .optional()
      .describe(
        "Percent of failed writes in the window; absent while it holds fewer than the minimum calls.",
      ),
    bufferedRecords: z
      .int()
      .min(0)
      .optional()
      .describe("Records waiting in the job's buffer topic for a Compensation run."),
    lastTransitionTime: z.string().max(64).optional().describe("When the state last changed."),
  })
  .describe("Circuit breaker around the session's target writes.");
export type RunBreakerStatus = z.infer<typeof RunBreakerStatus>;

export const SyncRunStatus = z
  .strictObject({
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .describe(
        "Unused: syncgov does not set it; each condition carries the .metadata.generation it was set for.",
      ),
    phase: RunPhase.optional().describe("Pending, Queued, Running, Succeeded, Failed, Cancelled or Skipped."),
    conditions: Conditions.optional(),
    queueReason: z
      .string()
      .max(1024)
      .optional()
      .describe("Why the run waits, e.g. '3/3 running in namespace payments'."),
    target: z
      .string()
      .max(512)
      .optional()
      .describe(
        "The run's target as <namespace>/<connection Secret>/<table>, set on admission: the key of the per-target concurrency limit (a Realtime session holds no slot).",
      ),
    admittedAt: z
      .string()
      .max(64)
      .optional()
      .describe("When the controller admitted the run and set it Running (RFC 3339)."),
    startTime: z
      .string()
      .max(64)
      .optional()
      .describe("When a runner first started the run (RFC 3339); kept when the run is started again."),
    completionTime: z
      .string()
      .max(64)
      .optional()
      .describe("When the run finished; TTL clean-up counts from here."),
    policy: AdmittedPolicy.optional(),
    traceContext: z
      .strictObject({
        traceparent: z
          .string()
          .regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/)
          .describe("W3C traceparent of the admission span."),
        tracestate: z.string().max(512).optional().describe("W3C tracestate of the admission span, if any."),
      })
      .optional()
      .describe(
        "The trace the run belongs to, recorded at admission: the runner's spans are children of the admission span, so one trace shows the run from admission to its last write.",
      ),
    executor: z
      .strictObject({
        kind: z
          .enum(["InProcess", "ChildProcess", "Job"])
          .describe(
            "InProcess (inside the controller), ChildProcess (a process the controller spawns) or Job (a batch/v1 Job in the run's namespace).",
          ),
        jobName: objectName.optional().describe("The batch/v1 Job, for the Job executor."),
      })
      .optional()
      .describe(
        "How the controller started the run's runner; absent when runs are left to an outside runner (syncgov run).",
      ),
    attempts: z
      .int()
      .min(0)
      .optional()
      .describe("How many times a runner has started the run; a run started again after a crash counts up."),
    heartbeatTime: z
      .string()
      .max(64)
      .optional()
      .describe(
        "When the runner last said it is alive (RFC 3339); written every 10 s while it runs. The controller fails (or retries) a run whose runner has been silent for 60 s.",
      ),
    runnerFailures: z
      .int()
      .min(0)
      .optional()
      .describe(
        "How many of the run's runners ended without reporting its result (killed, OOM-killed, evicted, silent); the run is retried with exponential backoff until this exceeds the backoff limit.",
      ),
    nextAttemptTime: z
      .string()
      .max(64)
      .optional()
      .describe(
        "A run queued again after its runner was lost is not admitted before this time (RFC 3339): the retry's backoff.",
      ),
    rowsRead: z
      .int()
      .min(0)
      .optional()
      .describe(
        "Records, rows or file lines read from the source, rejected ones included; updated at most once per second while running.",
      ),
    rowsWritten: z
      .int()
      .min(0)
      .optional()
      .describe("Rows written to the target; updated at most once per second while running."),
    rowsRejected: z
      .int()
      .min(0)
      .optional()
      .describe(
        "Records, rows or file lines read but not written because they are malformed (or too large for the buffer topic); a Kafka source sets them aside in the dead-letter topic. The final message names the first ones.",
      ),
    rowsBuffered: z
      .int()
      .min(0)
      .optional()
      .describe("Records a realtime session diverted to the buffer topic while its breaker was not closed."),
    breaker: RunBreakerStatus.optional(),
    cursor: z.string().max(1024).optional().describe("High-water mark of an incremental run."),
    validation: z
      .strictObject({
        result: z
          .enum(["Passed", "Failed"])
          .describe("Passed when source and target have the same row count and checksum, Failed otherwise."),
        sourceRows: z.int().min(0).describe("Rows counted in the source."),
        targetRows: z.int().min(0).describe("Rows counted in the target."),
        sourceChecksum: z
          .string()
          .max(64)
          .describe("Order-independent checksum of the source rows, 16 lowercase hex digits."),
        targetChecksum: z
          .string()
          .max(64)
          .describe("Order-independent checksum of the target rows, 16 lowercase hex digits."),
      })
      .optional()
      .describe(
        "The run's comparison of source and target, made at its end; a failed validation does not fail the run.",
      ),
    lineageRunId: z.string().max(64).optional().describe("OpenLineage runId of this run."),
    message: z
      .string()
      .max(32768)
      .optional()
      .describe(
        "A sentence on the run's progress or outcome (why it was skipped, cancelled or failed); never contains Secret values.",
      ),
  })
  .describe("What happened to the run.");
export type SyncRunStatus = z.infer<typeof SyncRunStatus>;

export const SyncRun = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("SyncRun"),
  metadata: ObjectMeta,
  spec: SyncRunSpec,
  status: SyncRunStatus.optional(),
});
export type SyncRun = z.infer<typeof SyncRun>;
