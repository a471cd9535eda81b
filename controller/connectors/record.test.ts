import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type Column,
  ColumnValueError,
  canonicalDecimal,
  coerceColumnValue,
  defineRowSchema,
  formatTimestampMicros,
  integerDigitsAfterRounding,
  limitProblem,
  numberToDecimal,
  parseRecord,
  parseTimestampMicros,
  RowSchemaError,
  renderJsonb,
} from "./record.ts";

const col = (type: Column["type"], nullable = true): Column => ({ name: "c", type, nullable });

function rejection(column: Column, value: unknown): string {
  try {
    coerceColumnValue(column, value);
  } catch (error) {
    if (error instanceof ColumnValueError) return error.reason;
    throw error;
  }
  throw new Error("value was accepted");
}

describe("defineRowSchema", () => {
  it("accepts a valid schema and makes key columns non-nullable", () => {
    const schema = defineRowSchema(
      [
        { name: "id", type: "bigint" },
        { name: "note", type: "text" },
      ],
      ["id"],
    );
    expect(schema.columns).toEqual([
      { name: "id", type: "bigint", nullable: false },
      { name: "note", type: "text", nullable: true },
    ]);
    expect(Object.isFrozen(schema.columns)).toBe(true);
  });

  it("lists every problem", () => {
    let error: unknown;
    try {
      defineRowSchema(
        [
          { name: "bad name", type: "text" },
          { name: "a", type: "text" },
          { name: "a", type: "float" as Column["type"] },
          { name: "k", type: "text", nullable: true },
        ],
        ["missing", "k"],
      );
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(RowSchemaError);
    const problems = (error as RowSchemaError).problems;
    expect(problems).toEqual([
      'column name "bad name" is not a SQL identifier',
      "column a appears twice",
      'column a has unknown type "float"',
      'key column "missing" is not one of the columns',
      "key column k cannot be nullable",
    ]);
  });
});

describe("coerceColumnValue", () => {
  it("null and missing values: NULL, NullNotAllowed or MissingKey", () => {
    expect(coerceColumnValue(col("text"), null)).toBeNull();
    expect(coerceColumnValue(col("text"), undefined)).toBeNull();
    expect(rejection(col("text", false), null)).toBe("NullNotAllowed");
    let error: unknown;
    try {
      coerceColumnValue({ name: "order_id", type: "bigint" }, undefined, true);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ColumnValueError);
    expect((error as ColumnValueError).column).toBe("order_id");
    expect((error as ColumnValueError).reason).toBe("MissingKey");
    expect((error as ColumnValueError).message).toBe("column order_id: key value is missing");
  });

  it("text keeps strings, renders scalars, refuses objects and NUL", () => {
    expect(coerceColumnValue(col("text"), " héllo ")).toBe(" héllo ");
    expect(coerceColumnValue(col("text"), 12.5)).toBe("12.5");
    expect(coerceColumnValue(col("text"), true)).toBe("true");
    expect(rejection(col("text"), { a: 1 })).toBe("NotText");
    expect(rejection(col("text"), "a\u0000b")).toBe("ContainsNul");
  });

  it("integer: 32-bit integers from numbers or digit strings", () => {
    expect(coerceColumnValue(col("integer"), 42)).toBe(42);
    expect(coerceColumnValue(col("integer"), " -7 ")).toBe(-7);
    expect(coerceColumnValue(col("integer"), -0)).toBe(0);
    expect(Object.is(coerceColumnValue(col("integer"), -0), 0)).toBe(true);
    expect(coerceColumnValue(col("integer"), 2147483647)).toBe(2147483647);
    expect(rejection(col("integer"), 2147483648)).toBe("OutOfRange");
    expect(rejection(col("integer"), 1.5)).toBe("NotAnInteger");
    expect(rejection(col("integer"), "12a")).toBe("NotAnInteger");
    expect(rejection(col("integer"), true)).toBe("NotAnInteger");
  });

  it("bigint: exact decimal strings, refusing JSON numbers that lost digits", () => {
    expect(coerceColumnValue(col("bigint"), "9223372036854775807")).toBe("9223372036854775807");
    expect(coerceColumnValue(col("bigint"), "+0042")).toBe("42");
    expect(coerceColumnValue(col("bigint"), -5)).toBe("-5");
    expect(rejection(col("bigint"), "9223372036854775808")).toBe("OutOfRange");
    expect(rejection(col("bigint"), 2 ** 60)).toBe("UnsafeInteger");
    expect(rejection(col("bigint"), "1e3")).toBe("NotAnInteger");
  });

  it("numeric: canonical decimal text", () => {
    expect(coerceColumnValue(col("numeric"), "001.500")).toBe("1.5");
    expect(coerceColumnValue(col("numeric"), "-0.00")).toBe("0");
    expect(coerceColumnValue(col("numeric"), "1.5e3")).toBe("1500");
    expect(coerceColumnValue(col("numeric"), "12E-4")).toBe("0.0012");
    expect(coerceColumnValue(col("numeric"), ".5")).toBe("0.5");
    expect(coerceColumnValue(col("numeric"), 0.1)).toBe("0.1");
    expect(coerceColumnValue(col("numeric"), 1e21)).toBe("1000000000000000000000");
    expect(coerceColumnValue(col("numeric"), "nan")).toBe("NaN");
    expect(coerceColumnValue(col("numeric"), "-Infinity")).toBe("-Infinity");
    expect(rejection(col("numeric"), "1,5")).toBe("NotANumber");
    expect(rejection(col("numeric"), ".")).toBe("NotANumber");
    expect(rejection(col("numeric"), "1e99999")).toBe("OutOfRange");
    expect(rejection(col("numeric"), [1])).toBe("NotANumber");
  });

  it("numeric and bigint shortcuts give what the full conversion gives", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^-?[0-9]{1,6}(\.[0-9]{0,6})?$/), (text) => {
        expect(coerceColumnValue(col("numeric"), text)).toBe(canonicalDecimal(text));
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.maxSafeInteger(), (n) => {
        expect(coerceColumnValue(col("bigint"), n)).toBe(BigInt(n).toString());
      }),
    );
    expect(coerceColumnValue(col("bigint"), -0)).toBe("0");
  });

  it("boolean: common spellings", () => {
    for (const t of [true, "true", "T", "yes", "Y", "1", 1])
      expect(coerceColumnValue(col("boolean"), t)).toBe(true);
    for (const f of [false, "false", "f", "NO", "n", "0", 0])
      expect(coerceColumnValue(col("boolean"), f)).toBe(false);
    expect(rejection(col("boolean"), "maybe")).toBe("NotABoolean");
    expect(rejection(col("boolean"), 2)).toBe("NotABoolean");
  });

  it("timestamp: UTC with microseconds from ISO text, epoch milliseconds or a Date", () => {
    const ts = col("timestamp");
    expect(coerceColumnValue(ts, "2024-02-29T23:59:59.123456+05:30")).toBe("2024-02-29T18:29:59.123456Z");
    expect(coerceColumnValue(ts, "2024-01-01 00:00:00")).toBe("2024-01-01T00:00:00.000000Z");
    expect(coerceColumnValue(ts, "2024-01-01T10:20")).toBe("2024-01-01T10:20:00.000000Z");
    expect(coerceColumnValue(ts, "2024-01-01")).toBe("2024-01-01T00:00:00.000000Z");
    expect(coerceColumnValue(ts, "1969-12-31T23:59:59.9999995Z")).toBe("1970-01-01T00:00:00.000000Z");
    expect(coerceColumnValue(ts, "2024-01-01T00:00:00-0100")).toBe("2024-01-01T01:00:00.000000Z");
    expect(coerceColumnValue(ts, 0)).toBe("1970-01-01T00:00:00.000000Z");
    expect(coerceColumnValue(ts, -1.5)).toBe("1969-12-31T23:59:59.998500Z");
    expect(coerceColumnValue(ts, new Date(Date.UTC(2020, 0, 2, 3, 4, 5, 6)))).toBe(
      "2020-01-02T03:04:05.006000Z",
    );
    expect(coerceColumnValue(ts, "0001-01-01T00:00:00Z")).toBe("0001-01-01T00:00:00.000000Z");
    expect(rejection(ts, "2023-02-29T00:00:00Z")).toBe("BadTimestamp");
    expect(rejection(ts, "2024-01-01T24:00:00Z")).toBe("BadTimestamp");
    expect(rejection(ts, "yesterday")).toBe("BadTimestamp");
    expect(rejection(ts, "0001-01-01T00:00:00+01:00")).toBe("OutOfRange");
    expect(rejection(ts, true)).toBe("BadTimestamp");
  });

  it("timestamp text round-trips through microseconds", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -62135596800000000n, max: 253402300799999999n }), (micros) => {
        const text = formatTimestampMicros(micros)!;
        expect(parseTimestampMicros(text)).toBe(micros);
      }),
    );
  });

  it("timestamp: UTC text takes a shortcut that agrees with the full parse, valid or not", () => {
    const ts = col("timestamp");
    const digits = (n: number, max: number) =>
      fc.integer({ min: 0, max }).map((v) => String(v).padStart(n, "0"));
    const utcText = fc
      .tuple(
        digits(4, 9999),
        digits(2, 13),
        digits(2, 31),
        digits(2, 24),
        digits(2, 60),
        digits(2, 60),
        fc.option(fc.stringMatching(/^[0-9]{1,6}$/), { nil: undefined }),
      )
      .map(([y, mo, d, h, mi, s, frac]) => `${y}-${mo}-${d}T${h}:${mi}:${s}${frac ? `.${frac}` : ""}Z`);
    const leapDays = fc.constantFrom("1900-02-29", "2000-02-29", "2024-02-29", "2023-02-29", "0004-02-29");
    fc.assert(
      fc.property(
        fc.oneof(
          utcText,
          leapDays.map((d) => `${d}T01:02:03.5Z`),
        ),
        (text) => {
          const micros = parseTimestampMicros(text);
          const full = micros === undefined ? undefined : formatTimestampMicros(micros);
          if (full === undefined) expect(rejection(ts, text)).toBeDefined();
          else expect(coerceColumnValue(ts, text)).toBe(full);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("date: calendar dates only", () => {
    expect(coerceColumnValue(col("date"), "2024-02-29")).toBe("2024-02-29");
    expect(rejection(col("date"), "2023-02-29")).toBe("BadDate");
    expect(rejection(col("date"), "2024-2-1")).toBe("BadDate");
    expect(rejection(col("date"), 20240101)).toBe("BadDate");
  });

  it("json: values and JSON text rendered as jsonb prints them", () => {
    const json = col("json");
    expect(coerceColumnValue(json, { b: 1, a: [true, null, "x"], aa: {} })).toBe(
      '{"a": [true, null, "x"], "b": 1, "aa": {}}',
    );
    expect(coerceColumnValue(json, '{"z":1,"z":2}')).toBe('{"z": 2}');
    expect(coerceColumnValue(json, '"text"')).toBe('"text"');
    expect(coerceColumnValue(json, 1.5e-7)).toBe("0.00000015");
    // Digits in JSON text survive exactly, in canonical numeric form.
    expect(coerceColumnValue(json, "[2.50, 1E+2, -0.0, 123456789012345678901234567890.10]")).toBe(
      "[2.5, 100, 0, 123456789012345678901234567890.1]",
    );
    expect(rejection(json, "{not json")).toBe("BadJson");
    expect(rejection(json, '"\\u0000"')).toBe("ContainsNul");
  });
});

describe("canonical numbers", () => {
  it("canonicalDecimal is idempotent and keeps the value", () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (n) => {
        const text = numberToDecimal(n);
        expect(canonicalDecimal(text)).toBe(text);
        expect(Number(text)).toBe(n === 0 ? 0 : n);
        expect(text).not.toMatch(/e|^-?0\d|\.\d*0$|^-0$/);
      }),
    );
  });

  it("canonicalDecimal refuses non-numbers", () => {
    for (const bad of ["", "-", "1.2.3", "abc", "1e", " 1"]) expect(canonicalDecimal(bad)).toBeUndefined();
  });
});

describe("renderJsonb", () => {
  it("orders keys by UTF-8 length, then bytes", () => {
    expect(renderJsonb({ é: 1, bb: 2, c: 3, ab: 4 })).toBe('{"c": 3, "ab": 4, "bb": 2, "é": 1}');
  });

  it("escapes strings as jsonb does and refuses what JSON cannot hold", () => {
    expect(renderJsonb(['a\tb\u0001"\\/é'])).toBe('["a\\tb\\u0001\\"\\\\/é"]');
    expect(renderJsonb(Number.NaN)).toBeUndefined();
    expect(renderJsonb({ f: () => 1 })).toBeUndefined();
  });
});

describe("parseRecord", () => {
  const schema = defineRowSchema(
    [
      { name: "id", type: "integer" },
      { name: "amount", type: "numeric" },
      { name: "note", type: "text", nullable: false },
    ],
    ["id"],
  );

  it("coerces every column and ignores extra fields", () => {
    expect(parseRecord(schema, { id: "7", amount: 3.1, note: "x", extra: 1 })).toEqual({
      ok: true,
      row: { id: 7, amount: "3.1", note: "x" },
    });
    expect(parseRecord(schema, { id: 7, note: "x" })).toEqual({
      ok: true,
      row: { id: 7, amount: null, note: "x" },
    });
  });

  it("names the column and reason of the first bad value", () => {
    expect(parseRecord(schema, { amount: 1, note: "x" })).toEqual({
      ok: false,
      column: "id",
      reason: "MissingKey",
      message: "column id: key value is missing",
    });
    expect(parseRecord(schema, { id: 1, amount: "lots", note: "x" })).toMatchObject({
      ok: false,
      column: "amount",
      reason: "NotANumber",
    });
    expect(parseRecord(schema, [1, 2])).toMatchObject({ ok: false, reason: "NotAnObject" });
  });
});

describe("target column limits", () => {
  const limited = (type: Column["type"], limits: Column["limits"]): Column => ({ name: "c", type, limits });
  const smallint = limited("integer", { sqlType: "smallint", integerRange: [-32768, 32767] });
  const varchar8 = limited("text", { sqlType: "character varying(8)", maxLength: 8 });
  const numeric12 = limited("numeric", { sqlType: "numeric(12,2)", numeric: { precision: 12, scale: 2 } });

  it("rejects an integer outside smallint's range and takes its ends", () => {
    expect(coerceColumnValue(smallint, 32767)).toBe(32767);
    expect(coerceColumnValue(smallint, "-32768")).toBe(-32768);
    expect(rejection(smallint, 32768)).toBe("OutOfRange");
    expect(rejection(smallint, -40000)).toBe("OutOfRange");
  });

  it("counts a varchar's characters as PostgreSQL does, and lets it cut excess trailing spaces", () => {
    expect(coerceColumnValue(varchar8, "abcdefgh")).toBe("abcdefgh");
    // Eight characters, sixteen UTF-16 units (astral) or more bytes (umlauts).
    expect(coerceColumnValue(varchar8, "😀😀😀😀😀😀😀😀")).toBe("😀😀😀😀😀😀😀😀");
    expect(coerceColumnValue(varchar8, "ÄÖÜßäöüé")).toBe("ÄÖÜßäöüé");
    expect(coerceColumnValue(varchar8, "abcdefgh   ")).toBe("abcdefgh   ");
    expect(rejection(varchar8, "abcdefghi")).toBe("TooLong");
    expect(rejection(varchar8, "abcdefgh  x")).toBe("TooLong");
    expect(rejection(varchar8, "😀😀😀😀😀😀😀😀😀")).toBe("TooLong");
  });

  it("rounds a numeric to its scale before judging its precision, as PostgreSQL does", () => {
    expect(coerceColumnValue(numeric12, "9999999999.99")).toBe("9999999999.99");
    expect(coerceColumnValue(numeric12, "9999999999.994")).toBe("9999999999.994");
    expect(coerceColumnValue(numeric12, "-0.001")).toBe("-0.001");
    expect(coerceColumnValue(numeric12, "NaN")).toBe("NaN");
    expect(rejection(numeric12, "9007199254740993")).toBe("OutOfRange");
    expect(rejection(numeric12, "9999999999.995")).toBe("OutOfRange");
    expect(rejection(numeric12, "-10000000000")).toBe("OutOfRange");
    expect(rejection(numeric12, "Infinity")).toBe("OutOfRange");
    expect(integerDigitsAfterRounding("0.995", 2)).toBe(1);
    expect(integerDigitsAfterRounding("0.5", 0)).toBe(1);
    expect(integerDigitsAfterRounding("0.49", 0)).toBe(0);
    expect(integerDigitsAfterRounding("-99.94", 1)).toBe(2);
    expect(integerDigitsAfterRounding("-99.95", 1)).toBe(3);
  });

  it("needs no rounding to judge a decimal no longer than the integer digits allowed (the fast path)", () => {
    const decimal = fc
      .tuple(
        fc.boolean(),
        fc.stringMatching(/^(0|[1-9][0-9]{0,12})$/),
        fc.option(fc.stringMatching(/^[0-9]{1,8}$/)),
      )
      .map(
        ([negative, whole, fraction]) =>
          `${negative ? "-" : ""}${whole}${fraction === null ? "" : `.${fraction}`}`,
      );
    fc.assert(
      fc.property(decimal, fc.integer({ min: 0, max: 6 }), (value, scale) => {
        expect(integerDigitsAfterRounding(value, scale)).toBeLessThanOrEqual(value.length);
      }),
    );
  });

  it("names the column and the type, never the value", () => {
    const result = parseRecord(defineRowSchema([{ name: "id", type: "integer" }, varchar8], ["id"]), {
      id: 1,
      c: "secret-value-too-long",
    });
    expect(result).toMatchObject({ ok: false, column: "c", reason: "TooLong" });
    if (!result.ok) {
      expect(result.message).toContain("character varying(8)");
      expect(result.message).not.toContain("secret");
    }
    expect(limitProblem({ sqlType: "smallint", integerRange: [-32768, 32767] }, 1)).toBeUndefined();
  });

  it("keeps limits through defineRowSchema, as the decode worker rebuilds the schema", () => {
    const schema = defineRowSchema([{ name: "id", type: "integer" }, numeric12], ["id"]);
    const copy = structuredClone(schema);
    const rebuilt = defineRowSchema(copy.columns, copy.keyColumns);
    expect(rebuilt.columns[1]?.limits).toEqual(numeric12.limits);
    expect(parseRecord(rebuilt, { id: 1, c: "1e11" })).toMatchObject({ ok: false, reason: "OutOfRange" });
  });
});
