import { describe, expect, it } from "vitest";
import { claimedLease, heldByOther, LeaseSightings, nextAttemptAt, releasedLease } from "./leader.ts";

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

describe("when a candidate next tries to acquire", () => {
  const heldByA = { holderIdentity: "replica-a", leaseDurationSeconds: 4 };
  const base = {
    identity: "replica-b",
    defaultDurationSeconds: 15,
    lastAttemptMs: 1_000,
    nextPollMs: 60_000,
  };

  it("tries at the instant the lease expires on the local clock, by the record's own duration", () => {
    expect(nextAttemptAt({ ...base, record: heldByA, observedAtMs: 2_000 })).toBe(6_000);
    // Without a duration in the record, the candidate's own applies.
    expect(nextAttemptAt({ ...base, record: { holderIdentity: "replica-a" }, observedAtMs: 2_000 })).toBe(
      17_000,
    );
  });

  it("never waits past the next poll", () => {
    expect(nextAttemptAt({ ...base, record: heldByA, observedAtMs: 2_000, nextPollMs: 3_100 })).toBe(3_100);
  });

  it("tries at once when the lease is released, gone, or its own", () => {
    for (const record of [
      { holderIdentity: "", leaseDurationSeconds: 1 },
      undefined,
      { holderIdentity: "replica-b" },
    ]) {
      expect(nextAttemptAt({ ...base, record, observedAtMs: 2_000 })).toBe(2_000);
    }
  });

  it("leaves a due time that an attempt already covered to the poll", () => {
    // Released before the last attempt began: that attempt saw it, and failed; no instant retry.
    const released = { holderIdentity: "" };
    expect(nextAttemptAt({ ...base, record: released, observedAtMs: 900 })).toBe(60_000);
    expect(nextAttemptAt({ ...base, record: released, observedAtMs: 1_000 })).toBe(60_000);
    // Expired before the last attempt began, yet that attempt did not win (a 409, a failed call).
    expect(nextAttemptAt({ ...base, record: heldByA, observedAtMs: -3_500 })).toBe(60_000);
  });
});

describe("lease sightings", () => {
  const renewal = (second: number) => ({
    holderIdentity: "replica-a",
    leaseDurationSeconds: 4,
    acquireTime: "2026-03-01T02:00:00.000000Z",
    renewTime: `2026-03-01T02:00:0${second}.000000Z`,
    leaseTransitions: 0,
  });

  it("keeps the first sighting of a record however often it is seen again", () => {
    const sightings = new LeaseSightings();
    expect(sightings.see(renewal(1), 100)).toEqual({ firstSeenMs: 100, fresh: true });
    // The same record read back with times as Dates (as the candidate writes them) is the same record.
    const asDates = { ...renewal(1), renewTime: new Date("2026-03-01T02:00:01Z") };
    expect(sightings.see(asDates, 900)).toEqual({ firstSeenMs: 100, fresh: false });
    expect(sightings.current).toEqual(renewal(1));
    expect(sightings.currentSince).toBe(100);
  });

  it("does not let a late copy of an older record become current again", () => {
    const sightings = new LeaseSightings();
    sightings.see(renewal(1), 100);
    sightings.see(renewal(2), 1_100);
    // A read that raced the watch returns the earlier renewal after the later one was seen.
    expect(sightings.see(renewal(1), 1_150)).toEqual({ firstSeenMs: 100, fresh: false });
    expect(sightings.current).toEqual(renewal(2));
    expect(sightings.currentSince).toBe(1_100);
  });

  it("forgets the oldest records beyond its memory, which then count as new", () => {
    const sightings = new LeaseSightings(2);
    sightings.see(renewal(1), 100);
    sightings.see(renewal(2), 200);
    sightings.see(renewal(3), 300);
    expect(sightings.see(renewal(2), 400).fresh).toBe(false);
    expect(sightings.see(renewal(1), 500)).toEqual({ firstSeenMs: 500, fresh: true });
  });

  it("records a deletion as no current record from that moment", () => {
    const sightings = new LeaseSightings();
    sightings.see(renewal(1), 100);
    sightings.gone(700);
    expect(sightings.current).toBeUndefined();
    expect(sightings.currentSince).toBe(700);
    // A new Lease with a new record is current again.
    expect(sightings.see(renewal(5), 800).fresh).toBe(true);
  });
});
