import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareResourceVersions } from "./resource-version.ts";

describe("compareResourceVersions", () => {
  it("orders decimal strings as integers of any length, leading zeros included", () => {
    const decimal = fc
      .tuple(fc.nat({ max: 3 }), fc.bigInt({ min: 0n, max: 10n ** 30n }))
      .map(([zeros, n]) => ({
        text: "0".repeat(zeros) + n.toString(),
        value: n,
      }));
    fc.assert(
      fc.property(decimal, decimal, (a, b) => {
        const expected = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
        expect(compareResourceVersions(a.text, b.text)).toBe(expected);
      }),
    );
  });

  it("does not order versions that are not both decimal", () => {
    for (const [a, b] of [
      ["12", "abc"],
      ["", "1"],
      ["1.5", "2"],
      ["-1", "2"],
      [" 1", "1"],
      [undefined, "1"],
      ["1", undefined],
    ] as const) {
      expect(compareResourceVersions(a, b)).toBeUndefined();
    }
  });
});
