import { metrics } from "@opentelemetry/api";
import { type DataPoint, MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { copyText, distinctKeys } from "../../controller/connectors/postgres/copy-text.ts";
import { PostgresTarget, TargetSchemaError } from "../../controller/connectors/postgres/target.ts";
import { defineRowSchema, type Row } from "../../controller/connectors/record.ts";
import { checksumRows } from "../../controller/validation/checksum.ts";
import { postgresTableChecksum } from "../../controller/validation/postgres.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { scratchTables } from "../support/postgres.ts";

const scratch = scratchTables({ max: 4 });
const pool = scratch.pool;

const schema = defineRowSchema(
  [
    { name: "order_id", type: "bigint" },
    { name: "line", type: "integer" },
    { name: "status", type: "text" },
    { name: "amount", type: "numeric" },
    { name: "updated_at", type: "timestamp" },
    { name: "doc", type: "json" },
    { name: "version", type: "bigint", nullable: false },
  ],
  ["order_id", "line"],
);

const ORDER_LINES = `order_id int8, line int4, status text, amount numeric(12,2), updated_at timestamptz,
  doc jsonb, version int8 NOT NULL, PRIMARY KEY (order_id, line)`;

/** 10k rows over 2500 keys, each key four times, its occurrences spread over different batches. */
function rowsWithRepeatedKeys(round: number): Row[] {
  const rows: Row[] = [];
  for (let occurrence = 0; occurrence < 4; occurrence++) {
    for (let k = 0; k < 2500; k++) {
      const key = (k * 7919) % 2500; // a permutation, so neighbouring rows have unrelated keys
      rows.push({
        order_id: String(1_000_000_000_000 + Math.floor(key / 5)),
        line: key % 5,
        status: `round ${round} occurrence ${occurrence} ✓`,
        amount: `${key}.${occurrence}5`,
        updated_at: `2024-03-0${occurrence + 1}T12:00:00.00000${occurrence}Z`,
        doc: `{"key": ${key}, "occurrence": ${occurrence}}`,
        version: String(occurrence),
      });
    }
  }
  return rows;
}

/** One order line with every column set; the status says the version unless given. */
function orderLine(orderId: string, line: number, version = 1, status = `v${version}`): Row {
  return {
    order_id: orderId,
    line,
    status,
    amount: "1",
    updated_at: "2024-01-01T00:00:00.000000Z",
    doc: null,
    version: String(version),
  };
}

/** The rows a correct upsert leaves: per key, the one given last. */
function lastPerKey(rows: readonly Row[]): Row[] {
  const byKey = new Map<string, Row>();
  for (const row of rows) byKey.set(`${row.order_id}/${row.line}`, row);
  return [...byKey.values()];
}

async function statusByKey(table: string): Promise<Map<string, string>> {
  const result = await pool.query<{ key: string; status: string }>(
    `SELECT order_id || '/' || line AS key, status FROM ${table}`,
  );
  return new Map(result.rows.map((r) => [r.key, r.status]));
}

describe("PostgresTarget.upsert", () => {
  it("converges 10k rows with repeated keys to the latest values, and repeating changes nothing", async () => {
    const table = await scratch.create("upsert", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema });
    const rows = rowsWithRepeatedKeys(1);
    const first = await target.upsert(rows);
    expect(first.received).toBe(10_000);

    const expected = lastPerKey(rows);
    expect(expected).toHaveLength(2500);
    const status = await statusByKey(table);
    expect(status.size).toBe(2500);
    for (const row of expected) expect(status.get(`${row.order_id}/${row.line}`)).toBe(row.status);
    const afterFirst = await postgresTableChecksum(pool, table, schema.columns);
    expect(afterFirst).toEqual(checksumRows(schema.columns, expected));

    await target.upsert(rows);
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(afterFirst);

    // A later round overwrites every key.
    const round2 = rowsWithRepeatedKeys(2);
    await target.upsert(round2);
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, lastPerKey(round2)),
    );
  });

  it("stores text the array syntax treats specially exactly as given", async () => {
    const table = await scratch.create("awkward", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema });
    const awkward = [
      "",
      " ",
      "NULL",
      "null",
      "a,b",
      "{x}",
      'say "hi"',
      "back\\slash",
      "tab\there",
      "line\nbreak",
      "  padded  ",
      "ünïcødé ✓",
      "'single'",
      "1e5",
      "\\N",
      "\\.",
      "cr\rlf\r\n",
      "\\t not a tab",
    ];
    const rows: Row[] = awkward.map((status, line) => ({
      order_id: "7",
      line,
      status,
      amount: line % 2 === 0 ? "NaN" : "-12.5",
      updated_at: "2024-01-01T00:00:00.000001Z",
      doc: `{"text": ${JSON.stringify(status)}}`,
      version: "1",
    }));
    await target.upsert(rows);
    // New distinct keys: the batch went by COPY, whose text format escapes differently from arrays.
    expect(target.writeCounts()).toMatchObject({ copied: 1, upserted: 0 });
    const stored = await pool.query<{ line: number; status: string; amount: string; doc: unknown }>(
      `SELECT line, status, amount::text AS amount, doc FROM ${table} ORDER BY line`,
    );
    expect(stored.rows.map((r) => r.status)).toEqual(awkward);
    expect(stored.rows.map((r) => r.doc)).toEqual(awkward.map((text) => ({ text })));
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, rows),
    );
  });

  it("with a version column, keeps the newest value whatever order versions arrive in", async () => {
    const table = await scratch.create("versioned", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema, versionColumn: "version", batchSize: 100 });
    const row = (line: number, version: number) => orderLine("1", line, version);
    // Within one batch the highest version wins, even when it comes first.
    expect((await target.upsert([row(1, 5), row(1, 3), row(2, 1), row(2, 2)])).written).toBe(2);
    // Older versions replayed later are ignored; an equal version rewrites (idempotent replay).
    const stale = await target.upsert([row(1, 4), row(2, 1)]);
    expect(stale).toEqual({ received: 2, written: 0 });
    expect((await target.upsert([row(1, 5)])).written).toBe(1);
    expect((await target.upsert([row(2, 9)])).written).toBe(1);
    expect(Object.fromEntries(await statusByKey(table))).toEqual({ "1/1": "v5", "1/2": "v9" });

    // A versioned delete removes only a row that is not newer than the tombstone.
    expect(await target.deleteKeys([{ order_id: "1", line: 1, version: "4" }])).toBe(0);
    expect(await target.deleteKeys([{ order_id: "1", line: 1, version: "5" }])).toBe(1);
    expect(await target.deleteKeys([{ order_id: "1", line: 2 }])).toBe(1);
    expect((await statusByKey(table)).size).toBe(0);
  });

  it("writes batches of new keys by COPY, retries a batch meeting an existing key as the upsert, and backs off", async () => {
    const table = await scratch.create("insert_first", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema, batchSize: 500 });
    const round1 = lastPerKey(rowsWithRepeatedKeys(1)); // 2500 distinct keys: five batches
    await target.upsert(round1);
    expect(target.writeCounts()).toEqual({ copied: 5, inserted: 0, upserted: 0, insertsRetried: 0 });
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, round1),
    );

    // Every key exists now: a tried insert fails and the batch is upserted; then 1, 2, 4 … batches go
    // straight to the upsert before the next try.
    const round2 = lastPerKey(rowsWithRepeatedKeys(2));
    await target.upsert(round2);
    // Batch 1: tried, retried (streak 1). Batch 2: upsert. Batch 3: tried, retried (streak 2).
    // Batches 4 and 5: upserts.
    expect(target.writeCounts()).toEqual({ copied: 5, inserted: 0, upserted: 5, insertsRetried: 2 });
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, round2),
    );

    // New keys again, and no upserts left in the streak: every batch is tried and inserted, and the
    // first success resets the streak's length.
    const fresh = round1.map((r) => ({ ...r, order_id: String(BigInt(r.order_id as string) + 1_000_000n) }));
    await target.upsert(fresh);
    expect(target.writeCounts()).toEqual({ copied: 10, inserted: 0, upserted: 5, insertsRetried: 2 });
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, [...round2, ...fresh]),
    );
  });

  it("writes a chunk by the COPY text a decoder prepared, and asks for its rows only when that text cannot serve", async () => {
    const table = await scratch.create("prepared", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema, batchSize: 1000 });
    const names = schema.columns.map((c) => c.name);
    let asked = 0;
    /** A chunk as the decoder hands it over; rows() counts the calls that decode on this thread. */
    const write = (rows: readonly Row[], prepared = prepare(rows)) =>
      target.upsertChunk(rows.length, prepared, () => {
        asked++;
        return rows;
      });
    const prepare = (rows: readonly Row[], columns = names) => ({
      columns,
      text: Buffer.from(copyText(rows, schema.columns)),
      distinctKeys: distinctKeys(rows, schema.keyColumns),
    });
    const round1 = lastPerKey(rowsWithRepeatedKeys(1)).slice(0, 1000);
    expect((await write(round1)).written).toBe(1000);
    expect(asked).toBe(0);
    expect(target.writeCounts()).toMatchObject({ copied: 1, inserted: 0, upserted: 0 });

    // The same keys again: the COPY meets them and the upsert needs the rows.
    const round2 = lastPerKey(rowsWithRepeatedKeys(2)).slice(0, 1000);
    expect((await write(round2)).written).toBe(1000);
    expect(asked).toBe(1);
    expect(target.writeCounts()).toMatchObject({ copied: 1, upserted: 1, insertsRetried: 1 });
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, round2),
    );

    // The streak the retry started: one batch straight to the upsert, by rows.
    const more = round2.slice(0, 10).map((r) => ({ ...r, status: "streak" }));
    await write(more);
    expect(asked).toBe(2);

    // A key twice, text for other columns, no text, a chunk larger than a batch: rows each time.
    const fresh = (n: number, from: number) =>
      Array.from({ length: n }, (_, i) => orderLine(String(from + i), 1));
    const twice = [orderLine("77", 1, 1), orderLine("77", 1, 2)];
    await write(twice);
    await write(fresh(3, 100), prepare(fresh(3, 100), [...names].reverse()));
    await target.upsertChunk(3, undefined, () => {
      asked++;
      return fresh(3, 200);
    });
    await write(fresh(1001, 300));
    expect(asked).toBe(6);
    const { rows } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`);
    expect(Number(rows[0]!.n)).toBe(1000 + 1 + 3 + 3 + 1001);
    expect((await statusByKey(table)).get("77/1")).toBe("v2");
  });

  it("counts batches by method, and retried inserts, in OpenTelemetry metrics", async () => {
    class Reader extends MetricReader {
      protected override async onForceFlush(): Promise<void> {}
      protected override async onShutdown(): Promise<void> {}
    }
    const reader = new Reader();
    metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
    try {
      const table = await scratch.create("metered", ORDER_LINES);
      const target = new PostgresTarget(pool, { table, schema });
      await target.upsert([orderLine("8", 1), orderLine("8", 2)]); // copy
      await target.upsert([orderLine("8", 3), orderLine("8", 3)]); // insert (a key twice)
      await target.upsert([orderLine("8", 1, 2)]); // copy refused by the key, then upsert
      const { resourceMetrics } = await reader.collect();
      const points = (name: string) =>
        resourceMetrics.scopeMetrics
          .flatMap((s) => s.metrics)
          .filter((m) => m.descriptor.name === name)
          .flatMap((m) => m.dataPoints as DataPoint<number>[])
          .filter((p) => p.attributes.table === table);
      expect(
        Object.fromEntries(points("syncgov_target_batches_total").map((p) => [p.attributes.method, p.value])),
      ).toEqual({ copy: 1, insert: 1, upsert: 1 });
      expect(points("syncgov_target_insert_retries_total").map((p) => p.value)).toEqual([1]);
    } finally {
      metrics.disable();
    }
  });

  it("with a version column, a batch of new keys inserts the newest version of each key", async () => {
    const table = await scratch.create("insert_versioned", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema, versionColumn: "version" });
    const row = (line: number, version: number) => orderLine("3", line, version);
    expect((await target.upsert([row(1, 7), row(1, 2), row(2, 1), row(2, 4)])).written).toBe(2);
    // A key twice in the batch: no COPY, the plain INSERT of the collapsed rows.
    expect(target.writeCounts()).toEqual({ copied: 0, inserted: 1, upserted: 0, insertsRetried: 0 });
    expect(Object.fromEntries(await statusByKey(table))).toEqual({ "3/1": "v7", "3/2": "v4" });
  });

  it("fails a batch that breaks another unique index, as the upsert alone would", async () => {
    const table = await scratch.create("other_unique", `${ORDER_LINES}, UNIQUE (status)`);
    const target = new PostgresTarget(pool, { table, schema });
    const base = orderLine("1", 1, 1, "taken");
    await target.upsert([base]);
    await expect(target.upsert([{ ...base, line: 2 }])).rejects.toMatchObject({ code: "23505" });
    expect(target.writeCounts()).toEqual({ copied: 1, inserted: 0, upserted: 0, insertsRetried: 1 });
    expect(Object.fromEntries(await statusByKey(table))).toEqual({ "1/1": "taken" });
  });

  it("never copies into a table with rewrite rules or row-level security, and stops copying when refused", async () => {
    const row = (line: number) => orderLine("5", line);
    // A rule an INSERT obeys and a COPY would not: every insert is also logged.
    const ruled = await scratch.create("ruled", ORDER_LINES);
    const log = await scratch.create("ruled_log", "order_id int8, line int4");
    await pool.query(
      `CREATE RULE log_insert AS ON INSERT TO ${ruled} DO ALSO INSERT INTO ${log} VALUES (NEW.order_id, NEW.line)`,
    );
    const withRule = new PostgresTarget(pool, { table: ruled, schema });
    await withRule.upsert([row(1), row(2)]);
    expect(withRule.writeCounts()).toMatchObject({ copied: 0, inserted: 1 });
    expect((await pool.query(`SELECT count(*)::int AS n FROM ${log}`)).rows[0].n).toBe(2);

    // Row-level security enabled before the target looks: no COPY.
    const secured = await scratch.create("secured", ORDER_LINES);
    await pool.query(`ALTER TABLE ${secured} ENABLE ROW LEVEL SECURITY`);
    const securedTarget = new PostgresTarget(pool, { table: secured, schema });
    await securedTarget.upsert([row(1)]);
    expect(securedTarget.writeCounts()).toMatchObject({ copied: 0, inserted: 1 });

    // Switched on after the target checked the table, for a role it applies to (the test user is a
    // superuser, whom it never binds): the server refuses the COPY, the batch is inserted, and later
    // batches do not try COPY again.
    const later = await scratch.create("secured_later", ORDER_LINES);
    const role = uniqueName("rls_writer").replaceAll("-", "_");
    await pool.query(`CREATE ROLE ${role} NOLOGIN`);
    await pool.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
    await pool.query(`GRANT SELECT, INSERT, UPDATE ON ${later} TO ${role}`);
    const asRole = new pg.Pool({
      connectionString: testEnv().databaseUrl,
      max: 2,
      options: `-c role=${role}`,
    });
    try {
      const target = new PostgresTarget(asRole, { table: later, schema });
      await target.upsert([row(1)]);
      expect(target.writeCounts()).toMatchObject({ copied: 1, inserted: 0 });
      await pool.query(`ALTER TABLE ${later} ENABLE ROW LEVEL SECURITY`);
      await pool.query(`CREATE POLICY open ON ${later} USING (true) WITH CHECK (true)`);
      await target.upsert([row(2)]);
      await target.upsert([row(3)]);
      expect(target.writeCounts()).toMatchObject({ copied: 1, inserted: 2, upserted: 0 });
      expect([...(await statusByKey(later)).keys()].sort()).toEqual(["5/1", "5/2", "5/3"]);
    } finally {
      await asRole.end();
      await pool.query(`DROP OWNED BY ${role}`);
      await pool.query(`DROP ROLE ${role}`);
    }
  });

  it("concurrent writers of overlapping keys converge, whichever of them inserts first", async () => {
    const table = await scratch.create("insert_race", ORDER_LINES);
    const rows = lastPerKey(rowsWithRepeatedKeys(3));
    const writers = [0, 1, 2].map(() => new PostgresTarget(pool, { table, schema, batchSize: 250 }));
    // The same rows from three writers at once: every batch of every writer must land without error.
    await Promise.all(writers.map((w) => w.upsert(rows)));
    const retried = writers.reduce((n, w) => n + w.writeCounts().insertsRetried, 0);
    expect(retried).toBeGreaterThan(0);
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, rows),
    );
  });

  it("deleteKeys deletes by composite key in batches", async () => {
    const table = await scratch.create("delete", ORDER_LINES);
    const target = new PostgresTarget(pool, { table, schema, batchSize: 300 });
    const rows = lastPerKey(rowsWithRepeatedKeys(1));
    await target.upsert(rows);
    const doomed = rows.filter((_, i) => i % 3 === 0);
    expect(
      await target.deleteKeys(doomed.map((r) => ({ order_id: r.order_id ?? null, line: r.line ?? null }))),
    ).toBe(doomed.length);
    const survivors = rows.filter((_, i) => i % 3 !== 0);
    expect(await postgresTableChecksum(pool, table, schema.columns)).toEqual(
      checksumRows(schema.columns, survivors),
    );
  });
});

describe("PostgresTarget.checkSchema", () => {
  async function problems(
    definition: string | undefined,
    options: { view?: boolean } = {},
  ): Promise<string[]> {
    let table = uniqueName("missing").replaceAll("-", "_");
    if (definition !== undefined) table = await scratch.create("schema", definition);
    if (options.view) {
      const view = `${table}_view`;
      await pool.query(`CREATE VIEW ${view} AS SELECT * FROM ${table}`);
      table = view;
    }
    try {
      await new PostgresTarget(pool, { table, schema }).checkSchema();
      return [];
    } catch (error) {
      expect(error).toBeInstanceOf(TargetSchemaError);
      expect((error as Error).message).toContain(`target table ${table} does not fit the sync: `);
      return [...(error as TargetSchemaError).problems];
    }
  }

  it("accepts a fitting table, whatever extra columns with defaults it has", async () => {
    expect(await problems(`${ORDER_LINES}, loaded_at timestamptz NOT NULL DEFAULT now(), note text`)).toEqual(
      [],
    );
  });

  it("accepts a unique index (not a constraint) on the keys, in any column order", async () => {
    const table = await scratch.create(
      "uniqueindex",
      "order_id int8 NOT NULL, line int4 NOT NULL, status text, amount numeric, updated_at timestamp, doc json, version int8 NOT NULL",
    );
    await pool.query(`CREATE UNIQUE INDEX ON ${table} (line, order_id)`);
    const target = new PostgresTarget(pool, { table, schema });
    await target.checkSchema();
    await target.upsert(lastPerKey(rowsWithRepeatedKeys(1)).slice(0, 10));
    expect((await pool.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]).toEqual({ n: 10 });
  });

  it("names missing columns, incompatible types, a missing key and unwritten NOT NULL columns", async () => {
    const table = "order_id int8, line int4, status int4, amount float8, doc jsonb, audit text NOT NULL";
    const found = await problems(table);
    const name = scratch.tables.at(-1)!;
    expect(found).toEqual([
      `table ${name} has no columns updated_at, version`,
      `column status is int4 in ${name}, which cannot hold text (use text or varchar or citext)`,
      `column amount is float8 in ${name}, which cannot hold numeric (use numeric)`,
      "no primary key or unique index on exactly (order_id, line); upserts need one",
      "column audit is NOT NULL without a default, and the sync does not write it",
    ]);
  });

  it("refuses a unique key that is not exactly the key columns, a partial one, and generated columns", async () => {
    const found = await problems(`order_id int8 PRIMARY KEY, line int4, status text, amount numeric,
      updated_at timestamptz, doc jsonb, version int8 GENERATED ALWAYS AS (order_id * 10) STORED`);
    expect(found).toEqual([
      "no primary key or unique index on exactly (order_id, line); upserts need one",
      "column version is generated and cannot be written",
    ]);
    const table = await scratch.create(
      "partial",
      "order_id int8, line int4, status text, amount numeric, updated_at timestamptz, doc jsonb, version int8",
    );
    await pool.query(`CREATE UNIQUE INDEX ON ${table} (order_id, line) WHERE status IS NOT NULL`);
    await expect(new PostgresTarget(pool, { table, schema }).checkSchema()).rejects.toThrow(
      /no primary key or unique index on exactly \(order_id, line\)/,
    );
  });

  it("says so when the table is missing or is a view", async () => {
    expect(await problems(undefined)).toEqual(["the table does not exist or is not visible"]);
    expect(await problems(ORDER_LINES, { view: true })).toEqual(["it is a view, not a table"]);
  });

  it("upsert checks the schema first and rechecks after a failure", async () => {
    const table = await scratch.create("late", "order_id int8, line int4");
    const target = new PostgresTarget(pool, { table, schema });
    await expect(target.upsert([])).rejects.toBeInstanceOf(TargetSchemaError);
    await pool.query(`ALTER TABLE ${table} ADD PRIMARY KEY (order_id, line), ADD status text, ADD amount numeric,
      ADD updated_at timestamptz, ADD doc jsonb, ADD version int8 NOT NULL`);
    expect((await target.upsert(lastPerKey(rowsWithRepeatedKeys(1)).slice(0, 3))).written).toBe(3);
  });
});
