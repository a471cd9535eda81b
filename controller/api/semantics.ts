import { Cron } from "croner";
import { fileGrantRefusal, fileRoots } from "./file-grant.ts";
import { re2Refusal } from "./re2.ts";
import type { SyncJobSpec } from "./syncjob.ts";
import { tenantTopicRefusal } from "./tenancy.ts";
import type { FieldError } from "./validate.ts";

/**
 * Checks the controller makes beyond the CRD schema: what a pattern or CEL rule at the API server
 * cannot judge (a cron field out of range, a time zone that does not exist, a masking pattern that
 * RE2 cannot run (./re2.ts), overlapping fixed-width fields, an engine not supported yet, a file outside
 * the storage the platform granted (./file-grant.ts; default SYNCGOV_FILE_ROOTS), a buffer or
 * dead-letter topic outside the job's namespace (./tenancy.ts)). A job that
 * fails them is accepted by the API server and then marked Valid=False with these messages.
 */
export function semanticErrors(
  spec: SyncJobSpec,
  options: { fileRoots?: readonly string[]; namespace?: string | undefined } = {},
): FieldError[] {
  const errors: FieldError[] = [];
  if (spec.source.file) {
    const refusal = fileGrantRefusal(spec.source.file.path, options.fileRoots ?? fileRoots());
    if (refusal !== undefined) errors.push({ field: "spec.source.file.path", message: refusal });
  }
  // Topics a job names must be its namespace's own (./tenancy.ts); offline, without a namespace,
  // the check waits for the controller.
  for (const [field, kind, topic] of [
    ["spec.bufferTopic", "buffer", spec.bufferTopic],
    ["spec.deadLetterTopic", "dlq", spec.deadLetterTopic],
  ] as const) {
    if (topic === undefined || options.namespace === undefined) continue;
    const refusal = tenantTopicRefusal(kind, options.namespace, topic);
    if (refusal !== undefined) errors.push({ field, message: refusal });
  }
  const cron = (field: string, pattern: string | undefined) => {
    if (pattern === undefined) return;
    try {
      new Cron(pattern, { paused: true, mode: "5-part" }).stop();
    } catch (err) {
      errors.push({
        field,
        message: `not a valid cron schedule: ${(err as Error).message.replace(/^CronPattern: /, "")}`,
      });
    }
  };
  cron("spec.schedule", spec.schedule);
  cron("spec.validation.schedule", spec.validation?.schedule);
  if (spec.timeZone !== undefined && !isTimeZone(spec.timeZone)) {
    errors.push({ field: "spec.timeZone", message: `unknown time zone ${spec.timeZone}` });
  }
  // Masking patterns run on RE2 (./re2.ts), in linear time; one RE2 cannot run is refused here.
  spec.masking?.forEach((m, i) => {
    if (m.pattern === undefined) return;
    const refusal = re2Refusal(m.pattern);
    if (refusal !== undefined) errors.push({ field: `spec.masking[${i}].pattern`, message: refusal });
  });
  const keys = spec.target.sql.keyColumns;
  if (new Set(keys).size !== keys.length) {
    errors.push({ field: "spec.target.sql.keyColumns", message: "key columns must not repeat" });
  }
  for (const [field, dialect] of [
    ["spec.target.sql.dialect", spec.target.sql.dialect],
    ["spec.source.sql.dialect", spec.source.sql?.dialect],
  ] as const) {
    if (dialect !== undefined && dialect !== "postgres") {
      errors.push({ field, message: `the ${dialect} dialect is not supported yet; use postgres` });
    }
  }
  const fields = [...(spec.source.file?.fields ?? [])]
    .map((f, i) => ({ ...f, i }))
    .sort((a, b) => a.start - b.start);
  for (let k = 1; k < fields.length; k++) {
    const prev = fields[k - 1]!;
    const cur = fields[k]!;
    if (cur.start < prev.start + prev.length) {
      errors.push({
        field: `spec.source.file.fields[${cur.i}]`,
        message: `field ${cur.name} (from ${cur.start}) overlaps ${prev.name} (${prev.start}..${prev.start + prev.length - 1})`,
      });
    }
  }
  return errors;
}

export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}
