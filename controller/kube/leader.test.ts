import { describe, expect, it } from "vitest";
import { claimedLease, heldByOther, releasedLease } from "./leader.ts";

const now = new Date("2026-03-01T02:00:00.250Z");

describe("lease decisions", () => {
  it("treats a lease held by another as held until its duration has passed since it was observed", () => {
    const record = {
      holderIdentity: "replica-a",
      leaseDurationSeconds: 15,
      renewTime: "2020-01-01T00:00:00.000000Z",
    };
    // The holder's renewTime is years old by the local wall clock, yet only the local observation counts.
    expect(heldByOther(record, "replica-b", 1_000, 15_999, 10)).toBe(true);
    expect(heldByOther(record, "replica-b", 1_000, 16_000, 10)).toBe(false);
    // The record's own duration wins over the candidate's default.
    expect(heldByOther({ holderIdentity: "replica-a" }, "replica-b", 0, 9_999, 10)).toBe(true);
    expect(heldByOther({ holderIdentity: "replica-a" }, "replica-b", 0, 10_000, 10)).toBe(false);
  });

  it("never treats a free lease or one's own lease as held by another", () => {
    expect(heldByOther({ holderIdentity: "" }, "replica-b", 0, 0, 15)).toBe(false);
    expect(heldByOther({}, "replica-b", 0, 0, 15)).toBe(false);
    expect(
      heldByOther({ holderIdentity: "replica-b", leaseDurationSeconds: 15 }, "replica-b", 0, 0, 15),
    ).toBe(false);
  });

  it("takes over with a new acquireTime and one more transition, and renews keeping both", () => {
    const created = claimedLease(undefined, "replica-a", now, 15);
    expect(created.holderIdentity).toBe("replica-a");
    expect(created.leaseTransitions).toBe(0);
    expect(created.leaseDurationSeconds).toBe(15);
    // MicroTime: the API server wants six fractional digits.
    expect(JSON.stringify(created.renewTime)).toBe('"2026-03-01T02:00:00.250000Z"');

    const held = {
      holderIdentity: "replica-a",
      acquireTime: "2026-03-01T01:00:00.000000Z",
      leaseTransitions: 4,
    };
    const renewed = claimedLease(held, "replica-a", now, 15);
    expect(JSON.stringify(renewed.acquireTime)).toBe('"2026-03-01T01:00:00.000000Z"');
    expect(JSON.stringify(renewed.renewTime)).toBe('"2026-03-01T02:00:00.250000Z"');
    expect(renewed.leaseTransitions).toBe(4);

    const taken = claimedLease(held, "replica-b", now, 15);
    expect(taken.holderIdentity).toBe("replica-b");
    expect(JSON.stringify(taken.acquireTime)).toBe('"2026-03-01T02:00:00.250000Z"');
    expect(taken.leaseTransitions).toBe(5);
  });

  it("releases with no holder and a one-second duration, keeping the transition count", () => {
    const released = releasedLease({ holderIdentity: "replica-a", leaseTransitions: 2 }, now);
    expect(released.holderIdentity).toBe("");
    expect(released.leaseDurationSeconds).toBe(1);
    expect(released.leaseTransitions).toBe(2);
  });
});
