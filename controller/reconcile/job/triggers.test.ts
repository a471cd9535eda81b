import { describe, expect, it } from "vitest";
import type { SyncJob } from "../../api/syncjob.ts";
import {
  decideCompensation,
  decideManualRun,
  decideRealtimeSession,
  decideScheduleFire,
  RUN_NOW_ANNOTATION,
} from "./triggers.ts";
import type { RunSummary } from "./types.ts";

const now = new Date("2026-11-22T12:00:00Z");
const at = (iso: string) => Math.floor(Date.parse(iso) / 1000).toString(36);

function job(spec: Partial<SyncJob["spec"]>, annotations?: Record<string, string>): SyncJob {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name: "orders", namespace: "shop", ...(annotations ? { annotations } : {}) },
    spec: { mode: "realtime", source: { kafka: { topic: "orders" } }, ...spec },
  } as SyncJob;
}

const session = (name: string, phase: string, completionTime?: string): RunSummary => ({
  name,
  phase,
  type: "Realtime",
  createdAt: 0,
  ...(completionTime ? { completionTime } : {}),
});

describe("decideRealtimeSession", () => {
  it.each([
    ["a batch job has no session", "batch", [], {}],
    [
      "a realtime job without a session starts one",
      "realtime",
      [],
      { create: `orders-rt${at("2026-11-22T12:00:00Z")}` },
    ],
    ["a hybrid job too", "hybrid", [], { create: `orders-rt${at("2026-11-22T12:00:00Z")}` }],
    ["a running session is left alone", "realtime", [session("s1", "Running")], {}],
    ["a session not admitted yet is left alone", "realtime", [session("s1", "Queued")], {}],
    [
      "a cancelled session is replaced at once",
      "realtime",
      [session("s1", "Cancelled", "2026-11-22T11:59:59Z")],
      { create: `orders-rt${at("2026-11-22T12:00:00Z")}` },
    ],
    [
      "one failure waits 10 s from its end",
      "realtime",
      [session("s1", "Failed", "2026-11-22T11:59:55Z")],
      { requeueAfterMs: 5_000 },
    ],
    [
      "three failures in a row wait 40 s",
      "realtime",
      [
        session("s1", "Failed", "2026-11-22T11:58:00Z"),
        session("s2", "Failed", "2026-11-22T11:59:00Z"),
        session("s3", "Failed", "2026-11-22T11:59:50Z"),
      ],
      { requeueAfterMs: 30_000 },
    ],
    [
      "a success resets the count",
      "realtime",
      [session("s1", "Failed", "2026-11-22T11:00:00Z"), session("s2", "Cancelled", "2026-11-22T11:59:59Z")],
      { create: `orders-rt${at("2026-11-22T12:00:00Z")}` },
    ],
    [
      "the wait stops growing at 5 minutes",
      "realtime",
      Array.from({ length: 12 }, (_, i) => session(`s${i}`, "Failed", "2026-11-22T11:59:00Z")),
      { requeueAfterMs: 240_000 },
    ],
  ] as const)("%s", (_, mode, runs, want) => {
    const d = decideRealtimeSession(job({ mode }), runs, now);
    expect(d.create?.name).toBe("create" in want ? want.create : undefined);
    if (d.create) expect(d.create).toMatchObject({ type: "Realtime", trigger: "Stream" });
    expect(d.requeueAfterMs).toBe("requeueAfterMs" in want ? want.requeueAfterMs : undefined);
  });
});

describe("decideScheduleFire", () => {
  const base = { job: "orders", timeZone: "UTC", kind: "s", type: "Batch" as const, now };
  it.each([
    ["no schedule", { schedule: undefined, since: "2026-11-22T11:00:00Z" }, undefined, undefined],
    [
      "due since the last fire",
      { schedule: "30 11 * * *", since: "2026-11-21T11:30:00Z" },
      "2026-11-22T11:30:00Z",
      23.5 * 3600_000,
    ],
    ["not due yet", { schedule: "30 12 * * *", since: "2026-11-22T11:00:00Z" }, undefined, 30 * 60_000],
    // Missed fires are not replayed: one run for the latest due fire... named after the first due one.
    [
      "several missed fires make one run",
      { schedule: "0 * * * *", since: "2026-11-22T08:30:00Z" },
      "2026-11-22T09:00:00Z",
      3600_000,
    ],
    [
      "in the job's time zone",
      { schedule: "0 13 * * *", timeZone: "Europe/Berlin", since: "2026-11-21T13:00:00Z" },
      "2026-11-22T12:00:00Z",
      24 * 3600_000,
    ],
  ] as const)("%s", (_, over, fire, requeue) => {
    const d = decideScheduleFire({ ...base, ...over });
    expect(d.create?.name).toBe(fire ? `orders-s${at(fire)}` : undefined);
    expect(d.fired).toEqual(fire ? now : undefined);
    expect(d.requeueAfterMs).toBe(requeue);
  });

  it("answers the same schedule every time it is asked, for every job (a shared parsed schedule)", () => {
    for (let day = 1; day <= 10; day++) {
      for (const name of ["a", "b"]) {
        const d = decideScheduleFire({
          ...base,
          job: name,
          schedule: "0 2 * * *",
          since: `2026-11-${String(day).padStart(2, "0")}T02:00:00Z`,
          now: new Date(`2026-11-${String(day + 1).padStart(2, "0")}T02:00:05Z`),
        });
        expect(d.create?.name).toBe(
          `${name}-s${at(`2026-11-${String(day + 1).padStart(2, "0")}T02:00:00Z`)}`,
        );
      }
    }
  });
});

describe("decideCompensation", () => {
  it.each([
    ["no breaker", undefined, [], false],
    ["open with records buffered", { state: "Open", bufferedRecords: 10 }, [], false],
    ["closed with nothing buffered", { state: "Closed", bufferedRecords: 0 }, [], false],
    ["closed with records buffered", { state: "Closed", bufferedRecords: 10 }, [], true],
    [
      "closed, but a compensation is already running",
      { state: "Closed", bufferedRecords: 10 },
      [{ name: "c1", phase: "Running", type: "Compensation", createdAt: 0 }],
      false,
    ],
    [
      "closed, and the last compensation finished",
      { state: "Closed", bufferedRecords: 10 },
      [{ name: "c1", phase: "Succeeded", type: "Compensation", createdAt: 0 }],
      true,
    ],
  ] as const)("%s", (_, breaker, runs, starts) => {
    const d = decideCompensation("orders", breaker, runs as unknown as RunSummary[], now);
    expect(d.create !== undefined).toBe(starts);
    if (d.create)
      expect(d.create).toEqual({
        name: `orders-c${at("2026-11-22T12:00:00Z")}`,
        type: "Compensation",
        trigger: "Stream",
      });
  });
});

describe("decideManualRun", () => {
  it.each([
    ["no annotation", undefined, undefined, undefined],
    ["a new request on a stream job is a compare", "1", undefined, "Validation"],
    ["the same request again starts nothing", "1", "1", undefined],
    ["a changed request starts another", "2", "1", "Validation"],
  ] as const)("%s", (_, value, last, type) => {
    const d = decideManualRun(
      job({}, value === undefined ? undefined : { [RUN_NOW_ANNOTATION]: value }),
      last,
    );
    expect(d.create?.type).toBe(type);
    expect(d.requested).toBe(type ? value : undefined);
  });

  it("records a request too long for the status by its digest, and never starts it twice", () => {
    const long = "x".repeat(5000);
    const first = decideManualRun(job({}, { [RUN_NOW_ANNOTATION]: long }), undefined);
    expect(first.create?.type).toBe("Validation");
    expect(first.requested).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(decideManualRun(job({}, { [RUN_NOW_ANNOTATION]: long }), first.requested)).toEqual({});
    const other = decideManualRun(job({}, { [RUN_NOW_ANNOTATION]: `${long}y` }), first.requested);
    expect(other.requested).not.toBe(first.requested);
  });

  it("names the run after the request, and a batch job's manual run is a Batch", () => {
    const sql = {
      sql: { dialect: "postgres", connectionSecretRef: { name: "db" }, table: "a.b", keyColumns: ["id"] },
    };
    const a = decideManualRun(
      job({ mode: "batch", source: sql as never }, { [RUN_NOW_ANNOTATION]: "x" }),
      undefined,
    );
    const b = decideManualRun(
      job({ mode: "batch", source: sql as never }, { [RUN_NOW_ANNOTATION]: "x" }),
      undefined,
    );
    expect(a.create).toEqual(b.create);
    expect(a.create).toMatchObject({ type: "Batch", trigger: "Manual" });
    expect(a.create?.name).toMatch(/^orders-m[0-9a-f]{8}$/);
  });
});
