/**
 * Adds lock entries for optional platform packages that the registry mirror here does not serve
 * (npm install leaves them out, and npm ci then refuses the lock). Each entry carries os/cpu/libc,
 * so npm skips it on other platforms and fetches it where it matches. Run: npm run fix-lockfile.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

interface Entry {
  version?: string;
  dev?: boolean;
  optional?: boolean;
  license?: string;
  os?: string[];
  cpu?: string[];
  libc?: string[];
  engines?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const file = join(import.meta.dirname, "..", "..", "package-lock.json");
const lock = JSON.parse(readFileSync(file, "utf8")) as { packages: Record<string, Entry> };
const platformOf = (name: string): Pick<Entry, "os" | "cpu" | "libc"> => {
  const m = /(android|darwin|linux|win32|freebsd)-(arm64|x64|ia32|arm)(-musl)?$/.exec(name);
  if (!m) return {};
  return {
    os: [m[1]!],
    cpu: [m[2]!],
    ...(m[3] ? { libc: ["musl"] } : m[1] === "linux" ? { libc: ["glibc"] } : {}),
  };
};
let added = 0;
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${dep}`;
    if (lock.packages[key] || lock.packages[`${path}/node_modules/${dep}`]) continue;
    lock.packages[key] = {
      version: version.replace(/^[\^~]/, ""),
      ...platformOf(dep),
      ...(entry.dev ? { dev: true } : {}),
      optional: true,
      ...(entry.license ? { license: entry.license } : {}),
      ...(entry.engines ? { engines: entry.engines } : {}),
    };
    added++;
  }
}
const sorted = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1)),
);
writeFileSync(file, `${JSON.stringify({ ...lock, packages: sorted }, null, 2)}\n`);
console.log(`added ${added} lock entries`);
