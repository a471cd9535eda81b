import { describe, expect, it } from "vitest";
import { compileRe2, MAX_PROGRAM_SIZE, Re2PatternError, re2Refusal, re2ReplaceAll } from "./re2.ts";
import { semanticErrors } from "./semantics.ts";
import { SyncJobSpec } from "./syncjob.ts";

describe("RE2 patterns", () => {
  it("accepts what RE2 runs, with JavaScript's replacement syntax", () => {
    expect(re2Refusal("(phone|e_?mail)")).toBeUndefined();
    expect(re2ReplaceAll(compileRe2("(\\d{3})-(?P<mid>\\d{2})"), "123-45-6789", "$1-[$<mid>]-$&")).toBe(
      "123-[45]-123-45-6789",
    );
    expect(compileRe2("EMAIL", { caseInsensitive: true }).test("work_email")).toBe(true);
    expect(compileRe2("EMAIL").test("work_email")).toBe(false);
  });

  it("runs (a+)+$ over a long run of a's in one pass", () => {
    // 2^100000 paths for a backtracking engine; RE2 simulates them all at once.
    const text = `${"a".repeat(100_000)}!`;
    expect(re2ReplaceAll(compileRe2("(a+)+$"), text, "*")).toBe(text);
  });

  it.each([
    ["\\d(?=\\d)", /it uses lookaround/],
    ["(?!x)y", /it uses lookaround/],
    ["(?<=x)y", /it uses lookaround/],
    ["(?<!x)y", /it uses lookaround/],
    ["(a)\\1", /it uses backreferences/],
    ["(?<n>a)\\k<n>", /it uses backreferences/],
    ["(", /^not a valid RE2 regular expression: missing closing \)/],
    ["a{1001}", /^not a valid RE2 regular expression: invalid repeat count/],
  ])("refuses %s, saying why", (pattern, why) => {
    expect(re2Refusal(pattern)).toMatch(why);
    expect(() => compileRe2(pattern)).toThrow(Re2PatternError);
  });

  it("refuses patterns that compile to more than the instruction budget", () => {
    expect(re2Refusal("[a-z]{1000}")).toBeUndefined();
    expect(re2Refusal("[a-z]{1000}[0-9]{1000}[A-Z]{1000}")).toMatch(
      new RegExp(`^too large a regular expression: .* at most ${MAX_PROGRAM_SIZE}`),
    );
  });

  it("makes a job whose masking pattern RE2 refuses invalid, naming the field", () => {
    const spec = SyncJobSpec.parse({
      source: { sql: { connectionSecretRef: { name: "src" }, table: "crm.customers" } },
      target: { sql: { connectionSecretRef: { name: "dw" }, table: "dw.customers", keyColumns: ["id"] } },
      mode: "batch",
      schedule: "0 2 * * *",
      masking: [
        { column: "email", transform: "redact" },
        { column: "phone", transform: "regexReplace", pattern: "\\d(?=\\d{4})" },
      ],
    });
    expect(semanticErrors(spec)).toEqual([
      {
        field: "spec.masking[1].pattern",
        message: expect.stringMatching(/^not a pattern RE2 can run: it uses lookaround/),
      },
    ]);
  });
});
