import { createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Column, Row } from "../connectors/record.ts";
import {
  applyMasking,
  compileMasking,
  describeMaskingViolation,
  MaskingRuleError,
  MIN_HASH_KEY_BYTES,
  maskedColumns,
  REDACTED,
  requiredMaskingViolations,
} from "./masking.ts";

// Published test vectors: FIPS 180-2 (SHA-256 of "abc") and RFC 4231 test case 2 (HMAC-SHA256).
const SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const HMAC_JEFE = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

describe("applyMasking", () => {
  it("hashes the canonical text with SHA-256, or HMAC-SHA256 keyed by the salt", () => {
    const [plain] = applyMasking([{ id: "abc" }], [{ column: "id", transform: "hash" }]);
    expect(plain).toEqual({ id: SHA256_ABC });
    const [salted] = applyMasking(
      [{ id: "what do ya want for nothing?" }],
      [{ column: "id", transform: "hash" }],
      {
        salt: "Jefe",
      },
    );
    expect(salted).toEqual({ id: HMAC_JEFE });
  });

  it("hashes numbers and booleans through their canonical text", () => {
    const rules = [
      { column: "n", transform: "hash" as const },
      { column: "b", transform: "hash" as const },
    ];
    const [fromValues] = applyMasking([{ n: 42, b: true }], rules);
    const [fromText] = applyMasking([{ n: "42", b: "true" }], rules);
    expect(fromValues).toEqual(fromText);
  });

  it("keeps hashed keys stable across runs, and salts separate jobs", () => {
    fc.assert(
      fc.property(fc.string(), fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), (value, s1, s2) => {
        const rules = [{ column: "k", transform: "hash" as const }];
        const once = applyMasking([{ k: value }], rules, { salt: s1 })[0]!.k;
        const again = applyMasking([{ k: value }], rules, { salt: s1 })[0]!.k;
        expect(again).toBe(once);
        expect(once).toMatch(/^[0-9a-f]{64}$/);
        if (s1 !== s2) expect(applyMasking([{ k: value }], rules, { salt: s2 })[0]!.k).not.toBe(once);
      }),
    );
  });

  it("redacts, replaces by pattern (globally, with groups), and leaves NULL and other columns alone", () => {
    const rows: Row[] = [
      { id: 1, email: "ada@example.org", phone: "+44 20 7946 0958", note: null },
      { id: 2, email: null, phone: "030 1234 5678", note: "x" },
    ];
    const masked = applyMasking(rows, [
      { column: "email", transform: "redact" },
      {
        column: "phone",
        transform: "regexReplace",
        pattern: "\\d([^\\d]*\\d[^\\d]*\\d)$",
        replacement: "#$1",
      },
      { column: "note", transform: "regexReplace", pattern: "(x)", replacement: "[$1]" },
    ]);
    expect(masked).toEqual([
      { id: 1, email: REDACTED, phone: "+44 20 7946 0#58", note: null },
      { id: 2, email: null, phone: "030 1234 5#78", note: "[x]" },
    ]);
    expect(rows[0]!.email).toBe("ada@example.org"); // inputs are not modified
  });

  it("replaces with *** when a regexReplace rule has no replacement", () => {
    const [row] = applyMasking(
      [{ ssn: "123-45-6789" }],
      [{ column: "ssn", transform: "regexReplace", pattern: "\\d{3}-\\d{2}" }],
    );
    expect(row).toEqual({ ssn: "***-6789" });
  });

  it("replaces with named groups and $& as JavaScript's replace does", () => {
    const [row] = applyMasking(
      [{ card: "4111-1111-1111-1234" }],
      [
        {
          column: "card",
          transform: "regexReplace",
          pattern: "(?P<head>\\d{4})-",
          replacement: "[$<head>]$&",
        },
      ],
    );
    expect(row).toEqual({ card: "[4111]4111-[1111]1111-[1111]1111-1234" });
  });

  it("runs a pattern that backtracks exponentially elsewhere in linear time", () => {
    // (a+)+$ against "aaa…ab": a backtracking engine tries 2^n splits of the a's (at n = 40 it would
    // not finish in days). RE2 finishes these 100,000 characters in one pass.
    const value = `${"a".repeat(100_000)}b`;
    const [row] = applyMasking(
      [{ v: value, w: "xaaaa" }],
      [
        { column: "v", transform: "regexReplace", pattern: "(a+)+$" },
        { column: "w", transform: "regexReplace", pattern: "(a+)+$" },
      ],
    );
    expect(row).toEqual({ v: value, w: `x${REDACTED}` });
  });

  it("refuses patterns RE2 cannot run (backreferences, lookaround), naming the column", () => {
    for (const pattern of ["(\\d)\\1", "\\d(?=\\d{2})", "(?<!x)y", "(?<n>a)\\k<n>"]) {
      expect(() => compileMasking([{ column: "phone", transform: "regexReplace", pattern }])).toThrow(
        /^masking rule for column phone: not a pattern RE2 can run: it uses (lookaround|backreferences)/,
      );
    }
  });

  it("refuses a hash rule without a key of at least 16 bytes when a policy requires keyed hashing", () => {
    const rules = [{ column: "phone", transform: "hash" as const }];
    expect(() => compileMasking(rules, { requireKey: true })).toThrow(
      /column phone: policy requires hash masking to be keyed, but the job names no key \(spec\.maskingKeySecretRef\)/,
    );
    expect(() => compileMasking(rules, { requireKey: true, salt: "short" })).toThrow(/shorter than 16 bytes/);
    const key = "k".repeat(MIN_HASH_KEY_BYTES);
    const [row] = applyMasking([{ phone: "+44 20 7946 0958" }], rules, { requireKey: true, salt: key });
    expect(row!.phone).toBe(createHmac("sha256", key).update("+44 20 7946 0958").digest("hex"));
    // Other transforms need no key.
    expect(() => compileMasking([{ column: "a", transform: "redact" }], { requireKey: true })).not.toThrow();
  });

  it("masks partial rows, leaving absent columns absent", () => {
    const masker = compileMasking([{ column: "email", transform: "redact" }]);
    expect(masker.mask({ id: 7 })).toEqual({ id: 7 });
  });

  it("rejects rules that cannot be applied", () => {
    expect(() =>
      compileMasking([
        { column: "a", transform: "hash" },
        { column: "a", transform: "redact" },
      ]),
    ).toThrow(/column a has more than one masking rule/);
    expect(() => compileMasking([{ column: "a", transform: "regexReplace", pattern: "(" }])).toThrow(
      MaskingRuleError,
    );
    expect(() => compileMasking([{ column: "a", transform: "regexReplace" }])).toThrow(/needs a pattern/);
  });

  it("makes masked columns text columns of the target", () => {
    const columns: Column[] = [
      { name: "id", type: "bigint", nullable: false },
      { name: "born", type: "date" },
    ];
    const masker = compileMasking([{ column: "id", transform: "hash" }]);
    expect(maskedColumns(columns, masker)).toEqual([
      { name: "id", type: "text", nullable: false },
      { name: "born", type: "date" },
    ]);
  });
});

describe("requiredMaskingViolations", () => {
  const requirement = {
    columnPattern: "(phone|email|ssn)",
    transforms: ["hash", "redact"] as const,
    policy: "pii",
  };

  it("names columns that match a required pattern, case-insensitively, without an accepted transform", () => {
    const violations = requiredMaskingViolations(
      ["id", "Email", "mobile_phone", "ssn", "name"],
      [
        { column: "Email", transform: "hash" },
        { column: "ssn", transform: "regexReplace", pattern: "\\d" },
      ],
      [requirement],
    );
    expect(violations.map((v) => v.column)).toEqual(["mobile_phone", "ssn"]);
    expect(describeMaskingViolation(violations[0]!)).toBe(
      "column mobile_phone matches /(phone|email|ssn)/, which by policy pii must be masked with hash or redact, but it has no masking rule",
    );
    expect(describeMaskingViolation(violations[1]!)).toContain("but it is masked with regexReplace");
  });

  it("is empty when every matching column is masked acceptably, or nothing matches", () => {
    expect(
      requiredMaskingViolations(["id", "email"], [{ column: "email", transform: "redact" }], [requirement]),
    ).toEqual([]);
    expect(requiredMaskingViolations(["id", "amount"], [], [requirement])).toEqual([]);
    expect(requiredMaskingViolations(["email"], [], [])).toEqual([]);
  });

  it("matches column patterns with RE2, and treats one RE2 refuses as matching every column", () => {
    const violations = requiredMaskingViolations(
      ["phone", "email"],
      [{ column: "email", transform: "redact" }],
      [{ columnPattern: "(?=phone)", transforms: ["hash"] }],
    );
    expect(violations.map((v) => v.column)).toEqual(["phone", "email"]);
  });

  it("treats a pattern that does not compile as matching every column (fail closed)", () => {
    const violations = requiredMaskingViolations(
      ["a", "b"],
      [{ column: "a", transform: "redact" }],
      [{ columnPattern: "(", transforms: ["hash"] }],
    );
    expect(violations.map((v) => v.column)).toEqual(["a", "b"]);
  });
});
