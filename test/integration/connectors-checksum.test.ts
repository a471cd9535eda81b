import { describe, expect, it } from "vitest";
import { describeTable } from "../../controller/connectors/postgres/catalog.ts";
import { PostgresSource } from "../../controller/connectors/postgres/source.ts";
import { coerceColumnValue, defineRowSchema, type Row } from "../../controller/connectors/record.ts";
import { checksumRows } from "../../controller/validation/checksum.ts";
import { checksumSql, postgresTableChecksum } from "../../controller/validation/postgres.ts";
import { scratchTables } from "../support/postgres.ts";

// A session whose DateStyle, TimeZone and IntervalStyle differ from the defaults: the canonical form
// must not depend on any of them.
const scratch = scratchTables({
  max: 3,
  options: "-c TimeZone=America/New_York -c DateStyle=SQL,DMY -c extra_float_digits=0",
});
const pool = scratch.pool;

const schema = defineRowSchema(
  [
    { name: "id", type: "integer" },
    { name: "name", type: "text" },
    { name: "amount", type: "numeric" },
    { name: "big", type: "bigint" },
    { name: "active", type: "boolean" },
    { name: "at_utc", type: "timestamp" },
    { name: "at_local", type: "timestamp" },
    { name: "day", type: "date" },
    { name: "doc", type: "json" },
    { name: "doc_text", type: "json" },
    { name: "label", type: "text" },
  ],
  ["id"],
);

const DEFINITION = `id int4 PRIMARY KEY, name text, amount numeric(14,4), big int8, active bool,
  at_utc timestamptz, at_local timestamp(6), day date, doc jsonb, doc_text json, label varchar(40)`;

/**
 * Values as a producer would send them — not canonical: trailing zeros, offsets, exponents, JSON with
 * unsorted and duplicate keys — inserted into PostgreSQL as text and coerced in JS independently.
 */
const samples: Record<string, unknown>[] = [
  {
    id: 1,
    name: "plain",
    amount: "12.5000",
    big: "9223372036854775807",
    active: true,
    at_utc: "2024-02-29T23:59:59.123456+05:30",
    at_local: "2024-02-29 23:59:59.5",
    day: "2024-02-29",
    doc: '{"b": 1, "a": {"y": [1, 2.50, "x"], "x": "é\\t"}, "a": {"z": null}}',
    doc_text: '{"k": "v", "kk": [true, false]}',
    label: "ünïcödé ✓ 😀 中文",
  },
  {
    id: 2,
    name: null,
    amount: null,
    big: null,
    active: null,
    at_utc: null,
    at_local: null,
    day: null,
    doc: null,
    doc_text: null,
    label: null,
  },
  {
    id: 3,
    name: "tab\there, backslash \\ and \\N and newline\nand quote ' \"",
    amount: "-0.0010",
    big: "-9223372036854775808",
    active: false,
    at_utc: "1970-01-01T00:00:00Z",
    at_local: "0001-01-01 00:00:00",
    day: "0001-01-01",
    doc: '[1e2, -0, 0.1, "\\u0001", {"": ""}]',
    doc_text: '"just a string"',
    label: "",
  },
  {
    id: 4,
    name: "\\N",
    amount: "1.5e3",
    big: "0",
    active: true,
    at_utc: "9999-12-31 23:59:59.999999+00",
    at_local: "2000-06-15 12:00:00",
    day: "9999-12-31",
    doc: '{"nested": {"deep": {"deeper": [[], {}]}}}',
    doc_text: "null",
    label: "\\",
  },
  {
    id: 5,
    name: "",
    amount: "0",
    big: "42",
    active: false,
    at_utc: "2024-06-01T12:00:00-07:00",
    doc: '{"price": 2.50, "exact": 123456789012345678901234567890.10, "zero": -0.000, "e": 1.5E+3}',
    doc_text: "[1.0, 10, 100.00]",
  },
];

function jsRow(sample: Record<string, unknown>): Row {
  const row: Row = {};
  for (const column of schema.columns) row[column.name] = coerceColumnValue(column, sample[column.name]);
  return row;
}

async function createAndFill(order: readonly Record<string, unknown>[]): Promise<string> {
  const table = await scratch.create("checksum", DEFINITION);
  const names = schema.columns.map((c) => c.name);
  for (const sample of order) {
    await pool.query(
      `INSERT INTO ${table} (${names.join(", ")}) VALUES (${names.map((_, i) => `$${i + 1}`).join(", ")})`,
      names.map((n) => sample[n] ?? null),
    );
  }
  return table;
}

describe("table checksum: JavaScript and PostgreSQL agree", () => {
  it("on nulls, unicode, escapes, numerics, timestamps, booleans and json", async () => {
    const table = await createAndFill(samples);
    const rows = samples.map(jsRow);
    const inDatabase = await postgresTableChecksum(pool, table, schema.columns);
    expect(inDatabase).toEqual(checksumRows(schema.columns, rows));
    expect(inDatabase.rowCount).toBe(5);

    // Row by row too, so a disagreement would point at the row.
    const info = await describeTable(pool, table);
    const pgTypes = new Map([...info!.columns.values()].map((c) => [c.name, c.pgType]));
    const perRow = await pool.query<{ id: number; sum: string }>(
      checksumSql(table, schema.columns, pgTypes).replace("FROM", ", min(id) AS id FROM") +
        " GROUP BY id ORDER BY id",
    );
    expect(perRow.rows.map((r) => r.id)).toEqual([1, 2, 3, 4, 5]);
    for (const r of perRow.rows) {
      const row = rows.find((x) => x.id === r.id)!;
      expect({ id: r.id, sum: BigInt(r.sum).toString(16).padStart(16, "0") }).toEqual({
        id: r.id,
        sum: checksumRows(schema.columns, [row]).sum,
      });
    }
  });

  it("whatever order rows are stored or fed in, and not when a value changes", async () => {
    const forward = await createAndFill(samples);
    const backward = await createAndFill([...samples].reverse());
    const a = await postgresTableChecksum(pool, forward, schema.columns);
    expect(await postgresTableChecksum(pool, backward, schema.columns)).toEqual(a);
    expect(checksumRows(schema.columns, [...samples].reverse().map(jsRow))).toEqual(a);

    await pool.query(`UPDATE ${backward} SET amount = amount + 0.0001 WHERE id = 3`);
    const changed = await postgresTableChecksum(pool, backward, schema.columns);
    expect(changed.rowCount).toBe(a.rowCount);
    expect(changed.sum).not.toBe(a.sum);
  });

  it("on rows read back through PostgresSource", async () => {
    const table = await createAndFill(samples);
    const source = new PostgresSource(pool, { table, schema });
    const read: Row[] = [];
    for await (const batch of source.snapshot()) read.push(...batch.rows);
    expect(read).toEqual(samples.map(jsRow));
    expect(checksumRows(schema.columns, read)).toEqual(
      await postgresTableChecksum(pool, table, schema.columns),
    );
  });

  it("on 5000 generated rows", async () => {
    const table = await scratch.create("checksum", DEFINITION);
    await pool.query(
      `INSERT INTO ${table}
       SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'name ' || g || E'\\t' || chr(200 + g % 500) END,
              (g * 1.25 - 3000)::numeric(14,4), g::int8 * 1000000007, g % 3 = 0,
              '2020-01-01 00:00:00+00'::timestamptz + g * interval '1 minute 0.000123 second',
              '2020-01-01'::timestamp + g * interval '1 hour', '2020-01-01'::date + g,
              jsonb_build_object('g', g, 'half', g / 2.0, 'tags', jsonb_build_array('a', g % 7)),
              json_build_object('z', g, 'a', NULL), 'label ' || g
         FROM generate_series(1, 5000) g`,
    );
    const source = new PostgresSource(pool, { table, schema, batchSize: 1000 });
    const read: Row[] = [];
    for await (const batch of source.snapshot()) read.push(...batch.rows);
    expect(read).toHaveLength(5000);
    // Re-coercing what was read (e.g. after a trip through Kafka as JSON) changes nothing.
    const recoerced = read.map((row) => jsRow(JSON.parse(JSON.stringify(row)) as Record<string, unknown>));
    expect(checksumRows(schema.columns, recoerced)).toEqual(
      await postgresTableChecksum(pool, table, schema.columns),
    );
  });
});
