/**
 * Names of the tables and runs of the shadow-table fallback, derived from the target's name alone so
 * that every replica, every retry and the command line compute the same ones.
 *
 * A derived table name keeps the target's schema and appends a suffix to the table part. PostgreSQL
 * silently truncates identifiers longer than 63 bytes, which would make two long names collide (or
 * cut a suffix off), so a table part that would not fit is shortened and a hash of the full name is
 * inserted: `<prefix>_<8 hex of sha256(table)><suffix>`. Identifiers here are ASCII (SQL_IDENTIFIER),
 * so characters and bytes agree.
 */

import { createHash } from "node:crypto";
import { quoteTable } from "../api/identifiers.ts";

/** PostgreSQL's NAMEDATALEN - 1. */
export const MAX_IDENTIFIER_BYTES = 63;
export const SHADOW_SUFFIX = "__shadow";
export const RETIRED_INFIX = "__retired_";

const RETIRED_STAMP = /__retired_(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/;

function shortHash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 8);
}

function splitTable(ref: string): { schema: string | undefined; table: string } {
  quoteTable(ref); // validates
  const dot = ref.indexOf(".");
  return dot < 0
    ? { schema: undefined, table: ref }
    : { schema: ref.slice(0, dot), table: ref.slice(dot + 1) };
}

/** `table + suffix`, shortened with a hash of `table` when the result would exceed 63 bytes. */
export function withSuffix(table: string, suffix: string): string {
  if (table.length + suffix.length <= MAX_IDENTIFIER_BYTES) return `${table}${suffix}`;
  const hash = `_${shortHash(table)}`;
  const keep = MAX_IDENTIFIER_BYTES - suffix.length - hash.length;
  if (keep < 1) throw new Error(`suffix ${suffix} leaves no room for a table name`);
  return `${table.slice(0, keep)}${hash}${suffix}`;
}

function derived(target: string, suffix: string): string {
  const { schema, table } = splitTable(target);
  const name = withSuffix(table, suffix);
  return schema === undefined ? name : `${schema}.${name}`;
}

/** `<table>__shadow`, in the target's schema: the table a job writes to in shadow mode. */
export function shadowTableName(target: string): string {
  return derived(target, SHADOW_SUFFIX);
}

/** `YYYYMMDDhhmmss` in UTC. */
function stamp(at: Date): string {
  return at.toISOString().replace(/[-:T]/g, "").slice(0, 14);
}

/**
 * `<table>__retired_<YYYYMMDDhhmmss UTC>`, in the target's schema: the name the target is renamed to
 * by a swap. The time stays the last part even when the name is shortened, so retiredAtOf() can
 * read it back and the retired table's age needs no separate record.
 */
export function retiredTableName(target: string, at: Date): string {
  return derived(target, `${RETIRED_INFIX}${stamp(at)}`);
}

/** The time encoded in a retired table's name; undefined for a name retiredTableName did not make. */
export function retiredAtOf(retired: string): Date | undefined {
  const m = RETIRED_STAMP.exec(retired);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m;
  const at = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`);
  return Number.isNaN(at.getTime()) ? undefined : at;
}

/** Whether `retired` is what retiredTableName gives for `target` at the time its name encodes. */
export function isRetiredTableOf(retired: string, target: string): boolean {
  const at = retiredAtOf(retired);
  return at !== undefined && retiredTableName(target, at) === retired;
}

/**
 * Name of a ShadowFill SyncRun: `<job>-sf<8 hex of sha256(seed)>`. The seed is what started the
 * attempt (the validation run that tipped the job into shadow mode, or the failed attempt being
 * retried), so a reconcile repeated before the run is observed creates no second run (409).
 */
export function fillRunName(job: string, seed: string): string {
  const suffix = `-sf${shortHash(seed)}`;
  // A cut that ends in '.' or '-' would leave an invalid DNS-1123 name.
  return `${job.slice(0, 253 - suffix.length).replace(/[.-]+$/, "")}${suffix}`;
}
