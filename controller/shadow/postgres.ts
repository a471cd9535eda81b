/**
 * The DDL of the shadow-table fallback on PostgreSQL: create the shadow like the target, swap it in,
 * swap the retired table back, drop what is no longer needed. Every step is one transaction with a
 * lock_timeout, recognises when it has already been done (so a controller that crashed after the
 * commit and before writing status can simply repeat it), and quotes every identifier
 * (quoteIdent/quoteTable). Names read from the catalog (roles of grants, the owner) are quoted by
 * PostgreSQL's own quote_ident() in the statement that reads them, never spliced from a spec.
 *
 * Derived names (`<table>__shadow`, `<table>__retired_<time>`) given without a schema are placed in
 * the schema where the target actually resolves, not in the first schema of search_path, so that
 * the renames keep all three tables side by side.
 */

import type pg from "pg";
import { quoteIdent, quoteTable } from "../api/identifiers.ts";
import { RETIRED_INFIX, SHADOW_SUFFIX } from "./names.ts";
import type { ShadowAction } from "./state.ts";

export interface ShadowDdlOptions {
  /**
   * How long a step waits for a table lock before giving up (default 2000 ms). While the swap waits
   * for its ACCESS EXCLUSIVE lock, new readers queue behind it, so this bounds how long a busy table
   * can stall its readers; a swap that times out renames nothing and is retried later.
   */
  readonly lockTimeoutMs?: number;
}

/** A shadow step cannot be done as asked; `reason` is CamelCase for conditions. */
export class ShadowTableError extends Error {
  override readonly name = "ShadowTableError";
  readonly reason: string;

  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

interface Relation {
  schema: string;
  name: string;
  /** r = table, p = partitioned, v = view, … */
  kind: string;
  owner: string;
}

const DEFAULT_LOCK_TIMEOUT_MS = 2000;
const RETIRED_NAME = new RegExp(`${RETIRED_INFIX}\\d{14}$`);
const LOCK_NOT_AVAILABLE = "55P03";

function bareName(ref: string): string {
  quoteTable(ref);
  return ref.slice(ref.indexOf(".") + 1);
}

function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** `ref` as the target's sibling: its own schema if it names one, else the target's. */
function besideTarget(ref: string, target: Relation): string {
  quoteTable(ref);
  return ref.includes(".") ? ref : `${target.schema}.${ref}`;
}

async function describeRelation(db: pg.ClientBase, ref: string): Promise<Relation | undefined> {
  const result = await db.query<{ schema: string; name: string; kind: string; owner: string }>(
    `SELECT n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
            pg_get_userbyid(c.relowner)::text AS owner
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = to_regclass($1)`,
    [quoteTable(ref)],
  );
  return result.rows[0];
}

async function inTransaction<T>(
  pool: pg.Pool,
  options: ShadowDdlOptions,
  what: string,
  body: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT set_config('lock_timeout', $1, true)", [
      `${options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS}ms`,
    ]);
    const result = await body(client);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    if ((error as { code?: unknown }).code === LOCK_NOT_AVAILABLE) {
      throw new ShadowTableError(
        "LockTimeout",
        `${what}: the tables stayed locked by other sessions for more than ${options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS} ms; nothing was changed`,
      );
    }
    throw error;
  } finally {
    client.release();
  }
}

async function requireTable(db: pg.ClientBase, ref: string, role: string): Promise<Relation> {
  const relation = await describeRelation(db, ref);
  if (!relation) throw new ShadowTableError("MissingTable", `the ${role} table ${ref} does not exist`);
  if (relation.kind !== "r") {
    throw new ShadowTableError(
      "NotATable",
      `the ${role} ${ref} is not a plain table (relkind ${relation.kind}); the shadow fallback renames plain tables only`,
    );
  }
  return relation;
}

function requireDerived(ref: string, pattern: RegExp, what: string): void {
  if (!pattern.test(bareName(ref))) {
    throw new ShadowTableError("UnexpectedName", `refusing to touch ${ref}: it is not a ${what} table name`);
  }
}

const SHADOW_NAME = new RegExp(`${SHADOW_SUFFIX}$`);

/**
 * Creates `shadow` with the target's columns, defaults, constraints, indexes (so the key the
 * upserts need), identity, storage and comments (`LIKE … INCLUDING ALL`), then gives it the target's
 * grants and owner, which LIKE does not copy, so readers keep their access after the swap. A table
 * left at the shadow's name by an earlier cycle is dropped first. Not copied: triggers, row-level
 * security policies and foreign keys, which PostgreSQL ties to the table rather than its name.
 */
export async function createShadowLike(
  pool: pg.Pool,
  target: string,
  shadow: string,
  options: ShadowDdlOptions = {},
): Promise<void> {
  requireDerived(shadow, SHADOW_NAME, "shadow");
  await inTransaction(pool, options, `creating ${shadow} like ${target}`, async (client) => {
    const t = await requireTable(client, target, "target");
    const shadowRef = besideTarget(shadow, t);
    const stale = await describeRelation(client, shadowRef);
    if (stale && stale.kind !== "r") {
      throw new ShadowTableError(
        "NotATable",
        `refusing to replace ${shadowRef}: it exists and is not a table (relkind ${stale.kind})`,
      );
    }
    const targetSql = qualified(t.schema, t.name);
    const shadowSql = quoteTable(shadowRef);
    if (stale) await client.query(`DROP TABLE ${shadowSql}`);
    await client.query(`CREATE TABLE ${shadowSql} (LIKE ${targetSql} INCLUDING ALL)`);
    // GRANT statements written by PostgreSQL from the target's ACL; role names quoted by quote_ident.
    const grants = await client.query<{ statement: string }>(
      `SELECT format('GRANT %s ON TABLE %s TO %s%s', a.privilege_type, $2::regclass,
                     CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
                     CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) AS statement
         FROM pg_class c
         CROSS JOIN LATERAL aclexplode(c.relacl) a
         LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = $1::regclass AND a.grantee <> c.relowner`,
      [targetSql, shadowSql],
    );
    for (const { statement } of grants.rows) await client.query(statement);
    const owner = await client.query<{ statement: string | null }>(
      `SELECT CASE WHEN t.relowner <> s.relowner
                   THEN format('ALTER TABLE %s OWNER TO %s', $2::regclass, quote_ident(pg_get_userbyid(t.relowner)))
              END AS statement
         FROM pg_class t, pg_class s
        WHERE t.oid = $1::regclass AND s.oid = $2::regclass`,
      [targetSql, shadowSql],
    );
    const alterOwner = owner.rows[0]?.statement;
    if (alterOwner) await client.query(alterOwner);
  });
}

/**
 * Views and foreign keys that refer to `table`. PostgreSQL binds them to the table itself, not its
 * name, so after a rename they would follow the retired table: a swap refuses rather than leave
 * them silently reading old data.
 */
async function dependents(db: pg.ClientBase, table: string): Promise<string[]> {
  const result = await db.query<{ what: string }>(
    `SELECT DISTINCT 'view ' || v.oid::regclass::text AS what
       FROM pg_depend d
       JOIN pg_rewrite w ON w.oid = d.objid
       JOIN pg_class v ON v.oid = w.ev_class
      WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = $1::regclass AND v.oid <> $1::regclass
     UNION
     SELECT 'foreign key ' || quote_ident(conname) || ' of ' || conrelid::regclass::text
       FROM pg_constraint
      WHERE contype = 'f' AND confrelid = $1::regclass AND conrelid <> $1::regclass
      ORDER BY 1`,
    [table],
  );
  return result.rows.map((r) => r.what);
}

/**
 * Swaps `shadow` in as `target` in ONE transaction: `ALTER TABLE target RENAME TO retired`, then
 * `ALTER TABLE shadow RENAME TO target`, after taking ACCESS EXCLUSIVE locks on both (shadow first,
 * so readers of the target queue for as short a time as possible) within the lock timeout.
 *
 * What readers of `target` see: a query running when the swap starts finishes on the old table (the
 * swap waits for it); a query arriving while the swap holds or waits for the lock blocks briefly;
 * once the transaction commits, every query sees the new table, including the blocked ones
 * (PostgreSQL looks the name up again after a lock wait when the catalog changed under it). No
 * reader ever finds the name missing, and none sees a mixture: the renames commit together.
 *
 * Returns "AlreadySwapped" when the swap had been committed before (the shadow is gone and the
 * retired table exists), so a step repeated after a crash is harmless.
 */
export async function swap(
  pool: pg.Pool,
  target: string,
  shadow: string,
  retired: string,
  options: ShadowDdlOptions = {},
): Promise<"Swapped" | "AlreadySwapped"> {
  requireDerived(shadow, SHADOW_NAME, "shadow");
  requireDerived(retired, RETIRED_NAME, "retired");
  return exchange(pool, options, {
    what: `swapping ${shadow} in as ${target}`,
    live: target,
    incoming: shadow,
    outgoing: retired,
    done: "AlreadySwapped",
    applied: "Swapped",
  });
}

/**
 * Swaps the retired table back in as `target`, in one transaction like swap(): `target` (the table
 * swapped in earlier) is renamed to `displaced` (the shadow name, so that the next shadow cycle
 * replaces it) and `retired` to `target`. Readers see what they see during a swap.
 *
 * Returns "AlreadyRolledBack" when the retired table is gone and `displaced` exists, which is what a
 * committed rollback leaves.
 */
export async function rollback(
  pool: pg.Pool,
  target: string,
  retired: string,
  displaced: string,
  options: ShadowDdlOptions = {},
): Promise<"RolledBack" | "AlreadyRolledBack"> {
  requireDerived(retired, RETIRED_NAME, "retired");
  requireDerived(displaced, SHADOW_NAME, "shadow");
  return exchange(pool, options, {
    what: `rolling ${target} back to ${retired}`,
    live: target,
    incoming: retired,
    outgoing: displaced,
    done: "AlreadyRolledBack",
    applied: "RolledBack",
  });
}

/** live → outgoing and incoming → live, in one transaction. */
async function exchange<D extends string, A extends string>(
  pool: pg.Pool,
  options: ShadowDdlOptions,
  step: { what: string; live: string; incoming: string; outgoing: string; done: D; applied: A },
): Promise<D | A> {
  return inTransaction(pool, options, step.what, async (client) => {
    const live = await describeRelation(client, step.live);
    if (!live) throw new ShadowTableError("MissingTable", `${step.what}: ${step.live} does not exist`);
    const incomingRef = besideTarget(step.incoming, live);
    const outgoingRef = besideTarget(step.outgoing, live);
    const incoming = await describeRelation(client, incomingRef);
    const outgoing = await describeRelation(client, outgoingRef);
    if (!incoming && outgoing) return step.done;
    if (!incoming) throw new ShadowTableError("MissingTable", `${step.what}: ${incomingRef} does not exist`);
    if (outgoing) {
      throw new ShadowTableError("NameTaken", `${step.what}: ${outgoingRef} already exists`);
    }
    for (const [relation, ref] of [
      [live, step.live],
      [incoming, incomingRef],
    ] as const) {
      if (relation.kind !== "r") {
        throw new ShadowTableError("NotATable", `${step.what}: ${ref} is not a plain table`);
      }
    }
    if (incoming.schema !== live.schema) {
      throw new ShadowTableError(
        "SchemaMismatch",
        `${step.what}: ${incomingRef} is in schema ${incoming.schema}, ${step.live} in ${live.schema}`,
      );
    }
    const liveSql = qualified(live.schema, live.name);
    const incomingSql = qualified(incoming.schema, incoming.name);
    // The names were looked up before locking; LOCK looks them up again and fails if one vanished.
    await client.query(`LOCK TABLE ${incomingSql}, ${liveSql} IN ACCESS EXCLUSIVE MODE`);
    const blocking = await dependents(client, liveSql);
    if (blocking.length > 0) {
      throw new ShadowTableError(
        "DependentObjects",
        `${step.what}: ${blocking.join(", ")} refer to ${step.live} and would keep referring to the renamed table; drop them (and recreate them after the swap) or end shadow mode`,
      );
    }
    await handOverSequences(client, liveSql, incomingSql);
    await client.query(`ALTER TABLE ${liveSql} RENAME TO ${quoteIdent(bareName(outgoingRef))}`);
    await client.query(`ALTER TABLE ${incomingSql} RENAME TO ${quoteIdent(live.name)}`);
    return step.applied;
  });
}

/**
 * A serial column's sequence is owned by the table it was created with, and `LIKE` gives the shadow
 * a default that uses the same sequence. Ownership moves with the swap to the table that now holds
 * the name, so that dropping the retired table later does not take the sequence (which PostgreSQL
 * would refuse, since the live table's default needs it). Identity sequences are per table and stay.
 */
async function handOverSequences(db: pg.ClientBase, from: string, to: string): Promise<void> {
  const result = await db.query<{ statement: string }>(
    `SELECT format('ALTER SEQUENCE %s OWNED BY %s.%I', s.oid::regclass, $2::regclass, a.attname) AS statement
       FROM pg_depend owned
       JOIN pg_class s ON s.oid = owned.objid AND s.relkind = 'S'
       JOIN pg_attribute a ON a.attrelid = owned.refobjid AND a.attnum = owned.refobjsubid
      WHERE owned.classid = 'pg_class'::regclass AND owned.refclassid = 'pg_class'::regclass
        AND owned.refobjid = $1::regclass AND owned.deptype = 'a'
        AND EXISTS (SELECT 1
                      FROM pg_attrdef ad
                      JOIN pg_depend used ON used.classid = 'pg_attrdef'::regclass AND used.objid = ad.oid
                     WHERE ad.adrelid = $2::regclass AND used.refobjid = s.oid)`,
    [from, to],
  );
  for (const { statement } of result.rows) await db.query(statement);
}

/** Drops a retired table (only a name retiredTableName makes); false when it did not exist. */
export async function dropRetired(
  pool: pg.Pool,
  retired: string,
  options: ShadowDdlOptions = {},
): Promise<boolean> {
  requireDerived(retired, RETIRED_NAME, "retired");
  return dropDerived(pool, retired, options);
}

/** Drops a shadow table (only a `…__shadow` name); false when it did not exist. */
export async function dropShadow(
  pool: pg.Pool,
  shadow: string,
  options: ShadowDdlOptions = {},
): Promise<boolean> {
  requireDerived(shadow, SHADOW_NAME, "shadow");
  return dropDerived(pool, shadow, options);
}

async function dropDerived(pool: pg.Pool, ref: string, options: ShadowDdlOptions): Promise<boolean> {
  return inTransaction(pool, options, `dropping ${ref}`, async (client) => {
    const relation = await describeRelation(client, ref);
    if (!relation) return false;
    if (relation.kind !== "r") {
      throw new ShadowTableError(
        "NotATable",
        `refusing to drop ${ref}: it is not a table (relkind ${relation.kind})`,
      );
    }
    await client.query(`DROP TABLE ${qualified(relation.schema, relation.name)}`);
    return true;
  });
}

/** The actions of a ShadowDecision that are DDL on the target database (the others are the reconciler's). */
export function isDatabaseAction(
  action: ShadowAction,
): action is Extract<
  ShadowAction,
  { kind: "CreateShadow" | "Swap" | "Rollback" | "DropRetired" | "DropShadow" }
> {
  return (
    action.kind === "CreateShadow" ||
    action.kind === "Swap" ||
    action.kind === "Rollback" ||
    action.kind === "DropRetired" ||
    action.kind === "DropShadow"
  );
}

/** Performs one database action of a ShadowDecision. */
export async function performDatabaseAction(
  pool: pg.Pool,
  action: Extract<
    ShadowAction,
    { kind: "CreateShadow" | "Swap" | "Rollback" | "DropRetired" | "DropShadow" }
  >,
  options: ShadowDdlOptions = {},
): Promise<void> {
  switch (action.kind) {
    case "CreateShadow":
      return createShadowLike(pool, action.target, action.shadow, options);
    case "Swap":
      await swap(pool, action.target, action.shadow, action.retired, options);
      return;
    case "Rollback":
      await rollback(pool, action.target, action.retired, action.displaced, options);
      return;
    case "DropRetired":
      await dropRetired(pool, action.table, options);
      return;
    case "DropShadow":
      await dropShadow(pool, action.table, options);
      return;
  }
}
