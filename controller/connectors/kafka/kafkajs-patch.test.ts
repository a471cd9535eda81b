/**
 * The kafkajs patch (patches/kafkajs+2.2.4.patch, applied by patch-package on install) computes record
 * offsets and timestamps by Number arithmetic while that is exact and by kafkajs's Long otherwise.
 * These tests encode records with kafkajs's own encoder and check every offset and timestamp against
 * BigInt arithmetic, on both sides of 2^53, and that the installed kafkajs carries the patch. The
 * patch also keeps an idle request queue from scheduling its check with a negative delay, which made
 * the check run again every millisecond (and printed TimeoutNegativeWarning).
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const require = createRequire(import.meta.url);
type Bytes = { readonly buffer: Buffer };
const Decoder = require("kafkajs/src/protocol/decoder.js") as new (
  buffer: Buffer,
) => { readVarIntBytes(): Buffer };
const encodeRecord = require("kafkajs/src/protocol/recordBatch/record/v0/index.js") as (record: {
  offsetDelta: number;
  timestampDelta: unknown;
  key: Buffer;
  value: Buffer;
}) => Bytes;
const decodeRecord = require("kafkajs/src/protocol/recordBatch/record/v0/decoder.js") as (
  decoder: unknown,
  context: Record<string, unknown>,
) => { offset: string; timestamp: string };
const Batch = require("kafkajs/src/consumer/batch.js") as new (
  topic: string,
  fetchedOffset: string,
  partitionData: Record<string, unknown>,
) => { messages: { offset: string }[] };
const Long = require("kafkajs/src/utils/long.js") as { fromValue(value: bigint | string): unknown };

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** One record decoded as a fetch decodes it: the first offset and timestamp come from its batch. */
function decoded(firstOffset: bigint, firstTimestamp: bigint, offsetDelta: number, timestampDelta: bigint) {
  const bytes = encodeRecord({
    offsetDelta,
    timestampDelta: Long.fromValue(timestampDelta),
    key: Buffer.from("key"),
    value: Buffer.from("value"),
  }).buffer;
  // A record is length-prefixed inside its batch; the decoder gets the record's own bytes.
  const body = new Decoder(bytes).readVarIntBytes();
  return decodeRecord(new Decoder(body), {
    firstOffset: firstOffset.toString(),
    firstTimestamp: firstTimestamp.toString(),
    timestampType: 0,
  });
}

/** An int64 near one of the edges where Number arithmetic stops being exact, or anywhere. */
const int64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 2n ** 42n }),
  fc.bigInt({ min: MAX_SAFE - 2n ** 20n, max: MAX_SAFE + 2n ** 20n }),
  fc.bigInt({ min: -MAX_SAFE - 2n ** 20n, max: -MAX_SAFE + 2n ** 20n }),
  fc.bigInt({ min: INT64_MIN / 2n, max: INT64_MAX / 2n }),
);
/** Timestamp deltas of every varlong length, 1 to 10 bytes. */
const timestampDelta = fc.oneof(
  fc.bigInt({ min: -64n, max: 63n }),
  fc.bigInt({ min: -(2n ** 48n), max: 2n ** 48n - 1n }),
  fc.bigInt({ min: INT64_MIN / 2n, max: INT64_MAX / 2n }),
);
const offsetDelta = fc.integer({ min: 0, max: 2 ** 31 - 1 });

describe("kafkajs record offsets and timestamps", () => {
  it("are the exact int64 sums of the batch's first values and the record's deltas", () => {
    fc.assert(
      fc.property(int64, int64, offsetDelta, timestampDelta, (offset, timestamp, dOffset, dTimestamp) => {
        const record = decoded(offset, timestamp, dOffset, dTimestamp);
        expect(record.offset).toBe(BigInt.asIntN(64, offset + BigInt(dOffset)).toString());
        expect(record.timestamp).toBe(BigInt.asIntN(64, timestamp + dTimestamp).toString());
      }),
      { numRuns: 2000 },
    );
  });

  it("cross 2^53 exactly", () => {
    expect(decoded(MAX_SAFE, MAX_SAFE, 1, 1n)).toMatchObject({
      offset: "9007199254740992",
      timestamp: "9007199254740992",
    });
    expect(decoded(MAX_SAFE - 1n, -1n, 1, 0n)).toMatchObject({
      offset: "9007199254740991",
      timestamp: "-1",
    });
    expect(decoded(0n, 1_700_000_000_000n, 7, -(2n ** 60n))).toMatchObject({
      offset: "7",
      timestamp: (1_700_000_000_000n - 2n ** 60n).toString(),
    });
  });

  it("leave out the messages of a fetch before the fetched offset", () => {
    const partitionData = (offsets: string[]) => ({
      partition: 0,
      highWatermark: "0",
      abortedTransactions: [],
      messages: offsets.map((offset) => ({ offset, isControlRecord: false })),
    });
    const offsets = (fetched: string, all: string[]) =>
      new Batch("t", fetched, partitionData(all)).messages.map((m) => m.offset);
    expect(offsets("5", ["3", "4", "5", "6"])).toEqual(["5", "6"]);
    expect(offsets("9007199254740993", ["9007199254740992", "9007199254740993", "9007199254740994"])).toEqual(
      ["9007199254740993", "9007199254740994"],
    );
  });

  it("leave an idle request queue asleep: no check with a negative delay, none every millisecond", async () => {
    const RequestQueue = require("kafkajs/src/network/requestQueue/index.js") as new (options: {
      logger: unknown;
    }) => { scheduleCheckPendingRequests(): void; throttleCheckTimeoutId: NodeJS.Timeout | null };
    const logger = {
      debug: () => {},
      info: () => {},
      warn: () => {},
      error: () => {},
      namespace: () => logger,
    };
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      // Not throttled (throttledUntil -1) and nothing pending: the delay was -1 - Date.now(), and
      // each check scheduled the next, every millisecond.
      const queue = new RequestQueue({ logger });
      queue.scheduleCheckPendingRequests();
      expect(queue.throttleCheckTimeoutId).toBeNull();
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(queue.throttleCheckTimeoutId).toBeNull();
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings).not.toContain("TimeoutNegativeWarning");
  });

  it("is what the installed kafkajs does (the patch is applied)", () => {
    const source = readFileSync(
      require.resolve("kafkajs/src/protocol/recordBatch/record/v0/decoder.js"),
      "utf8",
    );
    expect(source).toContain("readSafeVarLong");
  });
});
