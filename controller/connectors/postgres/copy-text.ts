/**
 * The pure text side of a PostgreSQL batch: the COPY text of rows and whether their keys are distinct.
 * Kept apart from target.ts (which holds the pool and the statements) so that a decode worker can
 * prepare a chunk's COPY text off the main thread with exactly the code the target uses.
 */

import type { Row, RowValue } from "../record.ts";

/** A column of a batch: its name (the column type plays no part in the text form). */
export interface NamedColumn {
  readonly name: string;
}

/**
 * Whether no two rows have the same key. Equal text is equal to PostgreSQL too; the reverse may fail
 * (a case-insensitive collation), and then the COPY meets the duplicate and the batch is upserted.
 */
export function distinctKeys(rows: readonly Row[], keyColumns: readonly string[]): boolean {
  const seen = new Set<RowValue | undefined>();
  const single = keyColumns.length === 1 ? keyColumns[0]! : undefined;
  for (const row of rows) {
    // NUL cannot occur in a row's text (record.ts), so it separates composite key parts unambiguously.
    const key = single === undefined ? keyColumns.map((k) => String(row[k])).join("\u0000") : row[single];
    if (seen.has(key)) return false;
    seen.add(key);
  }
  return true;
}

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_SPECIAL_ALL = /[\\\t\n\r]/g;
const COPY_ESCAPES: Readonly<Record<string, string>> = {
  "\\": "\\\\",
  "\t": "\\t",
  "\n": "\\n",
  "\r": "\\r",
};

/**
 * The rows in COPY's text format, in column order: tab between values, a newline after each row,
 * \N for NULL, and backslash, tab, newline and carriage return escaped with a backslash. Written
 * here because pg-copy-streams moves bytes and leaves the format to its caller.
 *
 * `plain[i]` may say that row i holds none of those four characters, so its values need no search
 * for them: true of a row decoded from JSON text without a backslash (JSON escapes control
 * characters, and everything a row's values are made of comes from that text; see decode-worker.ts).
 */
export function copyText(
  rows: readonly Row[],
  columns: readonly NamedColumn[],
  plain?: readonly boolean[],
): string {
  const names = columns.map((c) => c.name);
  const lines = new Array<string>(rows.length + 1);
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    const value = plain?.[i] === true ? plainValue : copyValue;
    let line = value(row[names[0]!]);
    for (let c = 1; c < names.length; c++) line += `\t${value(row[names[c]!])}`;
    lines[i] = line;
  }
  lines[rows.length] = "";
  return lines.join("\n");
}

function copyValue(value: RowValue | undefined): string {
  if (typeof value === "string") {
    return COPY_SPECIAL.test(value) ? value.replace(COPY_SPECIAL_ALL, (c) => COPY_ESCAPES[c]!) : value;
  }
  return plainValue(value);
}

function plainValue(value: RowValue | undefined): string {
  if (value === null || value === undefined) return "\\N";
  if (typeof value === "number") return String(value);
  if (typeof value === "boolean") return value ? "t" : "f";
  return value;
}

/** A batch's rows already in COPY text (UTF-8), made elsewhere (the stream's decode worker). */
export interface PreparedCopy {
  /** The columns of each line, in order. */
  readonly columns: readonly string[];
  readonly text: Uint8Array;
  /** Whether no two rows of the batch have the same key (distinctKeys). */
  readonly distinctKeys: boolean;
}
