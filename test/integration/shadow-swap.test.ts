import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SyncJobSpec } from "../../controller/api/syncjob.ts";
import { SyncRunSpec } from "../../controller/api/syncrun.ts";
import { describeTable } from "../../controller/connectors/postgres/catalog.ts";
import { executeRun } from "../../controller/runner/run.ts";
import { shadowFillRunInput } from "../../controller/runner/shadow-fill.ts";
import { retiredTableName, shadowTableName } from "../../controller/shadow/names.ts";
import {
  createShadowLike,
  dropRetired,
  isDatabaseAction,
  performDatabaseAction,
  rollback,
  ShadowTableError,
  swap,
} from "../../controller/shadow/postgres.ts";
import {
  APPROVE_SWAP_ANNOTATION,
  decideShadow,
  REQUESTED_BY_ANNOTATION,
  ROLLBACK_ANNOTATION,
  type ShadowDecision,
  type ShadowInput,
  type ShadowStatus,
} from "../../controller/shadow/state.ts";
import { testEnv, uniqueName } from "../support/env.ts";

const pool = new pg.Pool({ connectionString: testEnv().databaseUrl, max: 10 });
pool.on("error", () => {});
const schema = uniqueName("shadow").replaceAll("-", "_");
const reader = `${schema}_reader`;
const target = `${schema}.orders`;
const shadow = shadowTableName(target);
const source = `${schema}.orders_source`;
const OLD_ROWS = 100;
const NEW_ROWS = 250;

const count = async (table: string) =>
  (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
const exists = async (table: string) =>
  (await pool.query<{ oid: string | null }>("SELECT to_regclass($1)::text AS oid", [table])).rows[0]!.oid !==
  null;

beforeAll(async () => {
  await pool.query(`CREATE SCHEMA ${schema}`);
  await pool.query(`CREATE ROLE ${reader} NOLOGIN`);
  await pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${reader}`);
  // A serial column, a default and a key: what LIKE … INCLUDING ALL must carry over.
  await pool.query(
    `CREATE TABLE ${target} (id int8 PRIMARY KEY, seq bigserial, status text NOT NULL DEFAULT 'new', amount numeric)`,
  );
  await pool.query(`GRANT SELECT ON ${target} TO ${reader}`);
  await pool.query(
    `INSERT INTO ${target} (id, status, amount) SELECT g, 'old', g FROM generate_series(1, ${OLD_ROWS}) g`,
  );
  await pool.query(`CREATE TABLE ${source} (id int8 PRIMARY KEY, status text NOT NULL, amount numeric)`);
  await pool.query(`INSERT INTO ${source} SELECT g, 'fresh', g * 2 FROM generate_series(1, ${NEW_ROWS}) g`);
});

afterAll(async () => {
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await pool.query(`DROP ROLE IF EXISTS ${reader}`);
  await pool.end();
});

interface ReaderLog {
  counts: number[];
  errors: string[];
  slowestMs: number;
}

/**
 * `readers` connections each running SELECT count(*) on `table` back to back until stopped. Each
 * query waits for the previous one, so the loop is bound by the database, not the CPU.
 */
function startReaders(table: string, readers: number) {
  let stopped = false;
  const logs: ReaderLog[] = [];
  const loops = Array.from({ length: readers }, async () => {
    const log: ReaderLog = { counts: [], errors: [], slowestMs: 0 };
    logs.push(log);
    const client = await pool.connect();
    try {
      while (!stopped) {
        const began = performance.now();
        try {
          const r = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
          log.counts.push(r.rows[0]!.n);
        } catch (error) {
          log.errors.push((error as Error).message);
        }
        log.slowestMs = Math.max(log.slowestMs, performance.now() - began);
      }
    } finally {
      client.release();
    }
  });
  const until = async (enough: (log: ReaderLog) => boolean) => {
    while (logs.length < readers || !logs.every(enough)) await new Promise((r) => setTimeout(r, 10));
  };
  return {
    logs,
    until,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** Holds an ACCESS SHARE lock on `table` (an open transaction that read it) until released. */
async function holdReadLock(table: string): Promise<() => Promise<void>> {
  const client = await pool.connect();
  await client.query("BEGIN");
  await client.query(`SELECT count(*) FROM ${table}`);
  return async () => {
    await client.query("COMMIT");
    client.release();
  };
}

describe("shadow tables on PostgreSQL", () => {
  it("creates the shadow like the target: key, defaults, serial, grants; a stale shadow is replaced", async () => {
    await pool.query(`CREATE TABLE ${shadow} (leftover text)`);
    await createShadowLike(pool, target, shadow);
    const info = await describeTable(pool, shadow);
    expect([...info!.columns.keys()]).toEqual(["id", "seq", "status", "amount"]);
    expect(info!.uniqueKeys).toEqual([["id"]]);
    expect(info!.columns.get("status")).toMatchObject({ notNull: true, hasDefault: true });
    expect(info!.columns.get("seq")).toMatchObject({ hasDefault: true });
    const granted = await pool.query<{ ok: boolean }>("SELECT has_table_privilege($1, $2, 'SELECT') AS ok", [
      reader,
      shadow,
    ]);
    expect(granted.rows[0]!.ok).toBe(true);
    expect(await count(shadow)).toBe(0);
  });

  it("fills the shadow with executeRun pointed at it, leaving the target untouched", async () => {
    const spec = SyncJobSpec.parse({
      source: { sql: { connectionSecretRef: { name: "src" }, table: source } },
      target: { sql: { connectionSecretRef: { name: "dw" }, table: target, keyColumns: ["id"] } },
      mode: "batch",
      schedule: "0 2 * * *",
    });
    const input = shadowFillRunInput(
      {
        run: { namespace: "shop", name: "orders-sf1" },
        job: { namespace: "shop", name: "orders", spec },
        spec: SyncRunSpec.parse({
          jobName: "orders",
          type: "ShadowFill",
          trigger: "Controller",
          incremental: true,
        }),
        connections: { source: testEnv().databaseUrl, target: testEnv().databaseUrl },
        previousCursor: "stale",
      },
      shadow,
    );
    const result = await executeRun(input, { batchSize: 100 });
    expect(result.phase, result.message).toBe("Succeeded");
    expect(result.validation?.result).toBe("Passed");
    expect(await count(shadow)).toBe(NEW_ROWS);
    expect(await count(target)).toBe(OLD_ROWS);
  });

  it("gives up within the lock timeout while another session holds the target, renaming nothing", async () => {
    const release = await holdReadLock(target);
    const retired = retiredTableName(target, new Date("2024-01-01T00:00:00Z"));
    const began = Date.now();
    try {
      const error = await swap(pool, target, shadow, retired, { lockTimeoutMs: 300 }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ShadowTableError);
      expect((error as ShadowTableError).reason).toBe("LockTimeout");
      expect(Date.now() - began).toBeLessThan(5000);
    } finally {
      await release();
    }
    expect(await count(target)).toBe(OLD_ROWS);
    expect(await count(shadow)).toBe(NEW_ROWS);
    expect(await exists(retired)).toBe(false);
  });

  it("swaps atomically under 4 readers: none sees a missing table, each sees the old count then the new", async () => {
    const readers = startReaders(target, 4);
    await readers.until((log) => log.counts.length >= 3);
    // A transaction reading the target makes the swap wait, so readers queue behind its lock.
    const release = await holdReadLock(target);
    setTimeout(() => void release(), 300);
    const retired = retiredTableName(target, new Date());
    const outcome = await swap(pool, target, shadow, retired, { lockTimeoutMs: 10_000 });
    const swappedAt = readers.logs.map((log) => log.counts.length);
    await readers.until((log) => log.counts.length >= swappedAt[readers.logs.indexOf(log)]! + 3);
    await readers.stop();

    expect(outcome).toBe("Swapped");
    for (const log of readers.logs) {
      expect(log.errors).toEqual([]);
      // Only the two counts, and once the new one is seen, never the old one again.
      expect(new Set(log.counts)).toEqual(new Set([OLD_ROWS, NEW_ROWS]));
      const firstNew = log.counts.indexOf(NEW_ROWS);
      expect(log.counts.slice(0, firstNew).every((n) => n === OLD_ROWS)).toBe(true);
      expect(log.counts.slice(firstNew).every((n) => n === NEW_ROWS)).toBe(true);
    }
    // Evidence that readers were really held up by the swap's lock rather than racing past it.
    expect(Math.max(...readers.logs.map((l) => l.slowestMs))).toBeGreaterThan(100);

    expect(await count(target)).toBe(NEW_ROWS);
    expect(await count(retired)).toBe(OLD_ROWS);
    expect(await exists(shadow)).toBe(false);
    // The new table keeps its grant, and a repeated swap recognises that it is done.
    const granted = await pool.query<{ ok: boolean }>("SELECT has_table_privilege($1, $2, 'SELECT') AS ok", [
      reader,
      target,
    ]);
    expect(granted.rows[0]!.ok).toBe(true);
    expect(await swap(pool, target, shadow, retired)).toBe("AlreadySwapped");
  });

  it("rolls back to the retired table, readers again seeing one count or the other", async () => {
    const retired = (
      await pool.query<{ name: string }>(
        `SELECT $1 || '.' || relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND relname LIKE 'orders\\_\\_retired\\_%'`,
        [schema],
      )
    ).rows[0]!.name;
    const readers = startReaders(target, 4);
    await readers.until((log) => log.counts.length >= 3);
    expect(await rollback(pool, target, retired, shadow)).toBe("RolledBack");
    const after = readers.logs.map((log) => log.counts.length);
    await readers.until((log) => log.counts.length >= after[readers.logs.indexOf(log)]! + 3);
    await readers.stop();
    for (const log of readers.logs) {
      expect(log.errors).toEqual([]);
      const firstOld = log.counts.indexOf(OLD_ROWS);
      expect(firstOld).toBeGreaterThan(0);
      expect(log.counts.slice(0, firstOld).every((n) => n === NEW_ROWS)).toBe(true);
      expect(log.counts.slice(firstOld).every((n) => n === OLD_ROWS)).toBe(true);
    }
    expect(await count(target)).toBe(OLD_ROWS);
    expect(await count(shadow)).toBe(NEW_ROWS);
    expect(await exists(retired)).toBe(false);
    expect(await rollback(pool, target, retired, shadow)).toBe("AlreadyRolledBack");
  });

  it("drops a retired table after a second swap, and the live table's serial default still works", async () => {
    // The table displaced by the rollback sits at the shadow name; swap it in again, then retire for good.
    const retired = retiredTableName(target, new Date(Date.now() + 60_000));
    expect(await swap(pool, target, shadow, retired)).toBe("Swapped");
    expect(await dropRetired(pool, retired)).toBe(true);
    expect(await exists(retired)).toBe(false);
    expect(await dropRetired(pool, retired)).toBe(false);
    // The serial sequence moved to the live table with the swap, so dropping the retired one kept it.
    await pool.query(`INSERT INTO ${target} (id) VALUES (1000000)`);
    const row = await pool.query<{ seq: string; status: string }>(
      `SELECT seq, status FROM ${target} WHERE id = 1000000`,
    );
    expect(row.rows[0]).toMatchObject({ status: "new" });
    expect(Number(row.rows[0]!.seq)).toBeGreaterThan(0);
    expect(await count(target)).toBe(NEW_ROWS + 1);
  });

  it("refuses to swap while a view refers to the target, and to drop a table that is not a retired one", async () => {
    const table = `${schema}.viewed`;
    const viewedShadow = shadowTableName(table);
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`);
    await pool.query(`CREATE VIEW ${schema}.viewed_report AS SELECT count(*) FROM ${table}`);
    await createShadowLike(pool, table, viewedShadow);
    const retired = retiredTableName(table, new Date());
    const error = await swap(pool, table, viewedShadow, retired).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShadowTableError);
    expect((error as ShadowTableError).reason).toBe("DependentObjects");
    expect((error as Error).message).toContain(`view ${schema}.viewed_report`);
    expect(await exists(viewedShadow)).toBe(true);
    expect(await exists(retired)).toBe(false);

    await expect(dropRetired(pool, target)).rejects.toMatchObject({ reason: "UnexpectedName" });
    await expect(createShadowLike(pool, table, `${schema}.not_a_shadow`)).rejects.toMatchObject({
      reason: "UnexpectedName",
    });
    expect(await exists(target)).toBe(true);
  });

  it("puts the shadow of an unqualified target in the target's schema, not the first one on search_path", async () => {
    const first = `${schema}_first`;
    await pool.query(`CREATE SCHEMA ${first}`);
    const scoped = new pg.Pool({
      connectionString: testEnv().databaseUrl,
      max: 2,
      options: `-c search_path=${first},${schema}`,
    });
    try {
      await pool.query(`CREATE TABLE ${schema}.customers (id int PRIMARY KEY)`);
      await pool.query(`INSERT INTO ${schema}.customers VALUES (1), (2)`);
      await createShadowLike(scoped, "customers", "customers__shadow");
      expect(await exists(`${schema}.customers__shadow`)).toBe(true);
      expect(await exists(`${first}.customers__shadow`)).toBe(false);
      const retired = retiredTableName("customers", new Date());
      expect(await swap(scoped, "customers", "customers__shadow", retired)).toBe("Swapped");
      expect(await count(`${schema}.customers`)).toBe(0);
      expect(await count(`${schema}.${retired}`)).toBe(2);
    } finally {
      await scoped.end();
      await pool.query(`DROP SCHEMA ${first} CASCADE`);
    }
  });

  it("runs a whole cycle decided by decideShadow: fill, approve, swap, rollback", async () => {
    const cycleTarget = `${schema}.ledger`;
    await pool.query(
      `CREATE TABLE ${cycleTarget} (id int8 PRIMARY KEY, status text NOT NULL, amount numeric)`,
    );
    await pool.query(`INSERT INTO ${cycleTarget} VALUES (1, 'drifted', 0)`);
    const spec = SyncJobSpec.parse({
      source: { sql: { connectionSecretRef: { name: "src" }, table: source } },
      target: { sql: { connectionSecretRef: { name: "dw" }, table: cycleTarget, keyColumns: ["id"] } },
      mode: "batch",
      schedule: "0 2 * * *",
    });
    let status: ShadowStatus | undefined;
    let annotations: Record<string, string> = {};
    let fillRun: ShadowInput["fillRun"];
    const validations = [1, 2, 3].map((n) => ({
      run: `ledger-v${n}`,
      result: "Failed" as const,
      finishedAt: new Date(Date.now() - (10 - n) * 60_000).toISOString(),
    }));
    const kinds: string[] = [];
    /** The reconciler's part: perform the actions in order, then store the status. */
    const reconcile = async (): Promise<ShadowDecision> => {
      const d = decideShadow({
        job: { namespace: "shop", name: "ledger" },
        target: cycleTarget,
        settings: { enabled: true, failedValidationsBeforeShadow: 3, retiredTableTtlSeconds: 3600 },
        status,
        annotations,
        // The API server guards approvals (the ValidatingAdmissionPolicy shipped with the CRDs).
        requestGuard: { installed: true },
        validations,
        fillRun,
        now: new Date(),
      });
      for (const action of d.actions) {
        kinds.push(action.kind);
        if (isDatabaseAction(action)) await performDatabaseAction(pool, action);
        else if (action.kind === "StartShadowFill") {
          const result = await executeRun(
            shadowFillRunInput(
              {
                run: { namespace: "shop", name: action.run },
                job: { namespace: "shop", name: "ledger", spec },
                spec: SyncRunSpec.parse({ jobName: "ledger", type: "ShadowFill", trigger: "Controller" }),
                connections: { source: testEnv().databaseUrl, target: testEnv().databaseUrl },
              },
              action.shadow,
            ),
          );
          fillRun = { name: action.run, phase: result.phase, message: result.message };
        }
      }
      status = d.status;
      return d;
    };

    expect((await reconcile()).writeTable).toBe(shadowTableName(cycleTarget));
    expect(status?.state).toBe("Filling");
    expect(await count(shadowTableName(cycleTarget))).toBe(NEW_ROWS);
    expect(await count(cycleTarget)).toBe(1);
    await reconcile();
    expect(status?.state).toBe("AwaitingApproval");
    annotations = { [APPROVE_SWAP_ANNOTATION]: "approved-by-test", [REQUESTED_BY_ANNOTATION]: "dba" };
    await reconcile();
    expect(status?.state).toBe("Swapping");
    expect((await reconcile()).writeTable).toBe(cycleTarget);
    expect(status?.state).toBe("Swapped");
    expect(await count(cycleTarget)).toBe(NEW_ROWS);
    expect(await count(status!.retiredTable!)).toBe(1);
    annotations = { ...annotations, [ROLLBACK_ANNOTATION]: "undo" };
    const retired = status!.retiredTable!;
    await reconcile();
    expect(status?.state).toBe("None");
    expect(await count(cycleTarget)).toBe(1);
    expect(await exists(retired)).toBe(false);
    expect(kinds).toEqual([
      "CreateShadow",
      "RedirectWrites",
      "StartShadowFill",
      "Swap",
      "RedirectWrites",
      "Rollback",
    ]);
  });
});
