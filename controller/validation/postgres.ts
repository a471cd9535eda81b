/**
 * The table checksum of ./checksum.ts computed inside PostgreSQL with one aggregate query, so a
 * table is validated without moving its rows. The hash sum accumulates in numeric (sum(bigint)
 * returns numeric) and is reduced modulo 2^64 at the end; summing the signed reading of each hash
 * gives the same residue as summing the unsigned one.
 */

import { quoteIdent, quoteTable } from "../api/identifiers.ts";
import { canonicalTextSql } from "../connectors/postgres/canonical.ts";
import { columnProblems, describeTable, type Queryable } from "../connectors/postgres/catalog.ts";
import type { Column } from "../connectors/record.ts";
import { formatSum, type TableChecksum } from "./checksum.ts";

const ALIAS = "checked";

/** The SQL row text (step 2 of the checksum definition) of the row aliased `checked`. */
export function rowTextSql(columns: readonly Column[], pgTypes: ReadonlyMap<string, string>): string {
  return columns
    .map((column) => {
      const pgType = pgTypes.get(column.name);
      if (pgType === undefined) throw new Error(`no catalog type for column ${column.name}`);
      let text = canonicalTextSql(column.name, column.type, pgType, ALIAS);
      if (column.type === "text" || column.type === "json") {
        text = `replace(replace(${text}, E'\\\\', E'\\\\\\\\'), E'\\t', E'\\\\t')`;
      }
      return `coalesce(${text}, E'\\\\N')`;
    })
    .join(" || E'\\t' || ");
}

/** The whole checksum statement for `table`; exported so its shape can be read and tested. */
export function checksumSql(
  table: string,
  columns: readonly Column[],
  pgTypes: ReadonlyMap<string, string>,
): string {
  const hash = `('x' || substr(md5(${rowTextSql(columns, pgTypes)}), 1, 16))::bit(64)::bigint`;
  const mod = "18446744073709551616"; // 2^64
  return `SELECT count(*)::text AS row_count,
       mod(mod(coalesce(sum(${hash}), 0), ${mod}) + ${mod}, ${mod})::text AS sum
  FROM ${quoteTable(table)} AS ${quoteIdent(ALIAS)}`;
}

/**
 * Computes the checksum of every row of `table` over `columns`. Throws when a column is missing or
 * of a type the row model cannot hold, and when the database is not UTF-8 (md5 hashes the bytes in
 * the server encoding, and the JS side hashes UTF-8).
 */
export async function postgresTableChecksum(
  db: Queryable,
  table: string,
  columns: readonly Column[],
): Promise<TableChecksum> {
  const encoding = await db.query<{ server_encoding: string }>("SHOW server_encoding");
  if (encoding.rows[0]?.server_encoding !== "UTF8") {
    throw new Error(`table checksums need a UTF8 database; this one is ${encoding.rows[0]?.server_encoding}`);
  }
  const info = await describeTable(db, table);
  if (!info) throw new Error(`table ${table} does not exist or is not visible`);
  const problems = columnProblems(table, info, columns);
  if (problems.length > 0) throw new Error(`cannot checksum ${table}: ${problems.join("; ")}`);
  const pgTypes = new Map([...info.columns.values()].map((c) => [c.name, c.pgType]));
  const result = await db.query<{ row_count: string; sum: string }>(checksumSql(table, columns, pgTypes));
  const row = result.rows[0]!;
  return { rowCount: Number(row.row_count), sum: formatSum(BigInt(row.sum)) };
}
