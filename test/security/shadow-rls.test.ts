import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SyncJobSpec } from "../../controller/api/syncjob.ts";
import { SyncRunSpec } from "../../controller/api/syncrun.ts";
import { executeRun } from "../../controller/runner/run.ts";
import { shadowFillRunInput } from "../../controller/runner/shadow-fill.ts";
import { retiredTableName, shadowTableName } from "../../controller/shadow/names.ts";
import { createShadowLike, ShadowTableError, swap } from "../../controller/shadow/postgres.ts";
import { testEnv, uniqueName } from "../support/env.ts";

/**
 * Finding 8 of the security review: shadow mode dropped row-level security. The shadow table got
 * the target's grants and owner but not RLS, its policies or its triggers, so after a swap the live
 * table let every role with a grant read every row. Now the shadow carries RLS (enabled and forced),
 * the policies, the triggers, grants, owner and comments, and a swap refuses when the target gained
 * something the shadow lacks. The roles here are the database's tenants: `alice` and `bob` each
 * see only their own rows through a policy, which must hold across the swap.
 */
const pool = new pg.Pool({ connectionString: testEnv().databaseUrl, max: 4 });
pool.on("error", () => undefined);
const schema = uniqueName("sec_rls").replaceAll("-", "_");
const alice = `${schema}_alice`;
const bob = `${schema}_bob`;
const target = `${schema}.accounts`;
const shadow = shadowTableName(target);
const source = `${schema}.accounts_source`;

interface Security {
  rls: { relrowsecurity: boolean; relforcerowsecurity: boolean; comment: string | null };
  policies: {
    name: string;
    cmd: string;
    permissive: boolean;
    roles: string[];
    qual: string | null;
    check: string | null;
  }[];
  triggers: { name: string; enabled: string; def: string }[];
  columnComments: { column: string; comment: string }[];
  grants: { grantee: string; privilege: string }[];
}

/** What the catalog says about `table`'s security, in terms that do not name the table. */
async function security(table: string): Promise<Security> {
  const rls = await pool.query(
    `SELECT relrowsecurity, relforcerowsecurity, obj_description(oid, 'pg_class') AS comment
       FROM pg_class WHERE oid = $1::regclass`,
    [table],
  );
  const policies = await pool.query(
    `SELECT polname::text AS name, polcmd::text AS cmd, polpermissive AS permissive,
            ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                    FROM unnest(polroles) r ORDER BY 1) AS roles,
            pg_get_expr(polqual, polrelid) AS qual, pg_get_expr(polwithcheck, polrelid) AS check
       FROM pg_policy WHERE polrelid = $1::regclass ORDER BY polname`,
    [table],
  );
  const triggers = await pool.query(
    `SELECT tgname::text AS name, tgenabled::text AS enabled,
            regexp_replace(pg_get_triggerdef(oid), ' ON \\S+ ', ' ON <table> ') AS def
       FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname`,
    [table],
  );
  const columnComments = await pool.query(
    `SELECT a.attname::text AS column, col_description(a.attrelid, a.attnum) AS comment
       FROM pg_attribute a
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND col_description(a.attrelid, a.attnum) IS NOT NULL
      ORDER BY a.attnum`,
    [table],
  );
  const grants = await pool.query(
    `SELECT grantee::text, privilege_type::text AS privilege
       FROM information_schema.role_table_grants
      WHERE table_schema = $1 AND table_name = $2 AND grantee IN ($3, $4)
      ORDER BY 1, 2`,
    [schema, table.slice(table.indexOf(".") + 1), alice, bob],
  );
  return {
    rls: rls.rows[0],
    policies: policies.rows,
    triggers: triggers.rows,
    columnComments: columnComments.rows,
    grants: grants.rows,
  };
}

/** Runs `body` as `role` (SET ROLE in a transaction that is rolled back). */
async function asRole<T>(role: string, body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query(`SET LOCAL ROLE ${role}`);
    return await body(client);
  } finally {
    await client.query("ROLLBACK").catch(() => undefined);
    client.release();
  }
}

const exists = async (table: string) =>
  (await pool.query<{ oid: string | null }>("SELECT to_regclass($1)::text AS oid", [table])).rows[0]!.oid !==
  null;

let before: Security;

beforeAll(async () => {
  await pool.query(`CREATE SCHEMA ${schema}`);
  for (const role of [alice, bob]) {
    await pool.query(`CREATE ROLE ${role} NOLOGIN`);
    await pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
  }
  await pool.query(
    `CREATE TABLE ${target} (id int8 PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL, stamped int NOT NULL DEFAULT 0)`,
  );
  await pool.query(`COMMENT ON TABLE ${target} IS 'accounts, one row per tenant account'`);
  await pool.query(`COMMENT ON COLUMN ${target}.owner IS 'the database role that owns the row'`);
  await pool.query(`GRANT SELECT, INSERT, UPDATE ON ${target} TO ${alice}, ${bob}`);
  await pool.query(`ALTER TABLE ${target} ENABLE ROW LEVEL SECURITY`);
  await pool.query(`ALTER TABLE ${target} FORCE ROW LEVEL SECURITY`);
  // Two policies: a permissive one (each tenant its own rows) and a restrictive one (no overdraft).
  await pool.query(
    `CREATE POLICY "own rows" ON ${target} FOR ALL TO ${alice}, ${bob}
       USING (owner = current_user) WITH CHECK (owner = current_user)`,
  );
  await pool.query(
    `CREATE POLICY no_overdraft ON ${target} AS RESTRICTIVE FOR INSERT TO PUBLIC WITH CHECK (balance >= 0)`,
  );
  await pool.query(
    `CREATE FUNCTION ${schema}.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN NEW.stamped := NEW.stamped + 1; RETURN NEW; END $$`,
  );
  await pool.query(
    `CREATE TRIGGER stamp BEFORE INSERT OR UPDATE OF balance ON ${target}
       FOR EACH ROW EXECUTE FUNCTION ${schema}.stamp()`,
  );
  await pool.query(
    `INSERT INTO ${target} (id, owner, balance) VALUES (1, '${alice}', 10), (2, '${bob}', 20), (3, '${alice}', 30)`,
  );
  // The rows the shadow is filled with: two of alice's, three of bob's.
  await pool.query(
    `CREATE TABLE ${source} (id int8 PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)`,
  );
  await pool.query(
    `INSERT INTO ${source} VALUES (1, '${alice}', 11), (2, '${bob}', 21), (3, '${alice}', 31), (4, '${bob}', 41), (5, '${bob}', 51)`,
  );
  before = await security(target);
});

afterAll(async () => {
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  for (const role of [alice, bob]) await pool.query(`DROP ROLE IF EXISTS ${role}`);
  await pool.end();
});

describe("a shadow swap of a table with row-level security", () => {
  it("keeps RLS (enabled and forced), both policies, the trigger, grants and comments on the live table", async () => {
    expect(before.policies).toHaveLength(2);
    expect(before.triggers).toHaveLength(1);
    await createShadowLike(pool, target, shadow);

    // Fill the shadow as the runner does in shadow mode (a ShadowFill run pointed at it).
    const spec = SyncJobSpec.parse({
      source: { sql: { connectionSecretRef: { name: "src" }, table: source } },
      target: { sql: { connectionSecretRef: { name: "dw" }, table: target, keyColumns: ["id"] } },
      mode: "batch",
      schedule: "0 2 * * *",
    });
    const input = shadowFillRunInput(
      {
        run: { namespace: "bank", name: "accounts-sf1" },
        job: { namespace: "bank", name: "accounts", spec },
        spec: SyncRunSpec.parse({ jobName: "accounts", type: "ShadowFill", trigger: "Controller" }),
        connections: { source: testEnv().databaseUrl, target: testEnv().databaseUrl },
      },
      shadow,
    );
    const result = await executeRun(input, { batchSize: 100 });
    expect(result.phase, result.message).toBe("Succeeded");

    const retired = retiredTableName(target, new Date());
    expect(await swap(pool, target, shadow, retired)).toBe("Swapped");
    const after = await security(target);
    expect(after.rls).toEqual({
      relrowsecurity: true,
      relforcerowsecurity: true,
      comment: "accounts, one row per tenant account",
    });
    expect(after.policies).toEqual(before.policies);
    expect(after.policies.map((p) => [p.name, p.cmd, p.permissive])).toEqual([
      ["no_overdraft", "a", false],
      ["own rows", "*", true],
    ]);
    expect(after.triggers).toEqual(before.triggers);
    expect(after.columnComments).toEqual([
      { column: "owner", comment: "the database role that owns the row" },
    ]);
    expect(after.grants).toEqual(before.grants);
    // The trigger fired on the rows the fill wrote to the shadow.
    const stamped = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${target} WHERE stamped = 1`,
    );
    expect(stamped.rows[0]!.n).toBe(5);
  });

  it("still shows each role only its own rows, and checks its writes, after the swap", async () => {
    const seen = await asRole(
      alice,
      async (c) =>
        (
          await c.query<{ id: string; owner: string }>(
            `SELECT id::text, owner::text FROM ${target} ORDER BY id`,
          )
        ).rows,
    );
    expect(seen).toEqual([
      { id: "1", owner: alice },
      { id: "3", owner: alice },
    ]);
    expect(await asRole(bob, async (c) => (await c.query(`SELECT id FROM ${target}`)).rowCount)).toBe(3);
    // WITH CHECK of "own rows": alice cannot write a row as bob's; of no_overdraft: nor overdraw.
    await expect(
      asRole(alice, (c) => c.query(`INSERT INTO ${target} (id, owner, balance) VALUES (6, '${bob}', 1)`)),
    ).rejects.toThrow(/row-level security policy/);
    await expect(
      asRole(alice, (c) => c.query(`INSERT INTO ${target} (id, owner, balance) VALUES (6, '${alice}', -1)`)),
    ).rejects.toThrow(/row-level security policy/);
    const written = await asRole(alice, async (c) => {
      await c.query(`INSERT INTO ${target} (id, owner, balance) VALUES (6, '${alice}', 5)`);
      return (await c.query<{ stamped: number }>(`SELECT stamped FROM ${target} WHERE id = 6`)).rows[0];
    });
    expect(written).toEqual({ stamped: 1 });
  });

  it("is refused, renaming nothing, when the target gained a policy or trigger the shadow lacks", async () => {
    const table = `${schema}.ledger`;
    const ledgerShadow = shadowTableName(table);
    await pool.query(`CREATE TABLE ${table} (id int8 PRIMARY KEY, owner text NOT NULL)`);
    await pool.query(`ALTER TABLE ${table} ENABLE ROW LEVEL SECURITY`);
    await pool.query(`CREATE POLICY own ON ${table} USING (owner = current_user)`);
    await createShadowLike(pool, table, ledgerShadow);
    // After the shadow was made, the database's owner tightens the live table.
    await pool.query(`CREATE POLICY late_policy ON ${table} AS RESTRICTIVE FOR DELETE USING (false)`);
    await pool.query(
      `CREATE TRIGGER late_trigger BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${schema}.stamp()`,
    );
    const retired = retiredTableName(table, new Date());
    const error = await swap(pool, table, ledgerShadow, retired).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShadowTableError);
    expect((error as ShadowTableError).reason).toBe("SecurityMismatch");
    expect((error as Error).message).toMatch(/would change who may read and write/);
    expect((error as Error).message).toContain("CREATE POLICY late_policy");
    expect((error as Error).message).toContain("CREATE TRIGGER late_trigger");
    expect(await exists(ledgerShadow)).toBe(true);
    expect(await exists(retired)).toBe(false);
    expect((await security(table)).policies.map((p) => p.name)).toEqual(["late_policy", "own"]);
  });

  it("is refused while another table's policy refers to the target (it would judge by the retired table)", async () => {
    const table = `${schema}.limits`;
    const limitsShadow = shadowTableName(table);
    await pool.query(`CREATE TABLE ${table} (owner text PRIMARY KEY, cap numeric NOT NULL)`);
    await pool.query(
      `CREATE TABLE ${schema}.payments (id int8 PRIMARY KEY, owner text NOT NULL, amount numeric)`,
    );
    await pool.query(`ALTER TABLE ${schema}.payments ENABLE ROW LEVEL SECURITY`);
    await pool.query(
      `CREATE POLICY under_cap ON ${schema}.payments
         USING (amount <= (SELECT cap FROM ${table} l WHERE l.owner = payments.owner))`,
    );
    await createShadowLike(pool, table, limitsShadow);
    const retired = retiredTableName(table, new Date());
    const error = await swap(pool, table, limitsShadow, retired).catch((e: unknown) => e);
    expect(error).toMatchObject({ reason: "DependentObjects" });
    expect((error as Error).message).toContain(`row-level security policy under_cap of ${schema}.payments`);
    expect(await exists(retired)).toBe(false);
  });
});
