/**
 * What a run moves, worked out from the job spec and the source's own description of its rows:
 * the columns (a SQL source's table columns, or a file's field map), the row schema the source is
 * read with, and the row schema the target is written with (masked columns become text).
 *
 * The source decides the columns: every column of the source table is copied, so a target that
 * lacks one fails the schema check before anything is written, instead of silently dropping data.
 */

import type { SyncJobSpec } from "../api/syncjob.ts";
import { columnLimitsOf, type TableInfo } from "../connectors/postgres/catalog.ts";
import { SourceSchemaError } from "../connectors/postgres/source.ts";
import { type Column, type ColumnType, defineRowSchema, type RowSchema } from "../connectors/record.ts";
import { MaskingRuleError, maskedColumns, type RowMasker } from "../masking/masking.ts";

/**
 * The row-model type of each PostgreSQL type the runner copies; the reverse of
 * COMPATIBLE_PG_TYPES, choosing the type that holds every value exactly.
 */
const COLUMN_TYPE_OF_PG: Readonly<Record<string, ColumnType>> = {
  text: "text",
  varchar: "text",
  citext: "text",
  int2: "integer",
  int4: "integer",
  int8: "bigint",
  numeric: "numeric",
  bool: "boolean",
  timestamptz: "timestamp",
  timestamp: "timestamp",
  date: "date",
  json: "json",
  jsonb: "json",
};

/**
 * The columns of a source table in the row model, in table order; key columns are not nullable.
 * Throws a SourceSchemaError naming every column whose type the row model cannot hold exactly.
 */
export function sourceColumnsOf(table: string, info: TableInfo, keyColumns: readonly string[]): Column[] {
  const problems: string[] = [];
  const columns: Column[] = [];
  for (const column of info.columns.values()) {
    const type = COLUMN_TYPE_OF_PG[column.pgType];
    if (type === undefined) {
      problems.push(
        `column ${column.name} is ${column.pgType}, which syncgov cannot copy exactly (supported: ${Object.keys(COLUMN_TYPE_OF_PG).join(", ")}); sync from a view that casts it`,
      );
      continue;
    }
    columns.push({ name: column.name, type, nullable: !column.notNull && !keyColumns.includes(column.name) });
  }
  for (const key of keyColumns) {
    if (!info.columns.has(key)) problems.push(`key column ${key} is not a column of the table`);
  }
  if (problems.length > 0) throw new SourceSchemaError(table, problems);
  return columns;
}

export interface SyncPlan {
  /** The columns as the source yields them. */
  readonly sourceSchema: RowSchema;
  /** The same columns as the target stores them: masked columns are text; keyed by the target's keys. */
  readonly targetSchema: RowSchema;
  /** Source columns that are not masked: what a source and its target can be compared on in SQL. */
  readonly comparableColumns: readonly Column[];
  readonly masker: RowMasker;
}

/**
 * Builds the two row schemas of a run. `sourceKeys` orders a SQL snapshot (the source's keyColumns,
 * default the target's). Throws MaskingRuleError when a rule names a column the source lacks (a
 * typo would otherwise leave the column unmasked), and a SourceSchemaError when a target key or the
 * version column is not a source column.
 */
export function planSync(
  sourceName: string,
  columns: readonly Column[],
  spec: SyncJobSpec,
  masker: RowMasker,
  sourceKeys: readonly string[] = spec.target.sql.keyColumns,
): SyncPlan {
  const names = new Set(columns.map((c) => c.name));
  for (const column of masker.maskedColumns) {
    if (!names.has(column)) {
      throw new MaskingRuleError(
        `masking rule for column ${column}: ${sourceName} has no such column, so nothing would be masked`,
      );
    }
  }
  const targetKeys = spec.target.sql.keyColumns;
  const problems = [...targetKeys, ...(spec.target.sql.versionColumn ? [spec.target.sql.versionColumn] : [])]
    .filter((name) => !names.has(name))
    .map((name) => `column ${name}, which the target spec names, is not a column of the source`);
  if (problems.length > 0) throw new SourceSchemaError(sourceName, problems);

  const version = spec.target.sql.versionColumn;
  const nonNull = new Set([...targetKeys, ...sourceKeys]);
  const sourceColumns = columns.map((c) => (nonNull.has(c.name) ? { ...c, nullable: false } : c));
  // The version guard needs a non-null version; a NULL read from the source is refused by the target.
  const targetColumns = maskedColumns(sourceColumns, masker).map((c) =>
    c.name === version || nonNull.has(c.name) ? { ...c, nullable: false } : c,
  );
  return {
    sourceSchema: defineRowSchema(sourceColumns, sourceKeys),
    targetSchema: defineRowSchema(targetColumns, targetKeys),
    comparableColumns: sourceColumns.filter((c) => !masker.maskedColumns.has(c.name)),
    masker,
  };
}

/**
 * The target schema with the bounds the target table's column types put on values (smallint's
 * range, varchar(n)'s length, numeric(p,s)'s precision; catalog.ts columnLimitsOf), so that a value
 * outside them is rejected as it is read, naming the column, instead of failing the write of a whole
 * batch. Masked columns get none: what is written there is the mask's output, not the value read.
 */
export function withTargetLimits(
  schema: RowSchema,
  target: TableInfo,
  masked: ReadonlySet<string>,
): RowSchema {
  const columns = schema.columns.map((c): Column => {
    const { limits: _, ...column } = c;
    const info = target.columns.get(c.name);
    const limits = info && !masked.has(c.name) ? columnLimitsOf(info) : undefined;
    return limits ? { ...column, limits } : column;
  });
  return defineRowSchema(columns, schema.keyColumns);
}
