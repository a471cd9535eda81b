/**
 * A fixed-width flat file as a sync source: the record layout legacy batch systems export, one
 * record per line, each field at a fixed character offset. A field map describes the layout; the
 * file is streamed line by line (any size), parsed into canonical rows, and handed out in batches.
 * A line that does not parse is never dropped silently: it comes back as a reject with its line
 * number, its text and the reason, so the run can count it and set it aside.
 *
 * Field values: the field's characters (offsets count Unicode code points of the decoded line),
 * trimmed of spaces unless `trim: false`; an empty result, or one listed in `nullValues`, is NULL.
 * Otherwise the text is coerced as controller/connectors/record.ts does, with two additions for
 * legacy formats: `format` for dates and timestamps, and `impliedDecimals` for numerics.
 */

import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { sqlIdentifierRe } from "../api/identifiers.ts";
import {
  COLUMN_TYPES,
  type Column,
  type ColumnType,
  ColumnValueError,
  canonicalDecimal,
  coerceColumnValue,
  defineRowSchema,
  type Row,
  type RowSchema,
} from "./record.ts";

export interface FixedWidthField {
  /** Column name: a SQL identifier. */
  readonly name: string;
  /** 0-based offset of the field's first character. */
  readonly start: number;
  /** Number of characters. */
  readonly length: number;
  readonly type: ColumnType;
  /** Trim spaces on both sides (default true). */
  readonly trim?: boolean;
  /**
   * For date and timestamp fields: the layout of the text, built from YYYY, MM, DD, HH (00–23),
   * mm, ss, S… (one S per fractional-second digit) and literal characters, e.g. "YYYYMMDD",
   * "DD/MM/YYYY", "YYYYMMDDHHmmssSSS". Timestamps are UTC. Without it, ISO 8601 text is expected.
   */
  readonly format?: string;
  /** For numeric fields: digits after an implied decimal point (COBOL `9(5)V99` is 2). */
  readonly impliedDecimals?: number;
  /** Field texts (after trimming) that mean NULL, e.g. "00000000" for a date never set. */
  readonly nullValues?: readonly string[];
  /** Whether NULL is allowed (default true; key fields never). */
  readonly nullable?: boolean;
}

export interface FixedWidthLayout {
  readonly fields: readonly FixedWidthField[];
  /** The fields that identify a record; a blank key is a reject (MissingKey). */
  readonly keyColumns: readonly string[];
  /** Header lines to skip before the first record (default 0); they are not counted as rejects. */
  readonly skipLines?: number;
  /** The file's encoding (default utf8); latin1 reads any single-byte file with offsets in bytes. */
  readonly encoding?: "utf8" | "latin1";
}

/** A field map that cannot be used; lists every problem found. */
export class FieldMapError extends Error {
  override readonly name = "FieldMapError";
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`invalid fixed-width field map: ${problems.join("; ")}`);
    this.problems = problems;
  }
}

export type LineRejectionReason = "TooShort" | ColumnValueError["reason"];

export interface LineReject {
  /** 1-based line number in the file, header lines included. */
  readonly lineNumber: number;
  readonly line: string;
  /** The field that failed, absent when the line as a whole is unusable. */
  readonly column?: string;
  readonly reason: LineRejectionReason;
  readonly message: string;
}

export type LineResult =
  | { readonly ok: true; readonly row: Row }
  | ({ readonly ok: false } & Omit<LineReject, "lineNumber" | "line">);

export interface FixedWidthBatch {
  readonly rows: Row[];
  readonly rejects: LineReject[];
  /** Number of the last line read so far (a count of every line, header lines included). */
  readonly lastLineNumber: number;
}

const FORMAT_TOKEN = /YYYY|MM|DD|HH|mm|ss|S+/g;

interface CompiledFormat {
  readonly pattern: RegExp;
  readonly groups: readonly string[];
}

interface CompiledField extends FixedWidthField {
  readonly column: Column;
  readonly isKey: boolean;
  readonly compiled?: CompiledFormat;
}

/** A validated layout, ready to parse lines. */
export class FixedWidthParser {
  readonly schema: RowSchema;
  readonly layout: FixedWidthLayout;
  /** The line length the field map needs: the end of the last field. */
  readonly recordLength: number;
  private readonly fields: readonly CompiledField[];

  constructor(layout: FixedWidthLayout) {
    const problems = fieldMapProblems(layout);
    if (problems.length > 0) throw new FieldMapError(problems);
    this.layout = layout;
    this.schema = defineRowSchema(
      layout.fields.map((f) => ({ name: f.name, type: f.type, nullable: f.nullable })),
      layout.keyColumns,
    );
    const keys = new Set(layout.keyColumns);
    this.fields = layout.fields.map((f, i) => ({
      ...f,
      column: this.schema.columns[i]!,
      isKey: keys.has(f.name),
      ...(f.format ? { compiled: compileFormat(f.format) } : {}),
    }));
    this.recordLength = Math.max(...layout.fields.map((f) => f.start + f.length));
  }

  /** Parses one line (without its line terminator). */
  parseLine(line: string): LineResult {
    // Offsets count code points; only lines with astral characters need the slower split.
    const chars = /[\uD800-\uDFFF]/.test(line) ? Array.from(line) : undefined;
    const length = chars ? chars.length : line.length;
    if (length < this.recordLength) {
      return {
        ok: false,
        reason: "TooShort",
        message: `line has ${length} characters, the field map needs ${this.recordLength}`,
      };
    }
    const row: Row = {};
    for (const field of this.fields) {
      const raw = chars
        ? chars.slice(field.start, field.start + field.length).join("")
        : line.slice(field.start, field.start + field.length);
      try {
        row[field.name] = this.fieldValue(field, raw);
      } catch (error) {
        if (!(error instanceof ColumnValueError)) throw error;
        return { ok: false, column: error.column, reason: error.reason, message: error.message };
      }
    }
    return { ok: true, row };
  }

  private fieldValue(field: CompiledField, raw: string): Row[string] {
    const text = field.trim === false ? raw : raw.trim();
    if (text === "" || field.nullValues?.includes(text))
      return coerceColumnValue(field.column, null, field.isKey);
    let value = text;
    if (field.compiled) {
      const iso = applyFormat(field.compiled, text, field.type === "date");
      if (iso === undefined) {
        throw new ColumnValueError(
          field.name,
          field.type === "date" ? "BadDate" : "BadTimestamp",
          `text does not match the format ${field.format}`,
        );
      }
      value = iso;
    } else if (field.impliedDecimals) {
      value = shiftDecimal(text, field.impliedDecimals) ?? text;
    }
    return coerceColumnValue(field.column, value, field.isKey);
  }
}

/**
 * Streams a fixed-width file and yields batches of at most `batchSize` rows (default 1000); rejects
 * travel in the batch of the lines around them, and a batch is also cut at `batchSize` rejects so a
 * file of garbage cannot fill memory.
 */
export async function* readFixedWidthFile(
  path: string,
  layout: FixedWidthLayout | FixedWidthParser,
  options: { batchSize?: number } = {},
): AsyncGenerator<FixedWidthBatch> {
  const parser = layout instanceof FixedWidthParser ? layout : new FixedWidthParser(layout);
  const batchSize = options.batchSize ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error("batchSize must be a positive integer");
  const skip = parser.layout.skipLines ?? 0;
  const stream = createReadStream(path, { encoding: parser.layout.encoding ?? "utf8" });
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  let rows: Row[] = [];
  let rejects: LineReject[] = [];
  let lineNumber = 0;
  try {
    for await (const line of lines) {
      lineNumber++;
      if (lineNumber <= skip) continue;
      const result = parser.parseLine(line);
      if (result.ok) rows.push(result.row);
      else {
        const { ok: _, ...reject } = result;
        rejects.push({ lineNumber, line, ...reject });
      }
      if (rows.length >= batchSize || rejects.length >= batchSize) {
        yield { rows, rejects, lastLineNumber: lineNumber };
        rows = [];
        rejects = [];
      }
    }
    if (rows.length > 0 || rejects.length > 0) yield { rows, rejects, lastLineNumber: lineNumber };
  } finally {
    lines.close();
    stream.destroy();
  }
}

function fieldMapProblems(layout: FixedWidthLayout): string[] {
  const problems: string[] = [];
  const { fields } = layout;
  if (fields.length === 0) problems.push("no fields");
  const names = new Set<string>();
  for (const f of fields) {
    const label = `field ${JSON.stringify(f.name)}`;
    if (!sqlIdentifierRe.test(f.name)) problems.push(`${label}: name is not a SQL identifier`);
    if (names.has(f.name)) problems.push(`${label}: appears twice`);
    names.add(f.name);
    if (!Number.isInteger(f.start) || f.start < 0) problems.push(`${label}: start must be an integer >= 0`);
    if (!Number.isInteger(f.length) || f.length < 1)
      problems.push(`${label}: length must be an integer >= 1`);
    if (!COLUMN_TYPES.includes(f.type)) problems.push(`${label}: unknown type ${JSON.stringify(f.type)}`);
    if (f.format !== undefined) {
      if (f.type !== "date" && f.type !== "timestamp")
        problems.push(`${label}: format applies to dates and timestamps only`);
      else problems.push(...formatProblems(f.format, f.type).map((p) => `${label}: ${p}`));
    }
    if (f.impliedDecimals !== undefined) {
      if (f.type !== "numeric") problems.push(`${label}: impliedDecimals applies to numeric fields only`);
      else if (!Number.isInteger(f.impliedDecimals) || f.impliedDecimals < 0 || f.impliedDecimals > 100) {
        problems.push(`${label}: impliedDecimals must be an integer from 0 to 100`);
      }
    }
  }
  const sorted = [...fields]
    .filter((f) => Number.isInteger(f.start) && Number.isInteger(f.length))
    .sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const before = sorted[i - 1]!;
    const after = sorted[i]!;
    if (after.start < before.start + before.length) {
      problems.push(
        `fields ${before.name} [${before.start}, ${before.start + before.length}) and ${after.name} [${after.start}, ${after.start + after.length}) overlap`,
      );
    }
  }
  for (const key of layout.keyColumns) {
    const field = fields.find((f) => f.name === key);
    if (!field) problems.push(`key column ${JSON.stringify(key)} is not a field`);
    else if (field.nullable === true) problems.push(`key column ${key} cannot be nullable`);
  }
  if (layout.keyColumns.length === 0) problems.push("no key columns");
  if (layout.skipLines !== undefined && (!Number.isInteger(layout.skipLines) || layout.skipLines < 0)) {
    problems.push("skipLines must be an integer >= 0");
  }
  return problems;
}

function formatProblems(format: string, type: "date" | "timestamp"): string[] {
  const tokens: string[] = format.match(FORMAT_TOKEN) ?? [];
  const problems: string[] = [];
  for (const needed of ["YYYY", "MM", "DD"]) {
    if (!tokens.includes(needed)) problems.push(`format ${JSON.stringify(format)} lacks ${needed}`);
  }
  if (type === "date" && tokens.some((t) => !["YYYY", "MM", "DD"].includes(t))) {
    problems.push(`format ${JSON.stringify(format)} has time parts, but the field is a date`);
  }
  if (new Set(tokens.map((t) => (t.startsWith("S") ? "S" : t))).size !== tokens.length) {
    problems.push(`format ${JSON.stringify(format)} repeats a part`);
  }
  if (tokens.some((t) => t.startsWith("S") && t.length > 9)) problems.push("fractions have at most 9 digits");
  return problems;
}

function compileFormat(format: string): CompiledFormat {
  const groups: string[] = [];
  let source = "^";
  let last = 0;
  for (const match of format.matchAll(FORMAT_TOKEN)) {
    source += escapeRegExp(format.slice(last, match.index));
    source += `(\\d{${match[0].length}})`;
    groups.push(match[0].startsWith("S") ? "S" : match[0]);
    last = match.index + match[0].length;
  }
  source += `${escapeRegExp(format.slice(last))}$`;
  return { pattern: new RegExp(source), groups };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Rewrites text laid out by `format` as ISO 8601, which coercion then validates as a calendar value. */
function applyFormat(compiled: CompiledFormat, text: string, dateOnly: boolean): string | undefined {
  const match = compiled.pattern.exec(text);
  if (!match) return undefined;
  const part = (name: string, fallback: string) => {
    const i = compiled.groups.indexOf(name);
    return i < 0 ? fallback : match[i + 1]!;
  };
  const date = `${part("YYYY", "")}-${part("MM", "")}-${part("DD", "")}`;
  if (dateOnly) return date;
  const fraction = part("S", "");
  return `${date}T${part("HH", "00")}:${part("mm", "00")}:${part("ss", "00")}${fraction ? `.${fraction}` : ""}Z`;
}

/** "-0012345" with 2 implied decimals is "-123.45"; undefined when the text is not a plain integer. */
function shiftDecimal(text: string, decimals: number): string | undefined {
  if (!/^[+-]?\d+$/.test(text)) return undefined;
  return canonicalDecimal(`${text}e-${decimals}`) ?? undefined;
}
