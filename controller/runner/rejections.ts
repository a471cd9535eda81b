import type { RefusedRow } from "../connectors/postgres/target.ts";
import type { Row } from "../connectors/record.ts";

/**
 * A source row or file line that could not be read into the row model. It says where (line number,
 * or the row's key with masking applied) and why, never the value: values may be personal data.
 */
export interface RunRejection {
  /** 1-based line of a file source. */
  readonly lineNumber?: number;
  /** Key of a SQL source row, masked as the target would store it. */
  readonly key?: Row;
  /** Where a record was read, when neither a line nor a key says it: `topic/partition@offset`. */
  readonly position?: string;
  readonly column?: string;
  /** CamelCase code, e.g. TooShort, NotANumber, MissingKey. */
  readonly reason: string;
  readonly message: string;
}

/** How many rejections a result lists; the count covers all of them. */
export const MAX_LISTED_REJECTIONS = 100;

/** Counts every rejection and keeps the first MAX_LISTED_REJECTIONS, so a file of garbage stays small. */
export class RejectionLog {
  #count = 0;
  readonly #listed: RunRejection[] = [];
  readonly #limit: number;

  constructor(limit = MAX_LISTED_REJECTIONS) {
    this.#limit = limit;
  }

  add(rejection: RunRejection): void {
    this.#count++;
    if (this.#listed.length < this.#limit) this.#listed.push(rejection);
  }

  get count(): number {
    return this.#count;
  }

  get listed(): readonly RunRejection[] {
    return this.#listed;
  }

  /** A sentence for status: the count and the first `shown` rejections with where and why. */
  summary(shown = 10): string {
    if (this.#count === 0) return "";
    const items = this.#listed.slice(0, shown).map(describeRejection);
    const more = this.#count > items.length ? `, and ${this.#count - items.length} more` : "";
    return `${this.#count} rejected: ${items.join("; ")}${more}`;
  }
}

export function describeRejection(r: RunRejection): string {
  const where =
    r.lineNumber !== undefined
      ? `line ${r.lineNumber}`
      : r.key
        ? `row ${Object.entries(r.key)
            .map(([k, v]) => `${k}=${String(v)}`)
            .join(",")}`
        : r.position !== undefined
          ? `record ${r.position}`
          : "row";
  return `${where} (${r.column ? `${r.column}: ` : ""}${r.reason})`;
}

/**
 * Lists rows a target refused (PostgresTarget upsertSettingAside) among a run's rejections, by their
 * key as written (masked), with the database's reason.
 */
export function listRefused(
  log: RejectionLog,
  table: string,
  keyColumns: readonly string[],
  rows: readonly Row[],
  refused: readonly RefusedRow[],
): void {
  for (const r of refused) {
    const row = rows[r.index]!;
    log.add({
      key: Object.fromEntries(keyColumns.map((k) => [k, row[k] ?? null])),
      ...(r.refusal.column !== undefined ? { column: r.refusal.column } : {}),
      reason: r.refusal.reason,
      message: `${table} refused the row: ${r.refusal.message}`,
    });
  }
}
