import { CoreV1Api, EventsV1Api, type EventsV1Event, type V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventRecorder } from "../../controller/kube/events.ts";
import { kubeConfig, uniqueName } from "../support/env.ts";

describe("EventRecorder against the real API server", () => {
  const kc = kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const eventsApi = kc.makeApiClient(EventsV1Api);
  const namespace = uniqueName("events");
  let subject: V1ConfigMap;

  beforeAll(async () => {
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    subject = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "orders" } } });
    subject = { ...subject, apiVersion: "v1", kind: "ConfigMap" };
  });

  afterAll(async () => {
    await core.deleteNamespace({ name: namespace });
  });

  const eventsAbout = async (name: string, ns = namespace): Promise<EventsV1Event[]> =>
    (await eventsApi.listNamespacedEvent({ namespace: ns })).items.filter((e) => e.regarding?.name === name);

  it("creates one Event and counts repeats of it as a series instead of new Events", async () => {
    const errors: unknown[] = [];
    const recorder = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: "syncgov-0",
      onError: (e) => errors.push(e),
    });
    const blocked = {
      type: "Warning" as const,
      reason: "Blocked",
      action: "Admit",
      note: "policy baseline-limits: at most 3 runs in namespace payments",
    };
    await recorder.record(subject, blocked);
    await recorder.record(subject, blocked);
    await recorder.record(subject, blocked);
    await recorder.record(subject, {
      ...blocked,
      note: "policy baseline-limits: at most 2 runs in namespace payments",
    });
    expect(errors).toEqual([]);

    const events = await eventsAbout("orders");
    expect(events).toHaveLength(2);
    const repeated = events.find((e) => e.note === blocked.note);
    expect(repeated).toMatchObject({
      type: "Warning",
      reason: "Blocked",
      action: "Admit",
      reportingController: "syncgov.io/controller",
      reportingInstance: "syncgov-0",
      regarding: { kind: "ConfigMap", name: "orders", namespace, uid: subject.metadata?.uid },
    });
    expect(repeated?.series?.count).toBe(3);
    const single = events.find((e) => e.note !== blocked.note);
    expect(single?.series).toBeUndefined();
  });

  it("creates one Event for concurrent identical records", async () => {
    const recorder = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: "syncgov-0",
    });
    const admitted = {
      type: "Normal" as const,
      reason: "Admitted",
      note: "run started: 1/3 running in namespace",
    };
    await Promise.all([1, 2, 3, 4].map(() => recorder.record(subject, admitted)));
    const events = (await eventsAbout("orders")).filter((e) => e.reason === "Admitted");
    expect(events).toHaveLength(1);
    expect(events[0]?.series?.count).toBe(4);
    expect(events[0]?.action).toBe("Admitted");
  });

  it("starts a new Event once the window since the last repeat has passed", async () => {
    let now = Date.now();
    const recorder = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: "syncgov-0",
      windowMs: 60_000,
      now: () => now,
    });
    const opened = { type: "Warning" as const, reason: "BreakerOpened", note: "slow-call rate 80% over 50%" };
    await recorder.record(subject, opened);
    now += 59_000;
    await recorder.record(subject, opened);
    now += 61_000;
    await recorder.record(subject, opened);
    const events = (await eventsAbout("orders")).filter((e) => e.reason === "BreakerOpened");
    expect(events.map((e) => e.series?.count ?? 1).sort()).toEqual([1, 2]);
  });

  it("cuts a note longer than the API's 1 kB limit at a character boundary", async () => {
    const errors: unknown[] = [];
    const recorder = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: "syncgov-0",
      onError: (e) => errors.push(e),
    });
    await recorder.record(subject, { type: "Warning", reason: "LongNote", note: "Überlauf ".repeat(200) });
    expect(errors).toEqual([]);
    const [event] = (await eventsAbout("orders")).filter((e) => e.reason === "LongNote");
    expect(Buffer.byteLength(event?.note ?? "")).toBeLessThanOrEqual(1024);
    expect(event?.note).toMatch(/^Überlauf Überlauf .*\.\.\.$/s);
    expect(event?.note).not.toContain("\uFFFD");
  });

  it("puts events about cluster-scoped objects in the default namespace and reports bad objects", async () => {
    const errors: unknown[] = [];
    const recorder = new EventRecorder({
      kubeConfig: kc,
      controller: "syncgov.io/controller",
      instance: "syncgov-0",
      onError: (e) => errors.push(e),
    });
    const ns = await core.readNamespace({ name: namespace });
    await recorder.record(
      { ...ns, apiVersion: "v1", kind: "Namespace" },
      {
        type: "Normal",
        reason: "PolicyMatched",
        note: "namespace matched by policy baseline-limits",
      },
    );
    const events = await eventsAbout(namespace, "default");
    expect(events).toHaveLength(1);
    expect(events[0]?.regarding).toMatchObject({ kind: "Namespace", name: namespace });

    await recorder.record({ metadata: { name: "no-kind" } }, { type: "Normal", reason: "X", note: "y" });
    expect(errors).toHaveLength(1);
  });
});
