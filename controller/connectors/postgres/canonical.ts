/**
 * SQL expressions that render a column in the canonical text form of controller/connectors/record.ts,
 * inside PostgreSQL. Sources select through them (so rows arrive canonical whatever the session's
 * DateStyle or TimeZone), and the validation checksum hashes them.
 */

import { quoteIdent } from "../../api/identifiers.ts";
import type { ColumnType, RowValue } from "../record.ts";

const TIMESTAMP_FORMAT = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/**
 * jsonb prints numbers with the scale they were written with (2.50 stays 2.50); the row model's
 * numbers have no trailing fractional zeros. The pattern matches either a whole JSON string (kept as
 * is: group 1) or a number, split into its integer part (group 2) and its fraction up to the last
 * non-zero digit (group 3), so `\1\2\3` rewrites numbers only. jsonb never prints exponents.
 */
const JSON_NUMBER_PATTERN = sqlEString(String.raw`("(?:[^"\\]|\\.)*")|(-?\d+)(\.\d*[1-9])?\.?0*`);

const JSON_NUMBER_REPLACEMENT = sqlEString(String.raw`\1\2\3`);

/** A PostgreSQL escape-string literal of `text`, whatever standard_conforming_strings is. */
function sqlEString(text: string): string {
  return `E'${text.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

/**
 * The canonical text of column `name` (of row-model type `type`, stored as catalog type `pgType`),
 * NULL when the value is NULL. ±infinity timestamps and dates render as 'infinity'/'-infinity',
 * which the row model rejects, so such rows are set aside rather than silently changed.
 */
export function canonicalTextSql(name: string, type: ColumnType, pgType: string, qualifier?: string): string {
  const column = qualifier ? `${quoteIdent(qualifier)}.${quoteIdent(name)}` : quoteIdent(name);
  switch (type) {
    case "text":
    case "integer":
    case "bigint":
    case "boolean":
      // int::text and bool::text ('true'/'false') do not depend on any session setting.
      return `${column}::text`;
    case "numeric":
      return `trim_scale(${column})::text`;
    case "timestamp": {
      const utc = pgType === "timestamptz" ? `(${column} AT TIME ZONE 'UTC')` : column;
      return `CASE WHEN isfinite(${column}) THEN to_char(${utc}, ${TIMESTAMP_FORMAT}) ELSE ${column}::text END`;
    }
    case "date":
      return `CASE WHEN isfinite(${column}) THEN to_char(${column}, 'YYYY-MM-DD') ELSE ${column}::text END`;
    case "json":
      return `regexp_replace(${column}::jsonb::text, ${JSON_NUMBER_PATTERN}, ${JSON_NUMBER_REPLACEMENT}, 'g')`;
  }
}

/** Turns the canonical text selected by canonicalTextSql back into a row value. */
export function fromCanonicalText(type: ColumnType, text: string | null): RowValue {
  if (text === null) return null;
  switch (type) {
    case "integer":
      return Number(text);
    case "boolean":
      return text === "true";
    default:
      return text;
  }
}
