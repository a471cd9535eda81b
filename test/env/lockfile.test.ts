import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * `npm ci` refuses a lock that lacks an entry for any optional dependency, even one for another
 * platform. A registry mirror that serves only some platform packages makes `npm install` leave those
 * entries out; test/env/fix-lockfile.ts puts them back (os/cpu-tagged, so npm skips them elsewhere).
 */
describe("package-lock.json", () => {
  it("names every optional dependency, so that npm ci accepts it (run: npm run fix-lockfile)", () => {
    const lock = JSON.parse(
      readFileSync(join(import.meta.dirname, "..", "..", "package-lock.json"), "utf8"),
    ) as {
      packages: Record<string, { optionalDependencies?: Record<string, string> }>;
    };
    const missing: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      for (const dep of Object.keys(entry.optionalDependencies ?? {})) {
        const nested = `${path}/node_modules/${dep}`;
        if (!lock.packages[nested] && !lock.packages[`node_modules/${dep}`]) missing.push(`${path} → ${dep}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
