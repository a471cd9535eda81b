import { describe, expect, it } from "vitest";
import { copyText, distinctKeys } from "./copy-text.ts";

const columns = [{ name: "id" }, { name: "note" }, { name: "ok" }, { name: "n" }];

describe("copyText", () => {
  it("writes tab-separated lines with \\N for NULL and escapes backslash, tab, newline and return", () => {
    const rows = [
      { id: "1", note: "a\tb\nc\rd\\e", ok: true, n: 1.5 },
      { id: "2", note: null, ok: false, n: -0 },
    ];
    expect(copyText(rows, columns)).toBe("1\ta\\tb\\nc\\rd\\\\e\tt\t1.5\n2\t\\N\tf\t0\n");
    expect(copyText([], columns)).toBe("");
  });

  it("skips the search for special characters only in rows said to be plain", () => {
    const rows = [
      { id: "1", note: "plain text", ok: true, n: 2 },
      { id: "2", note: "tab\there", ok: null, n: null },
    ];
    expect(copyText(rows, columns, [true, false])).toBe(copyText(rows, columns));
    // A row wrongly said to be plain goes out unescaped: the flag is the caller's promise.
    expect(copyText(rows.slice(1), columns, [true])).toBe("2\ttab\there\t\\N\t\\N\n");
  });
});

describe("distinctKeys", () => {
  it("tells a batch that holds a key twice, by single and composite keys", () => {
    const rows = [
      { a: "1", b: 1 },
      { a: "1", b: 2 },
    ];
    expect(distinctKeys(rows, ["a"])).toBe(false);
    expect(distinctKeys(rows, ["a", "b"])).toBe(true);
    expect(distinctKeys([...rows, { a: "1", b: 2 }], ["a", "b"])).toBe(false);
  });
});
