import { describe, expect, it } from "vitest";
import { BufferRecordError, readBufferedRecord } from "./buffer.ts";
import {
  assertTopicName,
  bufferTopicOf,
  deadLetterTopicOf,
  jobConsumerGroup,
  jobTopicName,
  pendingPerPartition,
} from "./cluster.ts";

describe("job topic names", () => {
  it("follow syncgov.<kind>.<namespace>.<job>", () => {
    expect(jobTopicName("buffer", "payments", "orders-to-warehouse")).toBe(
      "syncgov.buffer.payments.orders-to-warehouse",
    );
    expect(jobTopicName("dlq", "payments", "orders.v2")).toBe("syncgov.dlq.payments.orders.v2");
    expect(jobConsumerGroup("payments", "orders")).toBe("syncgov.payments.orders");
  });

  it("stay within Kafka's 249 characters and distinct for long job names", () => {
    const namespace = "n".repeat(63);
    const a = jobTopicName("buffer", namespace, `${"j".repeat(200)}.a`);
    const b = jobTopicName("buffer", namespace, `${"j".repeat(200)}.b`);
    expect(a.length).toBe(249);
    expect(b.length).toBe(249);
    expect(a).not.toBe(b);
    expect(() => assertTopicName(a)).not.toThrow();
  });

  it("are the job's own buffer and dead-letter topics, or ones its spec names under its namespace", () => {
    expect(bufferTopicOf("payments", "orders", {})).toBe("syncgov.buffer.payments.orders");
    expect(deadLetterTopicOf("payments", "orders", {})).toBe("syncgov.dlq.payments.orders");
    expect(bufferTopicOf("payments", "orders", { bufferTopic: "syncgov.buffer.payments.eu" })).toBe(
      "syncgov.buffer.payments.eu",
    );
    expect(deadLetterTopicOf("payments", "orders", { deadLetterTopic: "syncgov.dlq.payments.eu" })).toBe(
      "syncgov.dlq.payments.eu",
    );
  });

  it("refuses a topic the spec names outside its namespace: another tenant's buffer or dead letters", () => {
    expect(() => bufferTopicOf("shop", "orders", { bufferTopic: "syncgov.buffer.payments.orders" })).toThrow(
      "spec.bufferTopic syncgov.buffer.payments.orders: must start with syncgov.buffer.shop.",
    );
    expect(() => bufferTopicOf("pay", "orders", { bufferTopic: "syncgov.buffer.payments.orders" })).toThrow(
      /must start with syncgov\.buffer\.pay\./,
    );
    expect(() => deadLetterTopicOf("shop", "orders", { deadLetterTopic: "orders.dlq" })).toThrow(
      "spec.deadLetterTopic orders.dlq: must start with syncgov.dlq.shop.",
    );
  });

  it("rejects names Kafka would refuse", () => {
    expect(() => assertTopicName(".hidden")).toThrow(/invalid Kafka topic/);
    expect(() => assertTopicName("a b")).toThrow(/invalid Kafka topic/);
  });
});

describe("pendingPerPartition", () => {
  it("counts from the commit, from the oldest held record without one, and never below zero", () => {
    const offsets = {
      end: new Map([
        [0, "100"],
        [1, "50"],
        [2, "10"],
        [3, "7"],
      ]),
      start: new Map([
        [0, "0"],
        [1, "20"],
        [2, "0"],
        [3, "7"],
      ]),
    };
    const committed = new Map([
      [0, "60"],
      [1, "5"], // behind retention: counts from the oldest held record
      [2, "10"],
    ]);
    expect(pendingPerPartition(offsets, committed)).toEqual(
      new Map([
        [0, 40n],
        [1, 30n],
        [2, 0n],
        [3, 0n],
      ]),
    );
  });
});

describe("readBufferedRecord", () => {
  const record = (key: string | null, value: string) => ({
    key: key === null ? null : Buffer.from(key),
    value: Buffer.from(value),
    offset: "3",
    headers: { "syncgov.version": Buffer.from("17") },
  });

  it("reads a row written by divert, with its version header", () => {
    expect(readBufferedRecord(1, record("k", '{"id": "9", "n": 1, "ok": true, "x": null}'))).toEqual({
      key: "k",
      row: { id: "9", n: 1, ok: true, x: null },
      partition: 1,
      offset: "3",
      version: "17",
    });
  });

  it("refuses records divert could not have written", () => {
    expect(() => readBufferedRecord(0, record(null, "{}"))).toThrow(BufferRecordError);
    expect(() => readBufferedRecord(0, record("k", "{oops"))).toThrow(/not JSON/);
    expect(() => readBufferedRecord(0, record("k", "[1]"))).toThrow(/not a row object/);
    expect(() => readBufferedRecord(0, record("k", '{"a": {"b": 1}}'))).toThrow(/not a row value/);
  });
});
