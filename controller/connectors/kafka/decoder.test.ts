import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { copyText, distinctKeys } from "../postgres/copy-text.ts";
import { defineRowSchema, type Row } from "../record.ts";
import { type ConsumedMessage, decodeMessage } from "./dead-letter.ts";
import { DecodePool, pack, unpack } from "./decoder.ts";

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

const execFileAsync = promisify(execFile);
const pools: DecodePool[] = [];
afterAll(async () => {
  for (const pool of pools) await pool.close();
});

function newPool(threads = 1): DecodePool {
  const pool = new DecodePool({ threads });
  pools.push(pool);
  return pool;
}

const newDecoder = () => newPool().decoder(schema);

describe("pack", () => {
  it("carries keys and values, null and empty ones too, through one buffer", () => {
    const messages = [message("1", "{}"), message(null, "x"), message("", null), message("ключ", "значение")];
    const { bytes, offsets } = pack(messages);
    expect(unpack(bytes, offsets)).toEqual(messages);
  });
});

describe("DecodePool", () => {
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
      // Control characters, backslashes and quotes: text COPY must escape, and JSON text that escapes them.
      fc.string({ unit: "binary-ascii", maxLength: 6 }),
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

  it("keeps each schema apart on shared threads, and answers in any order each call with its own chunk", async () => {
    const pool = newPool(2);
    const other = defineRowSchema(
      [
        { name: "sku", type: "text" },
        { name: "order_id", type: "integer" },
      ],
      ["sku"],
    );
    const value = '{"order_id": 7, "sku": "a\\tb", "qty": 1}';
    const calls = Array.from({ length: 8 }, (_, i) =>
      pool.decode(i % 2 === 0 ? schema : other, [message(String(i), value)]),
    );
    const decoded = await Promise.all(calls);
    for (const [i, d] of decoded.entries()) {
      const s = i % 2 === 0 ? schema : other;
      const row = decodeMessage(s, message(String(i), value));
      expect(row.ok).toBe(true);
      if (!row.ok) continue;
      expect(Buffer.from(d.copy.text).toString()).toBe(copyText([row.row], s.columns));
      expect(d.copy.columns).toEqual(s.columns.map((c) => c.name));
    }
  });

  it("keeps a process alive while a decode is in flight, and lets it exit once the pool is idle", async () => {
    const script = [
      `import { sharedDecodePool } from ${JSON.stringify(new URL("./decoder.ts", import.meta.url).href)};`,
      `import { defineRowSchema } from ${JSON.stringify(new URL("../record.ts", import.meta.url).href)};`,
      'const schema = defineRowSchema([{ name: "id", type: "bigint" }], ["id"]);',
      'const d = await sharedDecodePool().decode(schema, [{ key: Buffer.from("1"), value: Buffer.from(\'{"id": 1}\') }]);',
      "console.log(d.rows);",
    ].join("\n");
    const file = join(mkdtempSync(join(tmpdir(), "syncgov-decoder-")), "decode.mjs");
    writeFileSync(file, script);
    const { stdout } = await execFileAsync(process.execPath, [file], { timeout: 20_000 });
    expect(stdout.trim()).toBe("1");
  });

  it("rejects every decode once closed, so the source decodes on its own thread", async () => {
    const pool = newPool();
    const pending = expect(pool.decode(schema, [message("1", '{"order_id": 1}')])).rejects.toThrow(/closed/);
    await pool.close();
    await pending;
    await expect(pool.decode(schema, [message("2", '{"order_id": 2}')])).rejects.toThrow(/closed/);
  });
});
