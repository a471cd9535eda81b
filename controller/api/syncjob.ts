import { z } from "zod";
import { API_VERSION, Conditions, objectName, SecretKeyRef, withRules } from "./common.ts";
import { CRON, KAFKA_TOPIC, SQL_IDENTIFIER, SQL_TABLE } from "./identifiers.ts";

const sqlIdentifier = z.string().max(63).regex(new RegExp(SQL_IDENTIFIER), {
  message: "must be a SQL identifier: an ASCII letter or '_', then letters, digits or '_' (at most 63)",
});
const sqlTable = z.string().max(127).regex(new RegExp(SQL_TABLE), {
  message: "must be 'table' or 'schema.table', each part a SQL identifier (ASCII letters, digits, '_')",
});
const kafkaTopic = z.string().max(249).regex(new RegExp(KAFKA_TOPIC), {
  message: "must be a Kafka topic name: ASCII letters, digits, '.', '_' and '-', not starting with '.'",
});
const brokerAddress = z
  .string()
  .max(261)
  .regex(/^[A-Za-z0-9.-]+:[0-9]{1,5}$/, { message: "must be host:port" });

export const KeyColumns = z
  .array(sqlIdentifier.describe("Name of a key column."))
  .min(1)
  .max(16)
  .describe(
    "Columns that identify a row; writes are upserts on them, so the target needs a unique key over them.",
  );

export const SqlDialect = z
  .enum(["postgres", "mysql", "starrocks"])
  .describe("SQL engine: postgres (supported), mysql or starrocks (reserved for upcoming dialects).");

export const KafkaSource = z
  .strictObject({
    topic: kafkaTopic.describe("Topic of JSON records; the record key identifies the row."),
    startFrom: z
      .enum(["earliest", "latest"])
      .default("earliest")
      .describe("Where a new consumer group starts reading: earliest or latest."),
    brokers: z
      .array(brokerAddress.describe("A bootstrap server, host:port."))
      .max(16)
      .optional()
      .describe("Bootstrap servers (host:port); default: the controller's Kafka."),
  })
  .describe("Read a Kafka topic of JSON records.");

export const SqlSource = z
  .strictObject({
    dialect: SqlDialect.default("postgres"),
    connectionSecretRef: SecretKeyRef,
    table: sqlTable.describe("Source table, 'table' or 'schema.table'."),
    keyColumns: KeyColumns.optional().describe(
      "Key columns for snapshots by key range; default: the target's keyColumns.",
    ),
    cursorColumn: sqlIdentifier
      .optional()
      .describe(
        "Column that grows on every change (e.g. updated_at); set it for incremental runs that copy only new and changed rows.",
      ),
  })
  .describe("Read a SQL table: a snapshot by key ranges, or incremental by a cursor column.");

export const FixedWidthField = z
  .strictObject({
    name: sqlIdentifier.describe("Target column the field is written to."),
    start: z.int().min(0).max(65535).describe("0-based offset of the field in the line."),
    length: z.int().min(1).max(65535).describe("Width of the field in characters."),
    type: z
      .enum(["text", "integer", "bigint", "numeric", "boolean", "date", "timestamp"])
      .default("text")
      .describe("How the field is parsed: text, integer, bigint, numeric, boolean, date or timestamp."),
    format: z
      .string()
      .max(32)
      .regex(/^[YMDHhms:/ .T-]+$/, { message: "must be a date pattern such as YYYYMMDD" })
      .optional()
      .describe("Date or timestamp pattern, e.g. YYYYMMDD or YYYY-MM-DD HH:mm:ss."),
  })
  .describe("One field of a fixed-width record.");

export const FileSource = z
  .strictObject({
    path: z
      .string()
      .max(4096)
      .regex(/^\/[^\0]*$/, { message: "must be an absolute path" })
      .describe("Absolute path of the file as the runner sees it."),
    persistentVolumeClaim: objectName
      .optional()
      .describe("Claim mounted read-only at the file's directory for runner Jobs."),
    encoding: z
      .enum(["utf8", "latin1"])
      .default("utf8")
      .describe("Character encoding of the file: utf8 or latin1."),
    skipLines: z.int().min(0).max(1000).default(0).describe("Header lines to skip."),
    fields: z
      .array(FixedWidthField)
      .min(1)
      .max(512)
      .superRefine((fields, ctx) => {
        const seen = new Set<string>();
        fields.forEach((f, i) => {
          if (seen.has(f.name))
            ctx.addIssue({ code: "custom", message: `duplicate field name ${f.name}`, path: [i, "name"] });
          seen.add(f.name);
        });
      })
      // The API server enforces unique names itself for a list of type map.
      .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"] })
      .describe("Field map: name, offset, width and type of each field; names are unique."),
  })
  .describe("Read a fixed-width flat file described by a field/offset map.");

const exactlyOneSource = (s: { kafka?: unknown; sql?: unknown; file?: unknown }) =>
  [s.kafka, s.sql, s.file].filter((x) => x !== undefined).length === 1;

export const Source = withRules(
  z
    .strictObject({
      kafka: KafkaSource.optional(),
      sql: SqlSource.optional(),
      file: FileSource.optional(),
    })
    .describe("Where the data comes from: exactly one of kafka, sql or file."),
  [
    {
      cel: "[has(self.kafka), has(self.sql), has(self.file)].filter(x, x).size() == 1",
      message: "exactly one of kafka, sql or file must be set",
      holds: exactlyOneSource,
    },
  ],
);

export const SqlTarget = z
  .strictObject({
    dialect: SqlDialect.default("postgres"),
    connectionSecretRef: SecretKeyRef,
    table: sqlTable.describe("Target table, 'table' or 'schema.table'."),
    keyColumns: KeyColumns,
    versionColumn: sqlIdentifier
      .optional()
      .describe("Column that orders versions of a row; a write never replaces a row with a newer version."),
  })
  .describe("Write into a SQL table with idempotent upserts.");

export const Target = z
  .strictObject({
    sql: SqlTarget,
  })
  .describe("Where the data goes.");

export const MaskingRule = withRules(
  z
    .strictObject({
      column: sqlIdentifier.describe("Column to mask before it is written."),
      transform: z
        .enum(["hash", "redact", "regexReplace"])
        .describe(
          "hash (HMAC-SHA256 hex keyed by spec.maskingKeySecretRef; plain SHA-256 without a key), redact (replaced by '***'), or regexReplace.",
        ),
      pattern: z
        .string()
        .max(256)
        .optional()
        .describe(
          "Regular expression for regexReplace, in RE2 syntax (linear-time matching; no backreferences or lookaround).",
        ),
      replacement: z.string().max(256).optional().describe("Replacement text for regexReplace."),
    })
    .describe("A column transform applied before writing."),
  [
    {
      cel: "self.transform != 'regexReplace' || has(self.pattern)",
      message: "regexReplace needs a pattern",
      field: "pattern",
      holds: (m) => m.transform !== "regexReplace" || m.pattern !== undefined,
    },
  ],
);

export const MaskingKeyRef = z
  .strictObject({
    name: objectName.describe("Name of a Secret in the SyncJob's namespace."),
    key: z
      .string()
      .max(253)
      .regex(/^[-._a-zA-Z0-9]+$/, { message: "must be a Secret data key" })
      .default("key")
      .describe("Key in the Secret whose value is the HMAC key. Default: key."),
  })
  .describe(
    "A Secret holding the key of hash masking: hash is then HMAC-SHA256 keyed by it, so a dictionary of likely values cannot be matched without the key. The value never appears in status, events or logs.",
  );

export const BreakerSettings = z
  .strictObject({
    slidingWindowType: z
      .enum(["COUNT_BASED", "TIME_BASED"])
      .optional()
      .describe("COUNT_BASED (last N calls) or TIME_BASED (last N seconds)."),
    slidingWindowSize: z
      .int()
      .min(1)
      .max(10000)
      .optional()
      .describe("Calls (count-based) or seconds (time-based) in the window."),
    minimumNumberOfCalls: z
      .int()
      .min(1)
      .max(10000)
      .optional()
      .describe("Calls needed before rates are computed."),
    failureRateThreshold: z
      .int()
      .min(1)
      .max(100)
      .optional()
      .describe("Failure rate in percent that opens the breaker."),
    slowCallDurationThresholdMs: z
      .int()
      .min(1)
      .max(600000)
      .optional()
      .describe("A write slower than this counts as slow (default 500)."),
    slowCallRateThreshold: z
      .int()
      .min(1)
      .max(100)
      .optional()
      .describe("Slow-call rate in percent that opens the breaker."),
    waitDurationInOpenStateMs: z
      .int()
      .min(1)
      .max(3600000)
      .optional()
      .describe("How long the breaker stays open before probing."),
    permittedNumberOfCallsInHalfOpenState: z
      .int()
      .min(1)
      .max(1000)
      .optional()
      .describe("Trial writes while half-open."),
  })
  .describe("Circuit breaker around target writes (resilience4j semantics); bounded by policy.");

export const ShadowSettings = z
  .strictObject({
    enabled: z
      .boolean()
      .default(true)
      .describe("Fall back to a shadow table after repeated validation failures."),
    failedValidationsBeforeShadow: z
      .int()
      .min(1)
      .max(100)
      .optional()
      .describe("Consecutive failed validations that switch to shadow mode (default 3, from policy)."),
    retiredTableTtlSeconds: z
      .int()
      .min(0)
      .max(31536000)
      .default(604800)
      .describe("How long the swapped-out table is kept for rollback."),
  })
  .describe("Shadow-table fallback.");

export const ValidationSettings = z
  .strictObject({
    enabled: z.boolean().default(true).describe("Compare source and target by row count and checksum."),
    schedule: z
      .string()
      .max(128)
      .regex(new RegExp(CRON), { message: "must be a five-field cron expression or a @macro" })
      .optional()
      .describe("When realtime jobs are compared (cron); batch runs validate at their end."),
  })
  .describe("Validation of source against target.");

export const Mode = z.enum(["realtime", "batch", "hybrid"]);
export const ConcurrencyPolicy = z.enum(["Allow", "Forbid", "Replace"]);

const cron = z
  .string()
  .max(128)
  .regex(new RegExp(CRON), { message: "must be a five-field cron expression or a @macro" });

export const SyncJobSpec = withRules(
  z
    .strictObject({
      source: Source,
      target: Target,
      mode: Mode.describe(
        "realtime (a long-lived stream), batch (scheduled runs) or hybrid (stream plus scheduled compare).",
      ),
      schedule: cron.optional().describe("Cron schedule of batch runs; required for batch and hybrid."),
      timeZone: z
        .string()
        .max(64)
        .regex(/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/, {
          message: "must be an IANA time zone such as Europe/Berlin",
        })
        .optional()
        .describe("IANA time zone of the schedule; default UTC."),
      suspend: z.boolean().default(false).describe("Stop starting new runs; running ones finish."),
      concurrencyPolicy: ConcurrencyPolicy.default("Forbid").describe(
        "Overlapping runs of this job: Allow, Forbid (skip the new run, with an event) or Replace (cancel the running one).",
      ),
      priority: z
        .int()
        .min(-1000)
        .max(1000)
        .default(0)
        .describe("Higher runs are admitted first when queued."),
      ttlSecondsAfterFinished: z
        .int()
        .min(0)
        .max(31536000)
        .optional()
        .describe("Delete finished runs this long after they finish; bounded by policy."),
      successfulRunsHistoryLimit: z
        .int()
        .min(0)
        .max(100)
        .default(3)
        .describe("Finished successful runs to keep."),
      failedRunsHistoryLimit: z
        .int()
        .min(0)
        .max(100)
        .default(1)
        .describe("Finished runs that did not succeed (Failed, Cancelled or Skipped) to keep."),
      masking: z.array(MaskingRule).max(64).optional().describe("Column transforms applied before writing."),
      maskingKeySecretRef: MaskingKeyRef.optional(),
      validation: ValidationSettings.optional(),
      breaker: BreakerSettings.optional(),
      shadow: ShadowSettings.optional(),
      bufferTopic: kafkaTopic
        .optional()
        .describe(
          "Kafka topic that holds records while the breaker is not closed, until a Compensation run replays them; default syncgov.buffer.<namespace>.<job>.",
        ),
      deadLetterTopic: kafkaTopic
        .optional()
        .describe(
          "Kafka topic for records set aside with their reason (malformed, or too large for the buffer topic); default syncgov.dlq.<namespace>.<job>.",
        ),
    })
    .describe("A desired sync from a source into a target."),
  [
    {
      cel: "self.mode == 'realtime' || has(self.schedule)",
      message: "schedule is required for batch and hybrid modes",
      field: "schedule",
      holds: (s) => s.mode === "realtime" || s.schedule !== undefined,
    },
    {
      cel: "self.mode == 'batch' || has(self.source.kafka)",
      message: "realtime and hybrid modes need a kafka source",
      field: "mode",
      holds: (s) => s.mode === "batch" || s.source.kafka !== undefined,
    },
    {
      cel: "!has(self.masking) || self.masking.all(m, !(m.column in self.target.sql.keyColumns) || m.transform == 'hash')",
      message: "key columns may only be masked with hash, so that upserts stay stable",
      field: "masking",
      holds: (s) =>
        (s.masking ?? []).every((m) => !s.target.sql.keyColumns.includes(m.column) || m.transform === "hash"),
    },
  ],
);
export type SyncJobSpec = z.infer<typeof SyncJobSpec>;

export const SyncJobPhase = z.enum([
  "Pending",
  "Invalid",
  "Blocked",
  "Idle",
  "Queued",
  "Running",
  "Suspended",
  "Failed",
]);

export const SyncJobStatus = z
  .strictObject({
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation this status describes."),
    phase: SyncJobPhase.optional().describe(
      "Pending, Invalid, Blocked, Idle, Queued, Running, Suspended or Failed.",
    ),
    conditions: Conditions.optional(),
    activeRuns: z
      .array(objectName.describe("Name of a SyncRun of this job."))
      .max(100)
      .optional()
      .describe("SyncRuns of this job that are queued or running."),
    lastScheduleTime: z.string().max(64).optional().describe("When the schedule last started a run."),
    lastValidationTime: z
      .string()
      .max(64)
      .optional()
      .describe("When spec.validation.schedule last started a Validation run of a realtime job."),
    lastManualRequest: z
      .string()
      .max(256)
      .optional()
      .describe("The value of the syncgov.io/run-now annotation that last started a run by hand."),
    lastRun: z
      .strictObject({
        name: objectName.describe("Name of the SyncRun."),
        phase: z.string().max(32).describe("The run's final phase: Succeeded, Failed, Cancelled or Skipped."),
        finishedAt: z.string().max(64).optional().describe("The run's completionTime (RFC 3339)."),
      })
      .optional()
      .describe("The newest (by creation) of the job's finished runs."),
    breaker: z
      .strictObject({
        state: z.enum(["Closed", "Open", "HalfOpen"]).describe("Closed, Open or HalfOpen."),
        slowCallRate: z.number().min(0).max(100).optional().describe("Percent of slow writes in the window."),
        failureRate: z
          .number()
          .min(0)
          .max(100)
          .optional()
          .describe("Percent of failed writes in the window."),
        bufferedRecords: z.int().min(0).optional().describe("Records waiting in the buffer topic."),
        lastTransitionTime: z
          .string()
          .max(64)
          .optional()
          .describe("When the breaker's state last changed (RFC 3339), as the realtime session reported it."),
      })
      .optional()
      .describe("Circuit breaker around target writes."),
    shadow: z
      .strictObject({
        state: z
          .enum(["None", "Filling", "AwaitingApproval", "Swapping", "Swapped"])
          .describe("None, Filling, AwaitingApproval, Swapping or Swapped."),
        table: z.string().max(127).optional().describe("The shadow table."),
        retiredTable: z.string().max(127).optional().describe("The table swapped out, kept for rollback."),
        consecutiveFailedValidations: z.int().min(0).optional().describe("Failed validations in a row."),
        countedThrough: z
          .strictObject({
            run: objectName.describe("Name of the SyncRun whose validation was counted last."),
            finishedAt: z
              .string()
              .max(64)
              .describe(
                "When that run finished (RFC 3339); validations of runs that finished earlier are never counted again.",
              ),
          })
          .optional()
          .describe("The newest validation already counted."),
        fillRun: objectName.optional().describe("The ShadowFill run of the current attempt."),
        fillAttempt: z.int().min(1).optional().describe("Attempt number of fillRun."),
        handledApproval: z
          .string()
          .max(1024)
          .optional()
          .describe("The last syncgov.io/approve-swap value handled."),
        handledRollback: z
          .string()
          .max(1024)
          .optional()
          .describe("The last syncgov.io/rollback value handled."),
        approvedBy: z
          .string()
          .max(512)
          .optional()
          .describe(
            "Who approved the latest swap: the user the API server admitted as syncgov.io/requested-by with the approval.",
          ),
        rolledBackBy: z.string().max(512).optional().describe("Who requested the latest rollback."),
      })
      .optional()
      .describe("Shadow-table fallback state."),
    lastValidation: z
      .strictObject({
        result: z
          .enum(["Passed", "Failed"])
          .describe("Passed when source and target have the same row count and checksum, Failed otherwise."),
        run: objectName.optional().describe("The SyncRun that validated."),
        time: z.string().max(64).optional().describe("When that run finished (RFC 3339)."),
        sourceRows: z.int().min(0).optional().describe("Rows counted in the source."),
        targetRows: z.int().min(0).optional().describe("Rows counted in the target."),
        sourceChecksum: z
          .string()
          .max(64)
          .optional()
          .describe("Order-independent checksum of the source rows, 16 lowercase hex digits."),
        targetChecksum: z
          .string()
          .max(64)
          .optional()
          .describe("Order-independent checksum of the target rows, 16 lowercase hex digits."),
      })
      .optional()
      .describe("Result of the latest validation, from the newest finished run that validated."),
    effectivePolicy: z
      .strictObject({
        policies: z
          .array(z.string().max(253).describe("Name of a SyncPolicy."))
          .max(64)
          .optional()
          .describe("SyncPolicies that match this job."),
        enforcement: z
          .enum(["Enforce", "Warn", "Audit"])
          .optional()
          .describe(
            "Strictest enforcement among the policies the job violates: Enforce (the job is Blocked), Warn or Audit; absent when it complies.",
          ),
        maxRunsPerNamespace: z
          .int()
          .min(0)
          .optional()
          .describe(
            "Lowest concurrency.maxRunsPerNamespace of the matching policies; absent when none sets one.",
          ),
        maxRunsPerTarget: z
          .int()
          .min(0)
          .optional()
          .describe(
            "Lowest concurrency.maxRunsPerTarget of the matching policies; absent when none sets one.",
          ),
        maxRunsGlobal: z
          .int()
          .min(0)
          .optional()
          .describe("Lowest concurrency.maxRunsGlobal of the matching policies; absent when none sets one."),
        ttlSecondsAfterFinished: z
          .int()
          .min(0)
          .optional()
          .describe(
            "Seconds after which the job's finished runs are deleted: its own TTL or the policies' default, capped by their maximum; absent means no TTL.",
          ),
        failedValidationsBeforeShadow: z
          .int()
          .min(1)
          .optional()
          .describe(
            "Consecutive failed validations that switch the job to a shadow table: the lowest of the job's and the policies' values, default 3.",
          ),
        violations: z
          .array(z.string().max(1024).describe("One violation, as <policy>/<rule>: <message>."))
          .max(64)
          .optional()
          .describe("Rules this job violates."),
      })
      .optional()
      .describe("The most restrictive combination of the matching SyncPolicies."),
  })
  .describe("What the controller observed about the job.");
export type SyncJobStatus = z.infer<typeof SyncJobStatus>;

export const ObjectMeta = z
  .looseObject({
    name: objectName.optional(),
    namespace: objectName.optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    generation: z.int().optional(),
    resourceVersion: z.string().optional(),
    uid: z.string().optional(),
  })
  .describe("Standard object metadata.");

export const SyncJob = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("SyncJob"),
  metadata: ObjectMeta,
  spec: SyncJobSpec,
  status: SyncJobStatus.optional(),
});
export type SyncJob = z.infer<typeof SyncJob>;
