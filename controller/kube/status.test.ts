import { describe, expect, it } from "vitest";
import type { Condition } from "../api/common.ts";
import { findCondition, isConditionTrue, kubeTime, removeCondition, setCondition } from "./status.ts";

const t0 = new Date("2026-03-01T02:00:00.123Z");
const t1 = new Date("2026-03-01T02:05:00.999Z");

describe("conditions", () => {
  it("formats times as the API server does, at second precision", () => {
    expect(kubeTime(t0)).toBe("2026-03-01T02:00:00Z");
  });

  it("adds a new condition stamped with now", () => {
    const { conditions, changed } = setCondition(
      undefined,
      { type: "Ready", status: "False", reason: "Queued", message: "3/3 running in namespace payments" },
      t0,
    );
    expect(changed).toBe(true);
    expect(conditions).toEqual([
      {
        type: "Ready",
        status: "False",
        reason: "Queued",
        message: "3/3 running in namespace payments",
        lastTransitionTime: "2026-03-01T02:00:00Z",
      },
    ]);
  });

  it("keeps lastTransitionTime when only reason, message or generation change", () => {
    const first = setCondition(
      [],
      { type: "Ready", status: "False", reason: "Queued", message: "waiting", observedGeneration: 1 },
      t0,
    ).conditions;
    const { conditions, changed } = setCondition(
      first,
      { type: "Ready", status: "False", reason: "Blocked", message: "policy says no", observedGeneration: 2 },
      t1,
    );
    expect(changed).toBe(true);
    expect(conditions[0]).toEqual({
      type: "Ready",
      status: "False",
      reason: "Blocked",
      message: "policy says no",
      observedGeneration: 2,
      lastTransitionTime: "2026-03-01T02:00:00Z",
    });
  });

  it("moves lastTransitionTime when the status flips", () => {
    const first = setCondition([], { type: "Ready", status: "False", reason: "Queued" }, t0).conditions;
    const { conditions } = setCondition(first, { type: "Ready", status: "True", reason: "Running" }, t1);
    expect(conditions[0]?.lastTransitionTime).toBe("2026-03-01T02:05:00Z");
    expect(isConditionTrue(conditions, "Ready")).toBe(true);
  });

  it("reports no change for an identical condition and leaves the input untouched", () => {
    const input: Condition[] = [
      { type: "Valid", status: "True", reason: "Checked", lastTransitionTime: "2026-01-01T00:00:00Z" },
      { type: "Ready", status: "True", reason: "Running", lastTransitionTime: "2026-01-02T00:00:00Z" },
    ];
    const frozen = structuredClone(input);
    const same = setCondition(input, { type: "Ready", status: "True", reason: "Running" }, t1);
    expect(same.changed).toBe(false);
    expect(same.conditions).toEqual(input);
    const other = setCondition(input, { type: "Ready", status: "Unknown", reason: "Lost" }, t1);
    expect(other.changed).toBe(true);
    expect(other.conditions.map((c) => c.type)).toEqual(["Valid", "Ready"]);
    expect(input).toEqual(frozen);
  });

  it("honours an explicit lastTransitionTime on a flip", () => {
    const first = setCondition([], { type: "Ready", status: "False", reason: "Queued" }, t0).conditions;
    const { conditions } = setCondition(
      first,
      { type: "Ready", status: "True", reason: "Running", lastTransitionTime: "2026-03-01T02:01:00Z" },
      t1,
    );
    expect(findCondition(conditions, "Ready")?.lastTransitionTime).toBe("2026-03-01T02:01:00Z");
  });

  it("removes a condition by type", () => {
    const list = setCondition([], { type: "Stalled", status: "True", reason: "Backoff" }, t0).conditions;
    expect(removeCondition(list, "Stalled")).toEqual({ conditions: [], changed: true });
    expect(removeCondition(list, "Ready")).toEqual({ conditions: list, changed: false });
    expect(findCondition(undefined, "Ready")).toBeUndefined();
  });
});
