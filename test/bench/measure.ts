import { readdirSync, readFileSync } from "node:fs";
import v8 from "node:v8";
import vm from "node:vm";

/**
 * Small timing harness shared by the benches. Each measured body runs `n` operations and returns a
 * number derived from their results; the numbers are summed into `sink`, which the bench prints, so
 * the engine cannot drop the work as dead code.
 */

let sink = 0;

export function sinkValue(): number {
  return sink;
}

export type Body = (n: number) => number | Promise<number>;

export interface Contender {
  readonly name: string;
  readonly body: Body;
}

export interface MeasureOptions {
  /** Length of one timed round. */
  readonly roundMs?: number;
  /** Rounds per contender; the median is reported. */
  readonly rounds?: number;
}

async function timeOnce(body: Body, n: number): Promise<number> {
  const start = process.hrtime.bigint();
  const result = body(n);
  sink += typeof result === "number" ? result : await result;
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Doubles n until one call takes at least `targetMs` (this is also the warm-up); returns that n. */
async function calibrate(body: Body, targetMs: number): Promise<number> {
  let n = 1;
  for (;;) {
    const ms = await timeOnce(body, n);
    if (ms >= targetMs || n >= 2 ** 30) return Math.max(1, Math.round((n * targetMs) / Math.max(ms, 1e-3)));
    n *= ms < targetMs / 16 ? 8 : 2;
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Operations per second for each contender. Rounds alternate between the contenders, so a slowdown of
 * the machine (two cores shared with other work) hits all of them alike; the median round counts.
 */
export async function opsPerSecond(
  contenders: readonly Contender[],
  options: MeasureOptions = {},
): Promise<Map<string, number>> {
  const roundMs = options.roundMs ?? 150;
  const rounds = options.rounds ?? 5;
  const chunk = new Map<string, number>();
  for (const { name, body } of contenders) chunk.set(name, await calibrate(body, Math.min(25, roundMs / 4)));
  const samples = new Map<string, number[]>(contenders.map(({ name }) => [name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const { name, body } of contenders) {
      const n = chunk.get(name)!;
      let ops = 0;
      let ms = 0;
      while (ms < roundMs) {
        ms += await timeOnce(body, n);
        ops += n;
      }
      samples.get(name)!.push((ops / ms) * 1000);
    }
  }
  return new Map([...samples].map(([name, values]) => [name, median(values)]));
}

let collect: (() => void) | undefined;

/** Full garbage collection (the bench runs without --expose-gc, so the flag is set at run time). */
export function collectGarbage(): void {
  if (collect === undefined) {
    v8.setFlagsFromString("--expose-gc");
    collect = vm.runInNewContext("gc") as () => void;
  }
  collect();
  collect();
}

/** Heap growth, in MB, caused by `build` and still reachable from its result after a full GC. */
export function retainedMegabytes<T>(build: () => T): { readonly value: T; readonly megabytes: number } {
  collectGarbage();
  const before = process.memoryUsage().heapUsed;
  const value = build();
  collectGarbage();
  return { value, megabytes: (process.memoryUsage().heapUsed - before) / 1e6 };
}

/** A seeded PRNG (mulberry32), so every run reads and writes the same keys in the same order. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Formats rows as an aligned text table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** Linux's USER_HZ: /proc reports CPU time in these ticks. */
const CLOCK_TICKS = 100;

/** What /proc/<pid>/stat says of a process's CPU; undefined when it is gone or not Linux. */
function readProcessStat(
  pid: number | string,
): { program: string; parent: number; seconds: number; reapedSeconds: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const close = stat.lastIndexOf(")");
    const fields = stat.slice(close + 2).split(" ");
    return {
      program: stat.slice(stat.indexOf("(") + 1, close),
      parent: Number(fields[1]),
      seconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS,
      reapedSeconds: (Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS,
    };
  } catch {
    return undefined;
  }
}

/** A process's CPU seconds (utime + stime) from /proc; undefined when it is gone or not Linux. */
export function processCpuSeconds(pid: number | undefined): number | undefined {
  return pid === undefined ? undefined : readProcessStat(pid)?.seconds;
}

/**
 * CPU seconds of every process now running, by pid, with its program name (/proc's comm) and its
 * parent. `seconds` includes the children it has reaped (cutime, cstime), so the CPU of a process
 * that ends between two snapshots — a PostgreSQL backend whose connection closed — still counts, in
 * its parent's line.
 */
export type ProcessCpuSnapshot = ReadonlyMap<
  number,
  { readonly program: string; readonly parent: number; readonly seconds: number }
>;

export function processCpuSnapshot(): ProcessCpuSnapshot {
  const snapshot = new Map<number, { program: string; parent: number; seconds: number }>();
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return snapshot;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    // Undefined when the process ended between the listing and the read.
    const stat = readProcessStat(entry);
    if (stat) {
      snapshot.set(Number(entry), {
        program: stat.program,
        parent: stat.parent,
        seconds: stat.seconds + stat.reapedSeconds,
      });
    }
  }
  return snapshot;
}

/**
 * CPU seconds spent between two snapshots by the processes of each program name. A process started in
 * between counts from zero; one that ended in between counts in its parent (which reaped it), less
 * what it had spent before the first snapshot.
 */
export function cpuByProgram(before: ProcessCpuSnapshot, after: ProcessCpuSnapshot): Map<string, number> {
  const spent = new Map<string, number>();
  const add = (program: string, seconds: number) => spent.set(program, (spent.get(program) ?? 0) + seconds);
  for (const [pid, { program, seconds }] of after) {
    const earlier = before.get(pid);
    add(program, seconds - (earlier?.program === program ? earlier.seconds : 0));
  }
  for (const [pid, { parent, seconds }] of before) {
    const reaper = after.get(parent);
    if (!after.has(pid) && reaper) add(reaper.program, -seconds);
  }
  for (const [program, seconds] of spent) if (seconds <= 0) spent.delete(program);
  return spent;
}

/** Core-seconds the whole machine was busy since boot (all CPUs, idle and iowait excluded). */
export function machineBusySeconds(): number | undefined {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
    return (cpu.reduce((a, b) => a + b, 0) - idle) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** This process's CPU seconds. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/**
 * The whole number after `--name` (or in `--name=N`) on the command line, `fallback` when absent;
 * throws when it is not a whole number of at least `min`.
 */
export function integerOption(name: string, fallback: number, min = 1): number {
  const args = process.argv;
  const flag = `--${name}`;
  const at = args.findIndex((a) => a === flag || a.startsWith(`${flag}=`));
  if (at < 0) return fallback;
  const text = args[at]!.includes("=") ? args[at]!.slice(flag.length + 1) : (args[at + 1] ?? "");
  const n = Number(text);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${flag} needs a whole number of at least ${min}, not ${text}`);
  return n;
}
