import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { defineRowSchema } from "../record.ts";
import {
  DEAD_LETTER_HEADERS,
  deadLetterMessage,
  decodeMessage,
  mayHoldInexactNumber,
  readDeadLetterHeaders,
} from "./dead-letter.ts";

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

const message = (key: string | null, value: string | null) => ({
  key: key === null ? null : Buffer.from(key),
  value: value === null ? null : Buffer.from(value),
});

describe("decodeMessage", () => {
  it("turns a keyed JSON record into a canonical row", () => {
    const result = decodeMessage(
      schema,
      message("42", '{"order_id": 42, "qty": "7", "amount": 1.50, "note": 3, "doc": {"b": 1, "a": 2.50}}'),
    );
    expect(result).toEqual({
      ok: true,
      key: "42",
      row: { order_id: "42", qty: 7, amount: "1.5", note: "3", doc: '{"a": 2.5, "b": 1}' },
    });
  });

  it("keeps numbers a double cannot hold exact, in bigint, numeric, text and json columns", () => {
    const big = "1234567890123456789"; // beyond 2^53, within 64 bits
    const precise = "0.1000000000000000000000000001";
    const result = decodeMessage(
      schema,
      message("k", `{"order_id": ${big}, "amount": ${precise}, "note": ${big}, "doc": [${precise}]}`),
    );
    expect(result.ok && result.row).toEqual({
      order_id: big,
      qty: null,
      amount: precise,
      note: big,
      doc: `[${precise}]`,
    });
  });

  it("treats numbers a double holds as JSON.parse would (1e3 is the integer 1000)", () => {
    const result = decodeMessage(schema, message("k", '{"order_id": 1e3, "qty": 2.0}'));
    expect(result.ok && result.row).toMatchObject({ order_id: "1000", qty: 2 });
  });

  it("decodes records without json columns as the exact parse would, whatever digits their numbers have", () => {
    const columns = [
      { name: "order_id", type: "bigint" },
      { name: "qty", type: "integer" },
      { name: "amount", type: "numeric" },
      { name: "note", type: "text" },
    ] as const;
    const plain = defineRowSchema(columns, ["order_id"]);
    // A json column makes every record take the exact parse: the reference.
    const exact = defineRowSchema([...columns, { name: "extra", type: "json" }], ["order_id"]);
    const numberText = fc
      .tuple(
        fc.constantFrom("", "-"),
        fc.stringMatching(/^[1-9][0-9]{0,19}$|^0$/),
        fc.option(fc.stringMatching(/^[0-9]{1,20}$/), { nil: undefined }),
        fc.option(fc.integer({ min: -30, max: 30 }), { nil: undefined }),
      )
      .map(
        ([sign, whole, frac, exp]) =>
          `${sign}${whole}${frac ? `.${frac}` : ""}${exp === undefined ? "" : `e${exp}`}`,
      );
    fc.assert(
      fc.property(numberText, numberText, numberText, numberText, (id, qty, amount, note) => {
        const text = `{"order_id": ${id}, "qty":${qty},"amount" : ${amount}, "note": [${note}]}`;
        const fast = decodeMessage(plain, message("k", text));
        const reference = decodeMessage(exact, message("k", text));
        if (reference.ok) {
          const { extra, ...row } = reference.row;
          expect(fast).toEqual({ ok: true, key: "k", row });
        } else {
          expect(fast).toEqual(reference);
        }
        const flat = `{"order_id": ${id}, "amount": ${amount}, "note": ${note}}`;
        const fastFlat = decodeMessage(plain, message("k", flat));
        const referenceFlat = decodeMessage(exact, message("k", flat));
        expect(fastFlat.ok && fastFlat.row).toEqual(
          referenceFlat.ok &&
            Object.fromEntries(Object.entries(referenceFlat.row).filter(([c]) => c !== "extra")),
        );
      }),
      { numRuns: 3000 },
    );
    expect(mayHoldInexactNumber('{"a": 123456789012345}')).toBe(false);
    expect(mayHoldInexactNumber('{"a": 1234567890123456}')).toBe(true);
    expect(mayHoldInexactNumber('{"a":[1,2.5e3]}')).toBe(true);
    expect(mayHoldInexactNumber('{"a": "2024-01-01T00:00:00.000Z", "b": 12.25}')).toBe(false);
  });

  it("names the reason and column of every kind of malformed message", () => {
    const cases: [ReturnType<typeof message>, string, string | undefined][] = [
      [message(null, '{"order_id": 1}'), "MissingMessageKey", undefined],
      [message("", '{"order_id": 1}'), "MissingMessageKey", undefined],
      [message("1", null), "MissingValue", undefined],
      [message("1", "{not json"), "NotJson", undefined],
      [{ key: Buffer.from("1"), value: Buffer.from([0xff, 0xfe, 0x7b]) }, "NotJson", undefined],
      [message("1", "[1, 2]"), "NotAnObject", undefined],
      [message("1", '{"qty": 1}'), "MissingKey", "order_id"],
      [message("1", '{"order_id": 1, "qty": "lots"}'), "NotAnInteger", "qty"],
      [message("1", '{"order_id": 1, "qty": 3000000000}'), "OutOfRange", "qty"],
      [message("1", '{"order_id": 1, "doc": "{oops"}'), "BadJson", "doc"],
    ];
    for (const [input, reason, column] of cases) {
      const result = decodeMessage(schema, input);
      expect(result.ok).toBe(false);
      if (!result.ok) {
        expect([result.reason, result.column]).toEqual([reason, column]);
        expect(result.message.length).toBeGreaterThan(0);
      }
    }
  });

  it("never repeats the value in the rejection message", () => {
    const secret = "4111-1111-1111-1111";
    for (const value of [`{"order_id": "${secret}"}`, `{${secret}`, `{"order_id": 1, "qty": "${secret}"}`]) {
      const result = decodeMessage(schema, message("1", value));
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.message).not.toContain(secret);
    }
  });
});

describe("dead-letter messages", () => {
  it("keep the original key, value and headers and add the error and origin headers", () => {
    const original = { ...message("7", '{"order_id": 7, "qty": "x"}'), headers: { trace: "abc" } };
    const rejection = decodeMessage(schema, original);
    if (rejection.ok) throw new Error("expected a rejection");
    const dead = deadLetterMessage(original, rejection, {
      topic: "orders",
      partition: 2,
      offset: "41",
      timestamp: "1700000000000",
    });
    expect(dead.key).toEqual(original.key);
    expect(dead.value).toEqual(original.value);
    expect(dead.headers?.trace).toBe("abc");
    expect(dead.headers?.[DEAD_LETTER_HEADERS.timestamp]).toBe("1700000000000");
    expect(readDeadLetterHeaders(dead.headers)).toEqual({
      reason: "NotAnInteger",
      column: "qty",
      message: rejection.message,
      topic: "orders",
      partition: 2,
      offset: "41",
    });
  });

  it("read back from kafkajs' Buffer headers, and say nothing for an ordinary message", () => {
    const headers = {
      [DEAD_LETTER_HEADERS.reason]: Buffer.from("NotJson"),
      [DEAD_LETTER_HEADERS.partition]: Buffer.from("0"),
    };
    expect(readDeadLetterHeaders(headers)).toMatchObject({
      reason: "NotJson",
      partition: 0,
      column: undefined,
    });
    expect(readDeadLetterHeaders({ trace: Buffer.from("x") })).toBeUndefined();
  });
});
