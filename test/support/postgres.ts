import pg from "pg";
import { afterAll } from "vitest";
import { quoteIdent } from "../../controller/api/identifiers.ts";
import { testEnv, uniqueName } from "./env.ts";

/**
 * A pool on the test PostgreSQL database and the tables a test file creates through it. Every table
 * made by create() is dropped (with whatever depends on it, such as views) by drop(), which also ends
 * the pool.
 */
export class ScratchTables {
  readonly pool: pg.Pool;
  readonly #tables: string[] = [];

  constructor(poolConfig: Omit<pg.PoolConfig, "connectionString">) {
    this.pool = new pg.Pool({ ...poolConfig, connectionString: testEnv().databaseUrl });
  }

  /** The names of the tables created so far, oldest first. */
  get tables(): readonly string[] {
    return this.#tables;
  }

  /** Creates a table named uniquely after prefix with the given column definition; returns its name. */
  async create(prefix: string, definition: string): Promise<string> {
    const name = uniqueName(prefix).replaceAll("-", "_");
    this.#tables.push(name);
    await this.pool.query(`CREATE TABLE ${quoteIdent(name)} (${definition})`);
    return name;
  }

  async drop(): Promise<void> {
    for (const table of this.#tables)
      await this.pool.query(`DROP TABLE IF EXISTS ${quoteIdent(table)} CASCADE`);
    await this.pool.end();
  }
}

/** ScratchTables dropped in an afterAll of the calling test file; call it at the file's top level. */
export function scratchTables(poolConfig: Omit<pg.PoolConfig, "connectionString">): ScratchTables {
  const scratch = new ScratchTables(poolConfig);
  afterAll(() => scratch.drop());
  return scratch;
}
