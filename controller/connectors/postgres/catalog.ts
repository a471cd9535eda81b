/**
 * What PostgreSQL says about a table, read from pg_catalog rather than information_schema: only the
 * catalog lists unique indexes that are not constraints (ON CONFLICT can use them) and resolves an
 * unqualified name through search_path exactly as the statements that follow will.
 */

import type pg from "pg";
import { quoteTable } from "../../api/identifiers.ts";
import type { Column, ColumnLimits, ColumnType } from "../record.ts";

/** Anything that runs a parameterised statement: a Pool, a PoolClient or a Client. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>>;
}

export interface TableColumnInfo {
  readonly name: string;
  /** pg_type.typname of the column's type; for a domain, of its base type (int4, timestamptz, …). */
  readonly pgType: string;
  readonly notNull: boolean;
  readonly hasDefault: boolean;
  readonly identity: boolean;
  /** GENERATED ALWAYS AS IDENTITY: inserts cannot set it. */
  readonly identityAlways: boolean;
  readonly generated: boolean;
  /**
   * The type modifier (pg_attribute.atttypmod, or a domain's typtypmod): -1 when the type has none.
   * varchar(n) holds n + 4, numeric(p,s) ((p << 16) | (s & 0x7ff)) + 4; see columnLimitsOf.
   */
  readonly typmod?: number;
}

export interface TableInfo {
  /** r = table, p = partitioned table, v = view, m = materialized view, f = foreign table. */
  readonly kind: string;
  readonly columns: ReadonlyMap<string, TableColumnInfo>;
  /** Column sets of every usable unique index (primary key included): valid, immediate, no predicate or expression. */
  readonly uniqueKeys: readonly (readonly string[])[];
  /** Whether rewrite rules apply to it (an INSERT obeys them, a COPY does not). */
  readonly hasRules?: boolean;
  /** Whether row-level security is enabled (PostgreSQL refuses COPY FROM then). */
  readonly rowSecurity?: boolean;
}

/** Reads a table's columns and unique keys; undefined when no such relation is visible. */
export async function describeTable(db: Queryable, table: string): Promise<TableInfo | undefined> {
  const relation = quoteTable(table);
  const rel = await db.query<{ kind: string; has_rules: boolean; row_security: boolean }>(
    `SELECT c.relkind::text AS kind, c.relhasrules AS has_rules, c.relrowsecurity AS row_security
       FROM pg_class c WHERE c.oid = to_regclass($1)`,
    [relation],
  );
  const kind = rel.rows[0]?.kind;
  if (kind === undefined) return undefined;
  const { has_rules: hasRules, row_security: rowSecurity } = rel.rows[0]!;
  const columns = await db.query<{
    name: string;
    pg_type: string;
    not_null: boolean;
    has_default: boolean;
    identity: boolean;
    identity_always: boolean;
    generated: boolean;
    typmod: number;
  }>(
    `SELECT a.attname::text AS name,
            coalesce(base.typname, t.typname)::text AS pg_type,
            a.attnotnull AS not_null,
            a.atthasdef AS has_default,
            a.attidentity <> '' AS identity,
            a.attidentity = 'a' AS identity_always,
            a.attgenerated <> '' AS generated,
            CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod
       FROM pg_attribute a
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_type base ON t.typtype = 'd' AND base.oid = t.typbasetype
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [relation],
  );
  const unique = await db.query<{ columns: string[] }>(
    `SELECT array(SELECT a.attname::text
                    FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE k.ord <= i.indnkeyatts
                   ORDER BY k.ord) AS columns
       FROM pg_index i
      WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid AND i.indimmediate
        AND i.indpred IS NULL AND i.indexprs IS NULL
      ORDER BY i.indisprimary DESC, i.indexrelid`,
    [relation],
  );
  return {
    kind,
    columns: new Map(
      columns.rows.map((c) => [
        c.name,
        {
          name: c.name,
          pgType: c.pg_type,
          notNull: c.not_null,
          hasDefault: c.has_default,
          identity: c.identity,
          identityAlways: c.identity_always,
          generated: c.generated,
          typmod: c.typmod,
        },
      ]),
    ),
    uniqueKeys: unique.rows.map((u) => u.columns),
    hasRules,
    rowSecurity,
  };
}

/**
 * The PostgreSQL types each row-model type may live in. Kept narrow so that a value written and read
 * back has the same canonical form: char(n) pads, floats round, so neither is admitted.
 */
export const COMPATIBLE_PG_TYPES: Readonly<Record<ColumnType, readonly string[]>> = {
  text: ["text", "varchar", "citext"],
  integer: ["int2", "int4", "int8"],
  bigint: ["int8"],
  numeric: ["numeric"],
  boolean: ["bool"],
  timestamp: ["timestamptz", "timestamp"],
  date: ["date"],
  json: ["jsonb", "json"],
};

/**
 * The SQL type name used to cast a parameter array for a column, chosen from a fixed list by the
 * column's catalog type, so no catalog or spec text is ever spliced into a statement.
 */
const PARAMETER_TYPES: Readonly<Record<string, string>> = {
  text: "text",
  varchar: "text",
  citext: "text",
  int2: "int2",
  int4: "int4",
  int8: "int8",
  numeric: "numeric",
  bool: "bool",
  timestamptz: "timestamptz",
  timestamp: "timestamp",
  date: "date",
  json: "json",
  jsonb: "jsonb",
};

export function parameterType(pgType: string): string {
  const type = PARAMETER_TYPES[pgType];
  if (type === undefined) throw new Error(`no parameter type for PostgreSQL type ${pgType}`);
  return type;
}

/**
 * Problems (as sentences) with storing `columns` in `info`: missing columns, incompatible types,
 * generated columns. Empty when every column fits.
 */
export function columnProblems(table: string, info: TableInfo, columns: readonly Column[]): string[] {
  const problems: string[] = [];
  const missing = columns.filter((c) => !info.columns.has(c.name)).map((c) => c.name);
  if (missing.length > 0)
    problems.push(`table ${table} has no column${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`);
  for (const column of columns) {
    const actual = info.columns.get(column.name);
    if (!actual) continue;
    const allowed = COMPATIBLE_PG_TYPES[column.type];
    if (!allowed.includes(actual.pgType)) {
      problems.push(
        `column ${column.name} is ${actual.pgType} in ${table}, which cannot hold ${column.type} (use ${allowed.join(" or ")})`,
      );
    }
  }
  return problems;
}

/** PostgreSQL's VARHDRSZ, which a varchar's or numeric's type modifier counts in. */
const VARHDRSZ = 4;

/**
 * The bounds a column's SQL type puts on its values beyond the row-model type, from the catalog:
 * smallint's range, varchar(n)'s length, numeric(p,s)'s precision and scale. Undefined for a type
 * with none the row model does not already keep (int4, int8, text, unconstrained numeric, …), and
 * for a numeric whose scale is negative or beyond its precision (PostgreSQL 15's forms), which the
 * target alone judges. What the type cannot say (CHECK constraints, a domain's own checks, unique
 * indexes, triggers) only the target can judge.
 */
export function columnLimitsOf(column: TableColumnInfo): ColumnLimits | undefined {
  const typmod = column.typmod ?? -1;
  switch (column.pgType) {
    case "int2":
      return { sqlType: "smallint", integerRange: [-32768, 32767] };
    case "varchar":
      if (typmod < VARHDRSZ) return undefined;
      return { sqlType: `character varying(${typmod - VARHDRSZ})`, maxLength: typmod - VARHDRSZ };
    case "numeric": {
      if (typmod < VARHDRSZ) return undefined;
      const precision = ((typmod - VARHDRSZ) >> 16) & 0xffff;
      // The scale is an 11-bit two's complement number (PostgreSQL 15 allows negative scales).
      const raw = (typmod - VARHDRSZ) & 0x7ff;
      const scale = raw >= 0x400 ? raw - 0x800 : raw;
      if (scale < 0 || scale > precision) return undefined;
      return { sqlType: `numeric(${precision},${scale})`, numeric: { precision, scale } };
    }
    default:
      return undefined;
  }
}

export function sameColumnSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((name) => b.includes(name));
}
