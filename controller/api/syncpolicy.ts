import { z } from "zod";
import { API_VERSION, Conditions, LabelSelector, objectName, withRules } from "./common.ts";
import { BreakerSettings, ObjectMeta } from "./syncjob.ts";

export const Enforcement = z.enum(["Enforce", "Warn", "Audit"]);
export type Enforcement = z.infer<typeof Enforcement>;

const clock = z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, { message: "must be HH:MM (24-hour)" });

export const TimeWindow = z
  .strictObject({
    start: clock.describe("Start of the window, HH:MM."),
    end: clock.describe("End of the window, HH:MM; before start means the window spans midnight."),
    timeZone: z
      .string()
      .max(64)
      .regex(/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/, {
        message: "must be an IANA time zone such as Europe/Berlin",
      })
      .default("UTC")
      .describe("IANA time zone of start and end."),
    days: z
      .array(
        z
          .enum(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
          .describe("Mon, Tue, Wed, Thu, Fri, Sat or Sun."),
      )
      .max(7)
      .optional()
      .describe("Days the window opens on (the day of its start); default every day."),
  })
  .describe("A time window in which batch runs may start.");

export const CelRule = z
  .strictObject({
    name: z
      .string()
      .max(63)
      .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, {
        message: "must be a lowercase name (letters, digits, '-')",
      })
      .describe("Name of the rule, reported with violations."),
    expression: z
      .string()
      .min(1)
      .max(4096)
      .describe(
        "CEL over `object` (the SyncJob) and `namespaceObject` (its Namespace, with metadata.labels); true means compliant.",
      ),
    message: z.string().min(1).max(1024).describe("Said when the expression is false."),
  })
  .describe("An admission rule in CEL.");

export const SyncPolicySpec = withRules(
  z
    .strictObject({
      match: z
        .strictObject({
          namespaces: z
            .array(objectName.describe("Name of a Namespace."))
            .max(256)
            .optional()
            .describe("Namespaces the policy applies to; empty means all."),
          namespaceSelector: LabelSelector.optional().describe("Labels the job's namespace must have."),
          jobSelector: LabelSelector.optional().describe("Labels the SyncJob must have."),
        })
        .optional()
        .describe("Which SyncJobs the policy applies to; all conditions must hold. Empty matches every job."),
      enforcement: Enforcement.default("Enforce").describe(
        "Enforce blocks violating jobs, Warn admits them with a warning, Audit only records the violation.",
      ),
      concurrency: z
        .strictObject({
          maxRunsPerNamespace: z
            .int()
            .min(0)
            .max(100000)
            .optional()
            .describe("Running SyncRuns per namespace."),
          maxRunsPerTarget: z
            .int()
            .min(0)
            .max(100000)
            .optional()
            .describe("Running SyncRuns per target (connection and table)."),
          maxRunsGlobal: z
            .int()
            .min(0)
            .max(100000)
            .optional()
            .describe("Running SyncRuns in the whole cluster."),
        })
        .optional()
        .describe(
          "Limits on running SyncRuns; runs over a limit wait Queued. Realtime sessions count and wait like any run (one session per job), but a job's own session does not hold back that job's other runs. The lowest limit of the matching policies applies.",
        ),
      ttl: z
        .strictObject({
          defaultSecondsAfterFinished: z
            .int()
            .min(0)
            .max(31536000)
            .optional()
            .describe("TTL for jobs that set none."),
          maxSecondsAfterFinished: z
            .int()
            .min(0)
            .max(31536000)
            .optional()
            .describe("Upper bound on a job's TTL."),
        })
        .optional()
        .describe("Clean-up of finished runs."),
      history: z
        .strictObject({
          maxSuccessfulRuns: z
            .int()
            .min(0)
            .max(100)
            .optional()
            .describe(
              "Upper bound on a job's successfulRunsHistoryLimit; the lowest of the job's and the matching policies' values applies.",
            ),
          maxFailedRuns: z
            .int()
            .min(0)
            .max(100)
            .optional()
            .describe(
              "Upper bound on a job's failedRunsHistoryLimit; the lowest of the job's and the matching policies' values applies.",
            ),
        })
        .optional()
        .describe("Upper bounds on the jobs' history limits."),
      batchWindows: z
        .array(TimeWindow)
        .max(16)
        .optional()
        .describe("Batch runs may only start inside one of these windows."),
      breaker: BreakerSettings.optional().describe(
        "Strictest breaker settings allowed; jobs may only be stricter.",
      ),
      shadow: z
        .strictObject({
          required: z.boolean().optional().describe("Matching jobs must keep the shadow fallback enabled."),
          failedValidationsBeforeShadow: z
            .int()
            .min(1)
            .max(100)
            .optional()
            .describe(
              "Upper bound on the consecutive failed validations before a job switches to a shadow table; the lowest of the job's and the matching policies' values applies (default 3).",
            ),
        })
        .optional()
        .describe("Shadow-table fallback rules for matching jobs."),
      masking: z
        .strictObject({
          requiredFor: z
            .array(
              z
                .strictObject({
                  columnPattern: z
                    .string()
                    .min(1)
                    .max(256)
                    .describe(
                      "Regular expression (RE2 syntax) over column names, matched case-insensitively, e.g. (phone|email|ssn).",
                    ),
                  transforms: z
                    .array(
                      z.enum(["hash", "redact", "regexReplace"]).describe("hash, redact or regexReplace."),
                    )
                    .min(1)
                    .max(3)
                    .default(["hash", "redact"])
                    .describe("Transforms that satisfy the requirement. Default: hash and redact."),
                })
                .describe("Columns matching columnPattern must be masked with one of transforms."),
            )
            .max(32)
            .optional()
            .describe(
              "Masking requirements. A job whose spec names a matching column (key, version, file field or masking rule) without an accepted transform violates the policy; under Enforce the runner also refuses to write any matching column unmasked.",
            ),
          requireHashKey: z
            .boolean()
            .optional()
            .describe(
              "Matching jobs must key their hash masking (HMAC-SHA256 with a key from a Secret, spec.maskingKeySecretRef): a job with a hash rule and no key violates the policy, and under Enforce the runner also refuses to hash without a key of at least 16 bytes.",
            ),
        })
        .optional()
        .describe("Columns that must be masked before they land in a target."),
      rules: z
        .array(CelRule)
        .max(64)
        .optional()
        .describe("CEL admission rules; each must hold for a job to comply."),
    })
    .describe("Policy as code for SyncJobs."),
  [
    {
      cel: "!has(self.ttl) || !has(self.ttl.defaultSecondsAfterFinished) || !has(self.ttl.maxSecondsAfterFinished) || self.ttl.defaultSecondsAfterFinished <= self.ttl.maxSecondsAfterFinished",
      message: "ttl.defaultSecondsAfterFinished must not exceed ttl.maxSecondsAfterFinished",
      field: "ttl",
      holds: (s) =>
        s.ttl?.defaultSecondsAfterFinished === undefined ||
        s.ttl.maxSecondsAfterFinished === undefined ||
        s.ttl.defaultSecondsAfterFinished <= s.ttl.maxSecondsAfterFinished,
    },
  ],
);
export type SyncPolicySpec = z.infer<typeof SyncPolicySpec>;

export const SyncPolicyStatus = z
  .strictObject({
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation this status describes."),
    conditions: Conditions.optional(),
    matchedJobs: z.int().min(0).optional().describe("SyncJobs the policy currently applies to."),
    violations: z.int().min(0).optional().describe("Matched jobs that violate a rule."),
    ruleErrors: z
      .array(
        z
          .strictObject({
            rule: z.string().max(63).describe("Name of the rule."),
            position: z.string().max(64).optional().describe("line:column of the error in the expression."),
            reason: z.string().max(1024).describe("Why the expression does not compile."),
          })
          .describe("A rule that does not compile."),
      )
      .max(64)
      .optional()
      .describe("Rules that do not compile."),
  })
  .describe("What the controller observed about the policy.");

export const SyncPolicy = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("SyncPolicy"),
  metadata: ObjectMeta,
  spec: SyncPolicySpec,
  status: SyncPolicyStatus.optional(),
});
export type SyncPolicy = z.infer<typeof SyncPolicy>;
