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
 *
 * Who may read and write a table is part of the table, and a swap must not change it: the shadow
 * carries the target's row-level security (enabled and forced), its policies, its triggers, grants,
 * owner and comments, and a swap compares the two and refuses when they differ (TableSecurity).
 */

import type pg from "pg";
import { quoteIdent, quoteTable } from "../api/identifiers.ts";
import { RETIRED_INFIX, SHADOW_SUFFIX, withSuffix } from "./names.ts";
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

/** Where a table's policies and triggers are recreated on the shadow: the target is set aside here. */
const ASIDE_SUFFIX = "__syncgov_aside";

/**
 * What a table carries beyond its columns that decides who may read and write it, read from the
 * catalog. Policy and trigger statements name the table as it is named when they are read, and
 * their expressions (pg_get_expr, pg_get_triggerdef) may name it too (a policy's subquery on its own
 * table, a column qualified by the table's name): they are run, and compared, only while the table
 * they are meant for holds that same name. Nothing here comes from a spec.
 */
interface TableSecurity {
  readonly rowSecurity: { readonly enabled: boolean; readonly forced: boolean };
  /** CREATE POLICY statements built by format() from pg_policy, ordered by policy name. */
  readonly policies: readonly { readonly name: string; readonly statement: string }[];
  /** pg_get_triggerdef() of each non-internal trigger, and the ALTER TABLE that sets a state other than enabled. */
  readonly triggers: readonly {
    readonly name: string;
    readonly statement: string;
    readonly state: string | null;
  }[];
  /** `SELECT to reader`, `INSERT WITH GRANT OPTION to writer`: grants to roles other than the owner. */
  readonly grants: readonly string[];
  readonly owner: string;
  readonly comment: string | null;
  /** `column: comment`. */
  readonly columnComments: readonly string[];
}

async function readSecurity(db: pg.ClientBase, table: string): Promise<TableSecurity> {
  const rel = await db.query<{ enabled: boolean; forced: boolean; owner: string; comment: string | null }>(
    `SELECT c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
            pg_get_userbyid(c.relowner)::text AS owner, obj_description(c.oid, 'pg_class') AS comment
       FROM pg_class c WHERE c.oid = $1::regclass`,
    [table],
  );
  // The statement is PostgreSQL's own text throughout: format() quotes the policy's name (%I) and
  // quote_ident() its roles; the expressions are pg_get_expr()'s deparse of the stored ones.
  const policies = await db.query<{ name: string; statement: string }>(
    `SELECT p.polname::text AS name,
            format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', p.polname, $1::regclass,
                   CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                   CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                 WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                   (SELECT string_agg(r.name, ', ' ORDER BY r.name)
                      FROM (SELECT CASE WHEN o = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(o)) END AS name
                              FROM unnest(p.polroles) AS o) r),
                   CASE WHEN p.polqual IS NULL THEN ''
                        ELSE format(' USING (%s)', pg_get_expr(p.polqual, p.polrelid)) END,
                   CASE WHEN p.polwithcheck IS NULL THEN ''
                        ELSE format(' WITH CHECK (%s)', pg_get_expr(p.polwithcheck, p.polrelid)) END) AS statement
       FROM pg_policy p
      WHERE p.polrelid = $1::regclass
      ORDER BY p.polname`,
    [table],
  );
  // Internal triggers (those of foreign keys, deferred unique checks) come with the constraints.
  const triggers = await db.query<{ name: string; statement: string; state: string | null }>(
    `SELECT t.tgname::text AS name, pg_get_triggerdef(t.oid) AS statement,
            CASE t.tgenabled
              WHEN 'D' THEN format('ALTER TABLE %s DISABLE TRIGGER %I', $1::regclass, t.tgname)
              WHEN 'R' THEN format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', $1::regclass, t.tgname)
              WHEN 'A' THEN format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', $1::regclass, t.tgname)
            END AS state
       FROM pg_trigger t
      WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal
      ORDER BY t.tgname`,
    [table],
  );
  const grants = await db.query<{ grant: string }>(
    `SELECT DISTINCT a.privilege_type || CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
                     || ' to ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grant
       FROM pg_class c
       CROSS JOIN LATERAL aclexplode(c.relacl) a
       LEFT JOIN pg_roles r ON r.oid = a.grantee
      WHERE c.oid = $1::regclass AND a.grantee <> c.relowner
      ORDER BY 1`,
    [table],
  );
  const columns = await db.query<{ comment: string }>(
    `SELECT quote_ident(a.attname) || ': ' || d.description AS comment
       FROM pg_attribute a
       JOIN pg_description d ON d.objoid = a.attrelid AND d.classoid = 'pg_class'::regclass
                            AND d.objsubid = a.attnum
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [table],
  );
  const r = rel.rows[0]!;
  return {
    rowSecurity: { enabled: r.enabled, forced: r.forced },
    policies: policies.rows,
    triggers: triggers.rows,
    grants: grants.rows.map((g) => g.grant),
    owner: r.owner,
    comment: r.comment,
    columnComments: columns.rows.map((c) => c.comment),
  };
}

/** Which parts of TableSecurity a comparison covers. */
type SecurityParts = "all" | "table" | "access";

/**
 * One line per thing a table carries, for comparing two tables that each hold the same name in turn:
 * "table" is what the table itself carries (row-level security, policies, triggers, comments),
 * "access" its grants and owner, "all" both.
 */
function securityLines(security: TableSecurity, parts: SecurityParts): string[] {
  const { enabled, forced } = security.rowSecurity;
  const table = [
    `row-level security ${enabled ? "enabled" : "disabled"}${forced ? " and forced" : ""}`,
    ...security.policies.map((p) => `policy ${p.statement}`),
    ...security.triggers.map((t) => `trigger ${t.statement}${t.state ? ` (${t.state})` : ""}`),
    ...(security.comment === null ? [] : [`comment on the table: ${security.comment}`]),
    ...security.columnComments.map((c) => `comment on column ${c}`),
  ];
  const access = [...security.grants.map((g) => `grant ${g}`), `owner ${security.owner}`];
  return parts === "table" ? table : parts === "access" ? access : [...table, ...access];
}

/** What `expected` has that `actual` lacks, and the reverse, as one sentence; empty when they agree. */
function securityDifferences(
  expected: TableSecurity,
  actual: TableSecurity,
  names: { expected: string; actual: string },
  parts: SecurityParts,
): string {
  const want = securityLines(expected, parts);
  const got = securityLines(actual, parts);
  const clip = (line: string) => (line.length > 300 ? `${line.slice(0, 300)}…` : line);
  const missing = want.filter((l) => !got.includes(l)).map(clip);
  const extra = got.filter((l) => !want.includes(l)).map(clip);
  return [
    ...(missing.length > 0 ? [`${names.actual} lacks ${missing.join("; ")}`] : []),
    ...(extra.length > 0 ? [`${names.actual} has ${extra.join("; ")}, which ${names.expected} has not`] : []),
  ].join(", and ");
}

/**
 * Gives `shadow` the target's row-level security, policies, triggers and table comment (grants and
 * owner come after, in createShadowLike), and checks that it now carries what the target does.
 *
 * Policies and triggers are PostgreSQL's own definitions of the target's (pg_policy with
 * pg_get_expr, pg_get_triggerdef), and they name the target; rather than rewriting their text, the
 * statements run while the shadow holds the target's name: the target is set aside under
 * `<table>__syncgov_aside` and the shadow renamed to the target's name, within this transaction
 * (which holds the target's ACCESS EXCLUSIVE lock for these few statements, within the lock timeout;
 * no other session sees the names change). So every reference to the table, the `ON` of the
 * statement as much as a policy's subquery on its own table, means the shadow, which is the table
 * that will hold the name after the swap. A target without policies and triggers is not touched.
 */
async function copySecurity(
  client: pg.PoolClient,
  target: Relation,
  shadowRef: string,
  shadowSql: string,
): Promise<void> {
  const targetSql = qualified(target.schema, target.name);
  const wanted = await readSecurity(client, targetSql);
  const byName = wanted.policies.length > 0 || wanted.triggers.length > 0;
  const asideName = withSuffix(target.name, ASIDE_SUFFIX);
  if (byName) {
    if (await describeRelation(client, besideTarget(asideName, target))) {
      throw new ShadowTableError(
        "NameTaken",
        `creating ${shadowRef}: ${target.schema}.${asideName}, where the target is set aside while its policies and triggers are recreated on the shadow, already exists`,
      );
    }
    await client.query(`ALTER TABLE ${targetSql} RENAME TO ${quoteIdent(asideName)}`);
    await client.query(`ALTER TABLE ${shadowSql} RENAME TO ${quoteIdent(target.name)}`);
  }
  // The shadow, by the name it holds now.
  const shadowNow = byName ? targetSql : shadowSql;
  for (const policy of wanted.policies) await client.query(policy.statement);
  for (const trigger of wanted.triggers) {
    await client.query(trigger.statement);
    if (trigger.state) await client.query(trigger.state);
  }
  if (wanted.rowSecurity.enabled) await client.query(`ALTER TABLE ${shadowNow} ENABLE ROW LEVEL SECURITY`);
  if (wanted.rowSecurity.forced) await client.query(`ALTER TABLE ${shadowNow} FORCE ROW LEVEL SECURITY`);
  if (wanted.comment !== null) {
    const comment = await client.query<{ statement: string }>(
      "SELECT format('COMMENT ON TABLE %s IS %L', $1::regclass, $2::text) AS statement",
      [shadowNow, wanted.comment],
    );
    await client.query(comment.rows[0]!.statement);
  }
  // Column comments came with LIKE … INCLUDING ALL.
  const differences = securityDifferences(
    wanted,
    await readSecurity(client, shadowNow),
    { expected: targetSql, actual: "the shadow" },
    "table",
  );
  if (differences !== "") {
    throw new ShadowTableError(
      "SecurityNotCopied",
      `creating ${shadowRef}: the shadow does not carry what ${targetSql} does (${differences}); nothing was created`,
    );
  }
  if (byName) {
    await client.query(`ALTER TABLE ${targetSql} RENAME TO ${quoteIdent(bareName(shadowRef))}`);
    await client.query(
      `ALTER TABLE ${qualified(target.schema, asideName)} RENAME TO ${quoteIdent(target.name)}`,
    );
  }
}

/**
 * Creates `shadow` with the target's columns, defaults, constraints, indexes (so the key the
 * upserts need), identity, storage and column comments (`LIKE … INCLUDING ALL`), then gives it what
 * LIKE does not copy and decides who may read and write it (copySecurity): row-level security as
 * enabled and forced on the target, its policies (same command, roles, USING and WITH CHECK,
 * permissive or restrictive), its triggers (not internal ones, with their enabled state), the table
 * comment, the grants and, last, the owner; so readers keep exactly their access after the swap. A
 * table left at the shadow's name by an earlier cycle is dropped first. Not copied: foreign keys
 * that other tables hold on the target, which PostgreSQL ties to the table rather than its name
 * (a swap refuses while they exist).
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
    await copySecurity(client, t, shadowRef, shadowSql);
    // The owner first, then the grants: a change of owner rewrites the ACL the grants are added to.
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
    const differences = securityDifferences(
      await readSecurity(client, targetSql),
      await readSecurity(client, shadowSql),
      { expected: targetSql, actual: "the shadow" },
      "access",
    );
    if (differences !== "") {
      throw new ShadowTableError(
        "SecurityNotCopied",
        `creating ${shadowRef}: the shadow does not carry the grants and owner of ${targetSql} (${differences}); nothing was created`,
      );
    }
  });
}

/**
 * Views, foreign keys and other tables' row-level security policies that refer to `table`.
 * PostgreSQL binds them to the table itself, not its name, so after a rename they would follow the
 * retired table: a swap refuses rather than leave them silently reading (or judging by) old data.
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
     UNION
     SELECT 'row-level security policy ' || quote_ident(p.polname) || ' of ' || p.polrelid::regclass::text
       FROM pg_depend d
       JOIN pg_policy p ON p.oid = d.objid
      WHERE d.classid = 'pg_policy'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = $1::regclass AND p.polrelid <> $1::regclass
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
 * Refuses (SecurityMismatch, renaming nothing) when the shadow does not carry what the target
 * carries now: row-level security, policies, triggers, grants, owner and comments are compared, each
 * table's read while it holds the target's name (so a policy's reference to its own table reads the
 * same), since the target may have gained a policy or a trigger after the shadow was created.
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
    compareSecurity: true,
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
    // A rollback restores the table as it was before the swap, security included; it is not held
    // up by changes made to the swapped-in table since.
    compareSecurity: false,
  });
}

/** live → outgoing and incoming → live, in one transaction. */
async function exchange<D extends string, A extends string>(
  pool: pg.Pool,
  options: ShadowDdlOptions,
  step: {
    what: string;
    live: string;
    incoming: string;
    outgoing: string;
    done: D;
    applied: A;
    /** Refuse unless `incoming` carries what `live` does (TableSecurity). */
    compareSecurity: boolean;
  },
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
    const before = step.compareSecurity ? await readSecurity(client, liveSql) : undefined;
    await handOverSequences(client, liveSql, incomingSql);
    await client.query(`ALTER TABLE ${liveSql} RENAME TO ${quoteIdent(bareName(outgoingRef))}`);
    await client.query(`ALTER TABLE ${incomingSql} RENAME TO ${quoteIdent(live.name)}`);
    if (before) {
      // The incoming table now holds the live name: read it as the live table was read.
      const differences = securityDifferences(
        before,
        await readSecurity(client, liveSql),
        { expected: step.live, actual: incomingRef },
        "all",
      );
      if (differences !== "") {
        throw new ShadowTableError(
          "SecurityMismatch",
          `${step.what}: refused, since it would change who may read and write ${step.live}: ${differences}. Make ${incomingRef} carry the same row-level security, policies, triggers, grants, owner and comments as ${step.live} (or undo the change to ${step.live}); the swap is retried and nothing was renamed`,
        );
      }
    }
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
