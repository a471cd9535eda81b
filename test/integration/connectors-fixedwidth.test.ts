import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  type FixedWidthLayout,
  type LineReject,
  readFixedWidthFile,
} from "../../controller/connectors/fixedwidth.ts";
import { PostgresTarget } from "../../controller/connectors/postgres/target.ts";
import type { Row } from "../../controller/connectors/record.ts";
import { ChecksumAccumulator } from "../../controller/validation/checksum.ts";
import { postgresTableChecksum } from "../../controller/validation/postgres.ts";
import { scratchTables } from "../support/postgres.ts";

const scratch = scratchTables({ max: 2 });
const pool = scratch.pool;
const dir = mkdtempSync(join(tmpdir(), "syncgov-fixedwidth-load-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A legacy customer extract: id 0-7, name 8-37, balance 38-49 (2 implied decimals), opened 50-57
// (YYYYMMDD, 00000000 = never), vip 58 (Y/N), changed 59-72 (YYYYMMDDHHmmss).
const layout: FixedWidthLayout = {
  fields: [
    { name: "customer_id", start: 0, length: 8, type: "bigint" },
    { name: "name", start: 8, length: 30, type: "text" },
    { name: "balance", start: 38, length: 12, type: "numeric", impliedDecimals: 2 },
    { name: "opened", start: 50, length: 8, type: "date", format: "YYYYMMDD", nullValues: ["00000000"] },
    { name: "vip", start: 58, length: 1, type: "boolean" },
    { name: "changed_at", start: 59, length: 14, type: "timestamp", format: "YYYYMMDDHHmmss" },
  ],
  keyColumns: ["customer_id"],
  skipLines: 1,
};

function record(id: number): string {
  const opened =
    id % 10 === 0 ? "00000000" : `20${String(10 + (id % 14)).padStart(2, "0")}0${1 + (id % 9)}15`;
  return (
    String(id).padStart(8, "0") +
    `Kunde ${id} Müller-Lüdenscheidt`.slice(0, 30).padEnd(30) +
    String(id * 137 - 50_000).padStart(12) +
    opened +
    (id % 3 === 0 ? "Y" : "N") +
    `2024${String(1 + (id % 12)).padStart(2, "0")}${String(1 + (id % 28)).padStart(2, "0")}123456`
  );
}

describe("fixed-width file into PostgreSQL", () => {
  it("loads every good line, counts each malformed one with its reason, and reloads idempotently", async () => {
    const table = await scratch.create(
      "fixedwidth",
      `customer_id int8 PRIMARY KEY, name varchar(30), balance numeric(14,2), opened date, vip bool,
      changed_at timestamptz, loaded_at timestamptz NOT NULL DEFAULT now()`,
    );
    const lines = ["CUSTOMERS EXTRACT 20240101"];
    const malformed = new Map<number, string>(); // line number -> expected reason
    for (let id = 1; id <= 5000; id++) {
      let line = record(id);
      if (id % 500 === 1) line = line.slice(0, 40);
      else if (id % 500 === 2) line = `${line.slice(0, 38)}     12x4567${line.slice(50)}`;
      else if (id % 500 === 3) line = `${line.slice(0, 50)}20230230${line.slice(58)}`;
      else if (id % 500 === 4) line = `        ${line.slice(8)}`;
      else if (id % 500 === 5) line = `${line.slice(0, 58)}?${line.slice(59)}`;
      lines.push(line);
      const reason = ["TooShort", "NotANumber", "BadDate", "MissingKey", "NotABoolean"][(id % 500) - 1];
      if (reason) malformed.set(lines.length, reason);
    }
    const path = join(dir, "customers.dat");
    writeFileSync(path, `${lines.join("\n")}\n`);

    const target = new PostgresTarget(pool, {
      table,
      schema: {
        columns: layout.fields.map((f) => ({ name: f.name, type: f.type })),
        keyColumns: layout.keyColumns,
      },
    });
    async function load() {
      const rejects: LineReject[] = [];
      const checksum = new ChecksumAccumulator(target.schema.columns);
      let written = 0;
      for await (const batch of readFixedWidthFile(path, layout, { batchSize: 700 })) {
        written += (await target.upsert(batch.rows)).written;
        checksum.addAll(batch.rows);
        rejects.push(...batch.rejects);
      }
      return { rejects, written, checksum: checksum.result() };
    }

    const first = await load();
    expect(first.rejects).toHaveLength(50);
    expect(new Map(first.rejects.map((r) => [r.lineNumber, r.reason]))).toEqual(malformed);
    for (const reject of first.rejects) expect(reject.line).toBe(lines[reject.lineNumber - 1]);
    expect(first.written).toBe(4950);
    const inTable = await postgresTableChecksum(pool, table, target.schema.columns);
    expect(inTable).toEqual(first.checksum);
    expect(inTable.rowCount).toBe(4950);

    const sample = await pool.query<Row>(
      `SELECT customer_id::text, name, balance::text, opened::text, vip, to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS changed_at
         FROM ${table} WHERE customer_id IN (10, 4321) ORDER BY customer_id`,
    );
    // What the generator wrote for these ids, worked out independently of the parser.
    const expected = (id: number) => ({
      customer_id: String(id),
      name: `Kunde ${id} Müller-Lüdenscheidt`.slice(0, 30).trimEnd(),
      balance: ((id * 137 - 50_000) / 100).toFixed(2),
      opened: id % 10 === 0 ? null : `${2010 + (id % 14)}-0${1 + (id % 9)}-15`,
      vip: id % 3 === 0,
      changed_at: `2024-${String(1 + (id % 12)).padStart(2, "0")}-${String(1 + (id % 28)).padStart(2, "0")} 12:34:56`,
    });
    expect(sample.rows).toEqual([expected(10), expected(4321)]);

    const second = await load();
    expect(second.checksum).toEqual(first.checksum);
    expect(await postgresTableChecksum(pool, table, target.schema.columns)).toEqual(inTable);
  });
});
