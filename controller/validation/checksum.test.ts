import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Column, Row } from "../connectors/record.ts";
import {
  ChecksumAccumulator,
  canonicalRowText,
  checksumRows,
  escapeField,
  fieldText,
  formatSum,
  rowHash,
  sameChecksum,
} from "./checksum.ts";

const columns: Column[] = [
  { name: "id", type: "integer" },
  { name: "name", type: "text" },
  { name: "amount", type: "numeric" },
  { name: "active", type: "boolean" },
  { name: "at", type: "timestamp" },
  { name: "day", type: "date" },
  { name: "doc", type: "json" },
  { name: "big", type: "bigint" },
];

const row: Row = {
  id: 1,
  name: "tab\there \\ back",
  amount: "-12.5",
  active: false,
  at: "2024-01-02T03:04:05.000006Z",
  day: "2024-01-02",
  doc: '{"a": "x\\ty"}',
  big: "9223372036854775807",
};

describe("canonical row text", () => {
  it("renders each type and joins fields with TAB", () => {
    expect(canonicalRowText(columns, row)).toBe(
      [
        "1",
        "tab\\there \\\\ back",
        "-12.5",
        "false",
        "2024-01-02T03:04:05.000006Z",
        "2024-01-02",
        '{"a": "x\\\\ty"}',
        "9223372036854775807",
      ].join("\t"),
    );
  });

  it("tells NULL from the text \\N and from an empty string", () => {
    const text: Column = { name: "t", type: "text" };
    expect(fieldText(text, null)).toBe("\\N");
    expect(fieldText(text, "\\N")).toBe("\\\\N");
    expect(fieldText(text, "")).toBe("");
    expect(escapeField("plain")).toBe("plain");
  });

  it("never lets a value forge a field boundary", () => {
    const two: Column[] = [
      { name: "a", type: "text" },
      { name: "b", type: "text" },
    ];
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), fc.string(), (a1, b1, a2, b2) => {
        fc.pre(a1 !== a2 || b1 !== b2);
        expect(canonicalRowText(two, { a: a1, b: b1 })).not.toBe(canonicalRowText(two, { a: a2, b: b2 }));
      }),
    );
  });
});

describe("row hash", () => {
  it("is the first 8 bytes of MD5 as an unsigned big-endian integer (RFC 1321 vectors)", () => {
    expect(rowHash("").toString(16)).toBe("d41d8cd98f00b204");
    expect(rowHash("abc").toString(16)).toBe("900150983cd24fb0");
  });

  it("hashes the UTF-8 bytes", () => {
    const expected = createHash("md5").update(Buffer.from("é😀", "utf8")).digest("hex").slice(0, 16);
    expect(rowHash("é😀").toString(16).padStart(16, "0")).toBe(expected);
  });
});

describe("table checksum", () => {
  const rows: Row[] = Array.from({ length: 50 }, (_, i) => ({
    ...row,
    id: i,
    name: i % 7 === 0 ? null : `name ${i}`,
  }));

  it("sums row hashes modulo 2^64 and counts rows", () => {
    const expected = rows.reduce((sum, r) => sum + rowHash(canonicalRowText(columns, r)), 0n) % 2n ** 64n;
    const sum = checksumRows(columns, rows);
    expect(sum).toEqual({ rowCount: 50, sum: expected.toString(16).padStart(16, "0") });
    expect(formatSum(2n ** 64n + 5n)).toBe("0000000000000005");
    expect(formatSum(-1n)).toBe("ffffffffffffffff");
  });

  it("does not depend on row order or on how rows are fed", () => {
    const whole = checksumRows(columns, rows);
    fc.assert(
      fc.property(fc.shuffledSubarray(rows, { minLength: rows.length }), (shuffled) => {
        expect(checksumRows(columns, shuffled)).toEqual(whole);
      }),
    );
    const accumulator = new ChecksumAccumulator(columns);
    accumulator.addAll(rows.slice(0, 20));
    accumulator.addAll(rows.slice(20));
    expect(sameChecksum(accumulator.result(), whole)).toBe(true);
  });

  it("changes when a value, a row or the column order changes", () => {
    const whole = checksumRows(columns, rows);
    const changed = rows.map((r, i) => (i === 3 ? { ...r, amount: "-12.51" } : r));
    expect(checksumRows(columns, changed).sum).not.toBe(whole.sum);
    expect(checksumRows(columns, [...rows, rows[0]!])).not.toEqual(whole);
    expect(checksumRows([...columns].reverse(), rows).sum).not.toBe(whole.sum);
    expect(checksumRows(columns, [])).toEqual({ rowCount: 0, sum: "0000000000000000" });
  });
});
