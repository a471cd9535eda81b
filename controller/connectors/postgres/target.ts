/**
 * A PostgreSQL table as a sync target: batched, idempotent upserts by key columns, so a run repeated
 * after a crash converges to the same rows.
 *
 * The upsert of a batch is one statement, `INSERT … SELECT … FROM unnest($1::type[], …) ON CONFLICT
 * (keys) DO UPDATE`: one array parameter per column, so the statement text depends only on the table shape
 * (never on the values) and a batch of any size fits in a handful of parameters. Measured on 10k
 * rows in 1k-row batches it was about twice as fast as multi-row VALUES (whose 7000-parameter
 * statements cost more to parse and bind) and as fast as COPY into a staging table followed by
 * INSERT … SELECT, which needs a dedicated connection, a transaction and a temporary table.
 *
 * A batch is first tried as a plain insert, without ON CONFLICT: the speculative insertion ON CONFLICT
 * needs makes PostgreSQL work about 1.6x as hard per row as a plain INSERT, and COPY, which inserts a
 * page of rows at a time and logs them together, about 0.6x as hard as that INSERT (all its processes,
 * 2000-row batches of six columns into a table with a primary key; test/bench/sync.ts). A batch whose
 * keys are distinct goes by COPY (a statement of its own, on a connection taken for it); one holding
 * a key twice by the plain INSERT of the collapsed rows (below). A batch of new keys — a first load, a
 * backfill, an append-mostly stream — is then written in one plain statement; a batch that meets an
 * existing key fails as a whole with unique_violation (a statement is atomic) and is written again as
 * the upsert. After such a failure the next batches go straight to the upsert, for a count that
 * doubles with each failed try (up to MAX_UPSERT_STREAK), so an update-heavy sync pays one failed try
 * per 64 batches at most; a try that succeeds resets the count. The failed try leaves a duplicate-key
 * ERROR line in the server's log. COPY obeys no rewrite rules and is refused under row-level security,
 * so a table with either never gets it.
 *
 * Rows with the same key within a batch collapse to one before the upsert (PostgreSQL refuses to
 * update a row twice in one statement): the one with the highest version when a version column is
 * set, otherwise — or on a tie — the one given last. PostgreSQL does the collapsing (DISTINCT ON), so
 * key equality and version order follow the column types and collations.
 */

import { finished } from "node:stream/promises";
import { type Counter, type Histogram, metrics } from "@opentelemetry/api";
import type pg from "pg";
import copyStreams from "pg-copy-streams";
import { quoteIdent, quoteTable } from "../../api/identifiers.ts";
import { defineRowSchema, type Row, type RowSchema } from "../record.ts";
import { columnProblems, describeTable, parameterType, sameColumnSet, type TableInfo } from "./catalog.ts";
import { copyText, distinctKeys, type PreparedCopy } from "./copy-text.ts";
import { bisectWrite, type RowRefusal, rowRefusalOf } from "./row-errors.ts";

export interface PostgresTargetOptions {
  /** `table` or `schema.table`. */
  readonly table: string;
  /** The columns written and the key the upsert matches on; the table needs a unique index on exactly these keys. */
  readonly schema: RowSchema;
  /**
   * An ordering column (e.g. a source version or change timestamp). When set, an existing row is
   * only overwritten by a row whose version is greater or equal (`existing.v <= EXCLUDED.v`), so an
   * older value replayed late never overwrites a newer one. Must be one of the columns, not nullable.
   */
  readonly versionColumn?: string;
  /** Rows per statement; default 1000. */
  readonly batchSize?: number;
}

/** A row of an upsertSettingAside() the target refused, by its index in the rows given. */
export interface RefusedRow {
  readonly index: number;
  readonly refusal: RowRefusal;
}

export interface UpsertResult {
  /** Rows given. */
  readonly received: number;
  /** Rows inserted or updated; less than received when keys repeat or the version guard kept newer rows. */
  readonly written: number;
}

/** The target table cannot take the rows: the message lists every problem found. */
export class TargetSchemaError extends Error {
  override readonly name = "TargetSchemaError";
  readonly problems: readonly string[];

  constructor(table: string, problems: readonly string[]) {
    super(`target table ${table} does not fit the sync: ${problems.join("; ")}`);
    this.problems = problems;
  }
}

/** Column name plus the SQL type its parameter array is cast to. */
export interface TypedColumn {
  readonly name: string;
  readonly parameterType: string;
}

/** Quoted name used for the input position in DISTINCT ON; a space makes it unlike any column name. */
const ORDINAL = `"syncgov ordinal"`;
const EXISTING = "existing";
const INCOMING = "incoming";

/** The batched upsert statement; parameters $1…$n are one array per column, in column order. */
export function upsertSql(
  table: string,
  columns: readonly TypedColumn[],
  keyColumns: readonly string[],
  versionColumn?: string,
): string {
  return `${insertSql(table, columns, keyColumns, versionColumn)}\n${onConflictSql(columns, keyColumns, versionColumn)}`;
}

/**
 * The batch as a plain INSERT of the collapsed rows (one per key, chosen as the upsert chooses), which
 * fails with unique_violation when a key already exists; parameters as upsertSql's.
 */
export function insertSql(
  table: string,
  columns: readonly TypedColumn[],
  keyColumns: readonly string[],
  versionColumn?: string,
): string {
  const names = columns.map((c) => quoteIdent(c.name));
  const arrays = columns.map((c, i) => `$${i + 1}::${c.parameterType}[]`);
  const keys = keyColumns.map(quoteIdent);
  const incoming = (name: string) => `${INCOMING}.${name}`;
  const order = [
    ...keys.map(incoming),
    ...(versionColumn ? [`${incoming(quoteIdent(versionColumn))} DESC NULLS LAST`] : []),
    `${incoming(ORDINAL)} DESC`,
  ];
  return `INSERT INTO ${quoteTable(table)} AS ${EXISTING} (${names.join(", ")})
SELECT DISTINCT ON (${keys.map(incoming).join(", ")}) ${names.map(incoming).join(", ")}
  FROM unnest(${arrays.join(", ")}) WITH ORDINALITY AS ${INCOMING}(${names.join(", ")}, ${ORDINAL})
 ORDER BY ${order.join(", ")}`;
}

function onConflictSql(
  columns: readonly TypedColumn[],
  keyColumns: readonly string[],
  versionColumn: string | undefined,
): string {
  const keys = keyColumns.map(quoteIdent);
  const updates = columns.filter((c) => !keyColumns.includes(c.name)).map((c) => quoteIdent(c.name));
  const onConflict =
    updates.length === 0
      ? "DO NOTHING"
      : `DO UPDATE SET ${updates.map((n) => `${n} = EXCLUDED.${n}`).join(", ")}` +
        (versionColumn
          ? ` WHERE ${EXISTING}.${quoteIdent(versionColumn)} IS NULL OR ${EXISTING}.${quoteIdent(versionColumn)} <= EXCLUDED.${quoteIdent(versionColumn)}`
          : "");
  return `ON CONFLICT (${keys.join(", ")}) ${onConflict}`;
}

/** The checked table's parameter types and the statements of a batch. */
interface CheckedTable {
  readonly columns: readonly TypedColumn[];
  /** No rewrite rules and no row-level security: COPY does what an INSERT would. */
  readonly copyable: boolean;
  readonly statements: {
    readonly copy: string;
    readonly insert: string;
    readonly upsert: string;
  };
}

/** Batches written straight as upserts after a failed plain insert: doubles per failure, up to this. */
export const MAX_UPSERT_STREAK = 64;

/** How a target's batches were written so far (see the module comment). */
export interface WriteCounts {
  /** Batches written by COPY. */
  readonly copied: number;
  /** Batches written by a plain INSERT. */
  readonly inserted: number;
  /** Batches written by the upsert, after a failed insert or straight away. */
  readonly upserted: number;
  /** Plain inserts or copies that met an existing key and were written again as upserts. */
  readonly insertsRetried: number;
}

/** The COPY statement of a batch of distinct keys, in text format. */
export function copySql(table: string, columns: readonly TypedColumn[]): string {
  return `COPY ${quoteTable(table)} (${columns.map((c) => quoteIdent(c.name)).join(", ")}) FROM STDIN`;
}

/**
 * Deletes by key; parameters are one array per key column (then the version array when guarded).
 * With a version column, a key whose version is given deletes only a row whose version is not newer.
 */
export function deleteSql(table: string, keys: readonly TypedColumn[], version?: TypedColumn): string {
  const all = version ? [...keys, version] : keys;
  const names = all.map((c) => quoteIdent(c.name));
  const arrays = all.map((c, i) => `$${i + 1}::${c.parameterType}[]`);
  const match = keys.map((k) => `${EXISTING}.${quoteIdent(k.name)} = ${INCOMING}.${quoteIdent(k.name)}`);
  if (version) {
    const v = quoteIdent(version.name);
    match.push(`(${INCOMING}.${v} IS NULL OR ${EXISTING}.${v} <= ${INCOMING}.${v})`);
  }
  return `DELETE FROM ${quoteTable(table)} AS ${EXISTING}
 USING unnest(${arrays.join(", ")}) AS ${INCOMING}(${names.join(", ")})
 WHERE ${match.join(" AND ")}`;
}

export class PostgresTarget {
  readonly table: string;
  readonly schema: RowSchema;
  readonly versionColumn: string | undefined;
  private readonly pool: pg.Pool;
  private readonly batchSize: number;
  private checked: Promise<CheckedTable> | undefined;
  /** Batches still to go straight to the upsert, and the length of the next such streak. */
  private upsertStreak = { left: 0, next: 1 };
  private readonly counts = { copied: 0, inserted: 0, upserted: 0, insertsRetried: 0 };
  /** Whether a batch of distinct keys may go by COPY; cleared when the server refuses COPY. */
  private copyAllowed = true;
  private readonly meters = targetMeters();

  constructor(pool: pg.Pool, options: PostgresTargetOptions) {
    quoteTable(options.table);
    this.schema = defineRowSchema(options.schema.columns, options.schema.keyColumns);
    if (options.versionColumn !== undefined) {
      const column = this.schema.columns.find((c) => c.name === options.versionColumn);
      if (!column) throw new Error(`version column ${options.versionColumn} is not one of the columns`);
      if (column.nullable) throw new Error(`version column ${options.versionColumn} must not be nullable`);
    }
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new Error("batchSize must be a positive integer");
    this.pool = pool;
    this.table = options.table;
    this.versionColumn = options.versionColumn;
    this.batchSize = batchSize;
  }

  /**
   * Verifies the table can take the rows: it exists and is a table, has every column with a
   * compatible type, has a primary key or unique index on exactly the key columns (ON CONFLICT needs
   * one), and has no NOT NULL column without a default that the sync leaves unwritten. Throws a
   * TargetSchemaError naming every problem. upsert() and deleteKeys() run it before first use; a
   * check that passed is kept for them (the table is described once), one that failed is not.
   */
  async checkSchema(): Promise<void> {
    await this.typedColumns();
  }

  /**
   * Writes rows as upserts in batches of batchSize (by COPY, a plain INSERT or the upsert statement; see
   * the module comment); each batch is atomic, the whole call is not (and need not be).
   */
  async upsert(rows: readonly Row[]): Promise<UpsertResult> {
    const table = await this.typedColumns();
    let written = 0;
    for (let start = 0; start < rows.length; start += this.batchSize) {
      const batch = rows.slice(start, start + this.batchSize);
      written += await this.writeBatch(table, () => batch);
    }
    return { received: rows.length, written };
  }

  /**
   * upsert(), except that a batch PostgreSQL refuses with a data error (SQLSTATE class 22 or 23:
   * ./row-errors.ts) is split until the rows it refuses are found: those are returned with the
   * refusal, by their index in `rows`, and every other row is written, in order. `failedWith` is the
   * error the rows met as one batch already (an upsertChunk() of the same rows), so that batch is
   * split at once. Rejects, as upsert() does, with any other error; a caller retrying then writes
   * again rows written before it, which the upsert allows.
   */
  async upsertSettingAside(
    rows: readonly Row[],
    options: { readonly failedWith?: unknown } = {},
  ): Promise<UpsertResult & { readonly refused: readonly RefusedRow[] }> {
    const table = await this.typedColumns();
    const refused: RefusedRow[] = [];
    let written = 0;
    for (let start = 0; start < rows.length; start += this.batchSize) {
      const batch = rows.slice(start, start + this.batchSize);
      const first = start === 0 && "failedWith" in options ? { failedWith: options.failedWith } : {};
      const result = await bisectWrite(batch, (part) => this.writeBatch(table, () => part), first);
      written += result.written;
      for (const r of result.refused)
        refused.push({ index: start + r.index, refusal: rowRefusalOf(r.error) });
      if (result.refused.length > 0) this.meters.refused.add(result.refused.length, { table: this.table });
    }
    return { received: rows.length, written, refused };
  }

  /**
   * upsert() of `count` rows that a decoder may already have turned into COPY text (`prepared`): a
   * chunk that fits one batch is written by that text whenever upsert() would write it by COPY, and
   * `rows` is called only when it is not (no text, a key met twice, an upsert streak, a server
   * refusing COPY, other columns).
   */
  async upsertChunk(
    count: number,
    prepared: PreparedCopy | undefined,
    rows: () => readonly Row[],
  ): Promise<UpsertResult> {
    const table = await this.typedColumns();
    const usable =
      prepared !== undefined &&
      count <= this.batchSize &&
      prepared.columns.length === table.columns.length &&
      prepared.columns.every((name, i) => name === table.columns[i]!.name);
    if (!usable) return this.upsert(rows());
    let batch: readonly Row[] | undefined;
    const written = await this.writeBatch(table, () => (batch ??= rows()), prepared);
    return { received: count, written };
  }

  /** How this target's batches were written so far: copies, plain inserts, upserts, and tries retried as upserts. */
  writeCounts(): WriteCounts {
    return { ...this.counts };
  }

  /**
   * One batch: by COPY or a plain INSERT unless a recent one met an existing key, else (or when it
   * does) by the upsert; see the module comment.
   */
  /** One batch, timed: its duration (successful or not) is the batch latency the metrics show. */
  private async writeBatch(
    table: CheckedTable,
    batch: () => readonly Row[],
    prepared?: PreparedCopy,
  ): Promise<number> {
    const began = performance.now();
    try {
      return await this.writeOneBatch(table, batch, prepared);
    } finally {
      this.meters.duration.record((performance.now() - began) / 1000, { table: this.table });
    }
  }

  private async writeOneBatch(
    table: CheckedTable,
    batch: () => readonly Row[],
    prepared?: PreparedCopy,
  ): Promise<number> {
    const streak = this.upsertStreak;
    let values: string[] | undefined;
    if (streak.left > 0) {
      streak.left--;
    } else {
      try {
        let written: number;
        const distinct = prepared ? prepared.distinctKeys : distinctKeys(batch(), this.schema.keyColumns);
        if (this.copyAllowed && table.copyable && distinct) {
          written = await this.copyBatch(table, batch, prepared?.text);
        } else {
          values = columnArrays(table.columns, batch());
          written = (await this.pool.query(table.statements.insert, values)).rowCount ?? 0;
          this.counted("insert");
        }
        streak.next = 1;
        return written;
      } catch (error) {
        if ((error as { code?: unknown }).code !== UNIQUE_VIOLATION) throw error;
        this.counts.insertsRetried++;
        this.meters.retries.add(1, { table: this.table });
        streak.left = streak.next;
        streak.next = Math.min(streak.next * 2, MAX_UPSERT_STREAK);
      }
    }
    values ??= columnArrays(table.columns, batch());
    const result = await this.pool.query(table.statements.upsert, values);
    this.counted("upsert");
    return result.rowCount ?? 0;
  }

  private counted(method: "copy" | "insert" | "upsert"): void {
    if (method === "copy") this.counts.copied++;
    else if (method === "insert") this.counts.inserted++;
    else this.counts.upserted++;
    this.meters.batches.add(1, { table: this.table, method });
  }

  /**
   * COPY of a batch on a connection of its own. A server that refuses COPY here (feature not
   * supported) gets the plain INSERT from then on, this batch included.
   */
  private async copyBatch(
    table: CheckedTable,
    batch: () => readonly Row[],
    text?: Uint8Array,
  ): Promise<number> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      const copy = client.query(copyStreams.from(table.statements.copy));
      copy.end(text ?? copyText(batch(), table.columns));
      await finished(copy);
      this.counted("copy");
      return copy.rowCount;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      // An error without an SQLSTATE is the connection's, which must not go back to the pool.
      if (typeof code !== "string") broken = error as Error;
      if (code !== FEATURE_NOT_SUPPORTED) throw error;
    } finally {
      client.release(broken);
    }
    this.copyAllowed = false;
    const result = await this.pool.query(table.statements.insert, columnArrays(table.columns, batch()));
    this.counted("insert");
    return result.rowCount ?? 0;
  }

  /**
   * Deletes the rows with the given keys (rows holding at least the key columns; extra columns are
   * ignored). With a version column, a key that carries a version deletes only a row whose version is
   * not newer; a key without one deletes unconditionally. Returns the number of rows deleted.
   */
  async deleteKeys(keys: readonly Row[]): Promise<number> {
    const { columns } = await this.typedColumns();
    const keyColumns = this.schema.keyColumns.map((k) => columns.find((c) => c.name === k)!);
    const version = this.versionColumn ? columns.find((c) => c.name === this.versionColumn) : undefined;
    const sql = deleteSql(this.table, keyColumns, version);
    const params = version ? [...keyColumns, version] : keyColumns;
    let deleted = 0;
    for (let start = 0; start < keys.length; start += this.batchSize) {
      const batch = keys.slice(start, start + this.batchSize);
      for (const key of batch) {
        for (const k of keyColumns) {
          if (key[k.name] === null || key[k.name] === undefined)
            throw new Error(`key column ${k.name} is missing`);
        }
      }
      const result = await this.pool.query(sql, columnArrays(params, batch));
      deleted += result.rowCount ?? 0;
    }
    return deleted;
  }

  private typedColumns(): Promise<CheckedTable> {
    this.checked ??= describeTable(this.pool, this.table).then((info) => {
      const table = this.problemsOrThrow(info);
      const columns = this.schema.columns.map((c) => ({
        name: c.name,
        parameterType: parameterType(table.columns.get(c.name)!.pgType),
      }));
      const { keyColumns } = this.schema;
      return {
        columns,
        copyable: table.hasRules !== true && table.rowSecurity !== true,
        statements: {
          copy: copySql(this.table, columns),
          insert: insertSql(this.table, columns, keyColumns, this.versionColumn),
          upsert: upsertSql(this.table, columns, keyColumns, this.versionColumn),
        },
      };
    });
    // A failed check is not cached: the operator may fix the table and the next call must see it.
    this.checked.catch(() => {
      this.checked = undefined;
    });
    return this.checked;
  }

  private problemsOrThrow(info: TableInfo | undefined): TableInfo {
    if (!info) throw new TargetSchemaError(this.table, ["the table does not exist or is not visible"]);
    if (info.kind !== "r" && info.kind !== "p") {
      throw new TargetSchemaError(this.table, [
        `it is a ${RELATION_KINDS[info.kind] ?? "relation"}, not a table`,
      ]);
    }
    const problems = columnProblems(this.table, info, this.schema.columns);
    if (!info.uniqueKeys.some((k) => sameColumnSet(k, this.schema.keyColumns))) {
      problems.push(
        `no primary key or unique index on exactly (${this.schema.keyColumns.join(", ")}); upserts need one`,
      );
    }
    const written = new Set(this.schema.columns.map((c) => c.name));
    for (const column of info.columns.values()) {
      if (written.has(column.name)) {
        if (column.generated || column.identityAlways) {
          problems.push(`column ${column.name} is generated and cannot be written`);
        }
      } else if (column.notNull && !column.hasDefault && !column.identity && !column.generated) {
        problems.push(`column ${column.name} is NOT NULL without a default, and the sync does not write it`);
      }
    }
    if (problems.length > 0) throw new TargetSchemaError(this.table, problems);
    return info;
  }
}

/**
 * The target's counters, from the meter provider registered when the target is made (the controller
 * registers one at start, so in-process runs report on its /metrics; a runner process without one
 * counts into the no-op meter).
 */
function targetMeters(): {
  readonly batches: Counter;
  readonly retries: Counter;
  readonly refused: Counter;
  readonly duration: Histogram;
} {
  const meter = metrics.getMeter("syncgov-runner");
  return {
    batches: meter.createCounter("syncgov_target_batches_total", {
      description: "Batches written to PostgreSQL targets, by method: copy or insert (new keys) or upsert",
    }),
    retries: meter.createCounter("syncgov_target_insert_retries_total", {
      description: "Copies and plain inserts that met an existing key and were written again as upserts",
    }),
    refused: meter.createCounter("syncgov_target_rows_refused_total", {
      description:
        "Rows a PostgreSQL target refused with a data error (SQLSTATE class 22 or 23), found by splitting their batch and set aside",
    }),
    duration: meter.createHistogram("syncgov_target_batch_duration_seconds", {
      description:
        "Time to write one batch to a PostgreSQL target (the breaker's slow-call threshold applies to these)",
      unit: "s",
      advice: { explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] },
    }),
  };
}

const UNIQUE_VIOLATION = "23505";
const FEATURE_NOT_SUPPORTED = "0A000";

const RELATION_KINDS: Readonly<Record<string, string>> = {
  v: "view",
  m: "materialized view",
  f: "foreign table",
  S: "sequence",
  i: "index",
  I: "partitioned index",
  c: "composite type",
};

/** One array literal per column, in column order: the parameters of upsertSql / deleteSql. */
function columnArrays(columns: readonly TypedColumn[], rows: readonly Row[]): string[] {
  return columns.map((c) => arrayLiteral(rows, c.name));
}

const QUOTED_ESCAPES = /["\\]/g;

/**
 * The PostgreSQL array literal (`{…}`) of one column of the rows, as the statement's text parameter.
 * pg would serialize a JS array itself, but with two regex replacements per element; this runs once
 * per column per row of every batch, so here every string is quoted and only one holding a quote or
 * a backslash is escaped (two native scans instead of two replacements).
 */
export function arrayLiteral(rows: readonly Row[], column: string): string {
  const elements = new Array<string>(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const value = rows[i]![column];
    if (value === null || value === undefined) elements[i] = "NULL";
    else if (typeof value === "number") elements[i] = String(value);
    else if (typeof value === "boolean") elements[i] = value ? "t" : "f";
    else if (value.includes('"') || value.includes("\\"))
      elements[i] = `"${value.replace(QUOTED_ESCAPES, "\\$&")}"`;
    else elements[i] = `"${value}"`;
  }
  return `{${elements.join(",")}}`;
}
