import { createRequire } from "node:module";
import fc from "fast-check";
import type { Message } from "kafkajs";
import { describe, expect, it } from "vitest";
import { fitDeadLetter, VALUE_OMITTED_HEADER } from "./dead-letter.ts";
import { fitsAlone, groupWithin, recordBytes } from "./limits.ts";

const require = createRequire(import.meta.url);
const encodeRecord = require("kafkajs/src/protocol/recordBatch/record/v0/index.js") as (record: {
  offsetDelta: number;
  timestampDelta: number;
  key: Buffer | null;
  value: Buffer | null;
  headers?: Record<string, Buffer | string>;
}) => { buffer: Buffer };

const text = fc.string({ unit: "grapheme", maxLength: 300 });
const message = fc.record({
  key: fc.option(text, { nil: null }),
  value: fc.option(
    fc.oneof(
      text,
      fc.uint8Array({ maxLength: 2000 }).map((a) => Buffer.from(a)),
    ),
    { nil: null },
  ),
  headers: fc.dictionary(fc.string({ minLength: 1, maxLength: 20 }), text, { maxKeys: 5 }),
}) as fc.Arbitrary<Message>;

const asBuffer = (v: Message["value"] | Message["key"]) =>
  v === null || v === undefined ? null : Buffer.isBuffer(v) ? v : Buffer.from(v);

describe("recordBytes", () => {
  it("is never below what kafkajs encodes, and at most the widest deltas above it", () => {
    fc.assert(
      fc.property(message, fc.integer({ min: 0, max: 100_000 }), (m, offsetDelta) => {
        const encoded = encodeRecord({
          offsetDelta,
          timestampDelta: 0,
          key: asBuffer(m.key),
          value: asBuffer(m.value),
          headers: m.headers as Record<string, string>,
        }).buffer.length;
        const bound = recordBytes(m);
        expect(bound).toBeGreaterThanOrEqual(encoded);
        // A timestamp delta of 0 takes 1 byte of the 10 counted, an offset delta 1–3 of 5, and the
        // length prefix can grow by one byte.
        expect(bound - encoded).toBeLessThanOrEqual(14);
      }),
      { numRuns: 500 },
    );
  });
});

describe("groupWithin", () => {
  it("keeps order, fits every group under the limit and hands back what fits nowhere", () => {
    fc.assert(
      fc.property(
        fc.array(message, { maxLength: 60 }),
        fc.integer({ min: 200, max: 20_000 }),
        (ms, limit) => {
          const { groups, oversized } = groupWithin(ms, limit);
          for (const g of groups) {
            expect(g.length).toBeGreaterThan(0);
            expect(61 + g.reduce((n, m) => n + recordBytes(m), 0)).toBeLessThanOrEqual(limit);
          }
          const kept = groups.flat();
          const all = [...kept, ...oversized.map((o) => o.message)];
          expect(all).toHaveLength(ms.length);
          // Order: the grouped messages are the input without the oversized ones, in order.
          const skipped = new Set(oversized.map((o) => o.index));
          expect(kept).toEqual(ms.filter((_, i) => !skipped.has(i)));
          for (const o of oversized) {
            expect(fitsAlone(o.message, limit)).toBe(false);
            expect(o.bytes).toBeGreaterThan(limit);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("cuts 10,000 rows of 150 bytes into requests of at most 1 MiB", () => {
    const rows = Array.from({ length: 10_000 }, (_, i) => ({
      key: `order-${i}`,
      value: JSON.stringify({ id: i, note: "x".repeat(120) }),
      headers: { "syncgov.format": "row-json/1" },
    }));
    const { groups, oversized } = groupWithin(rows, 1_048_588);
    expect(oversized).toEqual([]);
    expect(groups.length).toBeGreaterThan(1);
    expect(groups.flat()).toHaveLength(10_000);
  });
});

describe("fitDeadLetter", () => {
  const limit = 1000;
  const fits = (m: Message) => fitsAlone(m, limit);
  const origin = {
    "syncgov.error.reason": "NotJson",
    "syncgov.source.topic": "orders",
    "syncgov.source.partition": "2",
    "syncgov.source.offset": "41",
  };

  it("keeps a dead letter that fits as it is", () => {
    const m = { key: "k", value: "v", headers: origin };
    expect(fitDeadLetter(m, fits, { bytes: 0, limitBytes: limit })).toBe(m);
  });

  it("leaves out the value, then foreign headers, then the key, saying why and keeping the origin", () => {
    const big = { key: "k", value: "v".repeat(5000), headers: origin };
    const noValue = fitDeadLetter(big, fits, { bytes: 5100, limitBytes: limit });
    expect(noValue.value).toBeNull();
    expect(noValue.key).toBe("k");
    expect(String(noValue.headers?.[VALUE_OMITTED_HEADER])).toContain("at most 1000");
    expect(noValue.headers?.["syncgov.source.offset"]).toBe("41");

    const bigHeaders = { key: "k", value: "v", headers: { ...origin, trace: "t".repeat(5000) } };
    const own = fitDeadLetter(bigHeaders, fits, { bytes: 5100, limitBytes: limit });
    expect(own.headers?.trace).toBeUndefined();
    expect(own.headers?.["syncgov.error.reason"]).toBe("NotJson");
    expect(fits(own)).toBe(true);

    // A producer's header that only looks like syncgov's is not kept either.
    const lookalike = { key: "k", value: "v", headers: { ...origin, "syncgov.source.x": "x".repeat(5000) } };
    const kept = fitDeadLetter(lookalike, fits, { bytes: 5100, limitBytes: limit });
    expect(kept.headers?.["syncgov.source.x"]).toBeUndefined();
    expect(fits(kept)).toBe(true);

    const bigKey = { key: "k".repeat(5000), value: "v", headers: origin };
    const keyless = fitDeadLetter(bigKey, fits, { bytes: 5100, limitBytes: limit });
    expect(keyless.key).toBeNull();
    expect(keyless.headers?.["syncgov.source.partition"]).toBe("2");
    expect(fits(keyless)).toBe(true);
  });
});
