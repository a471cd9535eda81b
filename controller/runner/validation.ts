/**
 * Source-to-target validation: row count plus the order-independent checksum of
 * controller/validation/checksum.ts, computed inside PostgreSQL for tables (no rows move) and in
 * JavaScript for a file (its rows exist nowhere else).
 */

import type { Queryable } from "../connectors/postgres/catalog.ts";
import type { Column, Row, RowSchema, RowValue } from "../connectors/record.ts";
import {
  canonicalRowText,
  formatSum,
  rowHash,
  sameChecksum,
  type TableChecksum,
} from "../validation/checksum.ts";
import { postgresTableChecksum } from "../validation/postgres.ts";

export interface RunValidation {
  readonly result: "Passed" | "Failed";
  readonly sourceRows: number;
  readonly targetRows: number;
  readonly sourceChecksum: string;
  readonly targetChecksum: string;
  /** The columns compared. */
  readonly columns: readonly string[];
  /** Masked columns, left out of a SQL comparison: the source holds them unmasked. */
  readonly excludedColumns: readonly string[];
}

export function compareChecksums(
  source: TableChecksum,
  target: TableChecksum,
  columns: readonly Column[],
  excludedColumns: readonly string[],
): RunValidation {
  return {
    result: sameChecksum(source, target) ? "Passed" : "Failed",
    sourceRows: source.rowCount,
    targetRows: target.rowCount,
    sourceChecksum: source.sum,
    targetChecksum: target.sum,
    columns: columns.map((c) => c.name),
    excludedColumns,
  };
}

/** Checksums both tables over `columns`, each in its own database, at the same time. */
export async function validateTables(
  source: { db: Queryable; table: string },
  target: { db: Queryable; table: string },
  columns: readonly Column[],
  excludedColumns: readonly string[],
): Promise<RunValidation> {
  const [s, t] = await Promise.all([
    postgresTableChecksum(source.db, source.table, columns),
    postgresTableChecksum(target.db, target.table, columns),
  ]);
  return compareChecksums(s, t, columns, excludedColumns);
}

/**
 * The checksum of the rows a target holds after upserting a stream of rows into an empty table:
 * one row per key, the one given last, or with a version column the one with the greatest version
 * (the last of equal versions), as PostgresTarget's upsert decides. Holds one hash per key.
 */
export class ExpectedTargetChecksum {
  readonly #columns: readonly Column[];
  readonly #keys: readonly Column[];
  readonly #version: Column | undefined;
  readonly #rows = new Map<string, { hash: bigint; version: RowValue }>();

  constructor(schema: RowSchema, versionColumn?: string) {
    this.#columns = schema.columns;
    this.#keys = schema.keyColumns.map((k) => schema.columns.find((c) => c.name === k)!);
    this.#version = versionColumn ? schema.columns.find((c) => c.name === versionColumn) : undefined;
  }

  add(row: Row): void {
    const key = canonicalRowText(this.#keys, row);
    const version = this.#version ? (row[this.#version.name] ?? null) : null;
    const existing = this.#rows.get(key);
    if (existing && this.#version && compareVersions(this.#version, existing.version, version) > 0) return;
    this.#rows.set(key, { hash: rowHash(canonicalRowText(this.#columns, row)), version });
  }

  result(): TableChecksum {
    let sum = 0n;
    for (const { hash } of this.#rows.values()) sum += hash;
    return { rowCount: this.#rows.size, sum: formatSum(sum) };
  }
}

/** Orders two versions as PostgreSQL orders the column's values (NULL lowest, as NULLS LAST DESC keeps it). */
function compareVersions(column: Column, a: RowValue, b: RowValue): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  switch (column.type) {
    case "integer":
    case "boolean":
      return Number(a) - Number(b);
    case "bigint": {
      const x = BigInt(a as string);
      const y = BigInt(b as string);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    case "numeric":
      // As doubles: exact for the integers and short decimals versions are in practice.
      return Number(a) - Number(b);
    default:
      // Canonical timestamps and dates are fixed-width, so their text order is their time order.
      return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
  }
}
