import { type ChildProcess, execFile, spawn } from "node:child_process";
import { appendFileSync, closeSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const execFileAsync = promisify(execFile);

/** What a finished command printed, and how it exited (null: it could not start, or a signal ended it). */
export interface CommandOutput {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command to its end and resolves with its exit code and output, whatever the code (unlike
 * execFileAsync, which rejects on a non-zero exit); `input` goes to its stdin.
 */
export function runCommand(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<CommandOutput> {
  return new Promise((resolve) => {
    const child = spawn(command, [...args], {
      ...(options.cwd ? { cwd: options.cwd } : {}),
      ...(options.env ? { env: options.env } : {}),
      // Without input, stdin is /dev/null: a command that exits before reading it leaves no pipe to
      // break (writing "" to an exited child failed with EPIPE, uncaught).
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.once("error", (error) => resolve({ code: null, stdout, stderr: `${stderr}${String(error)}` }));
    child.once("close", (code) => resolve({ code, stdout, stderr }));
    if (child.stdin) {
      // A command may exit without reading all its input: its exit code says how it went.
      child.stdin.on("error", () => {});
      child.stdin.end(options.input);
    }
  });
}

/**
 * Stops a child process: SIGTERM, then SIGKILL if it is still running after `graceMs`. Resolves once
 * it has exited (at once if it already had).
 */
export async function stopProcess(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(killer);
}

/** A free TCP port on the loopback interface, as the kernel hands it out. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error("no port assigned"));
      });
    });
  });
}

export interface StartOptions {
  /** Short name used in logs and errors, e.g. "etcd". */
  name: string;
  command: string;
  args: string[];
  /** File that receives the process' stdout and stderr. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
  /**
   * The signal that stops the server; default SIGTERM. PostgreSQL takes SIGINT: its SIGTERM is a
   * "smart" shutdown that keeps serving open sessions until their clients leave, so a pooled client
   * would go on writing to a server that is stopping.
   */
  stopSignal?: NodeJS.Signals;
}

/**
 * Tracks the servers one environment starts. Every process is started in its own process group and
 * recorded in a pid file watched by reaper.sh, so nothing outlives the owner even when the owner is
 * killed with SIGKILL; stop() shuts the servers down in reverse start order.
 */
export class ProcessGroup {
  private readonly procs: { name: string; child: ChildProcess; opts: StartOptions }[] = [];
  private readonly pidFile: string;
  private reaper: ChildProcess | undefined;

  constructor(runDir: string) {
    this.pidFile = join(runDir, "pids");
  }

  start(opts: StartOptions): ChildProcess {
    if (!this.reaper) this.startReaper();
    const fd = openSync(opts.logFile, "a");
    const child = spawn(opts.command, opts.args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", fd, fd],
      detached: true,
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    closeSync(fd);
    if (child.pid === undefined) throw new Error(`${opts.name}: could not start ${opts.command}`);
    appendFileSync(this.pidFile, `${child.pid}\n`);
    this.procs.push({ name: opts.name, child, opts });
    return child;
  }

  /**
   * Stops a server and starts it again with the same command line (tests use it to restart the API
   * server under a running controller). Returns the new process.
   */
  async restart(name: string, downtimeMs = 0): Promise<ChildProcess> {
    const index = this.procs.findIndex((p) => p.name === name);
    if (index < 0) throw new Error(`no process named ${name}`);
    const { child, opts } = this.procs[index]!;
    await this.stopOne(child, 10_000, opts.stopSignal);
    this.procs.splice(index, 1);
    if (downtimeMs > 0) await new Promise((r) => setTimeout(r, downtimeMs));
    return this.start(opts);
  }

  /** Stops one process (its whole group): `signal` (SIGTERM), then SIGKILL after `graceMs`. */
  async stopOne(child: ChildProcess, graceMs = 10_000, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    signalGroup(child.pid, signal);
    const timer = setTimeout(() => child.pid !== undefined && signalGroup(child.pid, "SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  private readonly cleanups: (() => void)[] = [];

  /** Runs `cleanup` after every process has stopped (data directories and the like). */
  onStopped(cleanup: () => void): void {
    this.cleanups.push(cleanup);
  }

  async stop(): Promise<void> {
    for (const p of [...this.procs].reverse()) await this.stopOne(p.child, 10_000, p.opts.stopSignal);
    this.procs.length = 0;
    for (const c of this.cleanups.splice(0)) c();
    if (this.reaper?.pid) {
      try {
        process.kill(this.reaper.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    this.reaper = undefined;
  }

  /** Fails fast with the log's tail when a server died while we were waiting for it. */
  assertAlive(child: ChildProcess, name: string, logFile: string): void {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `${name} exited (${child.exitCode ?? child.signalCode}) during start-up; log ${logFile}:\n${tail(logFile)}`,
      );
    }
  }

  private startReaper(): void {
    const script = join(dirname(fileURLToPath(import.meta.url)), "reaper.sh");
    this.reaper = spawn("bash", [script, String(process.pid), this.pidFile], {
      detached: true,
      stdio: "ignore",
    });
    this.reaper.unref();
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Polls `probe` until it resolves true, failing after `timeoutMs` with the last error. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  check?: () => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    check?.();
    try {
      if (await probe()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
