import { readFileSync } from "node:fs";
import type { EventsV1Event } from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { eventually, type RunningController, restartServer, startController } from "../support/controller.ts";
import { uniqueName } from "../support/env.ts";
import { apiServerAddress, compactEtcd, kubeconfigVia } from "../support/etcd.ts";
import { FaultProxy } from "../support/fault-proxy.ts";
import { kubeClients, mergePatch, ScratchNamespaces } from "../support/kube.ts";
import { installCrds } from "../support/kubectl.ts";
import { baseJob } from "../support/manifests.ts";
import { readerHeaders } from "../support/reader-token.ts";

const { core, custom, events: eventsApi, leases } = kubeClients();
const G = { group: "syncgov.io", version: "v1alpha1", plural: "syncjobs" };

type Job = Record<string, unknown> & {
  metadata: { name: string; generation?: number };
  spec: Record<string, unknown>;
  status?: {
    observedGeneration?: number;
    phase?: string;
    conditions?: { type: string; status: string; message?: string }[];
  };
};

/** Semantically invalid variants: accepted by the API server, rejected by the controller, and the field each names. */
// biome-ignore lint/suspicious/noExplicitAny: the table edits manifests freely.
type LooseSpec = Record<string, any>;

/** Semantically invalid variants: accepted by the API server, rejected by the controller, and the field each names. */
const INVALID_VARIANTS: { field: string; mutate: (spec: LooseSpec) => void }[] = [
  {
    field: "spec.schedule",
    mutate: (s) => {
      s.schedule = "61 2 * * *";
    },
  },
  {
    field: "spec.timeZone",
    mutate: (s) => {
      s.timeZone = "Mars/Olympus_Mons";
    },
  },
  {
    field: "spec.target.sql.dialect",
    mutate: (s) => {
      s.target.sql.dialect = "mysql";
    },
  },
  {
    field: "spec.target.sql.keyColumns",
    mutate: (s) => {
      s.target.sql.keyColumns = ["customer_id", "customer_id"];
    },
  },
  {
    field: "spec.masking[0].pattern",
    mutate: (s) => {
      s.masking = [{ column: "email", transform: "regexReplace", pattern: "(" }];
    },
  },
];

function jobManifest(name: string, invalid?: (typeof INVALID_VARIANTS)[number]): Job {
  const m = baseJob() as Job;
  m.metadata = { name };
  (m.spec.target as { sql: { table: string } }).sql.table = `analytics.${name.replaceAll("-", "_")}`;
  invalid?.mutate(m.spec);
  return m;
}

async function listJobs(namespace: string): Promise<Job[]> {
  const list = (await custom.listNamespacedCustomObject({ ...G, namespace })) as { items: Job[] };
  return list.items;
}

function reconciled(job: Job): boolean {
  return (
    job.status?.observedGeneration === job.metadata.generation &&
    (job.status?.conditions ?? []).some(
      (c) =>
        c.type === "Valid" &&
        (c as { observedGeneration?: number }).observedGeneration === job.metadata.generation,
    )
  );
}

async function allReconciled(namespace: string, expected: number): Promise<Job[] | undefined> {
  const jobs = await listJobs(namespace);
  return jobs.length === expected && jobs.every(reconciled) ? jobs : undefined;
}

async function eventsFor(namespace: string): Promise<EventsV1Event[]> {
  return (await eventsApi.listNamespacedEvent({ namespace })).items.filter(
    (e) => e.regarding?.kind === "SyncJob",
  );
}

async function createAll(namespace: string, jobs: Job[]): Promise<void> {
  for (let i = 0; i < jobs.length; i += 25) {
    await Promise.all(
      jobs.slice(i, i + 25).map((body) => custom.createNamespacedCustomObject({ ...G, namespace, body })),
    );
  }
}

const controllers: RunningController[] = [];
const namespaces = new ScratchNamespaces(core);

beforeAll(async () => {
  await installCrds();
  await core.createNamespace({ body: { metadata: { name: "syncgov-system" } } }).catch(() => undefined);
});

afterEach(async () => {
  for (const c of controllers.splice(0)) await c.stop();
});

afterAll(() => namespaces.deleteAll());

describe("the controller against a real API server", () => {
  it("reconciles 200 SyncJobs applied at once, valid and invalid, with one event per change", async () => {
    const namespace = await namespaces.create("ctl-burst");
    controllers.push(await startController({ identity: "burst", leaseName: uniqueName("lease") }));
    const jobs = Array.from({ length: 200 }, (_, i) =>
      jobManifest(`job-${i}`, i % 4 === 0 ? INVALID_VARIANTS[(i / 4) % INVALID_VARIANTS.length] : undefined),
    );
    await createAll(namespace, jobs);

    const done = await eventually("all 200 jobs reconciled", () => allReconciled(namespace, 200), 90_000);
    for (const job of done) {
      const i = Number(job.metadata.name.slice(4));
      const valid = job.status!.conditions!.find((c) => c.type === "Valid")!;
      if (i % 4 === 0) {
        const variant = INVALID_VARIANTS[(i / 4) % INVALID_VARIANTS.length]!;
        expect(valid.status, job.metadata.name).toBe("False");
        expect(valid.message).toContain(variant.field);
        expect(job.status!.phase).toBe("Invalid");
      } else {
        expect(valid.status, job.metadata.name).toBe("True");
      }
    }

    // One event per job, and none more while nothing changes.
    const first = await eventually("an event for every job", async () => {
      const evs = await eventsFor(namespace);
      return new Set(evs.map((e) => e.regarding?.name)).size === 200 ? evs : undefined;
    });
    await new Promise((r) => setTimeout(r, 3000));
    const later = await eventsFor(namespace);
    expect(later).toHaveLength(200);
    expect(first).toHaveLength(200);
    for (const e of later) {
      expect(e.series, `${e.regarding?.name} has a repeated event`).toBeUndefined();
      const i = Number(e.regarding?.name?.slice(4));
      expect(e.reason).toBe(i % 4 === 0 ? "InvalidSpec" : "SpecValid");
    }

    // Fixing an invalid job is one change: one more event, and the condition flips.
    await custom.patchNamespacedCustomObject(
      { ...G, namespace, name: "job-0", body: { spec: { schedule: "0 2 * * *" } } },
      mergePatch,
    );
    const fixed = await eventually("job-0 valid at generation 2", async () => {
      const job = (await custom.getNamespacedCustomObject({ ...G, namespace, name: "job-0" })) as Job;
      return job.metadata.generation === 2 && reconciled(job) ? job : undefined;
    });
    expect(fixed.status!.conditions!.find((c) => c.type === "Valid")!.status).toBe("True");
    await new Promise((r) => setTimeout(r, 1500));
    const job0 = (await eventsFor(namespace)).filter((e) => e.regarding?.name === "job-0");
    expect(job0.map((e) => e.reason).sort()).toEqual(["InvalidSpec", "SpecValid"]);
  });

  it("fires a shared schedule every time it is due, for two jobs, night after night", async () => {
    // The test is the clock: each night it sets the jobs' lastScheduleTime to just before a 02:00
    // that has passed, as a controller running for days would find it after the previous night.
    const namespace = await namespaces.create("ctl-cron");
    controllers.push(
      await startController({
        identity: "cron",
        leaseName: uniqueName("lease"),
        extraArgs: ["--executor", "External"],
      }),
    );
    const names = ["nightly-a", "nightly-b"];
    await createAll(
      namespace,
      names.map((name) => {
        const job = jobManifest(name);
        Object.assign(job.spec, { schedule: "0 2 * * *", timeZone: "UTC", concurrencyPolicy: "Allow" });
        return job;
      }),
    );
    await eventually("both jobs reconciled", () => allReconciled(namespace, 2));
    const runsOf = async (job: string) =>
      (
        (await custom.listNamespacedCustomObject({ ...G, plural: "syncruns", namespace })) as {
          items: { metadata: { name: string }; spec: { jobRef?: { name?: string } } }[];
        }
      ).items
        .map((r) => r.metadata.name)
        .filter((n) => n.startsWith(`${job}-s`))
        .sort();
    // Nothing is due yet: the next 02:00 after creation is still ahead.
    for (const name of names) expect(await runsOf(name)).toEqual([]);

    const today = new Date();
    today.setUTCHours(2, 0, 0, 0);
    const expected = new Map<string, string[]>(names.map((n) => [n, []]));
    for (const daysAgo of [3, 2, 1]) {
      const night = new Date(today.getTime() - daysAgo * 86_400_000);
      for (const name of names) {
        await custom.patchNamespacedCustomObjectStatus(
          {
            ...G,
            namespace,
            name,
            body: {
              status: {
                lastScheduleTime: new Date(night.getTime() - 60_000).toISOString().replace(/\.\d+Z$/, "Z"),
              },
            },
          },
          mergePatch,
        );
        expected.get(name)!.push(`${name}-s${Math.floor(night.getTime() / 1000).toString(36)}`);
      }
      for (const name of names) {
        const want = [...expected.get(name)!].sort();
        await eventually(`${name} fired for ${daysAgo} nights ago`, async () => {
          const runs = await runsOf(name);
          return JSON.stringify(runs) === JSON.stringify(want) ? runs : undefined;
        });
        // The controller recorded the fire (lastScheduleTime is now, not the night): the next night's
        // setting must not race with this write.
        await eventually(`${name} recorded the fire`, async () => {
          const job = (await custom.getNamespacedCustomObject({ ...G, namespace, name })) as {
            status?: { lastScheduleTime?: string };
          };
          return Date.parse(job.status?.lastScheduleTime ?? "") > night.getTime() ? true : undefined;
        });
      }
    }
    for (const name of names) expect(await runsOf(name)).toHaveLength(3);
  });

  it("misses nothing across an API server restart and an etcd compaction (watch 410 Gone)", async () => {
    const namespace = await namespaces.create("ctl-410");
    const proxy = await FaultProxy.start(apiServerAddress());
    try {
      const ctl = await startController({
        identity: "relist",
        leaseName: uniqueName("lease"),
        kubeconfig: kubeconfigVia(proxy.port, "relist"),
      });
      controllers.push(ctl);
      await createAll(
        namespace,
        Array.from({ length: 10 }, (_, i) => jobManifest(`before-${i}`)),
      );
      await eventually("first jobs reconciled", () => allReconciled(namespace, 10));

      // Cut the controller off, change things behind its back, and make its resourceVersion history disappear.
      proxy.refuse(true);
      proxy.cutConnections();
      await createAll(
        namespace,
        Array.from({ length: 10 }, (_, i) => jobManifest(`during-${i}`)),
      );
      for (let i = 0; i < 5; i++) {
        await custom.patchNamespacedCustomObject(
          { ...G, namespace, name: `before-${i}`, body: { spec: { priority: 7 } } },
          mergePatch,
        );
      }
      for (let i = 5; i < 10; i++)
        await custom.deleteNamespacedCustomObject({ ...G, namespace, name: `before-${i}` });
      await compactEtcd();
      await restartServer("kube-apiserver");
      proxy.refuse(false);

      const jobs = await eventually(
        "every job reconciled after the restart",
        () => allReconciled(namespace, 15),
        60_000,
      );
      expect(
        jobs
          .filter((j) => j.metadata.generation === 2)
          .map((j) => j.metadata.name)
          .sort(),
      ).toEqual([0, 1, 2, 3, 4].map((i) => `before-${i}`));
      // The controller's registry lost the deleted jobs too.
      const view = await eventually("the registry without the deleted jobs", async () => {
        const v = (await (
          await fetch(`http://127.0.0.1:${ctl.port}/api/registry`, { headers: await readerHeaders() })
        ).json()) as {
          objects: { kind: string; namespace?: string; name: string }[];
        };
        const names = v.objects
          .filter((o) => o.kind === "SyncJob" && o.namespace === namespace)
          .map((o) => o.name);
        return names.length === 15 ? names : undefined;
      });
      expect(view.some((n) => n.startsWith("before-") && Number(n.slice(7)) >= 5)).toBe(false);
      // The watch really expired: the informer relisted because of 410 Gone.
      const log = readFileSync(ctl.logFile, "utf8");
      expect(log).toMatch(/"kind":"SyncJob","reason":"expired"/);
    } finally {
      await proxy.close();
    }
  });

  it("with two controllers exactly one reconciles; after kill -9 the other takes over within the lease", async () => {
    const namespace = await namespaces.create("ctl-ha");
    const leaseName = uniqueName("lease");
    const timing = { leaseDuration: 4, renewDeadline: 3, retryPeriod: 1 };
    const a = await startController({ identity: "replica-a", leaseName, ...timing });
    controllers.push(a);
    await eventually("replica-a leads", async () => {
      const lease = await leases.readNamespacedLease({ namespace: "syncgov-system", name: leaseName });
      return lease.spec?.holderIdentity === "replica-a" ? true : undefined;
    });
    const b = await startController({ identity: "replica-b", leaseName, ...timing });
    controllers.push(b);

    await createAll(
      namespace,
      Array.from({ length: 20 }, (_, i) => jobManifest(`first-${i}`)),
    );
    await eventually("first jobs reconciled", () => allReconciled(namespace, 20));
    const firstEvents = await eventually("20 events", async () => {
      const evs = await eventsFor(namespace);
      return evs.length === 20 ? evs : undefined;
    });
    expect(new Set(firstEvents.map((e) => e.reportingInstance))).toEqual(new Set(["replica-a"]));
    expect(await b.metrics()).toMatch(/syncgov_leader\{[^}]*\} 0/);

    const killedAt = Date.now();
    await a.kill9();
    await createAll(
      namespace,
      Array.from({ length: 20 }, (_, i) => jobManifest(`second-${i}`)),
    );
    await eventually(
      "replica-b leads",
      async () => {
        const lease = await leases.readNamespacedLease({ namespace: "syncgov-system", name: leaseName });
        return lease.spec?.holderIdentity === "replica-b" ? true : undefined;
      },
      20_000,
    );
    const seenAfterMs = Date.now() - killedAt;
    // The moment replica-b claimed the Lease is its acquireTime: written with the wall clock of a
    // process on this machine, so comparable with killedAt here, and free of this test's 250 ms poll.
    const taken = await leases.readNamespacedLease({ namespace: "syncgov-system", name: leaseName });
    const takeoverMs = new Date(taken.spec!.acquireTime!).getTime() - killedAt;
    console.log(
      `takeover after kill -9: ${takeoverMs} ms (seen by polling after ${seenAfterMs} ms; lease ${timing.leaseDuration} s, retry ${timing.retryPeriod} s)`,
    );
    // replica-b watches the Lease, so it saw replica-a's last renewal (before the kill) as it was
    // written, and tried again the moment that renewal's lease ran out: within the lease duration of
    // the kill, plus a read and an update of the Lease on a shared machine.
    expect(takeoverMs).toBeLessThanOrEqual(timing.leaseDuration * 1000 + 300);

    await eventually("second jobs reconciled by replica-b", () => allReconciled(namespace, 40), 30_000);
    const evs = await eventually("40 events", async () => {
      const all = await eventsFor(namespace);
      return all.length === 40 ? all : undefined;
    });
    const byInstance = (prefix: string) =>
      new Set(evs.filter((e) => e.regarding?.name?.startsWith(prefix)).map((e) => e.reportingInstance));
    expect(byInstance("second-")).toEqual(new Set(["replica-b"]));
    expect(byInstance("first-")).toEqual(new Set(["replica-a"]));
  });
});
