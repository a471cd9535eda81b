import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { defineRowSchema, type Row } from "../connectors/record.ts";
import { checksumRows } from "../validation/checksum.ts";
import { compareChecksums, ExpectedTargetChecksum } from "./validation.ts";

const schema = defineRowSchema(
  [
    { name: "id", type: "bigint" },
    { name: "name", type: "text" },
    { name: "v", type: "integer", nullable: false },
  ],
  ["id"],
);

/** What an upsert into an empty table leaves: per key the greatest version, the last of equals. */
function survivors(rows: readonly Row[], versioned: boolean): Row[] {
  const byKey = new Map<string, Row>();
  for (const row of rows) {
    const key = String(row.id);
    const existing = byKey.get(key);
    if (existing && versioned && (existing.v as number) > (row.v as number)) continue;
    byKey.set(key, row);
  }
  return [...byKey.values()];
}

const rowArb = fc.record({
  id: fc.integer({ min: 1, max: 20 }).map(String),
  name: fc.string(),
  v: fc.integer({ min: 0, max: 5 }),
});

describe("ExpectedTargetChecksum", () => {
  it("equals the checksum of the rows an upsert leaves, last per key", () => {
    fc.assert(
      fc.property(fc.array(rowArb, { maxLength: 60 }), (rows) => {
        const expected = new ExpectedTargetChecksum(schema);
        for (const row of rows) expected.add(row);
        expect(expected.result()).toEqual(checksumRows(schema.columns, survivors(rows, false)));
      }),
    );
  });

  it("keeps the greatest version per key when the target has a version column", () => {
    fc.assert(
      fc.property(fc.array(rowArb, { maxLength: 60 }), (rows) => {
        const expected = new ExpectedTargetChecksum(schema, "v");
        for (const row of rows) expected.add(row);
        expect(expected.result()).toEqual(checksumRows(schema.columns, survivors(rows, true)));
      }),
    );
  });
});

describe("compareChecksums", () => {
  it("passes only when count and sum both agree", () => {
    const a = { rowCount: 2, sum: "00000000000000ff" };
    expect(compareChecksums(a, { ...a }, schema.columns, []).result).toBe("Passed");
    expect(compareChecksums(a, { ...a, rowCount: 3 }, schema.columns, []).result).toBe("Failed");
    const differ = compareChecksums(a, { ...a, sum: "00000000000000fe" }, schema.columns, ["name"]);
    expect(differ).toEqual({
      result: "Failed",
      sourceRows: 2,
      targetRows: 2,
      sourceChecksum: "00000000000000ff",
      targetChecksum: "00000000000000fe",
      columns: ["id", "name", "v"],
      excludedColumns: ["name"],
    });
  });
});
