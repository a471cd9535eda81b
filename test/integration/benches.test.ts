import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { testEnv } from "../support/env.ts";
import { repoPath } from "../support/manifests.ts";

/**
 * Every bench, run at a small size as a correctness check: a speed change in one path must not
 * silently break another (a larger chunk once broke the breaker's divert, and only the breaker bench
 * at its full size saw it). What is asserted is what each bench checks itself and reports in its
 * JSON line — nothing lost, the target equal to the source, every decision made — never a time.
 *
 * The data-plane benches use the suite's Kafka and PostgreSQL (given by address, as a user would);
 * the admission bench starts its own environment, since it counts the API server's work and needs
 * one with nothing else on it.
 */

interface BenchOutcome {
  readonly code: number | null;
  readonly summary: Record<string, unknown> | undefined;
  readonly logFile: string;
}

function runBench(name: string, args: string[], shared: boolean): Promise<BenchOutcome> {
  const env = testEnv();
  const logFile = join(env.runDir, `bench-${name}.log`);
  const log = createWriteStream(logFile);
  const given = shared
    ? {
        KAFKA_BROKERS: env.kafkaBrokers,
        DATABASE_URL: env.databaseUrl,
        KUBECONFIG: env.kubeconfig,
        USE_EXISTING_CLUSTER: "true",
      }
    : {};
  const {
    KAFKA_BROKERS: _k,
    DATABASE_URL: _d,
    KUBECONFIG: _c,
    USE_EXISTING_CLUSTER: _u,
    ...inherited
  } = process.env;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [repoPath("test/bench/main.ts"), name, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...inherited, ...given },
    });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      log.write(chunk);
    });
    child.stderr.pipe(log);
    child.on("error", reject);
    child.on("close", (code) => {
      log.end();
      const last = stdout
        .trim()
        .split("\n")
        .reverse()
        .find((line) => line.startsWith("{"));
      resolve({ code, summary: last ? (JSON.parse(last) as Record<string, unknown>) : undefined, logFile });
    });
  });
}

describe("the benches at a small size", () => {
  it("registry: every read finds its key; every registry's indexes agree with its entries after the writes", async () => {
    const r = await runBench("registry", ["--sizes", "1000,5000", "--round-ms", "10", "--rounds", "1"], true);
    expect(r.code, r.logFile).toBe(0);
    expect(r.summary).toEqual({ bench: "registry", sizes: [1000, 5000], verified: true });
  });

  it("sync: the stream, the raw writes, the target alone and table → table each leave the source's rows, checksum for checksum", async () => {
    const r = await runBench("sync", ["--records", "30000", "--rounds", "1"], true);
    expect(r.code, r.logFile).toBe(0);
    expect(r.summary).toEqual(expect.objectContaining({ bench: "sync", records: 30_000 }));
  }, 300_000);

  it("breaker: the breaker opens, diverts 10,000-row chunks to the buffer, replays them, and no key is lost", async () => {
    // Large enough that the stream is still going when the target turns slow (at 60,000 records a
    // fast session could write nearly everything first and never trip), and that the session diverts
    // full chunks of DEFAULT_MAX_ROWS_PER_CHUNK rows.
    const r = await runBench("breaker", ["--records", "150000"], true);
    expect(r.code, r.logFile).toBe(0);
    expect(r.summary).toEqual(expect.objectContaining({ bench: "breaker", records: 150_000, lost: 0 }));
  }, 300_000);

  it("admission: the controller decides every run, on an API server of its own", async () => {
    const r = await runBench("admission", ["--jobs", "60"], false);
    expect(r.code, r.logFile).toBe(0);
    // Half the runs fit the policy's maxRunsGlobal: exactly that many are admitted, the rest queue.
    expect(r.summary).toEqual(
      expect.objectContaining({ bench: "admission", jobs: 60, admitted: 30, max_runs_global: 30 }),
    );
  }, 300_000);
});
