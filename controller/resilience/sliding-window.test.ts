import { describe, expect, it } from "vitest";
import { CountWindow, TimeWindow } from "./sliding-window.ts";

const ok = { failed: false, slow: false };
const failed = { failed: true, slow: false };
const slow = { failed: false, slow: true };
const slowFailed = { failed: true, slow: true };

describe("CountWindow", () => {
  it("keeps the last N outcomes and subtracts the evicted ones", () => {
    const window = new CountWindow(3);
    window.record(slowFailed);
    window.record(failed);
    expect(window.record(slow)).toEqual({ calls: 3, failedCalls: 2, slowCalls: 2, slowFailedCalls: 1 });
    expect(window.record(ok)).toEqual({ calls: 3, failedCalls: 1, slowCalls: 1, slowFailedCalls: 0 });
    window.record(ok);
    window.record(ok);
    expect(window.totals()).toEqual({ calls: 3, failedCalls: 0, slowCalls: 0, slowFailedCalls: 0 });
  });
});

describe("TimeWindow", () => {
  it("drops each second's bucket once it is N seconds old", () => {
    const window = new TimeWindow(3);
    window.record(failed, 0);
    window.record(slow, 1_200);
    window.record(ok, 2_999);
    expect(window.totals(2_999)).toMatchObject({ calls: 3, failedCalls: 1, slowCalls: 1 });
    expect(window.totals(3_000)).toMatchObject({ calls: 2, failedCalls: 0, slowCalls: 1 });
    expect(window.totals(4_000)).toMatchObject({ calls: 1, slowCalls: 0 });
    expect(window.totals(5_000)).toMatchObject({ calls: 0 });
  });

  it("clears everything after a gap longer than the window", () => {
    const window = new TimeWindow(3);
    window.record(failed, 0);
    window.record(failed, 1_000);
    expect(window.record(ok, 60_000)).toEqual({ calls: 1, failedCalls: 0, slowCalls: 0, slowFailedCalls: 0 });
  });

  it("records a completion stamped before the newest second into the newest second", () => {
    const window = new TimeWindow(2);
    window.record(ok, 5_000);
    window.record(failed, 4_000);
    expect(window.totals(6_000)).toMatchObject({ calls: 2, failedCalls: 1 });
    expect(window.totals(7_000)).toMatchObject({ calls: 0 });
  });
});
