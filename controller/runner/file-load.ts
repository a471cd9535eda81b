/**
 * Batch runs from a fixed-width file, and Validation runs comparing a file with the target. Every
 * line that does not parse is counted as rejected and listed with its line number (the first
 * MAX_LISTED_REJECTIONS); none is dropped silently. The file's checksum is computed in JavaScript
 * over the rows as the target should hold them (masked, one per key).
 */

import { realpath, stat } from "node:fs/promises";
import { fileGrantRefusal, fileRoots } from "../api/file-grant.ts";
import { type FixedWidthLayout, FixedWidthParser, readFixedWidthFile } from "../connectors/fixedwidth.ts";
import { PostgresTarget } from "../connectors/postgres/target.ts";
import type { Row } from "../connectors/record.ts";
import { postgresTableChecksum } from "../validation/postgres.ts";
import { planSync, type SyncPlan } from "./plan.ts";
import { listRefused } from "./rejections.ts";
import type { RunContext, StepOutcome } from "./types.ts";
import { compareChecksums, ExpectedTargetChecksum } from "./validation.ts";

interface FileSync {
  readonly path: string;
  readonly parser: FixedWidthParser;
  readonly plan: SyncPlan;
  readonly target: PostgresTarget;
}

/**
 * The file a run may read: `path` judged against the granted roots (api/file-grant.ts) as written,
 * then again with every symlink resolved, and only when it is a regular file — a link inside a
 * granted volume that points at the pod's own files, or a device, FIFO or directory, is refused.
 * The resolved path is what the run opens.
 */
export async function grantedFile(path: string, roots: readonly string[] = fileRoots()): Promise<string> {
  const refused = (why: string) => new Error(`spec.source.file.path ${path}: ${why}`);
  const written = fileGrantRefusal(path, roots);
  if (written !== undefined) throw refused(written);
  let real: string;
  try {
    real = await realpath(path);
  } catch (error) {
    throw refused(`cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const realRoots = await Promise.all(roots.map((root) => realpath(root).catch(() => root)));
  if (fileGrantRefusal(real, realRoots) !== undefined)
    throw refused(`resolves to ${real}, outside the storage the platform granted (${roots.join(", ")})`);
  const stats = await stat(real);
  if (!stats.isFile()) throw refused("is not a regular file");
  return real;
}

async function prepare(context: RunContext): Promise<FileSync> {
  const file = context.spec.source.file!;
  const targetSpec = context.spec.target.sql;
  const layout: FixedWidthLayout = {
    fields: file.fields.map((f) => ({
      name: f.name,
      start: f.start,
      length: f.length,
      type: f.type,
      ...(f.format !== undefined ? { format: f.format } : {}),
    })),
    keyColumns: targetSpec.keyColumns,
    skipLines: file.skipLines,
    encoding: file.encoding,
  };
  const parser = new FixedWidthParser(layout);
  const plan = planSync(`file ${file.path}`, parser.schema.columns, context.spec, context.masker);
  context.requireMasking(plan.targetSchema.columns.map((c) => c.name));
  const path = await grantedFile(file.path);
  const target = new PostgresTarget(context.pool(context.input.connections.target), {
    table: targetSpec.table,
    schema: plan.targetSchema,
    versionColumn: targetSpec.versionColumn,
    batchSize: context.batchSize,
  });
  await target.checkSchema();
  return { path, parser, plan, target };
}

export async function loadFile(context: RunContext): Promise<StepOutcome> {
  const sync = await prepare(context);
  context.checkpoint();
  const validate = context.spec.validation?.enabled !== false;
  const expected = new ExpectedTargetChecksum(sync.plan.targetSchema, context.spec.target.sql.versionColumn);
  await forEachBatch(context, sync, async (rows) => {
    // A row the target refuses (a CHECK, a varchar shorter than the field) is found by splitting its
    // batch and listed with the database's reason; the others are written and expected.
    const written = await sync.target.upsertSettingAside(rows);
    const table = context.spec.target.sql.table;
    listRefused(context.rejections, table, sync.plan.targetSchema.keyColumns, rows, written.refused);
    context.progress.add({ rowsWritten: written.written, rowsRejected: written.refused.length });
    if (validate) {
      const refused = new Set(written.refused.map((r) => r.index));
      rows.forEach((row, i) => {
        if (!refused.has(i)) expected.add(row);
      });
    }
  });
  const { rowsRead, rowsWritten } = context.progress.counts;
  const summary = `loaded ${sync.path} into ${context.spec.target.sql.table}: ${rowsRead} lines read, ${rowsWritten} rows written`;
  if (!validate) return { summary };
  context.checkpoint();
  const actual = await postgresTableChecksum(
    context.pool(context.input.connections.target),
    context.spec.target.sql.table,
    sync.plan.targetSchema.columns,
  );
  return {
    summary,
    validation: compareChecksums(expected.result(), actual, sync.plan.targetSchema.columns, []),
  };
}

export async function validateFile(context: RunContext): Promise<StepOutcome> {
  const sync = await prepare(context);
  const expected = new ExpectedTargetChecksum(sync.plan.targetSchema, context.spec.target.sql.versionColumn);
  await forEachBatch(context, sync, async (rows) => {
    for (const row of rows) expected.add(row);
  });
  const actual = await postgresTableChecksum(
    context.pool(context.input.connections.target),
    context.spec.target.sql.table,
    sync.plan.targetSchema.columns,
  );
  return {
    summary: `compared ${sync.path} with ${context.spec.target.sql.table}`,
    validation: compareChecksums(expected.result(), actual, sync.plan.targetSchema.columns, []),
  };
}

/** Streams the file; rejected lines are logged with their numbers, parsed rows handed on masked. */
async function forEachBatch(
  context: RunContext,
  sync: FileSync,
  handle: (maskedRows: readonly Row[]) => Promise<void>,
): Promise<void> {
  for await (const batch of readFixedWidthFile(sync.path, sync.parser, { batchSize: context.batchSize })) {
    for (const reject of batch.rejects) {
      context.rejections.add({
        lineNumber: reject.lineNumber,
        column: reject.column,
        reason: reject.reason,
        message: reject.message,
      });
    }
    context.progress.add({
      rowsRead: batch.rows.length + batch.rejects.length,
      rowsRejected: batch.rejects.length,
    });
    if (batch.rows.length > 0) await handle(batch.rows.map((row) => sync.plan.masker.mask(row)));
    context.checkpoint();
  }
}
