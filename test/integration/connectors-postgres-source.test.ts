import { describe, expect, it } from "vitest";
import {
  type CursorMark,
  PostgresSource,
  SourceSchemaError,
} from "../../controller/connectors/postgres/source.ts";
import { PostgresTarget } from "../../controller/connectors/postgres/target.ts";
import { defineRowSchema, type Row } from "../../controller/connectors/record.ts";
import { postgresTableChecksum } from "../../controller/validation/postgres.ts";
import { scratchTables } from "../support/postgres.ts";

const scratch = scratchTables({ max: 4 });
const pool = scratch.pool;

describe("PostgresSource.snapshot", () => {
  const schema = defineRowSchema(
    [
      { name: "region", type: "text" },
      { name: "seq", type: "integer" },
      { name: "amount", type: "numeric" },
    ],
    ["region", "seq"],
  );

  async function keysOf(source: PostgresSource, options?: Parameters<PostgresSource["snapshot"]>[0]) {
    const keys: string[] = [];
    const pages: number[] = [];
    for await (const batch of source.snapshot(options)) {
      pages.push(batch.rows.length);
      expect(batch.rejects).toEqual([]);
      for (const row of batch.rows) keys.push(`${row.region}/${row.seq}`);
      const last = batch.rows.at(-1)!;
      expect(batch.lastKey).toEqual({ region: last.region, seq: String(last.seq) });
    }
    return { keys, pages };
  }

  it("returns every row of a 20k-row table exactly once, in key order", async () => {
    const table = await scratch.create(
      "snapshot",
      "region text, seq int4, amount numeric(10,3), PRIMARY KEY (region, seq)",
    );
    // 4 regions x 5000 seqs, inserted in scrambled order so physical order differs from key order.
    await pool.query(
      `INSERT INTO ${table}
       SELECT 'region-' || (g % 4), g / 4, (g % 1000) / 8.0 FROM generate_series(0, 19999) g ORDER BY md5(g::text)`,
    );
    const source = new PostgresSource(pool, { table, schema, batchSize: 777 });
    const { keys, pages } = await keysOf(source);
    expect(keys).toHaveLength(20_000);
    expect(new Set(keys).size).toBe(20_000);
    expect(pages).toEqual([...Array(25).fill(777), 20_000 - 25 * 777]);
    const expected = await pool.query<{ key: string }>(
      `SELECT region || '/' || seq AS key FROM ${table} ORDER BY region, seq`,
    );
    expect(keys).toEqual(expected.rows.map((r) => r.key));

    // Resuming behind a key reads exactly the rest.
    const resumed = await keysOf(source, { after: { region: "region-2", seq: 4999 } });
    expect(resumed.keys).toEqual(keys.slice(15_000));
  });

  it("reads one consistent snapshot, and the values arrive canonical", async () => {
    const table = await scratch.create(
      "consistent",
      "region text, seq int4, amount numeric(10,3), PRIMARY KEY (region, seq)",
    );
    await pool.query(`INSERT INTO ${table} SELECT 'r', g, 1.500 FROM generate_series(1, 10) g`);
    const source = new PostgresSource(pool, { table, schema, batchSize: 4 });
    const seen: Row[] = [];
    for await (const batch of source.snapshot()) {
      if (seen.length === 0) await pool.query(`INSERT INTO ${table} VALUES ('r', 100, 2), ('a', 1, 3)`);
      seen.push(...batch.rows);
    }
    expect(seen).toHaveLength(10);
    expect(seen[0]).toEqual({ region: "r", seq: 1, amount: "1.5" });

    const live: Row[] = [];
    for await (const batch of source.snapshot({ consistent: false })) live.push(...batch.rows);
    expect(live).toHaveLength(12);
  });

  it("sets aside rows the row model cannot hold, with their key", async () => {
    const table = await scratch.create("rejects", "id int8 PRIMARY KEY, at timestamptz, n int8");
    await pool.query(
      `INSERT INTO ${table} VALUES (1, '2024-01-01 00:00:00+02', 5), (2, 'infinity', 5), (3, now(), 3000000000)`,
    );
    const source = new PostgresSource(pool, {
      table,
      schema: defineRowSchema(
        [
          { name: "id", type: "bigint" },
          { name: "at", type: "timestamp" },
          { name: "n", type: "integer" },
        ],
        ["id"],
      ),
    });
    const batches = [];
    for await (const batch of source.snapshot()) batches.push(batch);
    expect(batches.flatMap((b) => b.rows)).toEqual([{ id: "1", at: "2023-12-31T22:00:00.000000Z", n: 5 }]);
    expect(batches.flatMap((b) => b.rejects)).toEqual([
      {
        key: { id: "2" },
        column: "at",
        reason: "BadTimestamp",
        message: expect.stringContaining("column at:"),
      },
      {
        key: { id: "3" },
        column: "n",
        reason: "OutOfRange",
        message: "column n: integer is outside the 32-bit range",
      },
    ]);
  });

  it("checks the table: columns, types, and a unique key within the key columns", async () => {
    const table = await scratch.create("srcschema", "region text, seq int8, amount float8");
    const source = new PostgresSource(pool, { table, schema });
    const error = await source.checkSchema().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SourceSchemaError);
    expect((error as SourceSchemaError).problems).toEqual([
      `column amount is float8 in ${table}, which cannot hold numeric (use numeric)`,
      "no primary key or unique index within the key columns (region, seq)",
      "key column region allows NULL, and keyset reads would skip rows where it is NULL",
      "key column seq allows NULL, and keyset reads would skip rows where it is NULL",
    ]);
    await pool.query(`ALTER TABLE ${table} ALTER amount TYPE numeric, ADD UNIQUE (seq), ALTER region SET NOT NULL,
      ALTER seq SET NOT NULL`);
    await source.checkSchema();
  });
});

describe("PostgresSource.incremental", () => {
  const schema = defineRowSchema(
    [
      { name: "id", type: "integer" },
      { name: "updated_at", type: "timestamp" },
      { name: "payload", type: "text" },
    ],
    ["id"],
  );
  const DEFINITION = "id int4 PRIMARY KEY, updated_at timestamptz, payload text";

  async function copy(source: PostgresSource, target: PostgresTarget, since?: CursorMark) {
    const ids: number[] = [];
    let mark = since;
    for await (const batch of source.incremental(since)) {
      await target.upsert(batch.rows);
      ids.push(...batch.rows.map((r) => r.id as number));
      mark = batch.mark;
    }
    return { ids, mark };
  }

  it("copies only new and changed rows, including a tie at the boundary, and never skips a tie", async () => {
    const sourceTable = await scratch.create("cursor_src", DEFINITION);
    const targetTable = await scratch.create("cursor_dst", DEFINITION);
    // Ten rows share one cursor value, more than a page holds; NULL cursors are never read.
    await pool.query(
      `INSERT INTO ${sourceTable}
       SELECT g, '2024-05-01 10:00:00+00'::timestamptz + (CASE WHEN g BETWEEN 11 AND 20 THEN 0 ELSE g END) * interval '1 second', 'v1'
         FROM generate_series(1, 30) g`,
    );
    await pool.query(`INSERT INTO ${sourceTable} VALUES (31, NULL, 'no cursor')`);
    const source = new PostgresSource(pool, {
      table: sourceTable,
      schema,
      cursorColumn: "updated_at",
      batchSize: 3,
    });
    const target = new PostgresTarget(pool, { table: targetTable, schema });

    const first = await copy(source, target);
    expect([...first.ids].sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(first.mark).toEqual({ cursor: "2024-05-01T10:00:30.000000Z" });

    // Afterwards: a new row lands exactly on the mark with a smaller key than the row read last,
    // one row changes, one new row is later, and one old row changes without moving its cursor.
    await pool.query(
      `INSERT INTO ${sourceTable} VALUES (0, '2024-05-01 10:00:30+00', 'tie'), (40, '2024-05-01 11:00:00+00', 'new')`,
    );
    await pool.query(
      `UPDATE ${sourceTable} SET payload = 'v2', updated_at = '2024-05-01 10:30:00+00' WHERE id = 5`,
    );
    await pool.query(`UPDATE ${sourceTable} SET payload = 'silent' WHERE id = 6`);

    const second = await copy(source, target, first.mark);
    // Row 30 is read again (it sits on the mark); rows 0, 5 and 40 are new or changed.
    expect(second.ids).toEqual([0, 30, 5, 40]);
    expect(second.mark).toEqual({ cursor: "2024-05-01T11:00:00.000000Z" });

    const third = await copy(source, target, second.mark);
    expect(third).toEqual({ ids: [40], mark: second.mark });

    // The target now equals the source except for the row whose change left its cursor alone.
    const rows = await pool.query<{ id: number; payload: string }>(
      `SELECT id, payload FROM ${targetTable} ORDER BY id`,
    );
    expect(rows.rows.find((r) => r.id === 6)?.payload).toBe("v1");
    await pool.query(`UPDATE ${targetTable} SET payload = 'silent' WHERE id = 6`);
    await pool.query(`DELETE FROM ${sourceTable} WHERE id = 31`);
    expect(await postgresTableChecksum(pool, targetTable, schema.columns)).toEqual(
      await postgresTableChecksum(pool, sourceTable, schema.columns),
    );
  });

  it("follows an integer cursor too, resuming at the mark", async () => {
    const table = await scratch.create("cursor_seq", "id int4 PRIMARY KEY, change_seq int8 NOT NULL");
    await pool.query(`INSERT INTO ${table} SELECT g, g / 2 FROM generate_series(1, 9) g`);
    const source = new PostgresSource(pool, {
      table,
      schema: defineRowSchema(
        [
          { name: "id", type: "integer" },
          { name: "change_seq", type: "bigint" },
        ],
        ["id"],
      ),
      cursorColumn: "change_seq",
      batchSize: 2,
    });
    const ids: number[] = [];
    for await (const batch of source.incremental({ cursor: "3" }))
      ids.push(...batch.rows.map((r) => r.id as number));
    expect(ids).toEqual([6, 7, 8, 9]);
  });
});
