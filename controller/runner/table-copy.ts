/**
 * Batch runs from a SQL table: a full snapshot by key ranges, or an incremental copy by the source's
 * cursor column; and Validation runs comparing the source table with the target table in SQL.
 */

import type pg from "pg";
import { quoteIdent, quoteTable } from "../api/identifiers.ts";
import { canonicalTextSql } from "../connectors/postgres/canonical.ts";
import { describeTable, type TableInfo } from "../connectors/postgres/catalog.ts";
import { PostgresSource, type SourceReject, SourceSchemaError } from "../connectors/postgres/source.ts";
import { PostgresTarget } from "../connectors/postgres/target.ts";
import type { Row } from "../connectors/record.ts";
import { planSync, type SyncPlan, sourceColumnsOf } from "./plan.ts";
import { listRefused } from "./rejections.ts";
import { type RunContext, RunFailure, type StepOutcome } from "./types.ts";
import { validateTables } from "./validation.ts";

interface TableSync {
  readonly plan: SyncPlan;
  readonly sourceTable: string;
  readonly sourceInfo: TableInfo;
  readonly sourcePool: pg.Pool;
  readonly targetPool: pg.Pool;
  readonly target: PostgresTarget;
}

/** Reads the source's columns and checks the target and the required masking, before any write. */
async function prepare(context: RunContext): Promise<TableSync> {
  const source = context.spec.source.sql!;
  const targetSpec = context.spec.target.sql;
  const sourceUrl = context.input.connections.source;
  if (!sourceUrl) throw new RunFailure("ConnectionMissing", "no connection was resolved for the SQL source");
  const sourcePool = context.pool(sourceUrl);
  const targetPool = context.pool(context.input.connections.target);
  const sourceKeys = source.keyColumns ?? targetSpec.keyColumns;
  const sourceInfo = await describeTable(sourcePool, source.table);
  if (!sourceInfo) throw new SourceSchemaError(source.table, ["the table does not exist or is not visible"]);
  const columns = sourceColumnsOf(source.table, sourceInfo, sourceKeys);
  const plan = planSync(`source table ${source.table}`, columns, context.spec, context.masker, sourceKeys);
  context.requireMasking(plan.targetSchema.columns.map((c) => c.name));
  const target = new PostgresTarget(targetPool, {
    table: targetSpec.table,
    schema: plan.targetSchema,
    versionColumn: targetSpec.versionColumn,
    batchSize: context.batchSize,
  });
  await target.checkSchema();
  return { plan, sourceTable: source.table, sourceInfo, sourcePool, targetPool, target };
}

export async function copyTable(context: RunContext): Promise<StepOutcome> {
  const sync = await prepare(context);
  const cursorColumn = context.spec.source.sql!.cursorColumn;
  const source = new PostgresSource(sync.sourcePool, {
    table: sync.sourceTable,
    schema: sync.plan.sourceSchema,
    cursorColumn,
    batchSize: context.batchSize,
  });
  await source.checkSchema();
  context.checkpoint();

  const incremental = context.input.spec.incremental === true && cursorColumn !== undefined;
  let cursor: string | undefined;
  let how: string;
  if (incremental) {
    const since = context.input.previousCursor;
    cursor = since;
    for await (const batch of source.incremental(since === undefined ? undefined : { cursor: since })) {
      await writeBatch(context, sync, batch.rows, batch.rejects);
      // The mark moves only past rows that are written.
      if (batch.mark.cursor !== null) cursor = String(batch.mark.cursor);
      context.checkpoint();
    }
    how =
      since === undefined
        ? `incrementally by ${cursorColumn} (no previous cursor: from the start)`
        : `incrementally by ${cursorColumn} from ${since}`;
  } else {
    // The mark is taken before the snapshot begins: a row changed meanwhile has a cursor at or past
    // it, so the next incremental run (which reads from the mark inclusive) picks it up.
    const mark = cursorColumn ? await highWaterMark(sync, cursorColumn) : undefined;
    for await (const batch of source.snapshot()) {
      await writeBatch(context, sync, batch.rows, batch.rejects);
      context.checkpoint();
    }
    cursor = mark;
    how =
      context.input.spec.incremental === true
        ? "as a full snapshot (the source has no cursorColumn, so an incremental copy is not possible)"
        : "as a full snapshot";
  }
  const { rowsRead, rowsWritten } = context.progress.counts;
  const summary = `copied ${sync.sourceTable} to ${context.spec.target.sql.table} ${how}: ${rowsRead} rows read, ${rowsWritten} written`;
  const validation = context.spec.validation?.enabled === false ? undefined : await compare(context, sync);
  return { summary, cursor, validation };
}

export async function validateTableSync(context: RunContext): Promise<StepOutcome> {
  const sync = await prepare(context);
  const validation = await compare(context, sync);
  return {
    summary: `compared ${sync.sourceTable} with ${context.spec.target.sql.table}`,
    validation,
  };
}

function compare(context: RunContext, sync: TableSync) {
  context.checkpoint();
  return validateTables(
    { db: sync.sourcePool, table: sync.sourceTable },
    { db: sync.targetPool, table: context.spec.target.sql.table },
    sync.plan.comparableColumns,
    [...sync.plan.masker.maskedColumns],
  );
}

async function writeBatch(
  context: RunContext,
  sync: TableSync,
  rows: readonly Row[],
  rejects: readonly SourceReject[],
): Promise<void> {
  for (const reject of rejects) {
    context.rejections.add({
      key: sync.plan.masker.mask(reject.key),
      column: reject.column,
      reason: reject.reason,
      message: reject.message,
    });
  }
  context.progress.add({ rowsRead: rows.length + rejects.length, rowsRejected: rejects.length });
  if (rows.length === 0) return;
  const masked = rows.map((row) => sync.plan.masker.mask(row));
  // A row the target refuses (a CHECK, a narrower type than the source's) is found by splitting its
  // batch and listed with the database's reason; the others are written (../connectors/postgres/row-errors.ts).
  const written = await sync.target.upsertSettingAside(masked);
  listRefused(
    context.rejections,
    context.spec.target.sql.table,
    sync.plan.targetSchema.keyColumns,
    masked,
    written.refused,
  );
  context.progress.add({ rowsWritten: written.written, rowsRejected: written.refused.length });
}

/** The greatest cursor value in the source, in canonical text (the form incremental marks take). */
async function highWaterMark(sync: TableSync, cursorColumn: string): Promise<string | undefined> {
  const column = sync.plan.sourceSchema.columns.find((c) => c.name === cursorColumn)!;
  const pgType = sync.sourceInfo.columns.get(cursorColumn)!.pgType;
  const alias = "source";
  const text = canonicalTextSql(cursorColumn, column.type, pgType, alias);
  const qualified = `${quoteIdent(alias)}.${quoteIdent(cursorColumn)}`;
  const result = await sync.sourcePool.query<{ mark: string | null }>(
    `SELECT ${text} AS mark FROM ${quoteTable(sync.sourceTable)} AS ${quoteIdent(alias)}
      WHERE ${qualified} IS NOT NULL ORDER BY ${qualified} DESC LIMIT 1`,
  );
  return result.rows[0]?.mark ?? undefined;
}
