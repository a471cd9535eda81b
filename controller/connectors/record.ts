/**
 * The row model every syncgov connector speaks: a row is a flat map from column name to a value in
 * its canonical form. Sources coerce what they read into it, targets write it, and the validation
 * checksum hashes it, so one value has exactly one representation end to end.
 *
 * Canonical value forms, by column type:
 *
 * | type      | JS value | form                                                                    |
 * |-----------|----------|-------------------------------------------------------------------------|
 * | text      | string   | the text itself (no NUL characters: PostgreSQL text cannot hold them)   |
 * | integer   | number   | a safe 32-bit integer (-2147483648 … 2147483647)                        |
 * | bigint    | string   | decimal digits, optional leading '-', no leading zeros, no '+'; 64-bit  |
 * | numeric   | string   | plain decimal: no exponent, no leading zeros, no trailing fractional    |
 * |           |          | zeros, no '.' when integral, "0" for zero; or NaN, Infinity, -Infinity  |
 * | boolean   | boolean  | true / false                                                            |
 * | timestamp | string   | UTC instant `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always 6 fractional digits   |
 * | date      | string   | `YYYY-MM-DD`                                                            |
 * | json      | string   | the JSON text PostgreSQL's jsonb prints: keys sorted by UTF-8 length    |
 * |           |          | then bytes, duplicates dropped (last wins), ", " and ": " separators,   |
 * |           |          | numbers in the numeric form above (no exponent, no trailing zeros)      |
 *
 * bigint and numeric are strings because a JS number cannot hold them exactly; timestamps are
 * strings because a JS Date stops at milliseconds and PostgreSQL keeps microseconds. Years are
 * 0001–9999. null is SQL NULL.
 */

import { sqlIdentifierRe } from "../api/identifiers.ts";

export type ColumnType =
  | "text"
  | "integer"
  | "bigint"
  | "numeric"
  | "boolean"
  | "timestamp"
  | "date"
  | "json";

export const COLUMN_TYPES: readonly ColumnType[] = [
  "text",
  "integer",
  "bigint",
  "numeric",
  "boolean",
  "timestamp",
  "date",
  "json",
];

export type RowValue = string | number | boolean | null;

/** A row in canonical form (see the module comment). Absent columns are not allowed: use null. */
export type Row = Record<string, RowValue>;

export interface Column {
  /** A SQL identifier (controller/api/identifiers.ts). */
  readonly name: string;
  readonly type: ColumnType;
  /** Whether null is allowed; defaults to true. Key columns are never nullable. */
  readonly nullable?: boolean;
  /**
   * What the target's column type holds beyond the row-model type (a smallint's range, a
   * varchar(n)'s length, a numeric(p,s)'s precision): a value outside is rejected like any value
   * that cannot be coerced, before it reaches the target. Absent: the row-model type's own bounds.
   */
  readonly limits?: ColumnLimits;
}

/**
 * Bounds a target column's SQL type puts on its values, as PostgreSQL enforces them on a write
 * (controller/connectors/postgres/catalog.ts columnLimitsOf reads them from the catalog).
 */
export interface ColumnLimits {
  /** The SQL type as PostgreSQL names it, for messages: smallint, character varying(8), numeric(12,2). */
  readonly sqlType: string;
  /** Least and greatest integer (integer columns): smallint's -32768 and 32767. */
  readonly integerRange?: readonly [number, number];
  /** Most characters (Unicode code points) of a text value: varchar(n)'s n. */
  readonly maxLength?: number;
  /** numeric(precision, scale) with 0 <= scale <= precision. */
  readonly numeric?: { readonly precision: number; readonly scale: number };
}

/** The columns a connector moves and the key that identifies a row (for upserts and keyset reads). */
export interface RowSchema {
  readonly columns: readonly Column[];
  readonly keyColumns: readonly string[];
}

/** CamelCase codes a script can match; the message says the same for a person. */
export type ValueRejection =
  | "MissingKey"
  | "NullNotAllowed"
  | "NotText"
  | "TooLong"
  | "ContainsNul"
  | "NotAnInteger"
  | "UnsafeInteger"
  | "OutOfRange"
  | "NotANumber"
  | "NotABoolean"
  | "BadTimestamp"
  | "BadDate"
  | "BadJson";

export type RecordRejectionReason = ValueRejection | "NotAnObject";

/**
 * A value that cannot be coerced to its column's type. The message names the column and the reason
 * but never the value: values may be personal data that must not reach logs or status.
 */
export class ColumnValueError extends Error {
  override readonly name = "ColumnValueError";
  readonly column: string;
  readonly reason: ValueRejection;

  constructor(column: string, reason: ValueRejection, detail: string) {
    super(`column ${column}: ${detail}`);
    this.column = column;
    this.reason = reason;
  }
}

/** A schema that cannot be used; lists every problem found. */
export class RowSchemaError extends Error {
  override readonly name = "RowSchemaError";
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`invalid row schema: ${problems.join("; ")}`);
    this.problems = problems;
  }
}

/**
 * Checks a schema (identifiers, unique names, known types, key columns present and not nullable)
 * and returns it frozen. Every connector takes a schema through here.
 */
export function defineRowSchema(columns: readonly Column[], keyColumns: readonly string[]): RowSchema {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const column of columns) {
    if (!sqlIdentifierRe.test(column.name)) {
      problems.push(`column name ${JSON.stringify(column.name)} is not a SQL identifier`);
    }
    if (seen.has(column.name)) problems.push(`column ${column.name} appears twice`);
    seen.add(column.name);
    if (!COLUMN_TYPES.includes(column.type)) {
      problems.push(`column ${column.name} has unknown type ${JSON.stringify(column.type)}`);
    }
  }
  if (columns.length === 0) problems.push("no columns");
  if (keyColumns.length === 0) problems.push("no key columns");
  const keys = new Set<string>();
  for (const key of keyColumns) {
    if (keys.has(key)) problems.push(`key column ${key} appears twice`);
    keys.add(key);
    const column = columns.find((c) => c.name === key);
    if (!column) problems.push(`key column ${JSON.stringify(key)} is not one of the columns`);
    else if (column.nullable === true) problems.push(`key column ${key} cannot be nullable`);
  }
  if (problems.length > 0) throw new RowSchemaError(problems);
  return Object.freeze({
    columns: Object.freeze(
      columns.map((c) =>
        Object.freeze({
          name: c.name,
          type: c.type,
          nullable: keys.has(c.name) ? false : c.nullable !== false,
          ...(c.limits ? { limits: freezeLimits(c.limits) } : {}),
        }),
      ),
    ),
    keyColumns: Object.freeze([...keyColumns]),
  });
}

function freezeLimits(limits: ColumnLimits): ColumnLimits {
  return Object.freeze({
    sqlType: limits.sqlType,
    ...(limits.integerRange ? { integerRange: Object.freeze([...limits.integerRange] as const) } : {}),
    ...(limits.maxLength !== undefined ? { maxLength: limits.maxLength } : {}),
    ...(limits.numeric ? { numeric: Object.freeze({ ...limits.numeric }) } : {}),
  });
}

export type RecordResult =
  | { readonly ok: true; readonly row: Row }
  | {
      readonly ok: false;
      /** The offending column, absent when the record as a whole is unusable. */
      readonly column?: string;
      readonly reason: RecordRejectionReason;
      readonly message: string;
    };

/**
 * Coerces a decoded JSON record (e.g. a Kafka message value) into a canonical row. Fields that are
 * not columns are ignored; a missing field is null for a nullable column. Never throws for bad data:
 * the result says which column failed and why, so the caller can count the record and set it aside.
 */
export function parseRecord(schema: RowSchema, record: unknown): RecordResult {
  if (typeof record !== "object" || record === null || Array.isArray(record)) {
    return { ok: false, reason: "NotAnObject", message: "the record is not a JSON object" };
  }
  const fields = record as Record<string, unknown>;
  const row: Row = {};
  try {
    for (const reader of columnReaders(schema)) {
      const value = fields[reader.name];
      // Only a name Object.prototype has (e.g. constructor) can be found without being the record's own.
      row[reader.name] = reader.read(
        reader.inherited && !Object.hasOwn(fields, reader.name) ? undefined : value,
      );
    }
  } catch (error) {
    if (!(error instanceof ColumnValueError)) throw error;
    return { ok: false, column: error.column, reason: error.reason, message: error.message };
  }
  return { ok: true, row };
}

/**
 * Coerces one value to its column's canonical form; throws ColumnValueError when it cannot.
 * undefined (a missing field) and null are both SQL NULL; `isKey` makes that a MissingKey.
 */
export function coerceColumnValue(column: Column, value: unknown, isKey = false): RowValue {
  return columnReader(column, isKey).read(value);
}

type Fail = (reason: ValueRejection, detail: string) => never;

const COERCERS: Readonly<Record<ColumnType, (value: unknown, fail: Fail) => RowValue>> = {
  text: coerceText,
  integer: coerceInteger,
  bigint: coerceBigint,
  numeric: coerceNumeric,
  boolean: coerceBoolean,
  timestamp: coerceTimestamp,
  date: coerceDate,
  json: coerceJson,
};

/** One column's coercion with everything that depends only on the column worked out once. */
interface ColumnReader {
  readonly name: string;
  /** Whether Object.prototype has a property of this name, so a plain read may find it. */
  readonly inherited: boolean;
  readonly read: (value: unknown) => RowValue;
}

function newColumnReader(column: Column, isKey: boolean): ColumnReader {
  const { name } = column;
  const fail: Fail = (reason, detail) => {
    throw new ColumnValueError(name, reason, detail);
  };
  const coerce = withinLimits(COERCERS[column.type], column.limits);
  const nullable = !isKey && column.nullable !== false;
  return {
    name,
    inherited: name in Object.prototype,
    read: (value) => {
      if (value !== undefined && value !== null) return coerce(value, fail);
      if (isKey) throw new ColumnValueError(name, "MissingKey", "key value is missing");
      if (!nullable) throw new ColumnValueError(name, "NullNotAllowed", "value is missing");
      return null;
    },
  };
}

// Readers are kept per column object (schemas are frozen, so columns are too): streams and files
// coerce every value of every record, and building the reader per value cost as much as the coercion.
const keyReaders = new WeakMap<Column, ColumnReader>();
const valueReaders = new WeakMap<Column, ColumnReader>();
const schemaReaders = new WeakMap<RowSchema, readonly ColumnReader[]>();

function columnReader(column: Column, isKey: boolean): ColumnReader {
  const cache = isKey ? keyReaders : valueReaders;
  let reader = cache.get(column);
  if (reader === undefined) {
    reader = newColumnReader(column, isKey);
    cache.set(column, reader);
  }
  return reader;
}

function columnReaders(schema: RowSchema): readonly ColumnReader[] {
  let readers = schemaReaders.get(schema);
  if (readers === undefined) {
    readers = schema.columns.map((c) => columnReader(c, schema.keyColumns.includes(c.name)));
    schemaReaders.set(schema, readers);
  }
  return readers;
}

/**
 * The coercion followed by the column's limits, when it has any: the canonical value is judged as
 * PostgreSQL would judge it on a write (it rounds a numeric to its scale first, and cuts a
 * varchar's excess trailing spaces rather than refusing them), so no value the target would take
 * is rejected here.
 */
function withinLimits(
  coerce: (value: unknown, fail: Fail) => RowValue,
  limits: ColumnLimits | undefined,
): (value: unknown, fail: Fail) => RowValue {
  if (!limits) return coerce;
  return (value, fail) => {
    const coerced = coerce(value, fail);
    const problem = limitProblem(limits, coerced);
    if (problem) fail(problem.reason, problem.detail);
    return coerced;
  };
}

/** Why a canonical value does not fit the limits of its target column, or undefined when it does. */
export function limitProblem(
  limits: ColumnLimits,
  value: RowValue,
): { readonly reason: ValueRejection; readonly detail: string } | undefined {
  if (typeof value === "number" && limits.integerRange) {
    const [min, max] = limits.integerRange;
    if (value < min || value > max)
      return {
        reason: "OutOfRange",
        detail: `integer is outside the range of ${limits.sqlType} (${min} to ${max})`,
      };
  }
  if (typeof value === "string" && limits.maxLength !== undefined && value.length > limits.maxLength) {
    const length = codePoints(value);
    if (length > limits.maxLength && !onlySpacesAfter(value, limits.maxLength))
      return {
        reason: "TooLong",
        detail: `text of ${length} characters is longer than ${limits.sqlType} holds (${limits.maxLength})`,
      };
  }
  if (typeof value === "string" && limits.numeric) {
    const { precision, scale } = limits.numeric;
    if (value === "Infinity" || value === "-Infinity")
      return { reason: "OutOfRange", detail: `${limits.sqlType} cannot hold an infinite value` };
    // A canonical decimal has at least as many characters as integer digits after rounding (a carry
    // needs a fraction, so a point and a digit), so a value no longer than the integer digits allowed
    // fits: the common case costs one length check.
    if (
      value.length > precision - scale &&
      value !== "NaN" &&
      integerDigitsAfterRounding(value, scale) > precision - scale
    )
      return {
        reason: "OutOfRange",
        detail: `number overflows ${limits.sqlType}: rounded to ${scale} decimal places it must be less than 10^${precision - scale} in absolute value`,
      };
  }
  return undefined;
}

function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // A high surrogate followed by a low one is one character.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** Whether every character after the first `n` is a space (PostgreSQL cuts those off a varchar(n)). */
function onlySpacesAfter(text: string, n: number): boolean {
  let seen = 0;
  for (const char of text) {
    if (seen >= n && char !== " ") return false;
    seen++;
  }
  return true;
}

/**
 * Digits before the point of a canonical decimal once rounded (half away from zero, as PostgreSQL
 * rounds a numeric) to `scale` places: 9.995 at scale 2 is 10.00, two digits; 0.5 at scale 0 is 1.
 */
export function integerDigitsAfterRounding(decimal: string, scale: number): number {
  const unsigned = decimal.startsWith("-") ? decimal.slice(1) : decimal;
  const point = unsigned.indexOf(".");
  const whole = point < 0 ? unsigned : unsigned.slice(0, point);
  const fraction = point < 0 ? "" : unsigned.slice(point + 1);
  const digits = whole === "0" ? 0 : whole.length;
  if (fraction.length <= scale || fraction.charCodeAt(scale) < 53 /* '5' */) return digits;
  // Rounding up carries into the whole part only when every kept digit is a 9.
  const kept = (whole === "0" ? "" : whole) + fraction.slice(0, scale);
  for (let i = 0; i < kept.length; i++) if (kept.charCodeAt(i) !== 57 /* '9' */) return digits;
  return digits + 1;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  return value === null ? "null" : `a ${typeof value}`;
}

function coerceText(value: unknown, fail: Fail): string {
  let text: string;
  if (typeof value === "string") text = value;
  else if (typeof value === "number" && Number.isFinite(value)) text = numberToDecimal(value);
  else if (typeof value === "boolean" || typeof value === "bigint") text = String(value);
  else return fail("NotText", `expected text, got ${describe(value)}`);
  if (text.includes("\u0000")) fail("ContainsNul", "text contains a NUL character");
  return text;
}

const INTEGER_TEXT = /^\s*[+-]?\d+\s*$/;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function coerceInteger(value: unknown, fail: Fail): number {
  let n: number;
  if (typeof value === "number") {
    if (!Number.isInteger(value))
      fail("NotAnInteger", "expected an integer, got a fraction or non-finite number");
    n = value;
  } else if (typeof value === "string" && INTEGER_TEXT.test(value)) {
    n = Number(value.trim());
  } else if (typeof value === "bigint") {
    n = Number(value);
  } else {
    return fail("NotAnInteger", `expected an integer, got ${describe(value)}`);
  }
  if (n < INT32_MIN || n > INT32_MAX) fail("OutOfRange", "integer is outside the 32-bit range");
  return n === 0 ? 0 : n; // no -0
}

function coerceBigint(value: unknown, fail: Fail): string {
  // The common case without BigInt: a safe integer is inside the 64-bit range and prints canonically.
  if (Number.isSafeInteger(value)) return (value as number) === 0 ? "0" : String(value);
  let n: bigint;
  if (typeof value === "number") {
    if (!Number.isInteger(value))
      fail("NotAnInteger", "expected an integer, got a fraction or non-finite number");
    if (!Number.isSafeInteger(value)) {
      fail(
        "UnsafeInteger",
        "integer is beyond 2^53 as a JSON number and may have lost digits; send it as a string",
      );
    }
    n = BigInt(value);
  } else if (typeof value === "string" && INTEGER_TEXT.test(value)) {
    n = BigInt(value.trim());
  } else if (typeof value === "bigint") {
    n = value;
  } else {
    return fail("NotAnInteger", `expected an integer, got ${describe(value)}`);
  }
  if (n < INT64_MIN || n > INT64_MAX) fail("OutOfRange", "integer is outside the 64-bit range");
  return n.toString();
}

/** Decimal text already in canonical numeric form (most decimals in JSON text are). */
const CANONICAL_DECIMAL = /^-?(?:0|[1-9]\d*)(?:\.\d*[1-9])?$/;

function coerceNumeric(value: unknown, fail: Fail): string {
  if (typeof value === "string" && CANONICAL_DECIMAL.test(value) && value !== "-0") return value;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) fail("NotANumber", "JSON numbers cannot be NaN or infinite");
    return numberToDecimal(value);
  }
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "string") {
    const special = NUMERIC_SPECIALS.get(value.trim().toLowerCase());
    if (special) return special;
    const canonical = canonicalDecimal(value.trim());
    if (canonical === undefined) return fail("NotANumber", "expected a decimal number");
    if (canonical === null) return fail("OutOfRange", "the exponent is too large");
    return canonical;
  }
  return fail("NotANumber", `expected a number, got ${describe(value)}`);
}

const NUMERIC_SPECIALS = new Map([
  ["nan", "NaN"],
  ["infinity", "Infinity"],
  ["+infinity", "Infinity"],
  ["-infinity", "-Infinity"],
]);

const DECIMAL_TEXT = /^([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;
/** Beyond this an exponent would spell a number too long to be data; PostgreSQL stops near here too. */
const MAX_EXPONENT = 16_383;

/**
 * Rewrites decimal text (optionally with an exponent) in canonical numeric form. Returns undefined
 * when the text is not a decimal number and null when its exponent is out of range.
 */
export function canonicalDecimal(text: string): string | undefined | null {
  const match = DECIMAL_TEXT.exec(text);
  if (!match) return undefined;
  const [, sign, whole = "", fraction = "", exponentText] = match;
  if (whole === "" && fraction === "") return undefined;
  const exponent = exponentText === undefined ? 0 : Number(exponentText);
  if (!Number.isSafeInteger(exponent) || Math.abs(exponent) > MAX_EXPONENT) return null;
  // All digits with the decimal point after `point` of them.
  const digits = whole + fraction;
  const point = whole.length + exponent;
  let intPart: string;
  let fracPart: string;
  if (point <= 0) {
    intPart = "";
    fracPart = "0".repeat(-point) + digits;
  } else if (point >= digits.length) {
    intPart = digits + "0".repeat(point - digits.length);
    fracPart = "";
  } else {
    intPart = digits.slice(0, point);
    fracPart = digits.slice(point);
  }
  intPart = intPart.replace(/^0+/, "") || "0";
  fracPart = fracPart.replace(/0+$/, "");
  const magnitude = fracPart ? `${intPart}.${fracPart}` : intPart;
  return sign === "-" && magnitude !== "0" ? `-${magnitude}` : magnitude;
}

/** A finite JS number in canonical numeric form: shortest round-trip digits, never an exponent. */
export function numberToDecimal(n: number): string {
  if (n === 0) return "0";
  const text = String(n);
  return text.includes("e") ? (canonicalDecimal(text) as string) : text;
}

const BOOLEAN_TEXT = new Map<string, boolean>([
  ["true", true],
  ["t", true],
  ["yes", true],
  ["y", true],
  ["1", true],
  ["false", false],
  ["f", false],
  ["no", false],
  ["n", false],
  ["0", false],
]);

function coerceBoolean(value: unknown, fail: Fail): boolean {
  if (typeof value === "boolean") return value;
  if (value === 1 || value === 0) return value === 1;
  if (typeof value === "string") {
    const b = BOOLEAN_TEXT.get(value.trim().toLowerCase());
    if (b !== undefined) return b;
  }
  return fail("NotABoolean", "expected true/false, t/f, yes/no, y/n or 1/0");
}

const TIMESTAMP_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$/;
const DATE_TEXT = /^(\d{4})-(\d{2})-(\d{2})$/;
const MICROS_PER_MS = 1000n;

function coerceTimestamp(value: unknown, fail: Fail): string {
  let micros: bigint | undefined;
  if (typeof value === "string") {
    const canonical = canonicalUtcTimestamp(value);
    if (canonical !== undefined) return canonical;
    const instant = parseTimestampInstant(value.trim());
    const text = instant && formatTimestampInstant(instant.ms, instant.micros);
    if (text) return text;
    return instant
      ? fail("OutOfRange", "timestamp is outside the years 0001–9999")
      : fail("BadTimestamp", "expected an ISO 8601 timestamp such as 2024-01-31T12:00:00.000000Z");
  }
  if (typeof value === "number" && Number.isFinite(value)) micros = BigInt(Math.round(value * 1000));
  else if (value instanceof Date && !Number.isNaN(value.getTime()))
    micros = BigInt(value.getTime()) * MICROS_PER_MS;
  else
    return fail(
      "BadTimestamp",
      `expected an ISO 8601 timestamp or epoch milliseconds, got ${describe(value)}`,
    );
  if (micros === undefined) {
    return fail("BadTimestamp", "expected an ISO 8601 timestamp such as 2024-01-31T12:00:00.000000Z");
  }
  const text = formatTimestampMicros(micros);
  if (text === undefined) fail("OutOfRange", "timestamp is outside the years 0001–9999");
  return text as string;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/**
 * The canonical text of a timestamp written as ISO 8601 UTC with at most six fractional digits
 * (`YYYY-MM-DDTHH:MM:SS[.f…]Z`, as JS toISOString, Kafka Connect and Debezium write it), or undefined
 * for any other form (parseTimestampInstant then decides). Streams carry one timestamp or more per
 * record, nearly always in this form; read by character codes it needs no regex, no date arithmetic
 * and no allocation but the result: the field ranges are checked (proleptic Gregorian, as Date and
 * PostgreSQL count) and the fraction padded.
 */
function canonicalUtcTimestamp(text: string): string | undefined {
  const n = text.length;
  if (n < 20 || n > 27 || n === 21 || text.charCodeAt(n - 1) !== 90 /* Z */) return undefined;
  if (
    text.charCodeAt(4) !== 45 /* - */ ||
    text.charCodeAt(7) !== 45 ||
    text.charCodeAt(10) !== 84 /* T */ ||
    text.charCodeAt(13) !== 58 /* : */ ||
    text.charCodeAt(16) !== 58 ||
    (n > 20 && text.charCodeAt(19) !== 46) /* . */
  )
    return undefined;
  for (let i = 20; i < n - 1; i++) if (digitAt(text, i) < 0) return undefined;
  const year = digitsAt(text, 0, 4);
  const month = digitsAt(text, 5, 2);
  const day = digitsAt(text, 8, 2);
  if (year < 1 || month < 1 || month > 12 || day < 1) return undefined;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (day > (month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!)) return undefined;
  const hour = digitsAt(text, 11, 2);
  const minute = digitsAt(text, 14, 2);
  const second = digitsAt(text, 17, 2);
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59) return undefined;
  if (n === 27) return text;
  return `${text.slice(0, 19)}.${n === 20 ? "" : text.slice(20, n - 1)}${"000000".slice(n === 20 ? 0 : n - 21)}Z`;
}

/** The decimal digit at `i`, or -1. */
function digitAt(text: string, i: number): number {
  const c = text.charCodeAt(i) - 48;
  return c >= 0 && c <= 9 ? c : -1;
}

/** The number `count` decimal digits at `start` spell, or -1 when one is not a digit. */
function digitsAt(text: string, start: number, count: number): number {
  let value = 0;
  for (let i = start; i < start + count; i++) {
    const d = digitAt(text, i);
    if (d < 0) return -1;
    value = value * 10 + d;
  }
  return value;
}

/** An instant as whole milliseconds since the epoch plus the microseconds within that millisecond (0–999). */
interface TimestampInstant {
  readonly ms: number;
  readonly micros: number;
}

/**
 * Parses `YYYY-MM-DD[( |T)HH:MM[:SS[.fraction]]][Z|±HH[:MM]]` into microseconds since the epoch.
 * Without an offset the time is UTC. Fractions beyond microseconds round half up.
 */
export function parseTimestampMicros(text: string): bigint | undefined {
  const instant = parseTimestampInstant(text);
  return instant && BigInt(instant.ms) * MICROS_PER_MS + BigInt(instant.micros);
}

/** parseTimestampMicros in numbers: milliseconds of years 0001–9999 are safe integers. */
function parseTimestampInstant(text: string): TimestampInstant | undefined {
  const m = TIMESTAMP_TEXT.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h = "0", mi = "0", s = "0", frac = "", , sign, oh = "0", om = "0"] = m;
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (hour > 23 || minute > 59 || second > 59 || Number(oh) > 15 || Number(om) > 59) return undefined;
  const dayMs = utcDayMs(Number(y), Number(mo), Number(d));
  if (dayMs === undefined) return undefined;
  const padded = `${frac}000000000`.slice(0, 9);
  let fracMicros = Number(padded.slice(0, 6));
  if (Number(padded[6]) >= 5) fracMicros += 1;
  const offsetMinutes = (sign === "-" ? -1 : 1) * (Number(oh) * 60 + Number(om));
  const ms =
    dayMs + ((hour * 60 + minute - offsetMinutes) * 60 + second) * 1000 + Math.floor(fracMicros / 1000);
  return { ms, micros: fracMicros % 1000 };
}

/** Canonical text of an instant, or undefined outside the years 0001–9999. */
export function formatTimestampMicros(micros: bigint): string | undefined {
  let ms = micros / MICROS_PER_MS;
  let sub = micros % MICROS_PER_MS;
  if (sub < 0n) {
    sub += MICROS_PER_MS;
    ms -= 1n;
  }
  return formatTimestampInstant(Number(ms), Number(sub));
}

function formatTimestampInstant(ms: number, micros: number): string | undefined {
  const date = new Date(ms);
  const year = date.getUTCFullYear();
  if (Number.isNaN(year) || year < 1 || year > 9999) return undefined;
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ for years 0000–9999
  return `${iso.slice(0, 23)}${micros < 10 ? "00" : micros < 100 ? "0" : ""}${micros}Z`;
}

/** Milliseconds since the epoch at midnight UTC of a calendar day, or undefined if there is no such day. */
function utcDayMs(year: number, month: number, day: number): number | undefined {
  if (year < 1 || month < 1 || month > 12 || day < 1) return undefined;
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day); // unlike Date.UTC, keeps years 1–99 as they are
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) return undefined;
  return date.getTime();
}

function coerceDate(value: unknown, fail: Fail): string {
  if (typeof value === "string") {
    const m = DATE_TEXT.exec(value.trim());
    if (m && utcDayMs(Number(m[1]), Number(m[2]), Number(m[3])) !== undefined) return value.trim();
    return fail("BadDate", "expected a calendar date YYYY-MM-DD");
  }
  return fail("BadDate", `expected a calendar date YYYY-MM-DD, got ${describe(value)}`);
}

/**
 * A string is taken as JSON text (CDC tools carry json columns that way), anything else as the JSON
 * value itself; so a JSON string scalar must arrive as quoted JSON text. Numbers in JSON text keep
 * their exact digits; numbers in an already decoded value are whatever the JS number holds.
 */
function coerceJson(value: unknown, fail: Fail): string {
  let parsed: unknown = value;
  if (typeof value === "string") {
    try {
      parsed = parseJsonExact(value);
    } catch {
      return fail("BadJson", "text is not valid JSON");
    }
  }
  const rendered = renderJsonb(parsed);
  if (rendered === undefined) return fail("BadJson", "value is not representable as JSON");
  if (rendered.includes("\\u0000")) fail("ContainsNul", "JSON contains a NUL character");
  return rendered;
}

/** A JSON number kept as its source text, so digits beyond a double's precision survive. */
export class JsonNumberText {
  readonly text: string;

  constructor(text: string) {
    this.text = text;
  }
}

/** JSON.parse, except that every number becomes a JsonNumberText holding its exact source digits. */
export function parseJsonExact(text: string): unknown {
  // The reviver's third argument (the JSON.parse source text access proposal) is in Node 22+.
  return JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === "number" && context?.source !== undefined ? new JsonNumberText(context.source) : value,
  );
}

const utf8 = new TextEncoder();

/** PostgreSQL orders jsonb object keys by UTF-8 length, then bytewise. */
function compareJsonbKeys(a: string, b: string): number {
  const ab = utf8.encode(a);
  const bb = utf8.encode(b);
  if (ab.length !== bb.length) return ab.length - bb.length;
  return Buffer.compare(ab, bb);
}

/**
 * Renders a JSON value as PostgreSQL prints jsonb (see the module comment), so the JS and SQL
 * checksums agree. Hand-written because no JSON library mimics jsonb's key order and spacing.
 * Returns undefined for values JSON cannot hold (NaN, functions, cycles are not checked: JSON input
 * has none).
 */
export function renderJsonb(value: unknown): string | undefined {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return String(value);
    case "number":
      return Number.isFinite(value) ? numberToDecimal(value) : undefined;
    case "string":
      return JSON.stringify(value);
    case "object": {
      if (value instanceof JsonNumberText) return canonicalDecimal(value.text) ?? undefined;
      if (Array.isArray(value)) {
        const items: string[] = [];
        for (const item of value) {
          const rendered = renderJsonb(item);
          if (rendered === undefined) return undefined;
          items.push(rendered);
        }
        return `[${items.join(", ")}]`;
      }
      const entries: string[] = [];
      const object = value as Record<string, unknown>;
      for (const key of Object.keys(object).sort(compareJsonbKeys)) {
        const rendered = renderJsonb(object[key]);
        if (rendered === undefined) return undefined;
        entries.push(`${JSON.stringify(key)}: ${rendered}`);
      }
      return `{${entries.join(", ")}}`;
    }
    default:
      return undefined;
  }
}
