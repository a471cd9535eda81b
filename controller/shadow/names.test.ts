import { describe, expect, it } from "vitest";
import { quoteTable } from "../api/identifiers.ts";
import {
  fillRunName,
  isRetiredTableOf,
  MAX_IDENTIFIER_BYTES,
  retiredAtOf,
  retiredTableName,
  shadowTableName,
} from "./names.ts";

const at = new Date("2024-03-01T12:34:56.789Z");
const tablePart = (ref: string) => ref.slice(ref.indexOf(".") + 1);

describe("shadow and retired table names", () => {
  it("append the suffix in the target's schema when the name fits", () => {
    expect(shadowTableName("analytics.orders")).toBe("analytics.orders__shadow");
    expect(shadowTableName("orders")).toBe("orders__shadow");
    expect(retiredTableName("analytics.orders", at)).toBe("analytics.orders__retired_20240301123456");
  });

  it("shorten a long table part with a hash, deterministically, within 63 bytes", () => {
    const long = `s.${"t".repeat(60)}`;
    const other = `s.${"t".repeat(59)}u`;
    for (const name of [shadowTableName(long), retiredTableName(long, at)]) {
      expect(Buffer.byteLength(tablePart(name))).toBeLessThanOrEqual(MAX_IDENTIFIER_BYTES);
      expect(() => quoteTable(name)).not.toThrow();
    }
    expect(shadowTableName(long)).toBe(shadowTableName(long));
    expect(shadowTableName(long)).toMatch(/^s\.t+_[0-9a-f]{8}__shadow$/);
    // Names that share the kept prefix still differ.
    expect(shadowTableName(long)).not.toBe(shadowTableName(other));
    expect(retiredTableName(long, at)).not.toBe(retiredTableName(other, at));
  });

  it("uses the full 63 bytes exactly when the plain name fits, and hashes from 64", () => {
    const fits = "x".repeat(63 - "__shadow".length);
    expect(shadowTableName(fits)).toBe(`${fits}__shadow`);
    expect(shadowTableName(`${fits}y`)).toMatch(/_[0-9a-f]{8}__shadow$/);
  });

  it("reads the retirement time back from a retired name, also a shortened one", () => {
    const long = "z".repeat(63);
    expect(retiredAtOf(retiredTableName("a.orders", at))?.toISOString()).toBe("2024-03-01T12:34:56.000Z");
    expect(retiredAtOf(retiredTableName(long, at))?.toISOString()).toBe("2024-03-01T12:34:56.000Z");
    expect(retiredAtOf("orders__shadow")).toBeUndefined();
    expect(isRetiredTableOf(retiredTableName("a.orders", at), "a.orders")).toBe(true);
    expect(isRetiredTableOf(retiredTableName("a.orders", at), "a.customers")).toBe(false);
  });

  it("rejects a target that is not a valid table reference", () => {
    expect(() => shadowTableName('orders"; drop table x; --')).toThrow(/invalid SQL table reference/);
  });
});

describe("fillRunName", () => {
  it("is deterministic per seed, distinct across seeds, and a valid object name", () => {
    expect(fillRunName("orders", "a")).toBe(fillRunName("orders", "a"));
    expect(fillRunName("orders", "a")).not.toBe(fillRunName("orders", "b"));
    const long = fillRunName(`${"a".repeat(241)}.${"b".repeat(11)}`, "seed"); // the cut falls on the dot
    expect(long.length).toBeLessThanOrEqual(253);
    expect(long).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/);
  });
});
