import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  FieldMapError,
  type FixedWidthBatch,
  type FixedWidthLayout,
  FixedWidthParser,
  readFixedWidthFile,
} from "./fixedwidth.ts";

const dir = mkdtempSync(join(tmpdir(), "syncgov-fixedwidth-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function readAll(
  path: string,
  layout: FixedWidthLayout,
  batchSize?: number,
): Promise<FixedWidthBatch[]> {
  const batches: FixedWidthBatch[] = [];
  for await (const batch of readFixedWidthFile(path, layout, batchSize ? { batchSize } : {}))
    batches.push(batch);
  return batches;
}

// Columns: 0-5 account id, 6-25 name, 26-34 balance (2 implied decimals, signed), 35-42 opened (YYYYMMDD),
// 43 active flag, 44-57 updated (YYYYMMDDHHmmss).
const accounts: FixedWidthLayout = {
  fields: [
    { name: "account_id", start: 0, length: 6, type: "integer" },
    { name: "holder", start: 6, length: 20, type: "text" },
    { name: "balance", start: 26, length: 9, type: "numeric", impliedDecimals: 2 },
    { name: "opened", start: 35, length: 8, type: "date", format: "YYYYMMDD", nullValues: ["00000000"] },
    { name: "active", start: 43, length: 1, type: "boolean" },
    { name: "updated_at", start: 44, length: 14, type: "timestamp", format: "YYYYMMDDHHmmss" },
  ],
  keyColumns: ["account_id"],
};

function line(
  id: string,
  holder: string,
  balance: string,
  opened: string,
  active: string,
  updated: string,
): string {
  return id.padStart(6) + holder.padEnd(20) + balance.padStart(9) + opened + active + updated;
}

describe("FixedWidthParser: field map validation", () => {
  it("accepts a valid layout and derives the record length", () => {
    expect(new FixedWidthParser(accounts).recordLength).toBe(58);
  });

  it("reports overlaps, bad names, misplaced options and missing keys together", () => {
    let error: unknown;
    try {
      new FixedWidthParser({
        fields: [
          { name: "id", start: 0, length: 5, type: "integer" },
          { name: "amount", start: 4, length: 3, type: "numeric", format: "YYYY" },
          { name: "drop table", start: 10, length: -1, type: "text", impliedDecimals: 2 },
          { name: "born", start: 20, length: 8, type: "date", format: "YYYYMMDDHH" },
        ],
        keyColumns: ["nope"],
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FieldMapError);
    expect((error as FieldMapError).problems).toEqual([
      'field "amount": format applies to dates and timestamps only',
      'field "drop table": name is not a SQL identifier',
      'field "drop table": length must be an integer >= 1',
      'field "drop table": impliedDecimals applies to numeric fields only',
      'field "born": format "YYYYMMDDHH" has time parts, but the field is a date',
      "fields id [0, 5) and amount [4, 7) overlap",
      'key column "nope" is not a field',
    ]);
  });
});

describe("FixedWidthParser.parseLine", () => {
  const parser = new FixedWidthParser(accounts);

  it("parses every type, trims, applies formats, implied decimals and null values", () => {
    expect(
      parser.parseLine(line("42", "  Ada Lovelace", "-0012345", "19991231", "Y", "20240229235958")),
    ).toEqual({
      ok: true,
      row: {
        account_id: 42,
        holder: "Ada Lovelace",
        balance: "-123.45",
        opened: "1999-12-31",
        active: true,
        updated_at: "2024-02-29T23:59:58.000000Z",
      },
    });
    const blanks = parser.parseLine(line("7", "", "", "00000000", " ", "              "));
    expect(blanks).toEqual({
      ok: true,
      row: { account_id: 7, holder: null, balance: null, opened: null, active: null, updated_at: null },
    });
  });

  it("rejects short lines, bad numbers, bad dates and blank keys with their column", () => {
    expect(parser.parseLine("000042Ada")).toEqual({
      ok: false,
      reason: "TooShort",
      message: "line has 9 characters, the field map needs 58",
    });
    expect(parser.parseLine(line("42", "Ada", "12x45", "19991231", "Y", "20240229235958"))).toMatchObject({
      ok: false,
      column: "balance",
      reason: "NotANumber",
    });
    expect(parser.parseLine(line("42", "Ada", "1", "19990231", "Y", "20240229235958"))).toMatchObject({
      ok: false,
      column: "opened",
      reason: "BadDate",
    });
    expect(parser.parseLine(line("42", "Ada", "1", "1999-1-1", "Y", "20240229235958"))).toMatchObject({
      ok: false,
      column: "opened",
      reason: "BadDate",
      message: "column opened: text does not match the format YYYYMMDD",
    });
    expect(parser.parseLine(line("", "Ada", "1", "19990101", "Y", "20240229235958"))).toMatchObject({
      ok: false,
      column: "account_id",
      reason: "MissingKey",
    });
    expect(parser.parseLine(line("4x", "Ada", "1", "19990101", "Y", "20240229235958"))).toMatchObject({
      ok: false,
      column: "account_id",
      reason: "NotAnInteger",
    });
  });

  it("counts offsets in code points and keeps spaces when trim is off", () => {
    const p = new FixedWidthParser({
      fields: [
        { name: "code", start: 0, length: 3, type: "text", trim: false },
        { name: "label", start: 3, length: 4, type: "text" },
        { name: "n", start: 7, length: 2, type: "integer" },
      ],
      keyColumns: ["n"],
    });
    expect(p.parseLine(" a 😀é  12")).toEqual({ ok: true, row: { code: " a ", label: "😀é", n: 12 } });
  });

  it("reads fractional seconds and literal separators in formats", () => {
    const p = new FixedWidthParser({
      fields: [
        { name: "id", start: 0, length: 2, type: "integer" },
        { name: "at", start: 2, length: 23, type: "timestamp", format: "DD/MM/YYYY HH:mm:ss.SSS" },
      ],
      keyColumns: ["id"],
    });
    expect(p.parseLine(" 131/12/2023 23:59:59.125")).toEqual({
      ok: true,
      row: { id: 1, at: "2023-12-31T23:59:59.125000Z" },
    });
  });
});

describe("readFixedWidthFile", () => {
  it("streams batches, skips headers, handles CRLF and reports rejects with line numbers", async () => {
    const good = (i: number) =>
      line(String(i), `holder ${i}`, String(i * 100), "20200101", "N", "20240101000000");
    const lines = ["HEADER 2024-01-01", good(1), good(2), "short line", good(3), "", good(4), good(5)];
    const path = file("accounts.txt", `${lines.join("\r\n")}\r\n`);
    const batches = await readAll(path, { ...accounts, skipLines: 1 }, 2);
    // The second batch is cut by its two rejects, not by rows.
    expect(batches.map((b) => b.rows.map((r) => r.account_id))).toEqual([[1, 2], [3], [4, 5]]);
    expect(batches.map((b) => b.lastLineNumber)).toEqual([3, 6, 8]);
    const rejects = batches.flatMap((b) => b.rejects);
    expect(rejects).toEqual([
      {
        lineNumber: 4,
        line: "short line",
        reason: "TooShort",
        message: "line has 10 characters, the field map needs 58",
      },
      {
        lineNumber: 6,
        line: "",
        reason: "TooShort",
        message: "line has 0 characters, the field map needs 58",
      },
    ]);
    expect(batches[2]!.rows[1]).toEqual({
      account_id: 5,
      holder: "holder 5",
      balance: "5",
      opened: "2020-01-01",
      active: false,
      updated_at: "2024-01-01T00:00:00.000000Z",
    });
  });

  it("cuts a batch at batchSize rejects so a file of garbage stays bounded", async () => {
    const path = file("garbage.txt", Array.from({ length: 5 }, (_, i) => `bad ${i}`).join("\n"));
    const batches = await readAll(path, accounts, 2);
    expect(batches.map((b) => [b.rows.length, b.rejects.length])).toEqual([
      [0, 2],
      [0, 2],
      [0, 1],
    ]);
  });

  it("reads latin1 files with one character per byte", async () => {
    const layout: FixedWidthLayout = {
      fields: [
        { name: "id", start: 0, length: 3, type: "integer" },
        { name: "city", start: 3, length: 8, type: "text" },
      ],
      keyColumns: ["id"],
      encoding: "latin1",
    };
    const path = file("latin1.txt", Buffer.from("  1Köln    \n  2Zürich  \n", "latin1"));
    const batches = await readAll(path, layout);
    expect(batches.flatMap((b) => b.rows)).toEqual([
      { id: 1, city: "Köln" },
      { id: 2, city: "Zürich" },
    ]);
  });

  it("yields nothing for an empty file", async () => {
    expect(await readAll(file("empty.txt", ""), accounts)).toEqual([]);
  });
});
