/**
 * How a Kafka message becomes a row, and what happens to one that cannot: it goes to the job's
 * dead-letter topic unchanged (same key, same value bytes, its own headers kept), with headers that
 * say why, which column, and where it came from — as Kafka Connect's errors.deadletterqueue does.
 * Nothing here throws for bad data, and no header repeats a value: values may be personal data.
 *
 * Numbers: the value is decoded with parseJsonExact, so a number no double can hold (a 19-digit id,
 * a 30-digit decimal) reaches the row as its exact decimal text; every other number reaches
 * parseRecord as the JS number JSON.parse would give, so the coercion rules stay those of record.ts.
 * A value in which no number can be inexact (see mayHoldInexactNumber) takes plain JSON.parse, which
 * gives the same result several times faster; a stream decodes one value per record.
 */

import { isUtf8 } from "node:buffer";
import type { IHeaders, Message } from "kafkajs";
import {
  canonicalDecimal,
  JsonNumberText,
  numberToDecimal,
  parseJsonExact,
  parseRecord,
  type RecordRejectionReason,
  type Row,
  type RowSchema,
} from "../record.ts";
import { headerText } from "./cluster.ts";

/** Why a message was set aside: a record rejection from record.ts, or a message-level problem. */
export type DeadLetterReason =
  | RecordRejectionReason
  /** The value is not UTF-8 JSON text. */
  | "NotJson"
  /** The message has no key (or an empty one), so it cannot be ordered or upserted by key. */
  | "MissingMessageKey"
  /** A tombstone (null value). Deletes are not synced yet, so it is set aside rather than ignored. */
  | "MissingValue"
  /** The row's record would exceed a topic's max.message.bytes (the buffer topic's, on divert). */
  | "RecordTooLarge";

/** The parts of a consumed message the decoder reads. */
export interface ConsumedMessage {
  readonly key: Buffer | null;
  readonly value: Buffer | null;
}

export type DecodeResult =
  | { readonly ok: true; readonly key: string; readonly row: Row }
  | {
      readonly ok: false;
      readonly reason: DeadLetterReason;
      /** The offending column, absent when the message as a whole is unusable. */
      readonly column?: string;
      readonly message: string;
    };

/** Turns a message into a keyed row, or says why it cannot be one. Never throws for bad data. */
export function decodeMessage(schema: RowSchema, message: ConsumedMessage): DecodeResult {
  const key = message.key === null ? "" : decodeUtf8(message.key);
  if (key === undefined || key === "") {
    return {
      ok: false,
      reason: "MissingMessageKey",
      message: "the message has no key (or a key that is not UTF-8)",
    };
  }
  if (message.value === null) {
    return { ok: false, reason: "MissingValue", message: "the message is a tombstone (null value)" };
  }
  const text = decodeUtf8(message.value);
  let decoded: unknown;
  try {
    if (text === undefined) throw new SyntaxError("not UTF-8");
    decoded =
      hasJsonColumn(schema) || mayHoldInexactNumber(text)
        ? plainTopLevelNumbers(schema, parseJsonExact(text))
        : JSON.parse(text);
  } catch {
    // JSON.parse's own message quotes the text, so it must not travel further.
    return { ok: false, reason: "NotJson", message: "the value is not UTF-8 JSON text" };
  }
  const result = parseRecord(schema, decoded);
  if (!result.ok) {
    return {
      ok: false,
      reason: result.reason,
      ...(result.column === undefined ? {} : { column: result.column }),
      message: result.message,
    };
  }
  return { ok: true, key, row: result.row };
}

/** The bytes as text, or undefined when they are not UTF-8 (isUtf8 validates, toString would substitute). */
function decodeUtf8(bytes: Buffer): string | undefined {
  return isUtf8(bytes) ? bytes.toString("utf8") : undefined;
}

/**
 * Whether JSON text may hold a number whose JS double differs from its digits: one with an exponent
 * or with 16 or more digits (a decimal of at most 15 significant digits survives a double exactly,
 * IEEE 754's DBL_DIG). A number's digits and point form one run right after `:`, `,` or `[` (and
 * optional blanks), so a text without such a run has only exact numbers. Text inside strings may
 * match too; that only costs the slower exact parse.
 */
export function mayHoldInexactNumber(text: string): boolean {
  return LOSSY_NUMBER.test(text);
}

const LOSSY_NUMBER = /[:,[]\s*-?(?:[\d.]{16}|[\d.]+[eE])/;

const jsonColumns = new WeakMap<RowSchema, boolean>();

/** json columns keep a number's exact text (renderJsonb prints it), so their rows always take the exact parse. */
function hasJsonColumn(schema: RowSchema): boolean {
  let has = jsonColumns.get(schema);
  if (has === undefined) {
    has = schema.columns.some((c) => c.type === "json");
    jsonColumns.set(schema, has);
  }
  return has;
}

/**
 * parseRecord takes numbers as JS numbers or decimal strings. Columns of type json keep the exact
 * form (renderJsonb reads it); elsewhere a number a double holds exactly becomes that double and
 * any other becomes its exact canonical decimal text (bigint, numeric and text columns take it as
 * is; the other types reject it, as they would the rounded double).
 */
function plainTopLevelNumbers(schema: RowSchema, decoded: unknown): unknown {
  if (typeof decoded !== "object" || decoded === null || Array.isArray(decoded)) return decoded;
  const fields = decoded as Record<string, unknown>;
  const out: Record<string, unknown> = { ...fields };
  for (const column of schema.columns) {
    const value = fields[column.name];
    if (!(value instanceof JsonNumberText) || column.type === "json") continue;
    const exact = canonicalDecimal(value.text) ?? value.text;
    const double = Number(value.text);
    out[column.name] = Number.isFinite(double) && numberToDecimal(double) === exact ? double : exact;
  }
  return out;
}

/** Header names on a dead-lettered message. */
export const DEAD_LETTER_HEADERS = {
  reason: "syncgov.error.reason",
  column: "syncgov.error.column",
  message: "syncgov.error.message",
  topic: "syncgov.source.topic",
  partition: "syncgov.source.partition",
  offset: "syncgov.source.offset",
  timestamp: "syncgov.source.timestamp",
  /** Set when the target refused the row: PostgreSQL's SQLSTATE, and the constraint it names. */
  sqlState: "syncgov.error.sqlstate",
  constraint: "syncgov.error.constraint",
} as const;

export interface MessageOrigin {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  /** Milliseconds since the epoch, as kafkajs gives it. */
  readonly timestamp: string;
}

export type Rejection = Extract<DecodeResult, { ok: false }>;

/** The dead-letter message for a rejected one: its key, value and headers, plus the error headers. */
export function deadLetterMessage(
  original: ConsumedMessage & { readonly headers?: IHeaders },
  rejection: Rejection,
  origin: MessageOrigin,
): Message {
  const headers: IHeaders = { ...(original.headers ?? {}) };
  headers[DEAD_LETTER_HEADERS.reason] = rejection.reason;
  if (rejection.column !== undefined) headers[DEAD_LETTER_HEADERS.column] = rejection.column;
  else delete headers[DEAD_LETTER_HEADERS.column];
  headers[DEAD_LETTER_HEADERS.message] = rejection.message;
  headers[DEAD_LETTER_HEADERS.topic] = origin.topic;
  headers[DEAD_LETTER_HEADERS.partition] = String(origin.partition);
  headers[DEAD_LETTER_HEADERS.offset] = origin.offset;
  headers[DEAD_LETTER_HEADERS.timestamp] = origin.timestamp;
  return { key: original.key, value: original.value, headers };
}

/** Set on a dead letter whose value did not fit the dead-letter topic: the value is left out. */
export const VALUE_OMITTED_HEADER = "syncgov.error.value-omitted";

/**
 * A dead letter that fits the dead-letter topic's limit: as it is when it fits; else without its
 * value (and, if still too large, without the original message's own headers), with a header
 * saying so. Its origin headers still say where the original is (the source topic keeps it until
 * retention), so nothing is lost without a trace.
 */
export function fitDeadLetter(
  message: Message,
  fits: (m: Message) => boolean,
  sizes: { readonly bytes: number; readonly limitBytes: number },
): Message {
  if (fits(message)) return message;
  const note = `the dead letter is ${sizes.bytes} bytes and its topic takes at most ${sizes.limitBytes}: value left out; the original is at its source topic, partition and offset`;
  const withoutValue: Message = {
    ...message,
    value: null,
    headers: { ...(message.headers ?? {}), [VALUE_OMITTED_HEADER]: note },
  };
  if (fits(withoutValue)) return withoutValue;
  // Only the headers syncgov itself sets, by exact name: a producer's own header that merely looks
  // like one could be of any size.
  const ours = new Set<string>(Object.values(DEAD_LETTER_HEADERS));
  const own = Object.fromEntries(Object.entries(message.headers ?? {}).filter(([name]) => ours.has(name)));
  const headersOnly: Message = {
    key: message.key ?? null,
    value: null,
    headers: { ...own, [VALUE_OMITTED_HEADER]: note },
  };
  // A key of a megabyte: the origin headers alone still say where the message is.
  return fits(headersOnly) ? headersOnly : { ...headersOnly, key: null };
}

/** The dead letter of a row whose buffer record exceeded the buffer topic's limit. */
export function oversizedRowMessage(
  row: { readonly key: string; readonly row: Row } & Partial<
    Pick<MessageOrigin, "topic" | "partition" | "offset">
  >,
  sizes: { readonly bytes: number; readonly limitBytes: number; readonly topic: string },
): Message {
  const headers: IHeaders = {
    [DEAD_LETTER_HEADERS.reason]: "RecordTooLarge" satisfies DeadLetterReason,
    [DEAD_LETTER_HEADERS.message]: `the row's record is ${sizes.bytes} bytes; buffer topic ${sizes.topic} takes at most ${sizes.limitBytes} (max.message.bytes)`,
  };
  if (row.topic !== undefined && row.partition !== undefined && row.offset !== undefined) {
    headers[DEAD_LETTER_HEADERS.topic] = row.topic;
    headers[DEAD_LETTER_HEADERS.partition] = String(row.partition);
    headers[DEAD_LETTER_HEADERS.offset] = row.offset;
  }
  return { key: row.key, value: JSON.stringify(row.row), headers };
}

/**
 * The dead letter of a row the target refused with a data error (../postgres/row-errors.ts): its
 * reason header holds PostgreSQL's condition in CamelCase (CheckViolation, NotNullViolation, …) rather
 * than a DeadLetterReason, its sqlstate header the SQLSTATE. The row as its buffer
 * record would carry it (canonical JSON; masked columns masked), under its key, with the refusal's
 * reason, SQLSTATE, column or constraint and message (no value), and where the row was read.
 */
export function refusedRowMessage(
  row: { readonly key: string; readonly row: Row } & Partial<
    Pick<MessageOrigin, "topic" | "partition" | "offset">
  >,
  refusal: {
    readonly reason: string;
    readonly sqlState: string;
    readonly column?: string;
    readonly constraint?: string;
    readonly message: string;
  },
): Message {
  const headers: IHeaders = {
    [DEAD_LETTER_HEADERS.reason]: refusal.reason,
    [DEAD_LETTER_HEADERS.message]: `the target refused the row: ${refusal.message}`,
    [DEAD_LETTER_HEADERS.sqlState]: refusal.sqlState,
  };
  if (refusal.column !== undefined) headers[DEAD_LETTER_HEADERS.column] = refusal.column;
  if (refusal.constraint !== undefined) headers[DEAD_LETTER_HEADERS.constraint] = refusal.constraint;
  if (row.topic !== undefined && row.partition !== undefined && row.offset !== undefined) {
    headers[DEAD_LETTER_HEADERS.topic] = row.topic;
    headers[DEAD_LETTER_HEADERS.partition] = String(row.partition);
    headers[DEAD_LETTER_HEADERS.offset] = row.offset;
  }
  return { key: row.key, value: JSON.stringify(row.row), headers };
}

export interface DeadLetterInfo {
  readonly reason: string;
  readonly column: string | undefined;
  readonly message: string | undefined;
  readonly topic: string | undefined;
  readonly partition: number | undefined;
  readonly offset: string | undefined;
  /** Set when the target refused the row. */
  readonly sqlState?: string | undefined;
  readonly constraint?: string | undefined;
}

/** Reads the error headers back from a dead-lettered message; undefined if it has none. */
export function readDeadLetterHeaders(headers: IHeaders | undefined): DeadLetterInfo | undefined {
  const reason = headerText(headers?.[DEAD_LETTER_HEADERS.reason]);
  if (reason === undefined) return undefined;
  const partition = headerText(headers?.[DEAD_LETTER_HEADERS.partition]);
  return {
    reason,
    column: headerText(headers?.[DEAD_LETTER_HEADERS.column]),
    message: headerText(headers?.[DEAD_LETTER_HEADERS.message]),
    topic: headerText(headers?.[DEAD_LETTER_HEADERS.topic]),
    partition: partition === undefined ? undefined : Number(partition),
    offset: headerText(headers?.[DEAD_LETTER_HEADERS.offset]),
    sqlState: headerText(headers?.[DEAD_LETTER_HEADERS.sqlState]),
    constraint: headerText(headers?.[DEAD_LETTER_HEADERS.constraint]),
  };
}
