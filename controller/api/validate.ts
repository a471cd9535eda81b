import type { z } from "zod";
import { SyncJob } from "./syncjob.ts";
import { SyncPolicy } from "./syncpolicy.ts";
import { SyncRun } from "./syncrun.ts";

/** One problem in a manifest: the field, in the API server's notation, and the reason. */
export interface FieldError {
  field: string;
  message: string;
}

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

/** `["spec", "fields", 1, "name"]` → `spec.fields[1].name`, as the API server writes field paths. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || "(root)";
}

function validateWith<S extends z.ZodType>(schema: S, manifest: unknown): Validation<z.output<S>> {
  const result = schema.safeParse(manifest);
  if (result.success) return { ok: true, value: result.data };
  const errors: FieldError[] = [];
  for (const issue of result.error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys)
        errors.push({ field: fieldPath([...issue.path, key]), message: "unknown field" });
    } else {
      errors.push({ field: fieldPath(issue.path), message: issue.message });
    }
  }
  return { ok: false, errors };
}

export const validateSyncJob = (manifest: unknown) => validateWith(SyncJob, manifest);
export const validateSyncRun = (manifest: unknown) => validateWith(SyncRun, manifest);
export const validateSyncPolicy = (manifest: unknown) => validateWith(SyncPolicy, manifest);

/** Validates any syncgov manifest by its kind. */
export function validateManifest(manifest: unknown): Validation<unknown> {
  const kind = (manifest as { kind?: unknown } | null)?.kind;
  switch (kind) {
    case "SyncJob":
      return validateSyncJob(manifest);
    case "SyncRun":
      return validateSyncRun(manifest);
    case "SyncPolicy":
      return validateSyncPolicy(manifest);
    default:
      return { ok: false, errors: [{ field: "kind", message: "must be SyncJob, SyncRun or SyncPolicy" }] };
  }
}

/** "spec.target.sql.table: must be ...; spec.mode: ..." — for conditions, events and CLI output. */
export function describeErrors(errors: FieldError[]): string {
  return errors.map((e) => `${e.field}: ${e.message}`).join("; ");
}
