import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { uniqueName } from "../support/env.ts";
import { kubeClients, mergePatch, ScratchNamespaces } from "../support/kube.ts";
import { installCrds, kubectl } from "../support/kubectl.ts";
import { baseJob } from "../support/manifests.ts";

/**
 * Governance against a real API server: the controller admits runs under policy limits, applies
 * each job's concurrencyPolicy, and cleans up finished runs. The controller runs with the External
 * executor; the test plays the runner, finishing admitted runs through the status subresource as
 * `syncgov run` does.
 */
const { core, custom, events: eventsApi } = kubeClients();
const RUNS = { group: "syncgov.io", version: "v1alpha1", plural: "syncruns" };
const JOBS = { group: "syncgov.io", version: "v1alpha1", plural: "syncjobs" };
const POLICIES = { group: "syncgov.io", version: "v1alpha1", plural: "syncpolicies" };

interface Run {
  metadata: { name: string; namespace: string; creationTimestamp?: string };
  spec: { jobName: string };
  status?: {
    phase?: string;
    target?: string;
    queueReason?: string;
    completionTime?: string;
    message?: string;
    policy?: { policies: string[]; requiredMasking: unknown[]; breaker: object };
    traceContext?: { traceparent: string };
  };
}

let controller: RunningController;
const namespaces = new ScratchNamespaces(core, { "syncgov-test": "governance" });
const policies: string[] = [];

async function createJob(namespace: string, name: string, spec: Record<string, unknown> = {}): Promise<void> {
  const job = baseJob() as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
  job.metadata = { name, labels: { team: "governance" } };
  (job.spec.target as { sql: { table: string } }).sql.table = `analytics.${name.replaceAll("-", "_")}`;
  // No schedule fires during the test: the 29th of February 2100 never comes.
  job.spec.schedule = "0 0 29 2 1";
  Object.assign(job.spec, spec);
  await custom.createNamespacedCustomObject({ ...JOBS, namespace, body: job });
}

async function createRun(namespace: string, name: string, jobName: string): Promise<void> {
  await custom.createNamespacedCustomObject({
    ...RUNS,
    namespace,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncRun",
      metadata: { name },
      spec: { jobName, type: "Batch" },
    },
  });
}

async function runsIn(namespaces: string[]): Promise<Run[]> {
  const lists = await Promise.all(
    namespaces.map(
      (namespace) => custom.listNamespacedCustomObject({ ...RUNS, namespace }) as Promise<{ items: Run[] }>,
    ),
  );
  return lists.flatMap((l) => l.items);
}

async function finish(run: Run, phase: "Succeeded" | "Failed" = "Succeeded"): Promise<void> {
  await custom.patchNamespacedCustomObjectStatus(
    {
      ...RUNS,
      namespace: run.metadata.namespace,
      name: run.metadata.name,
      body: { status: { phase, completionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z") } },
    },
    mergePatch,
  );
}

async function applyPolicy(name: string, spec: Record<string, unknown>): Promise<void> {
  await custom.createClusterCustomObject({
    ...POLICIES,
    body: { apiVersion: "syncgov.io/v1alpha1", kind: "SyncPolicy", metadata: { name }, spec },
  });
  policies.push(name);
}

beforeAll(async () => {
  await installCrds();
  await core.createNamespace({ body: { metadata: { name: "syncgov-system" } } }).catch(() => undefined);
  // Policies left by other suites would combine with these; the cluster is this suite's alone now.
  await kubectl(["delete", "syncpolicies", "--all"]);
  controller = await startController({
    identity: "governance",
    leaseName: uniqueName("lease"),
    extraArgs: ["--executor", "External"],
  });
});

afterAll(async () => {
  await controller?.stop();
  for (const name of policies)
    await custom.deleteClusterCustomObject({ ...POLICIES, name }).catch(() => undefined);
  await namespaces.deleteAll();
});

describe("admission under policy limits", () => {
  it("50 runs over 5 namespaces never exceed the namespace, target and global limits, and all run", {
    timeout: 180_000,
  }, async () => {
    const ns = await Promise.all([1, 2, 3, 4, 5].map((i) => namespaces.create(`gov-${i}`)));
    const limits = { maxRunsPerNamespace: 2, maxRunsPerTarget: 1, maxRunsGlobal: 6 };
    await applyPolicy(uniqueName("limits"), { match: { namespaces: ns }, concurrency: limits });
    // History kept so that every finished run can be counted at the end.
    for (const n of ns)
      for (const job of ["orders", "refunds"])
        await createJob(n, job, { concurrencyPolicy: "Allow", successfulRunsHistoryLimit: 10 });

    // Sample the API's view the whole time; finish admitted runs like a runner would.
    const max = { global: 0, namespace: 0, target: 0 };
    const reasons = new Set<string>();
    let sampling = true;
    const finishing = new Set<string>();
    const sampler = (async () => {
      while (sampling) {
        const runs = await runsIn(ns);
        const running = runs.filter((r) => r.status?.phase === "Running");
        const count = (key: (r: Run) => string) => {
          const m = new Map<string, number>();
          for (const r of running) m.set(key(r), (m.get(key(r)) ?? 0) + 1);
          return Math.max(0, ...m.values());
        };
        max.global = Math.max(max.global, running.length);
        max.namespace = Math.max(
          max.namespace,
          count((r) => r.metadata.namespace),
        );
        max.target = Math.max(
          max.target,
          count((r) => r.status?.target ?? r.metadata.name),
        );
        for (const r of runs)
          if (r.status?.phase === "Queued" && r.status.queueReason) reasons.add(r.status.queueReason);
        for (const r of running) {
          const key = `${r.metadata.namespace}/${r.metadata.name}`;
          if (finishing.has(key)) continue;
          finishing.add(key);
          setTimeout(() => void finish(r).catch(() => undefined), 200 + Math.random() * 400);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    // 50 runs at once: 5 per job, 10 per namespace.
    await Promise.all(
      ns.flatMap((n) =>
        ["orders", "refunds"].flatMap((job) =>
          [1, 2, 3, 4, 5].map((i) => createRun(n, `${job}-run-${i}`, job)),
        ),
      ),
    );
    let last = "";
    const done = await eventually(
      "all 50 runs succeeded",
      async () => {
        const runs = await runsIn(ns);
        const phases = new Map<string, number>();
        for (const r of runs)
          phases.set(r.status?.phase ?? "None", (phases.get(r.status?.phase ?? "None") ?? 0) + 1);
        last = JSON.stringify([...phases]);
        return runs.length === 50 && runs.every((r) => r.status?.phase === "Succeeded") ? runs : undefined;
      },
      120_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; phases ${last}; max ${JSON.stringify(max)}`);
    });
    sampling = false;
    await sampler;
    console.log(
      `max running: ${JSON.stringify(max)}; queue reasons seen: ${[...reasons].slice(0, 4).join(" | ")}`,
    );
    expect(done).toHaveLength(50);
    expect(max.global).toBeLessThanOrEqual(limits.maxRunsGlobal);
    expect(max.namespace).toBeLessThanOrEqual(limits.maxRunsPerNamespace);
    expect(max.target).toBeLessThanOrEqual(limits.maxRunsPerTarget);
    expect(max.global).toBeGreaterThan(1); // the limits were reached, not avoided by running one at a time
    expect(reasons.size).toBeGreaterThan(0);
    for (const r of reasons)
      expect(r).toMatch(/^\d+\/\d+ running (in the cluster|in namespace \S+|on target \S+)$/);
  });
});

describe("concurrencyPolicy", () => {
  async function twoRuns(
    policy: "Allow" | "Forbid" | "Replace",
  ): Promise<{ first: Run; second: Run; namespace: string }> {
    const namespace = await namespaces.create(`cp-${policy.toLowerCase()}`);
    await createJob(namespace, "sync", { concurrencyPolicy: policy });
    await createRun(namespace, "first", "sync");
    await eventually("first running", async () =>
      (await runsIn([namespace])).find((r) => r.metadata.name === "first" && r.status?.phase === "Running"),
    );
    await createRun(namespace, "second", "sync");
    return eventually(`second decided (${policy})`, async () => {
      const runs = await runsIn([namespace]);
      const first = runs.find((r) => r.metadata.name === "first")!;
      const second = runs.find((r) => r.metadata.name === "second");
      const decided = second?.status?.phase !== undefined && second.status.phase !== "Pending";
      const settled = policy !== "Replace" || first.status?.phase === "Cancelled";
      return second && decided && settled ? { first, second, namespace } : undefined;
    });
  }

  it("Allow runs both", async () => {
    const { first, second } = await twoRuns("Allow");
    expect(first.status?.phase).toBe("Running");
    expect(second.status?.phase).toBe("Running");
    // Admission records what the runner enforces and the trace the runner's spans join.
    for (const run of [first, second]) {
      expect(run.status?.policy).toMatchObject({ requiredMasking: [], breaker: expect.any(Object) });
      expect(run.status?.traceContext?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    }
  });

  it("Forbid skips the new run, with an event", async () => {
    const { first, second, namespace } = await twoRuns("Forbid");
    expect(first.status?.phase).toBe("Running");
    expect(second.status?.phase).toBe("Skipped");
    expect(second.status?.message).toMatch(/concurrencyPolicy is Forbid/);
    const events = await eventually("a Skipped event", async () => {
      const evs = (await eventsApi.listNamespacedEvent({ namespace })).items.filter(
        (e) => e.reason === "Skipped",
      );
      return evs.length > 0 ? evs : undefined;
    });
    expect(events[0]?.regarding?.name).toBe("second");
  });

  it("Replace cancels the running run and admits the new one", async () => {
    const { first, second } = await twoRuns("Replace");
    expect(first.status?.phase).toBe("Cancelled");
    expect(first.status?.message).toMatch(/Replaced by second/);
    expect(second.status?.phase).toBe("Running");
  });
});

describe("clean-up of finished runs", () => {
  it("deletes finished runs within TTL + 2 s and keeps the history limits", async () => {
    const namespace = await namespaces.create("ttl");
    const ttl = 4;
    await createJob(namespace, "short", { concurrencyPolicy: "Allow", ttlSecondsAfterFinished: ttl });
    await createJob(namespace, "kept", {
      concurrencyPolicy: "Allow",
      successfulRunsHistoryLimit: 2,
      failedRunsHistoryLimit: 1,
    });
    for (const [job, i] of [
      ["short", 1],
      ["kept", 1],
      ["kept", 2],
      ["kept", 3],
      ["kept", 4],
      ["kept", 5],
    ] as const) {
      await createRun(namespace, `${job}-${i}`, job);
    }
    const admitted = await eventually("all six running", async () => {
      const runs = await runsIn([namespace]);
      return runs.length === 6 && runs.every((r) => r.status?.phase === "Running") ? runs : undefined;
    });
    const byName = new Map(admitted.map((r) => [r.metadata.name, r]));
    // kept-1..3 succeed, kept-4..5 fail, in that order.
    for (const name of ["kept-1", "kept-2", "kept-3"]) await finish(byName.get(name)!);
    for (const name of ["kept-4", "kept-5"]) await finish(byName.get(name)!, "Failed");
    const finishedAt = Date.now();
    await finish(byName.get("short-1")!);

    const kept = await eventually("history limits applied", async () => {
      const names = (await runsIn([namespace]))
        .map((r) => r.metadata.name)
        .filter((n) => n.startsWith("kept"));
      return names.length === 3 ? names.sort() : undefined;
    });
    expect(kept).toEqual(["kept-2", "kept-3", "kept-5"]);

    await eventually(
      "short-1 deleted after its TTL",
      async () => ((await runsIn([namespace])).some((r) => r.metadata.name === "short-1") ? undefined : true),
      (ttl + 10) * 1000,
    );
    const goneAfter = (Date.now() - finishedAt) / 1000;
    console.log(`run with ttlSecondsAfterFinished=${ttl} gone ${goneAfter.toFixed(1)} s after it finished`);
    // completionTime has whole-second precision: the TTL counts from up to 1 s before finishedAt.
    expect(goneAfter).toBeLessThanOrEqual(ttl + 2);
    expect(goneAfter).toBeGreaterThanOrEqual(ttl - 1);
  });
});

describe("batch windows", () => {
  it("keeps batch runs queued outside the policy's windows", async () => {
    const namespace = await namespaces.create("window");
    const now = new Date();
    // A one-hour window that opened two hours ago is closed now.
    const hh = (d: Date) => `${String(d.getUTCHours()).padStart(2, "0")}:00`;
    const start = new Date(now.getTime() - 2 * 3600_000);
    const end = new Date(now.getTime() - 1 * 3600_000);
    await applyPolicy(uniqueName("window"), {
      match: { namespaces: [namespace] },
      batchWindows: [{ start: hh(start), end: hh(end), timeZone: "UTC" }],
    });
    await createJob(namespace, "nightly");
    await createRun(namespace, "now", "nightly");
    const run = await eventually("run queued", async () =>
      (await runsIn([namespace])).find((r) => r.status?.phase === "Queued"),
    );
    expect(run.status?.queueReason).toMatch(/outside the batch windows/);
  });
});

describe("policy enforcement", () => {
  it("Enforce blocks a violating job: phase Blocked, condition and event; its runs are not admitted", async () => {
    const namespace = await namespaces.create("enforce");
    const policy = uniqueName("enforce");
    await applyPolicy(policy, {
      match: { namespaces: [namespace] },
      enforcement: "Enforce",
      rules: [
        {
          name: "schema-qualified",
          expression: "object.spec.target.sql.table.contains('.')",
          message: "tables must be schema-qualified",
        },
      ],
    });
    await createJob(namespace, "bare", {
      target: { sql: { connectionSecretRef: { name: "warehouse-db" }, table: "orders", keyColumns: ["id"] } },
      masking: [],
    });
    await createRun(namespace, "bare-1", "bare");
    const job = await eventually("job blocked", async () => {
      const j = (await custom.getNamespacedCustomObject({ ...JOBS, namespace, name: "bare" })) as {
        status?: {
          phase?: string;
          conditions?: { type: string; status: string; reason: string; message?: string }[];
        };
      };
      return j.status?.phase === "Blocked" ? j : undefined;
    });
    const c = job.status?.conditions?.find((x) => x.type === "PolicyCompliant");
    expect(c).toMatchObject({ status: "False", reason: "Blocked" });
    expect(c?.message).toContain(`${policy}/schema-qualified: tables must be schema-qualified`);
    const run = await eventually("run not admitted", async () =>
      (await runsIn([namespace])).find((r) => r.status?.phase === "Queued"),
    );
    expect(run.status?.queueReason).toMatch(/blocked by policy/);
    // The event follows the status write.
    const evs = await eventually("a Blocked event", async () => {
      const found = (await eventsApi.listNamespacedEvent({ namespace })).items.filter(
        (e) => e.reason === "Blocked",
      );
      return found.length > 0 ? found : undefined;
    });
    expect(evs).toHaveLength(1);
  });
});
