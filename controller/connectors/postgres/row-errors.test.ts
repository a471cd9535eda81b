import { describe, expect, it } from "vitest";
import { bisectWrite, isRowDataError, rowRefusalOf } from "./row-errors.ts";

const pgError = (code: string, message: string, fields: Record<string, string> = {}) =>
  Object.assign(new Error(message), { code, ...fields });

describe("isRowDataError", () => {
  it("takes SQLSTATE classes 22 and 23 for errors about the rows", () => {
    for (const code of ["22001", "22003", "22P02", "23502", "23503", "23505", "23514", "23P01"])
      expect(isRowDataError(pgError(code, "x")), code).toBe(true);
  });

  it("leaves connection errors, shutdowns, timeouts, serialization failures, deadlocks and schema errors to the retry", () => {
    for (const code of [
      "08006",
      "08001",
      "57P01",
      "57014",
      "53300",
      "40001",
      "40P01",
      "42P01",
      "42501",
      "XX000",
    ])
      expect(isRowDataError(pgError(code, "x")), code).toBe(false);
    expect(isRowDataError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }))).toBe(
      false,
    );
    expect(isRowDataError(new Error("Connection terminated unexpectedly"))).toBe(false);
    expect(isRowDataError(undefined)).toBe(false);
  });
});

describe("rowRefusalOf", () => {
  it("names the constraint of a CHECK and keeps the names PostgreSQL gives as fields", () => {
    const refusal = rowRefusalOf(
      pgError("23514", 'new row for relation "orders" violates check constraint "qty_positive"', {
        table: "orders",
        constraint: "qty_positive",
        detail: "Failing row contains (7, -3, secret@example.com).",
      }),
    );
    expect(refusal).toEqual({
      reason: "CheckViolation",
      sqlState: "23514",
      constraint: "qty_positive",
      message: 'SQLSTATE 23514: new row for relation "orders" violates check constraint "qty_positive"',
    });
  });

  it("names the column of a NOT NULL violation", () => {
    const refusal = rowRefusalOf(
      pgError("23502", 'null value in column "score" of relation "orders" violates not-null constraint', {
        column: "score",
        table: "orders",
      }),
    );
    expect(refusal).toMatchObject({ reason: "NotNullViolation", column: "score" });
    expect(refusal.message).toContain('column "score"');
  });

  it("never repeats a value the message quotes, and takes the column from COPY's context line", () => {
    const refusal = rowRefusalOf(
      pgError("22003", 'value "99999" is out of range for type smallint', {
        where: 'COPY orders, line 3, column qty: "99999"',
      }),
    );
    expect(refusal).toMatchObject({ reason: "NumericValueOutOfRange", column: "qty" });
    expect(refusal.message).not.toContain("99999");
    expect(refusal.message).toBe('SQLSTATE 22003: value "…" is out of range for type smallint (column qty)');
    const syntax = rowRefusalOf(pgError("22P02", 'invalid input syntax for type integer: "Jane Doe"'));
    expect(syntax.message).not.toContain("Jane");
    expect(syntax.reason).toBe("InvalidTextRepresentation");
    expect(rowRefusalOf(pgError("22999", "x")).reason).toBe("DataException");
    expect(rowRefusalOf(pgError("23999", "x")).reason).toBe("IntegrityConstraintViolation");
  });
});

/** A write refusing, as one statement, any part holding a bad item; records every statement. */
function fakeWrite(bad: ReadonlySet<number>) {
  const statements: number[][] = [];
  const written: number[] = [];
  const write = async (part: readonly number[]) => {
    statements.push([...part]);
    if (part.some((i) => bad.has(i))) throw pgError("23514", "check");
    written.push(...part);
    return part.length;
  };
  return { statements, written, write };
}

describe("bisectWrite", () => {
  const items = (n: number) => Array.from({ length: n }, (_, i) => i);

  it("writes a clean batch in one statement", async () => {
    const fake = fakeWrite(new Set());
    expect(await bisectWrite(items(10), fake.write)).toEqual({ written: 10, refused: [], statements: 1 });
  });

  it("finds each refused item, writes every other one in order, within 1 + 2k·⌈log₂ n⌉ statements", async () => {
    for (const [n, bad] of [
      [1, [0]],
      [2, [1]],
      [10_000, [4321]],
      [10_000, [0, 9999]],
      [1000, [1, 2, 3, 500, 999]],
      [37, items(37)],
    ] as const) {
      const fake = fakeWrite(new Set(bad));
      const result = await bisectWrite(items(n), fake.write);
      expect(result.refused.map((r) => r.index)).toEqual([...bad]);
      expect(result.written).toBe(n - bad.length);
      // Written in the order given: a key's later value is never overtaken by an earlier one.
      expect(fake.written).toEqual(items(n).filter((i) => !bad.includes(i as never)));
      expect(result.statements).toBe(fake.statements.length);
      expect(result.statements).toBeLessThanOrEqual(
        Math.min(1 + 2 * bad.length * Math.ceil(Math.log2(n || 1)), 2 * n - 1) || 1,
      );
    }
  });

  it("splits at once when the whole batch already failed", async () => {
    const fake = fakeWrite(new Set([2]));
    const result = await bisectWrite(items(4), fake.write, { failedWith: pgError("23514", "check") });
    expect(fake.statements[0]).toEqual([0, 1]);
    expect(result.refused.map((r) => r.index)).toEqual([2]);
  });

  it("gives up at the first error that is not about the rows, so the caller retries the batch", async () => {
    let calls = 0;
    const lost = pgError("08006", "connection failure");
    const write = async (part: readonly number[]) => {
      calls++;
      if (calls === 1) throw pgError("23514", "check");
      if (calls === 3) throw lost;
      return part.length;
    };
    await expect(bisectWrite(items(8), write)).rejects.toBe(lost);
    await expect(bisectWrite(items(8), async () => 0, { failedWith: lost })).rejects.toBe(lost);
  });
});
