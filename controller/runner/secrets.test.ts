import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { REDACTED_SECRET, scrubbedErrorMessage, scrubSecrets, secretFragments } from "./secrets.ts";

const URL_WITH_PASSWORD = "postgres://sync:p%40ss%2Fw0rd@db.internal:5432/warehouse";

describe("scrubSecrets", () => {
  it("removes the whole URL, its userinfo, and the password as written and decoded", () => {
    const text = [
      `connect ${URL_WITH_PASSWORD} failed`,
      "userinfo sync:p%40ss%2Fw0rd",
      "raw p%40ss%2Fw0rd",
      "decoded p@ss/w0rd",
      `encoded ${encodeURIComponent(URL_WITH_PASSWORD)}`,
    ].join("\n");
    const out = scrubSecrets(text, [URL_WITH_PASSWORD]);
    expect(out).not.toContain("p@ss/w0rd");
    expect(out).not.toContain("p%40ss%2Fw0rd");
    expect(out).not.toContain("db.internal:5432/warehouse@"); // nothing of the URL left half-replaced
    expect(out.split("\n")).toEqual([
      `connect ${REDACTED_SECRET} failed`,
      `userinfo ${REDACTED_SECRET}`,
      `raw ${REDACTED_SECRET}`,
      `decoded ${REDACTED_SECRET}`,
      `encoded ${REDACTED_SECRET}`,
    ]);
  });

  it("scrubs plain (non-URL) secrets such as a salt, and leaves other text alone", () => {
    expect(scrubSecrets("salt=s3cr3t-salt; table=orders", ["s3cr3t-salt"])).toBe(
      `salt=${REDACTED_SECRET}; table=orders`,
    );
    expect(scrubSecrets("nothing to hide", [])).toBe("nothing to hide");
    expect(scrubSecrets("nothing to hide", [""])).toBe("nothing to hide");
  });

  it("lists the fragments a driver might print", () => {
    expect(secretFragments("postgres://u:pw@h/d")).toEqual(
      expect.arrayContaining(["postgres://u:pw@h/d", "u:pw", "pw"]),
    );
    expect(secretFragments("postgres://h/d")).not.toContain("");
  });

  it("never leaves a secret in any text it is embedded in", () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.string({ minLength: 6 }).filter((s) => s.trim().length > 0),
        fc.string(),
        (before, secret, after) => {
          expect(scrubSecrets(`${before}${secret}${after}`, [secret])).not.toContain(secret);
        },
      ),
    );
  });

  it("scrubs error messages and their causes", () => {
    const error = new Error("query failed", { cause: new Error(`bad url ${URL_WITH_PASSWORD}`) });
    const message = scrubbedErrorMessage(error, (t) => scrubSecrets(t, [URL_WITH_PASSWORD]));
    expect(message).toBe(`query failed: bad url ${REDACTED_SECRET}`);
  });
});
