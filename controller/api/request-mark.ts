import { createHash } from "node:crypto";

/** The longest request value the status keeps as it is; longer ones are kept as their digest. */
export const MAX_KEPT_REQUEST_LENGTH = 128;

/**
 * What the status records of a request annotation's value (run-now, approve-swap, rollback), so that
 * it can tell a new request from one handled. An annotation value may be far longer than the status
 * field that remembers it; recording it as it is would make the API server refuse every later status
 * write of the job. A long value is recorded as `sha256:<hex>` of itself, which still tells values
 * apart.
 */
export function requestMark(value: string): string {
  return value.length <= MAX_KEPT_REQUEST_LENGTH
    ? value
    : `sha256:${createHash("sha256").update(value).digest("hex")}`;
}
