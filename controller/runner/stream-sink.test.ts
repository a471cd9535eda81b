import { describe, expect, it } from "vitest";
import type { KeyedRow } from "../connectors/kafka/source.ts";
import { bisectWrite, rowRefusalOf } from "../connectors/postgres/row-errors.ts";
import { type BreakerClock, SlowCallBreaker } from "../resilience/slow-call-breaker.ts";
import { sessionBreakerConfig } from "./stream.ts";
import { DivertingSink, type SinkBuffer, SinkStopped, type SinkTarget } from "./stream-sink.ts";

/** Time moves only when the fake target is called (by its latency) or a test advances it. */
class FakeClock implements BreakerClock {
  ms = 0;
  now(): number {
    return this.ms;
  }
  schedule(): () => void {
    return () => {};
  }
}

/**
 * A target without a version guard that remembers, per key, every seq it was given in the order
 * it applied them: an older value overwriting a newer one shows up as a seq going down.
 */
class FakeTarget implements SinkTarget {
  latencyMs = 0;
  failing = false;
  upserts = 0;
  probes = 0;
  readonly applied = new Map<string, number[]>();
  readonly #clock: FakeClock;

  constructor(clock: FakeClock) {
    this.#clock = clock;
  }

  async upsert(records: readonly KeyedRow[]): Promise<{ written: number }> {
    this.upserts++;
    await this.#call();
    for (const { row } of records) {
      const key = String(row.id);
      this.applied.set(key, [...(this.applied.get(key) ?? []), Number(row.seq)]);
    }
    return { written: records.length };
  }

  async probe(): Promise<void> {
    this.probes++;
    await this.#call();
  }

  async #call(): Promise<void> {
    await Promise.resolve();
    this.#clock.ms += this.latencyMs;
    if (this.failing) throw Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
  }

  /** Keys whose applied seqs ever went down. */
  regressions(): string[] {
    return [...this.applied]
      .filter(([, seqs]) => seqs.some((s, i) => i > 0 && s < seqs[i - 1]!))
      .map(([k]) => k);
  }

  latest(): Map<string, number> {
    return new Map([...this.applied].map(([k, seqs]) => [k, seqs.at(-1)!]));
  }
}

/** A buffer topic in memory: diverted rows in order, and a replay that plays a Compensation run. */
class FakeBuffer implements SinkBuffer {
  readonly rows: KeyedRow[] = [];
  replayed = 0;

  /** Upper bound of a random delay before a divert lands, to interleave concurrent chunks. */
  divertJitterMs = 0;

  async divert(rows: readonly KeyedRow[]): Promise<void> {
    if (this.divertJitterMs > 0) await sleepMs(Math.random() * this.divertJitterMs);
    this.rows.push(...rows);
  }

  async pendingCount(): Promise<number> {
    return this.rows.length - this.replayed;
  }

  /** As a Compensation run: the rows count as replayed once the target has them. */
  async replayInto(target: FakeTarget): Promise<void> {
    const pending = this.rows.slice(this.replayed);
    await target.upsert(pending);
    this.replayed += pending.length;
  }
}

const breakerSettings = {
  slidingWindowType: "COUNT_BASED" as const,
  slidingWindowSize: 10,
  minimumNumberOfCalls: 5,
  slowCallRateThreshold: 50,
  waitDurationInOpenStateMs: 2000,
  permittedNumberOfCallsInHalfOpenState: 3,
};

function setUp(pending: KeyedRow[] = []) {
  const clock = new FakeClock();
  const target = new FakeTarget(clock);
  const buffer = new FakeBuffer();
  buffer.rows.push(...pending);
  const breaker = new SlowCallBreaker({
    name: "shop/orders",
    config: sessionBreakerConfig({ breaker: breakerSettings }),
    clock,
  });
  const sink = new DivertingSink({ breaker, target, buffer, clock, pollIntervalMs: 2 });
  return { clock, target, buffer, breaker, sink };
}

let seq = 0;
/** A chunk of updates to keys 0…keys-1, each with the next seq. */
function chunk(keys: number): KeyedRow[] {
  return Array.from({ length: keys }, (_, i) => {
    seq++;
    return { key: String(i), row: { id: String(i), seq } };
  });
}

const sleepMs = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const running = new AbortController().signal;

describe("DivertingSink", () => {
  it("uses a 500 ms slow-call threshold unless the job or a policy sets one, and the strictest of them", () => {
    expect(sessionBreakerConfig({}).slowCallDurationThresholdMs).toBe(500);
    const bounded = sessionBreakerConfig(
      { breaker: { slowCallDurationThresholdMs: 900, failureRateThreshold: 80 } },
      [{ slowCallDurationThresholdMs: 300 }, { failureRateThreshold: 40, waitDurationInOpenStateMs: 90_000 }],
    );
    expect(bounded).toMatchObject({
      slowCallDurationThresholdMs: 300,
      failureRateThreshold: 40,
      waitDurationInOpenStateMs: 90_000,
    });
  });

  it("opens on slow writes within one window, diverts, probes without writing rows, and resumes after the drain in key order", async () => {
    const { clock, target, buffer, breaker, sink } = setUp();
    await sink.prepare();
    expect(sink.mode).toBe("Direct");
    expect(await sink.write(chunk(20), running)).toEqual({ outcome: "written", written: 20 });

    target.latencyMs = 800;
    let directWrites = 0;
    while (breaker.state === "CLOSED") {
      expect(await sink.write(chunk(20), running)).toMatchObject({ outcome: "written" });
      directWrites++;
    }
    expect(directWrites).toBeLessThanOrEqual(breakerSettings.slidingWindowSize);
    expect(breaker.state).toBe("OPEN");
    expect(sink.mode).toBe("Diverting");

    const upsertsWhenOpened = target.upserts;
    for (let i = 0; i < 5; i++)
      expect(await sink.write(chunk(20), running)).toEqual({ outcome: "diverted", written: 0 });
    expect(target.upserts).toBe(upsertsWhenOpened);
    expect(sink.rowsDiverted).toBe(100);
    expect(sink.pending).toBe(100);

    const stop = new AbortController();
    const supervising = sink.supervise(stop.signal);
    try {
      // Before the wait has elapsed nothing probes; after it, slow probes open the breaker again.
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(target.probes).toBe(0);
      clock.ms += breakerSettings.waitDurationInOpenStateMs;
      await until("slow probes to reopen the breaker", () => target.probes >= 3 && breaker.state === "OPEN");
      expect(await sink.write(chunk(20), running)).toMatchObject({ outcome: "diverted" });

      // The target recovers: fast probes close the breaker, and no row went direct meanwhile.
      target.latencyMs = 0;
      clock.ms += breakerSettings.waitDurationInOpenStateMs;
      await until("fast probes to close the breaker", () => breaker.state === "CLOSED");
      expect(target.upserts).toBe(upsertsWhenOpened);
      expect(sink.mode).toBe("Diverting");

      // The next chunk waits for the buffer to drain instead of overtaking it.
      let settled = false;
      const held = sink.write(chunk(20), running).finally(() => {
        settled = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(settled).toBe(false);
      expect(buffer.rows).toHaveLength(120);
      await buffer.replayInto(target);
      expect(await held).toEqual({ outcome: "written", written: 20 });
      expect(sink.mode).toBe("Direct");
      expect(await sink.write(chunk(20), running)).toMatchObject({ outcome: "written" });
    } finally {
      stop.abort();
      await supervising;
    }
    expect(target.regressions()).toEqual([]);
    expect([...target.latest().values()].every((s) => s > seq - 20)).toBe(true);
  });

  it("starts Diverting while the buffer holds rows, and a chunk waits for them to be replayed", async () => {
    const { target, buffer, sink } = setUp(chunk(10));
    await sink.prepare();
    expect(sink.mode).toBe("Diverting");
    expect(sink.pending).toBe(10);
    const held = sink.write(chunk(10), running);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(target.upserts).toBe(0);
    await buffer.replayInto(target);
    expect(await held).toMatchObject({ outcome: "written" });
    expect(target.regressions()).toEqual([]);
  });

  it("refuses a failed chunk while the breaker stays closed, and diverts it once the failures open it", async () => {
    const { target, breaker, sink } = setUp();
    await sink.prepare();
    target.failing = true;
    const rows = chunk(5);
    let refusals = 0;
    for (;;) {
      try {
        expect(await sink.write(rows, running)).toEqual({ outcome: "diverted", written: 0 });
        break;
      } catch (error) {
        expect((error as Error).message).toContain("ECONNREFUSED");
        refusals++;
      }
    }
    expect(refusals).toBe(breakerSettings.minimumNumberOfCalls - 1);
    expect(breaker.state).toBe("OPEN");
    expect(sink.rowsDiverted).toBe(5);
  });

  it("switches back without traffic once the breaker has closed and the buffer drained", async () => {
    const { clock, target, buffer, breaker, sink } = setUp();
    await sink.prepare();
    target.failing = true;
    while (breaker.state === "CLOSED") await sink.write(chunk(3), running).catch(() => {});
    expect(sink.mode).toBe("Diverting");
    target.failing = false;
    const stop = new AbortController();
    const supervising = sink.supervise(stop.signal);
    try {
      clock.ms += breakerSettings.waitDurationInOpenStateMs;
      await until("the breaker to close", () => breaker.state === "CLOSED");
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(sink.mode).toBe("Diverting");
      await buffer.replayInto(target);
      await until("the sink to write directly again", () => sink.mode === "Direct");
      expect(sink.pending).toBe(0);
    } finally {
      stop.abort();
      await supervising;
    }
  });

  it("keeps every key's values in order when partitions write at once through opens, diverts and replays", async () => {
    const partitions = 3;
    const chunksPerPartition = 40;
    let diverted = 0;
    for (let round = 0; round < 5; round++) {
      const { clock, target, buffer, breaker, sink } = setUp();
      buffer.divertJitterMs = 3;
      await sink.prepare();
      const stop = new AbortController();
      const supervising = sink.supervise(stop.signal);
      const lastSeq = new Map<string, number>();
      /** A partition's loop, as the Kafka source runs it: chunks in order, a refused one offered again. */
      const partition = async (p: number) => {
        for (let c = 0; c < chunksPerPartition; c++) {
          const rows = Array.from({ length: 4 }, (_, k) => {
            const id = `${p}-${k}`;
            seq++;
            lastSeq.set(id, seq);
            return { key: id, row: { id, seq } };
          });
          for (;;) {
            try {
              await sink.write(rows, running);
              break;
            } catch {
              await sleepMs(1);
            }
          }
          await sleepMs(Math.random() * 2);
        }
      };
      let done = false;
      /** The target turns slow, failing and healthy at random; replays run now and then. */
      const chaos = async () => {
        while (!done) {
          const roll = Math.random();
          target.latencyMs = roll < 0.3 ? 800 : 0;
          target.failing = roll > 0.85;
          if (breaker.state !== "CLOSED") clock.ms += breakerSettings.waitDurationInOpenStateMs;
          // A replay that meets the failing target is tried again later, as a Compensation run is.
          if (Math.random() < 0.3) await buffer.replayInto(target).catch(() => {});
          await sleepMs(2);
        }
      };
      const writers = Promise.all(Array.from({ length: partitions }, (_, p) => partition(p)));
      const chaotic = chaos();
      // Once the target is healthy for good, the breaker closes and replays let every chunk through.
      const healing = (async () => {
        await sleepMs(150);
        done = true;
        await chaotic;
        target.latencyMs = 0;
        target.failing = false;
        for (
          let i = 0;
          i < 2000 && (await Promise.race([writers.then(() => true), sleepMs(2)])) !== true;
          i++
        ) {
          if (breaker.state !== "CLOSED") clock.ms += breakerSettings.waitDurationInOpenStateMs;
          await buffer.replayInto(target);
        }
      })();
      await writers;
      await healing;
      await buffer.replayInto(target);
      stop.abort();
      await supervising;
      expect(target.regressions()).toEqual([]);
      expect(target.latest()).toEqual(lastSeq);
      diverted += sink.rowsDiverted;
    }
    // The rounds did go through the buffer, or they would show nothing about it.
    expect(diverted).toBeGreaterThan(0);
  });

  it("gives up a chunk that waits for the drain when the session stops", async () => {
    const { sink } = setUp(chunk(4));
    await sink.prepare();
    const stop = new AbortController();
    const held = sink.write(chunk(4), stop.signal);
    stop.abort();
    await expect(held).rejects.toBeInstanceOf(SinkStopped);
  });
});

describe("DivertingSink with rows the target refuses", () => {
  const checkViolation = () =>
    Object.assign(new Error('new row for relation "t" violates check constraint "t_seq_check"'), {
      code: "23514",
      constraint: "t_seq_check",
    });

  /** A target refusing, as a whole statement, any rows holding one marked bad; salvage bisects. */
  class RefusingTarget implements SinkTarget {
    upserts = 0;
    salvaged = 0;
    /** Added to the clock per statement of a salvage: a long split must not look slow. */
    splitLatencyMs = 0;
    /** A connection lost halfway through a salvage. */
    failSalvage = false;
    readonly written = new Map<string, number>();
    readonly #clock: FakeClock;

    constructor(clock: FakeClock) {
      this.#clock = clock;
    }

    async upsert(rows: readonly KeyedRow[]): Promise<{ written: number }> {
      this.upserts++;
      return { written: this.#statement(rows) };
    }

    async probe(): Promise<void> {}

    async salvage(rows: readonly KeyedRow[], error: unknown) {
      this.salvaged++;
      const result = await bisectWrite(
        rows,
        async (part) => {
          this.#clock.ms += this.splitLatencyMs;
          if (this.failSalvage) throw Object.assign(new Error("Connection terminated"), { code: "57P01" });
          return this.#statement(part);
        },
        { failedWith: error },
      );
      return {
        written: result.written,
        refused: result.refused.map((r) => ({ index: r.index, refusal: rowRefusalOf(r.error) })),
      };
    }

    #statement(rows: readonly KeyedRow[]): number {
      if (rows.some((r) => r.row.bad === true)) throw checkViolation();
      for (const { key, row } of rows) this.written.set(key, Number(row.seq));
      return rows.length;
    }
  }

  function setUpRefusing() {
    const clock = new FakeClock();
    const target = new RefusingTarget(clock);
    const buffer = new FakeBuffer();
    const breaker = new SlowCallBreaker({
      name: "shop/orders",
      config: sessionBreakerConfig({ breaker: { ...breakerSettings, failureRateThreshold: 50 } }),
      clock,
    });
    const sink = new DivertingSink({ breaker, target, buffer, clock, pollIntervalMs: 2 });
    return { clock, target, buffer, breaker, sink };
  }

  /** 100 rows of keys k0…k99; the rows at `bad` are refused by the target. */
  function rowsWith(bad: readonly number[]): KeyedRow[] {
    return Array.from({ length: 100 }, (_, i) => ({
      key: `k${i}`,
      row: { id: i, seq: ++seq, ...(bad.includes(i) ? { bad: true } : {}) },
    }));
  }

  it("writes the rest of a chunk and hands back the refused rows, each with the database's reason", async () => {
    const { target, breaker, sink } = setUpRefusing();
    await sink.prepare();
    const result = await sink.write(rowsWith([3, 97]), running);
    expect(result.outcome).toBe("written");
    expect(result.written).toBe(98);
    expect(result.refused?.map((r) => r.index)).toEqual([3, 97]);
    expect(result.refused?.[0]?.refusal).toMatchObject({
      reason: "CheckViolation",
      sqlState: "23514",
      constraint: "t_seq_check",
    });
    expect(target.written.size).toBe(98);
    expect(target.written.has("k3")).toBe(false);
    expect(breaker.metrics()).toMatchObject({ state: "CLOSED", failedCalls: 0 });
  });

  it("never opens the breaker for refused rows, however long the split takes", async () => {
    const { target, breaker, sink } = setUpRefusing();
    await sink.prepare();
    // Each split statement takes 100 ms on the breaker's clock: a split of ~15 statements takes far
    // longer than the 500 ms slow-call threshold, yet the target answered the chunk at once.
    target.splitLatencyMs = 100;
    for (let i = 0; i < 3 * breakerSettings.slidingWindowSize; i++) {
      const result = await sink.write(rowsWith([i % 100]), running);
      expect(result).toMatchObject({ outcome: "written", written: 99 });
    }
    expect(breaker.state).toBe("CLOSED");
    expect(sink.mode).toBe("Direct");
    expect(breaker.metrics()).toMatchObject({ failedCalls: 0, slowCalls: 0 });
  });

  it("counts a connection lost during the split as the call's failure, and opens the breaker on enough of them", async () => {
    const { target, buffer, breaker, sink } = setUpRefusing();
    await sink.prepare();
    target.failSalvage = true;
    let thrown = 0;
    for (let i = 0; i < breakerSettings.slidingWindowSize && breaker.state === "CLOSED"; i++) {
      await sink.write(rowsWith([5]), running).catch((error: unknown) => {
        expect((error as { code?: string }).code).toBe("57P01");
        thrown++;
      });
    }
    expect(thrown).toBeGreaterThanOrEqual(breakerSettings.minimumNumberOfCalls - 1);
    expect(breaker.state).toBe("OPEN");
    expect(sink.mode).toBe("Diverting");
    // The chunk whose failure opened the breaker went to the buffer whole.
    expect(buffer.rows.length).toBe(100);
  });
});
