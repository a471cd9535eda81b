/**
 * What the runs of a job's Kafka side share: the Kafka client and the target table as the rows of a
 * topic fill it. The job's topic and group names are the Kafka connector's
 * (../connectors/kafka/cluster.ts).
 *
 * A Kafka record carries no schema of its own, so the target decides the columns: every column of
 * the target table that can be written (generated and GENERATED ALWAYS identity columns cannot) is a
 * field the record is read into, typed as the table types it; a field the record lacks is NULL. A
 * masked column is text in the target (masking yields text), so the record's value is read as text
 * and masked before it is written.
 */

import type pg from "pg";
import { connectKafka } from "../connectors/kafka/cluster.ts";
import { describeTable, parameterType, type TableInfo } from "../connectors/postgres/catalog.ts";
import { SourceSchemaError } from "../connectors/postgres/source.ts";
import { PostgresTarget, TargetSchemaError, upsertSql } from "../connectors/postgres/target.ts";
import type { RowSchema } from "../connectors/record.ts";
import type { RowMasker } from "../masking/masking.ts";
import type { Logger } from "../telemetry/logger.ts";
import { planSync, sourceColumnsOf, withTargetLimits } from "./plan.ts";
import { RunFailure, type RunInput } from "./types.ts";

/** A Kafka client for the run's resolved bootstrap servers; a RunFailure when there are none. */
export function kafkaOf(input: RunInput, logger: Logger | undefined) {
  const brokers = input.connections.kafkaBrokers ?? [];
  if (brokers.length === 0) {
    throw new RunFailure(
      "KafkaNotConfigured",
      "no Kafka bootstrap servers are known: set spec.source.kafka.brokers on the job, or KAFKA_BROKERS for the runner",
    );
  }
  return connectKafka({ brokers, clientId: "syncgov-runner", ...(logger ? { logger } : {}) });
}

export interface StreamTarget {
  readonly table: string;
  readonly pool: pg.Pool;
  /** The rows as records are read into and as the target stores them (masked columns are text). */
  readonly schema: RowSchema;
  readonly versionColumn: string | undefined;
  readonly target: PostgresTarget;
  readonly info: TableInfo;
}

/**
 * Describes and checks the target table before anything moves: it exists, its columns have types
 * the row model holds, it has a unique key on the job's key columns, and the masking rules name
 * columns it has. Throws TargetSchemaError or MaskingRuleError naming every problem.
 */
export async function streamTarget(
  input: RunInput,
  pool: pg.Pool,
  masker: RowMasker,
  batchSize: number,
): Promise<StreamTarget> {
  const spec = input.job.spec;
  const { table, keyColumns, versionColumn } = spec.target.sql;
  const info = await describeTable(pool, table);
  if (!info) throw new TargetSchemaError(table, ["the table does not exist or is not visible"]);
  const writable: TableInfo = {
    ...info,
    columns: new Map([...info.columns].filter(([, c]) => !c.generated && !c.identityAlways)),
  };
  let columns: ReturnType<typeof sourceColumnsOf>;
  try {
    columns = sourceColumnsOf(table, writable, keyColumns);
  } catch (error) {
    if (error instanceof SourceSchemaError) throw new TargetSchemaError(table, error.problems);
    throw error;
  }
  const plan = planSync(`target table ${table}`, columns, spec, masker);
  // Records are read into the target's own bounds: a value the table cannot hold is set aside as
  // the record is decoded (../connectors/record.ts ColumnLimits), not found by a failed write.
  const schema = withTargetLimits(plan.targetSchema, info, masker.maskedColumns);
  const target = new PostgresTarget(pool, { table, schema, versionColumn, batchSize });
  await target.checkSchema();
  return { table, pool, schema, versionColumn, target, info };
}

/**
 * The job's upsert statement with no rows: it plans the write, takes the lock a write takes and
 * writes nothing, so it measures what a write would meet. The breaker's half-open probe.
 */
export function emptyUpsert(stream: StreamTarget): { readonly text: string; readonly values: unknown[][] } {
  const columns = stream.schema.columns.map((c) => ({
    name: c.name,
    parameterType: parameterType(stream.info.columns.get(c.name)!.pgType),
  }));
  return {
    text: upsertSql(stream.table, columns, stream.schema.keyColumns, stream.versionColumn),
    values: columns.map(() => []),
  };
}

const TRANSIENT_SQLSTATE = /^(08|53|57P0[1-3]|40001|40P01)/;
const TRANSIENT_CODE = /^(ECONN|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENETUNREACH)/;

/**
 * Whether a target error may pass by itself: a lost or refused connection, a server shutting down or
 * starting, resource exhaustion, a serialization failure or deadlock. Data and schema errors are not.
 */
export function isTransientTargetError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string") return TRANSIENT_SQLSTATE.test(code) || TRANSIENT_CODE.test(code);
  const message = error instanceof Error ? error.message : "";
  // pg reports a connection that ended under a query without a code.
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(message);
}
