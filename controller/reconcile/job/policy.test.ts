import { describe, expect, it } from "vitest";
import type { EffectivePolicy } from "../../policy/effective.ts";
import { ConditionLedger } from "./ledger.ts";
import { decideInvalid, decidePolicyVerdict } from "./policy.ts";

const now = new Date("2026-11-22T12:00:00Z");
const effective = (over: Partial<EffectivePolicy>): EffectivePolicy => ({
  policies: ["baseline"],
  successfulRunsHistoryLimit: 3,
  failedRunsHistoryLimit: 1,
  failedValidationsBeforeShadow: 3,
  shadowRequired: false,
  batchWindows: [],
  breaker: {},
  requiredMasking: [],
  hashKeyRequired: false,
  violations: [],
  verdict: "Admit",
  ...over,
});
const violation = {
  policy: "gold",
  rule: "qualified",
  message: "needs a schema",
  enforcement: "Enforce" as const,
};

describe("decidePolicyVerdict", () => {
  it.each([
    ["compliant", effective({}), "True", "Compliant", undefined, []],
    [
      "blocked",
      effective({ verdict: "Block", violations: [violation] }),
      "False",
      "Blocked",
      "Enforce",
      ["Blocked"],
    ],
    [
      "warned",
      effective({ verdict: "Warn", violations: [violation] }),
      "False",
      "PolicyWarning",
      "Warn",
      ["PolicyWarning"],
    ],
    [
      "audited",
      effective({ verdict: "Audit", violations: [violation] }),
      "False",
      "PolicyAudit",
      "Audit",
      ["PolicyAudit"],
    ],
  ] as const)("%s", (_, eff, status, reason, enforcement, events) => {
    const ledger = new ConditionLedger(undefined, now);
    const shown = decidePolicyVerdict(eff, 4, ledger);
    const compliant = ledger.conditions.find((c) => c.type === "PolicyCompliant");
    expect(compliant).toMatchObject({ status, reason, observedGeneration: 4 });
    expect(shown?.enforcement).toBe(enforcement);
    expect(ledger.events.map((e) => e.reason)).toEqual(["SpecValid", ...events]);
    if (status === "False") expect(compliant?.message).toBe("gold/qualified: needs a schema");
  });

  it("says once that a blocked job complies again", () => {
    const blocked = new ConditionLedger(undefined, now);
    decidePolicyVerdict(effective({ verdict: "Block", violations: [violation] }), 1, blocked);
    const fixed = new ConditionLedger(blocked.conditions, now);
    decidePolicyVerdict(effective({}), 2, fixed);
    expect(fixed.events.map((e) => e.reason)).toEqual(["Compliant"]);
    const again = new ConditionLedger(fixed.conditions, now);
    decidePolicyVerdict(effective({}), 2, again);
    expect(again.events).toEqual([]);
  });
});

describe("decideInvalid", () => {
  it("names every field and reason, once", () => {
    const ledger = new ConditionLedger(undefined, now);
    const errors = [
      { field: "spec.schedule", message: "not a cron expression" },
      { field: "spec.timeZone", message: "unknown time zone" },
    ];
    decideInvalid(errors, 3, ledger);
    expect(ledger.conditions[0]).toMatchObject({ type: "Valid", status: "False", reason: "InvalidSpec" });
    expect(ledger.conditions[0]!.message).toContain("spec.schedule");
    expect(ledger.conditions[0]!.message).toContain("spec.timeZone");
    expect(ledger.events).toHaveLength(1);
    const again = new ConditionLedger(ledger.conditions, now);
    decideInvalid(errors, 3, again);
    expect(again.events).toEqual([]);
  });
});
