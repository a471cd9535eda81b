import type { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LeaderElector, type LeaderElectorOptions } from "../../controller/kube/leader.ts";
import { uniqueName } from "../support/env.ts";
import { apiServerAddress } from "../support/etcd.ts";
import { FaultProxy } from "../support/fault-proxy.ts";
import { kubeClients, kubeConfigThrough } from "../support/kube.ts";
import { eventuallyPasses } from "../support/polling.ts";

/** Short timings so that the tests take seconds: 3 s lease, 2 s renew deadline, 0.5 s retry. */
const timings = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 500 };
/** How long an election may take before a test fails, unless the test says otherwise. */
const ELECTION_MS = 10_000;
/**
 * A follower that polls only every 2 s (renew deadline raised to keep its timings valid): when it
 * takes over much sooner than its poll could have, it acted on what its watch of the Lease showed.
 */
const slowPoll = { renewDeadlineMs: 2_500, retryPeriodMs: 2_000 };
/** What a takeover may take beyond the moment it is due: a read and an update of the Lease on a shared machine. */
const CALL_ALLOWANCE_MS = 300;

/** A candidate plus what its callbacks saw. */
interface Candidate {
  elector: LeaderElector;
  running: Promise<void>;
  leaderSignals: AbortSignal[];
  /** performance.now() at each onStartedLeading. */
  startedAt: number[];
  stoppedAt: number[];
  newLeaders: string[];
  errors: unknown[];
}

describe("LeaderElector against the real API server", () => {
  const { kubeConfig: kc, core, leases } = kubeClients();
  const namespace = uniqueName("leader");
  const candidates: Candidate[] = [];

  beforeAll(async () => {
    await core.createNamespace({ body: { metadata: { name: namespace } } });
  });

  afterAll(async () => {
    await Promise.all(candidates.map((c) => c.elector.stop()));
    await core.deleteNamespace({ name: namespace });
  });

  function candidate(
    lease: string,
    identity: string,
    options: Partial<LeaderElectorOptions> = {},
    kubeConfigToUse: KubeConfig = kc,
  ): Candidate {
    const seen = {
      leaderSignals: [] as AbortSignal[],
      startedAt: [] as number[],
      stoppedAt: [] as number[],
      newLeaders: [] as string[],
      errors: [] as unknown[],
    };
    const elector = new LeaderElector({
      kubeConfig: kubeConfigToUse,
      namespace,
      name: lease,
      identity,
      ...timings,
      onStartedLeading: (signal) => {
        seen.startedAt.push(performance.now());
        seen.leaderSignals.push(signal);
      },
      onStoppedLeading: () => {
        seen.stoppedAt.push(performance.now());
      },
      onNewLeader: (id) => seen.newLeaders.push(id),
      onError: (error) => seen.errors.push(error),
      ...options,
    });
    const c: Candidate = { ...seen, elector, running: elector.run() };
    candidates.push(c);
    return c;
  }

  const leaderAmong = (cs: Candidate[]) => cs.filter((c) => c.elector.isLeader());

  it("elects exactly one of two candidates on one Lease, and both learn who leads", async () => {
    const lease = uniqueName("one");
    const a = candidate(lease, "replica-a");
    const b = candidate(lease, "replica-b");
    await eventuallyPasses("one leader", () => expect(leaderAmong([a, b])).toHaveLength(1), ELECTION_MS);
    const [leader] = leaderAmong([a, b]);
    const follower = leader === a ? b : a;
    // Over several renew periods, never two leaders and never a change of leader.
    for (let i = 0; i < 20; i++) {
      expect(leaderAmong([a, b])).toEqual([leader]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const stored = await leases.readNamespacedLease({ namespace, name: lease });
    expect(stored.spec?.holderIdentity).toBe(leader!.elector.identity);
    expect(stored.spec?.leaseDurationSeconds).toBe(3);
    expect(leader!.leaderSignals).toHaveLength(1);
    expect(leader!.leaderSignals[0]!.aborted).toBe(false);
    expect(follower.leaderSignals).toHaveLength(0);
    expect(follower.newLeaders).toEqual([leader!.elector.identity]);
    expect(follower.elector.leader()).toBe(leader!.elector.identity);
    await Promise.all([a.elector.stop(), b.elector.stop()]);
    await Promise.all([a.running, b.running]);
    expect(leader!.leaderSignals[0]!.aborted).toBe(true);
  });

  it("hands over at once when the leader stops and releases the Lease", async () => {
    const lease = uniqueName("release");
    const a = candidate(lease, "replica-a");
    await eventuallyPasses("a leads", () => expect(a.elector.isLeader()).toBe(true), ELECTION_MS);
    const b = candidate(lease, "replica-b", slowPoll);
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(b.elector.isLeader()).toBe(false);

    const stoppedAt = performance.now();
    await a.elector.stop();
    expect(a.stoppedAt).toHaveLength(1);
    await eventuallyPasses("b leads", () => expect(b.elector.isLeader()).toBe(true), ELECTION_MS);
    const handover = b.startedAt[0]! - stoppedAt;
    console.log(
      `handover after release: ${Math.round(handover)} ms (b polls every ${slowPoll.retryPeriodMs} ms)`,
    );
    // b saw the release on its watch and tried at once: its next poll was more than a second away.
    expect(handover).toBeLessThan(CALL_ALLOWANCE_MS + 200);
    const stored = await leases.readNamespacedLease({ namespace, name: lease });
    expect(stored.spec?.holderIdentity).toBe("replica-b");
    expect(stored.spec?.leaseTransitions).toBe(1);
    await b.elector.stop();
  });

  it("takes over from a leader that stops renewing without releasing, once the lease expires", async () => {
    const lease = uniqueName("crash");
    const a = candidate(lease, "replica-a", { releaseOnStop: false });
    await eventuallyPasses("a leads", () => expect(a.elector.isLeader()).toBe(true), ELECTION_MS);
    const b = candidate(lease, "replica-b", slowPoll);
    await new Promise((resolve) => setTimeout(resolve, 700));

    // A crash as far as the Lease can tell: renewals stop, the holder stays.
    const crashedAt = performance.now();
    await a.elector.stop();
    const stored = await leases.readNamespacedLease({ namespace, name: lease });
    expect(stored.spec?.holderIdentity).toBe("replica-a");
    await eventuallyPasses("b leads", () => expect(b.elector.isLeader()).toBe(true), 6_000);
    const takeover = b.startedAt[0]! - crashedAt;
    console.log(`takeover after crash: ${Math.round(takeover)} ms (lease ${timings.leaseDurationMs} ms)`);
    // b waited for the lease to expire as it saw it: the last renewal came at most one of a's retry
    // periods (and a call) before the crash, and b saw it on its watch as it was written.
    expect(takeover).toBeGreaterThan(timings.leaseDurationMs - 2 * timings.retryPeriodMs);
    // ... and took it the moment it expired, not at its next poll (up to 2.4 s later): within the
    // lease duration of the crash, plus the calls.
    expect(takeover).toBeLessThanOrEqual(timings.leaseDurationMs + CALL_ALLOWANCE_MS);
    expect(b.newLeaders).toEqual(["replica-a", "replica-b"]);
    await b.elector.stop();
  });

  it("steps down when it cannot renew within the renew deadline, before anyone else may lead", async () => {
    const lease = uniqueName("cut");
    const proxy = await FaultProxy.start(apiServerAddress());
    try {
      const a = candidate(lease, "replica-a", {}, kubeConfigThrough(proxy, lease));
      await eventuallyPasses("a leads", () => expect(a.elector.isLeader()).toBe(true), ELECTION_MS);
      const b = candidate(lease, "replica-b");
      await new Promise((resolve) => setTimeout(resolve, 700));

      const cutAt = performance.now();
      proxy.refuse(true);
      proxy.cutConnections();
      await a.running;
      const steppedDown = a.stoppedAt[0]! - cutAt;
      expect(a.elector.isLeader()).toBe(false);
      expect(a.leaderSignals[0]!.aborted).toBe(true);
      // No renewal got through: a gave up once renewDeadline had passed since its last renewal.
      expect(steppedDown).toBeLessThan(timings.renewDeadlineMs + 2 * timings.retryPeriodMs);
      expect(a.errors.length).toBeGreaterThan(0);
      expect(b.elector.isLeader()).toBe(false);
      await eventuallyPasses("b leads", () => expect(b.elector.isLeader()).toBe(true), 6_000);
      expect(performance.now() - cutAt).toBeGreaterThan(steppedDown);
      await b.elector.stop();
    } finally {
      await proxy.close();
    }
  });
});
