/**
 * A PostgreSQL table (or view) as a sync source, read in canonical row form (every column selected
 * through canonicalTextSql, so DateStyle, TimeZone and numeric scale never leak into the rows).
 *
 * Two ways to read:
 * - snapshot(): every row, by keyset pagination over the key columns
 *   (`WHERE (k1, k2) > ($1, $2) ORDER BY k1, k2 LIMIT n`), each page one indexed range scan however
 *   deep into the table. By default all pages come from one REPEATABLE READ snapshot, so the rows are
 *   the table as of one instant, each exactly once.
 * - incremental(since): rows whose cursor column (e.g. updated_at, a sequence) is at or past a
 *   high-water mark, in (cursor, key) order.
 *
 * Ties at the boundary: many rows can share one cursor value, and a row with that value may commit
 * after a run has passed it. So within a run pages advance strictly by the pair (cursor, key) — no row
 * is skipped or read twice however many share a value — but the mark handed back is the cursor value
 * alone, and the next run starts *at* it (cursor >= mark), not after it. The rows at the boundary
 * value are read again; the target's idempotent upsert absorbs them, and a row that arrived later
 * with the same cursor value is not missed. Rows whose cursor is NULL are never read; a row that
 * commits later with a cursor value below the mark (a long transaction stamping an early time) is
 * missed, as with any cursor-based copy; the scheduled full compare is what catches it.
 */

import type pg from "pg";
import { quoteIdent, quoteTable } from "../../api/identifiers.ts";
import {
  type Column,
  ColumnValueError,
  coerceColumnValue,
  defineRowSchema,
  type Row,
  type RowSchema,
  type RowValue,
} from "../record.ts";
import { canonicalTextSql, fromCanonicalText } from "./canonical.ts";
import { columnProblems, describeTable, type TableInfo } from "./catalog.ts";

export interface PostgresSourceOptions {
  /** `table` or `schema.table`: a table, or a materialized view with a unique index on the key. */
  readonly table: string;
  /** The columns read and the key that orders snapshot pages; the key must be unique in the table. */
  readonly schema: RowSchema;
  /** The column incremental() follows; one of the schema's columns, of an ordered type. */
  readonly cursorColumn?: string;
  /** Rows per page; default 1000. */
  readonly batchSize?: number;
}

/** A row the row model cannot hold (e.g. an infinite timestamp, a NULL in a non-nullable column). */
export interface SourceReject {
  /** The row's key as read from the table (canonical text). */
  readonly key: Row;
  readonly column: string;
  readonly reason: string;
  readonly message: string;
}

export interface SnapshotBatch {
  readonly rows: Row[];
  readonly rejects: SourceReject[];
  /** Key of the last row of this page: pass it as `after` to resume the snapshot behind this page. */
  readonly lastKey: Row;
}

/** Where an incremental read got to: the cursor value of the last row read. */
export interface CursorMark {
  readonly cursor: RowValue;
}

export interface IncrementalBatch {
  readonly rows: Row[];
  readonly rejects: SourceReject[];
  /** Pass as `since` to the next incremental read once these rows are written. */
  readonly mark: CursorMark;
}

export class SourceSchemaError extends Error {
  override readonly name = "SourceSchemaError";
  readonly problems: readonly string[];

  constructor(table: string, problems: readonly string[]) {
    super(`source table ${table} does not fit the sync: ${problems.join("; ")}`);
    this.problems = problems;
  }
}

const SOURCE = "source";

/**
 * A table column as WHERE and ORDER BY must name it: qualified, because an unqualified ORDER BY name
 * means the output column of the same name, which is its canonical text and sorts as text.
 */
function inputColumn(name: string): string {
  return `${quoteIdent(SOURCE)}.${quoteIdent(name)}`;
}

const CURSOR_TYPES = new Set(["integer", "bigint", "numeric", "timestamp", "date", "text"]);

export class PostgresSource {
  readonly table: string;
  readonly schema: RowSchema;
  readonly cursorColumn: string | undefined;
  private readonly pool: pg.Pool;
  private readonly batchSize: number;
  private checked: Promise<string> | undefined;

  constructor(pool: pg.Pool, options: PostgresSourceOptions) {
    quoteTable(options.table);
    this.schema = defineRowSchema(options.schema.columns, options.schema.keyColumns);
    if (options.cursorColumn !== undefined) {
      const cursor = this.schema.columns.find((c) => c.name === options.cursorColumn);
      if (!cursor) throw new Error(`cursor column ${options.cursorColumn} is not one of the columns`);
      if (!CURSOR_TYPES.has(cursor.type))
        throw new Error(`cursor column ${cursor.name} is ${cursor.type}, which has no useful order`);
    }
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new Error("batchSize must be a positive integer");
    this.pool = pool;
    this.table = options.table;
    this.cursorColumn = options.cursorColumn;
    this.batchSize = batchSize;
  }

  /**
   * Verifies the table has every column with a compatible type, a primary key or unique index
   * within the key columns (keyset pagination returns each row once only if the key is unique), and
   * NOT NULL key columns (a row comparison with NULL is never true, so such rows would be skipped).
   * Throws a SourceSchemaError naming every problem; the readers run it once before first use.
   */
  async checkSchema(): Promise<void> {
    this.problemsOrThrow(await describeTable(this.pool, this.table));
  }

  /**
   * Every row, in key order, a page at a time. `after` resumes behind a key (a page's lastKey).
   * With `consistent` (the default) the pages share one REPEATABLE READ READ ONLY transaction, held
   * open until the generator finishes or is returned; without it, each page sees the latest commits.
   */
  async *snapshot(options: { after?: Row; consistent?: boolean } = {}): AsyncGenerator<SnapshotBatch> {
    const select = await this.selectList();
    const keys = this.schema.keyColumns.map(inputColumn);
    const from = `SELECT ${select} FROM ${quoteTable(this.table)} AS ${quoteIdent(SOURCE)}`;
    const order = ` ORDER BY ${keys.join(", ")} LIMIT ${this.batchSize}`;
    const afterKeys = `WHERE (${keys.join(", ")}) > (${keys.map((_, i) => `$${i + 1}`).join(", ")})`;
    const consistent = options.consistent ?? true;
    const client = consistent ? await this.pool.connect() : undefined;
    const db = client ?? this.pool;
    let failure: unknown;
    try {
      if (client) await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      let after: RowValue[] | undefined = options.after
        ? this.schema.keyColumns.map((k) => options.after![k] ?? null)
        : undefined;
      for (;;) {
        const result = after
          ? await db.query<Record<string, string | null>>(`${from} ${afterKeys}${order}`, after)
          : await db.query<Record<string, string | null>>(`${from}${order}`);
        if (result.rows.length === 0) break;
        const batch = this.convert(result.rows);
        const last = result.rows[result.rows.length - 1]!;
        after = this.schema.keyColumns.map((k) => last[k] ?? null);
        yield { ...batch, lastKey: this.rawKey(last) };
        if (result.rows.length < this.batchSize) break;
      }
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      if (client) {
        try {
          await client.query(failure ? "ROLLBACK" : "COMMIT");
        } catch (error) {
          failure ??= error;
        }
        client.release(failure instanceof Error ? failure : undefined);
      }
    }
  }

  /**
   * Rows with cursor >= since.cursor (all rows with a non-NULL cursor when since is undefined),
   * in (cursor, key) order, a page at a time; see the module comment for how ties are handled.
   */
  async *incremental(since?: CursorMark): AsyncGenerator<IncrementalBatch> {
    const cursorColumn = this.cursorColumn;
    if (cursorColumn === undefined) throw new Error(`source ${this.table} has no cursor column`);
    const select = await this.selectList();
    const cursor = inputColumn(cursorColumn);
    const keys = this.schema.keyColumns.map(inputColumn);
    const ordered = [cursor, ...keys];
    const from = `SELECT ${select} FROM ${quoteTable(this.table)} AS ${quoteIdent(SOURCE)}`;
    const order = ` ORDER BY ${ordered.join(", ")} LIMIT ${this.batchSize}`;
    const atMark = `WHERE ${cursor} >= $1`;
    const notNull = `WHERE ${cursor} IS NOT NULL`;
    const pastRow = `WHERE (${ordered.join(", ")}) > (${ordered.map((_, i) => `$${i + 1}`).join(", ")})`;
    let after: RowValue[] | undefined;
    for (;;) {
      const result = after
        ? await this.pool.query<Record<string, string | null>>(`${from} ${pastRow}${order}`, after)
        : since && since.cursor !== null
          ? await this.pool.query<Record<string, string | null>>(`${from} ${atMark}${order}`, [since.cursor])
          : await this.pool.query<Record<string, string | null>>(`${from} ${notNull}${order}`);
      if (result.rows.length === 0) break;
      const last = result.rows[result.rows.length - 1]!;
      after = [cursorColumn, ...this.schema.keyColumns].map((k) => last[k] ?? null);
      yield { ...this.convert(result.rows), mark: { cursor: last[cursorColumn] ?? null } };
      if (result.rows.length < this.batchSize) break;
    }
  }

  /** The SELECT list: each column's canonical text under its own name. */
  private selectList(): Promise<string> {
    this.checked ??= describeTable(this.pool, this.table).then((info) => {
      const table = this.problemsOrThrow(info);
      return this.schema.columns
        .map(
          (c) =>
            `${canonicalTextSql(c.name, c.type, table.columns.get(c.name)!.pgType, SOURCE)} AS ${quoteIdent(c.name)}`,
        )
        .join(", ");
    });
    // A failed check is not cached: the operator may fix the table and the next call must see it.
    this.checked.catch(() => {
      this.checked = undefined;
    });
    return this.checked;
  }

  private problemsOrThrow(info: TableInfo | undefined): TableInfo {
    if (!info) throw new SourceSchemaError(this.table, ["the table does not exist or is not visible"]);
    const problems = columnProblems(this.table, info, this.schema.columns);
    const keys = this.schema.keyColumns;
    if (!info.uniqueKeys.some((unique) => unique.every((c) => keys.includes(c)))) {
      problems.push(`no primary key or unique index within the key columns (${keys.join(", ")})`);
    }
    for (const key of keys) {
      const column = info.columns.get(key);
      if (column && !column.notNull) {
        problems.push(`key column ${key} allows NULL, and keyset reads would skip rows where it is NULL`);
      }
    }
    if (problems.length > 0) throw new SourceSchemaError(this.table, problems);
    return info;
  }

  private rawKey(raw: Record<string, string | null>): Row {
    const key: Row = {};
    for (const k of this.schema.keyColumns) key[k] = raw[k] ?? null;
    return key;
  }

  /** Canonical text rows to row-model rows; rows the model cannot hold become rejects. */
  private convert(rawRows: readonly Record<string, string | null>[]): {
    rows: Row[];
    rejects: SourceReject[];
  } {
    const rows: Row[] = [];
    const rejects: SourceReject[] = [];
    const keys = new Set(this.schema.keyColumns);
    for (const raw of rawRows) {
      const row: Row = {};
      try {
        for (const column of this.schema.columns) {
          row[column.name] = rowValue(column, raw[column.name] ?? null, keys.has(column.name));
        }
        rows.push(row);
      } catch (error) {
        if (!(error instanceof ColumnValueError)) throw error;
        rejects.push({
          key: this.rawKey(raw),
          column: error.column,
          reason: error.reason,
          message: error.message,
        });
      }
    }
    return { rows, rejects };
  }
}

/**
 * Canonical text is already in row-model form except where the model is narrower than PostgreSQL:
 * NULLs in non-nullable columns, int8 values in an integer column, infinite or five-digit-year
 * timestamps and dates. Those columns go through coercion, which rejects them.
 */
function rowValue(column: Column, text: string | null, isKey: boolean): RowValue {
  if (text === null || column.type === "integer" || column.type === "timestamp" || column.type === "date") {
    return coerceColumnValue(column, text, isKey);
  }
  return fromCanonicalText(column.type, text);
}
