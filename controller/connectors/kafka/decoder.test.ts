import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { copyText, distinctKeys } from "../postgres/copy-text.ts";
import { defineRowSchema, type Row } from "../record.ts";
import { type ConsumedMessage, decodeMessage } from "./dead-letter.ts";
import { pack, unpack, WorkerDecoder } from "./decoder.ts";

const schema = defineRowSchema(
  [
    { name: "order_id", type: "bigint" },
    { name: "qty", type: "integer" },
    { name: "amount", type: "numeric" },
    { name: "note", type: "text" },
    { name: "doc", type: "json" },
  ],
  ["order_id"],
);

const message = (key: string | null, value: string | Buffer | null): ConsumedMessage => ({
  key: key === null ? null : Buffer.from(key),
  value: value === null ? null : Buffer.isBuffer(value) ? value : Buffer.from(value),
});

/** What the main thread makes of the messages: rows, rejections by index, COPY text, distinct keys. */
function decodedHere(messages: readonly ConsumedMessage[]) {
  const rows: Row[] = [];
  const rejections: unknown[] = [];
  messages.forEach((m, index) => {
    const decoded = decodeMessage(schema, m);
    if (decoded.ok) rows.push(decoded.row);
    else rejections.push({ ...decoded, index });
  });
  return {
    rows: rows.length,
    rejections,
    text: copyText(rows, schema.columns),
    distinctKeys: distinctKeys(rows, schema.keyColumns),
  };
}

const decoders: WorkerDecoder[] = [];
afterAll(async () => {
  for (const decoder of decoders) await decoder.close();
});

function newDecoder(): WorkerDecoder {
  const decoder = new WorkerDecoder(schema);
  decoders.push(decoder);
  return decoder;
}

describe("pack", () => {
  it("carries keys and values, null and empty ones too, through one buffer", () => {
    const messages = [message("1", "{}"), message(null, "x"), message("", null), message("ключ", "значение")];
    const { bytes, offsets } = pack(messages);
    expect(unpack(bytes, offsets)).toEqual(messages);
  });
});

describe("WorkerDecoder", () => {
  it("decodes in its thread exactly as decodeMessage, copyText and distinctKeys do here", async () => {
    const messages = [
      message(
        "1",
        '{"order_id": 1, "qty": 2, "amount": 1.50, "note": "tab\\there, newline\\nthere", "doc": {"b": 1}}',
      ),
      message(
        "2",
        '{"order_id": 1234567890123456789, "qty": "3", "amount": 0.1000000000000000055511151231257827}',
      ),
      message("3", '{"order_id": 3, "qty": 1.5}'),
      message("4", "not json"),
      message(null, '{"order_id": 5}'),
      message("6", null),
      message("7", Buffer.from([0x7b, 0xff, 0x7d])),
      message("8", '{"qty": 1}'),
      message("9", '{"order_id": 9, "note": "back\\\\slash \\u00e9", "doc": [1, 2.50, {"z": null}]}'),
    ];
    const decoded = await newDecoder().decode(messages);
    const here = decodedHere(messages);
    expect(decoded.rows).toBe(here.rows);
    expect(decoded.rejections).toEqual(here.rejections);
    expect(decoded.rejections.map((r) => r.index)).toEqual([2, 3, 4, 5, 6, 7]);
    expect(Buffer.from(decoded.copy.text).toString()).toBe(here.text);
    expect(decoded.copy.distinctKeys).toBe(true);
    expect(decoded.copy.columns).toEqual(schema.columns.map((c) => c.name));
  });

  it("says when a chunk holds a key twice, and answers overlapping calls each with its own chunk", async () => {
    const decoder = newDecoder();
    const chunks = [
      [message("1", '{"order_id": 1}'), message("1", '{"order_id": 1, "qty": 2}')],
      [message("2", '{"order_id": 2}')],
      [],
    ];
    const decoded = await Promise.all(chunks.map((c) => decoder.decode(c)));
    expect(decoded.map((d) => [d.rows, d.copy.distinctKeys])).toEqual([
      [2, false],
      [1, true],
      [0, true],
    ]);
    for (const [i, chunk] of chunks.entries()) {
      expect(Buffer.from(decoded[i]!.copy.text).toString()).toBe(decodedHere(chunk).text);
    }
  });

  it("agrees with the main thread on arbitrary records", async () => {
    const decoder = newDecoder();
    const field = fc.oneof(
      fc.integer(),
      fc.double(),
      fc.string(),
      fc.constant(null),
      fc.boolean(),
      fc.array(fc.integer(), { maxLength: 3 }),
    );
    const record = fc.record(
      { order_id: field, qty: field, amount: field, note: field, doc: field },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.option(fc.string({ minLength: 0, maxLength: 4 })), record), { maxLength: 20 }),
        async (entries) => {
          const messages = entries.map(([key, value]) => message(key, JSON.stringify(value)));
          const decoded = await decoder.decode(messages);
          const here = decodedHere(messages);
          expect(decoded.rows).toBe(here.rows);
          expect(decoded.rejections).toEqual(here.rejections);
          expect(Buffer.from(decoded.copy.text).toString()).toBe(here.text);
          expect(decoded.copy.distinctKeys).toBe(here.distinctKeys);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("rejects every decode once closed, so the source decodes on its own thread", async () => {
    const decoder = newDecoder();
    const pending = expect(decoder.decode([message("1", '{"order_id": 1}')])).rejects.toThrow(/closed/);
    await decoder.close();
    await pending;
    await expect(decoder.decode([message("2", '{"order_id": 2}')])).rejects.toThrow(/closed/);
  });
});
