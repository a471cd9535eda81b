/**
 * An order-independent checksum of a set of rows, computed the same way in JavaScript (here) and in
 * PostgreSQL (./postgres.ts), so a source and a target can be compared wherever their rows live.
 *
 * Definition (a change to any line breaks comparisons with recorded checksums):
 *
 * 1. Field text. Each value in its canonical row-model form (controller/connectors/record.ts):
 *    - NULL is the two characters `\N`;
 *    - text and json (json as jsonb prints it, but numbers without trailing fractional zeros): the
 *      value with every `\` doubled and every TAB written as `\t`
 *      (so no field contains a raw TAB and the text `\N` renders as `\\N`, unlike NULL);
 *    - integer, bigint, numeric: decimal digits as the row model defines them (numeric without
 *      trailing fractional zeros or exponent, e.g. `1.5`, `-0.25`, `100`, `NaN`);
 *    - boolean: `true` or `false`;
 *    - timestamp: `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, always six fractional digits;
 *    - date: `YYYY-MM-DD`.
 * 2. Row text. The field texts of the columns, in the order the caller lists them, joined by one TAB.
 *    Both sides must be given the same column list.
 * 3. Row hash. The MD5 digest of the row text's UTF-8 bytes; its first 8 bytes read as an unsigned
 *    big-endian 64-bit integer (in SQL: `('x' || substr(md5(row_text), 1, 16))::bit(64)`).
 * 4. Table checksum. The row count, and the sum of the row hashes modulo 2^64 written as 16 lowercase
 *    hex digits. A sum commutes, so row order does not matter; duplicate rows count twice.
 *
 * MD5 is used as a fingerprint, not for security: it is what PostgreSQL has built in.
 */

import { createHash } from "node:crypto";
import type { Column, Row, RowValue } from "../connectors/record.ts";

export interface TableChecksum {
  readonly rowCount: number;
  /** Sum of the row hashes modulo 2^64, as 16 lowercase hex digits. */
  readonly sum: string;
}

export const NULL_FIELD = "\\N";
export const FIELD_SEPARATOR = "\t";
const MOD_64 = 1n << 64n;

/** Doubles backslashes and writes TAB as `\t`: the escaping of text and json fields. */
export function escapeField(text: string): string {
  if (!text.includes("\\") && !text.includes("\t")) return text;
  return text.replaceAll("\\", "\\\\").replaceAll("\t", "\\t");
}

/** Field text of one canonical value (step 1 above). */
export function fieldText(column: Column, value: RowValue | undefined): string {
  if (value === null || value === undefined) return NULL_FIELD;
  switch (column.type) {
    case "text":
    case "json":
      return escapeField(String(value));
    case "boolean":
      return value ? "true" : "false";
    default:
      return String(value);
  }
}

/** Row text (step 2). */
export function canonicalRowText(columns: readonly Column[], row: Row): string {
  let text = "";
  for (let i = 0; i < columns.length; i++) {
    const column = columns[i]!;
    if (i > 0) text += FIELD_SEPARATOR;
    text += fieldText(column, row[column.name]);
  }
  return text;
}

/** Row hash (step 3) as an unsigned 64-bit integer. */
export function rowHash(rowText: string): bigint {
  return createHash("md5").update(rowText, "utf8").digest().readBigUInt64BE(0);
}

export function formatSum(sum: bigint): string {
  return (((sum % MOD_64) + MOD_64) % MOD_64).toString(16).padStart(16, "0");
}

/** Accumulates a table checksum (step 4) over rows fed in any order, in as many calls as needed. */
export class ChecksumAccumulator {
  private readonly columns: readonly Column[];
  private count = 0;
  private total = 0n;

  constructor(columns: readonly Column[]) {
    this.columns = columns;
  }

  add(row: Row): void {
    this.total = (this.total + rowHash(canonicalRowText(this.columns, row))) % MOD_64;
    this.count++;
  }

  addAll(rows: Iterable<Row>): void {
    for (const row of rows) this.add(row);
  }

  result(): TableChecksum {
    return { rowCount: this.count, sum: formatSum(this.total) };
  }
}

export function checksumRows(columns: readonly Column[], rows: Iterable<Row>): TableChecksum {
  const accumulator = new ChecksumAccumulator(columns);
  accumulator.addAll(rows);
  return accumulator.result();
}

export function sameChecksum(a: TableChecksum, b: TableChecksum): boolean {
  return a.rowCount === b.rowCount && a.sum === b.sum;
}
