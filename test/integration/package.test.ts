/**
 * The npm package as a user gets it: `npm run build`, `npm pack`, then `npm install <tarball>` into a
 * fresh project outside the repository, and the installed `syncgov` command run from there with
 * Node 24 (process.execPath: the package's engines want >= 24, and type stripping is off inside
 * node_modules, so only the built JavaScript can run there).
 *
 * The fresh project starts from a lockfile holding the non-dev entries of this repository's
 * package-lock.json, so the registry serves the versions the rest of the suite runs against rather
 * than whatever is newest today. No server is needed; this lives with the integration tests because
 * the install takes seconds to tens of seconds.
 */

import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CommandOutput, runCommand } from "../env/services/process.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const NODE = process.execPath;
const EXAMPLE = join(ROOT, "test", "examples", "batch-customers.yaml");

type Result = CommandOutput;

/**
 * The environment of every command: Node 24 first on PATH (npm's own shebang and the scripts it runs
 * use it), and none of the npm_* variables an enclosing `npm test` sets (npm_config_local_prefix and
 * friends would point the inner npm at this repository), nor vitest's NODE_ENV=test.
 */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(key) || key === "NODE_ENV" || key.startsWith("VITEST")) continue;
    env[key] = value;
  }
  env.PATH = `${dirname(NODE)}${delimiter}${process.env.PATH ?? ""}`;
  return env;
}

function tail(text: string, max = 6000): string {
  return text.length > max ? `[… ${text.length - max} characters before]\n${text.slice(-max)}` : text;
}

function run(command: string, args: readonly string[], cwd: string): Promise<Result> {
  return runCommand(command, args, { cwd, env: childEnv() });
}

/** Runs one step; throws, naming the step, its command and its output, unless it exits 0. */
async function step(
  name: string,
  command: string,
  args: readonly string[],
  cwd: string,
): Promise<Result & { readonly ms: number }> {
  const started = performance.now();
  const result = await run(command, args, cwd);
  const ms = Math.round(performance.now() - started);
  if (result.code !== 0) {
    throw new Error(
      [
        `step "${name}" failed (exit code ${result.code}) after ${ms} ms: ${[command, ...args].join(" ")} in ${cwd}`,
        `--- stdout ---\n${tail(result.stdout)}`,
        `--- stderr ---\n${tail(result.stderr)}`,
      ].join("\n"),
    );
  }
  return { ...result, ms };
}

/** The message of an assertion on a step's result: the step and its whole output. */
function described(name: string, result: Result): string {
  return `${name} (exit code ${result.code})\n--- stdout ---\n${tail(result.stdout)}\n--- stderr ---\n${tail(result.stderr)}`;
}

interface LockEntry {
  readonly version?: string;
  readonly dev?: boolean;
}

/** This repository's lockfile, reduced to what an installation of the package needs. */
function productionLockfile(name: string): object {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, LockEntry>;
  };
  const packages: Record<string, LockEntry> = { "": { version: "0.0.0" } };
  for (const [path, entry] of Object.entries(lock.packages))
    if (path !== "" && !entry.dev) packages[path] = entry;
  return { name, version: "0.0.0", lockfileVersion: 3, requires: true, packages };
}

describe("the npm package", () => {
  let work = "";
  let project = "";
  let tarball = "";
  let installed = "";
  const timings: string[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "syncgov-package-"));

    const build = await step("npm run build", "npm", ["run", "build"], ROOT);
    timings.push(`build ${build.ms} ms`);

    const packDir = join(work, "pack");
    mkdirSync(packDir);
    // prepack builds again; that is cheap, and it is what `npm pack` alone does too.
    const pack = await step("npm pack", "npm", ["pack", "--pack-destination", packDir], ROOT);
    timings.push(`pack ${pack.ms} ms`);
    const tarballs = readdirSync(packDir).filter((file) => file.endsWith(".tgz"));
    if (tarballs.length !== 1)
      throw new Error(
        `step "npm pack" left ${tarballs.length} tarballs in ${packDir}\n${described("npm pack", pack)}`,
      );
    tarball = join(packDir, tarballs[0]!);

    project = join(work, "project");
    mkdirSync(project);
    const name = "syncgov-install-test";
    writeFileSync(
      join(project, "package.json"),
      `${JSON.stringify({ name, version: "0.0.0", private: true })}\n`,
    );
    writeFileSync(
      join(project, "package-lock.json"),
      `${JSON.stringify(productionLockfile(name), null, 2)}\n`,
    );
    const install = await step(
      "npm install <tarball>",
      "npm",
      ["install", "--no-audit", "--no-fund", tarball],
      project,
    );
    timings.push(`install ${install.ms} ms`);
    installed = realpathSync(join(project, "node_modules", "syncgov"));
    console.log(`package: ${timings.join(", ")}`);
  }, 600_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("ships the built JavaScript with source maps, but no TypeScript, tests or install scripts", async () => {
    const listing = await step("tar -tzf <tarball>", "tar", ["-tzf", tarball], work);
    const files = listing.stdout
      .split("\n")
      .filter(Boolean)
      .map((path) => path.replace(/^package\//, ""));
    expect(files).toEqual(
      expect.arrayContaining([
        "package.json",
        "dist/controller/cli.js",
        "dist/controller/cli.js.map",
        "dist/controller/runner/executors.js",
        "dist/controller/connectors/kafka/decode-worker.js",
      ]),
    );
    // A dependency's install script runs in its user's tree, where hoisting decides what it finds:
    // the package has none. The kafkajs patch (`prepare`) applies to this repository's installs and the
    // image, not to a user's kafkajs.
    expect(files.filter((path) => path.startsWith("controller/"))).toEqual([]);
    const shipped = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as {
      scripts?: Record<string, string>;
    };
    expect(Object.keys(shipped.scripts ?? {}).filter((name) => /^(pre|post)?install$/.test(name))).toEqual(
      [],
    );
    expect(files.filter((path) => path.endsWith(".ts"))).toEqual([]);
    expect(files.filter((path) => /\.test\./.test(path))).toEqual([]);
    // No copy of package.json inside dist/: the code reads the package's own.
    expect(files).not.toContain("dist/package.json");
  });

  it("installs the lockfile's versions of the package's dependencies", () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
    };
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, LockEntry>;
    };
    const differing: string[] = [];
    for (const dep of Object.keys(manifest.dependencies)) {
      const wanted = lock.packages[`node_modules/${dep}`]?.version;
      let got = "(missing)";
      try {
        got = (
          JSON.parse(readFileSync(join(project, "node_modules", dep, "package.json"), "utf8")) as {
            version: string;
          }
        ).version;
      } catch {
        // stays missing
      }
      if (got !== wanted) differing.push(`${dep}: lockfile ${wanted}, installed ${got}`);
    }
    expect(differing).toEqual([]);
  });

  it("node_modules/.bin/syncgov is the built CLI, keeps its shebang, and --help lists the subcommands", async () => {
    const bin = join(project, "node_modules", ".bin", "syncgov");
    expect(realpathSync(bin)).toBe(join(installed, "dist", "controller", "cli.js"));
    expect(readFileSync(bin, "utf8").split("\n")[0]).toBe("#!/usr/bin/env node");

    const help = await run(NODE, [bin, "--help"], project);
    expect(help.code, described("syncgov --help", help)).toBe(0);
    for (const command of ["controller", "generate-crds", "validate", "policy", "run", "approve", "rollback"])
      expect(help.stdout, described("syncgov --help", help)).toMatch(new RegExp(`^  ${command}\\b`, "m"));

    // Whatever the subcommands are, the installed CLI has the same ones as the source tree's.
    const source = await run(NODE, [join(ROOT, "controller", "cli.ts"), "--help"], ROOT);
    expect(source.code, described("node controller/cli.ts --help", source)).toBe(0);
    expect(help.stdout).toBe(source.stdout);
  });

  it("syncgov validate and syncgov policy test work from the installed package", async () => {
    const bin = join(project, "node_modules", ".bin", "syncgov");
    const validate = await run(NODE, [bin, "validate", EXAMPLE], project);
    expect(validate.code, described("syncgov validate", validate)).toBe(0);
    expect(validate.stdout, described("syncgov validate", validate)).toMatch(/: valid$/m);

    const policies = await run(NODE, [bin, "policy", "test", join(ROOT, "policies")], project);
    expect(policies.code, described("syncgov policy test policies/", policies)).toBe(0);
    expect(policies.stdout, described("syncgov policy test policies/", policies)).toMatch(
      / 0 failed, 0 errors/,
    );
  });

  it("finds its entry files and package.json from dist/: the runner's CLI, the decode worker, the version", async () => {
    // A file, not --eval: a worker thread inherits --input-type, which Node refuses for a file entry.
    const probe = join(project, "probe.mjs");
    writeFileSync(
      probe,
      `const at = "syncgov/dist/controller/";
const { SYNCGOV_CLI } = await import(at + "runner/executors.js");
const { DecodePool } = await import(at + "connectors/kafka/decoder.js");
const { defineRowSchema } = await import(at + "connectors/record.js");
const { SYNCGOV_PRODUCER } = await import(at + "lineage/events.js");
const { CRD_DIR } = await import(at + "api/generate.js");
const pool = new DecodePool({ threads: 1 });
const schema = defineRowSchema([{ name: "id", type: "bigint" }], ["id"]);
const decoded = await pool.decode(schema, [
  { key: Buffer.from("1"), value: Buffer.from('{"id": 1}') },
  { key: Buffer.from("2"), value: Buffer.from("not json") },
]);
await pool.close();
console.log(JSON.stringify({ SYNCGOV_CLI, SYNCGOV_PRODUCER, CRD_DIR, rows: decoded.rows, rejected: decoded.rejections.length }));
`,
    );
    const result = await run(NODE, [probe], project);
    expect(result.code, described("node probe.mjs", result)).toBe(0);
    const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
    expect(JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "null")).toEqual({
      SYNCGOV_CLI: join(installed, "dist", "controller", "cli.js"),
      SYNCGOV_PRODUCER: `https://syncgov.io/producer/syncgov/${version}`,
      CRD_DIR: join(installed, "crds"),
      rows: 1,
      rejected: 1,
    });
  });
});
