import type { CoreV1Event, KubernetesObject, V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Informer, type InformerObserver } from "../../controller/kube/informer.ts";
import { objectKey, type ResourceType } from "../../controller/kube/resource.ts";
import { uniqueName } from "../support/env.ts";
import { apiServerAddress, compactEtcd } from "../support/etcd.ts";
import { FaultProxy } from "../support/fault-proxy.ts";
import { kubeClients, kubeConfigThrough, mergePatch, ScratchNamespaces } from "../support/kube.ts";
import { eventuallyPasses } from "../support/polling.ts";

const configMaps = { group: "", version: "v1", plural: "configmaps", namespaced: true };
const events = { group: "", version: "v1", plural: "events", namespaced: true };

/** How long a change may take to reach an informer before a test fails. */
const WAIT_MS = 15_000;

interface Seen {
  type: "add" | "update" | "delete";
  key: string;
  resourceVersion?: string;
  oldResourceVersion?: string;
  finalStateUnknown?: boolean;
}

/** Registers handlers that record every event, plus one that always throws and one that rejects. */
function record(informer: Informer<KubernetesObject>): Seen[] {
  const seen: Seen[] = [];
  informer.on({
    add: () => {
      throw new Error("a broken handler");
    },
    update: async () => {
      throw new Error("a broken async handler");
    },
  });
  informer.on({
    add: (o) => seen.push({ type: "add", key: objectKey(o), resourceVersion: o.metadata?.resourceVersion }),
    update: (old, o) =>
      seen.push({
        type: "update",
        key: objectKey(o),
        resourceVersion: o.metadata?.resourceVersion,
        oldResourceVersion: old.metadata?.resourceVersion,
      }),
    delete: (o, info) =>
      seen.push({ type: "delete", key: objectKey(o), finalStateUnknown: info.finalStateUnknown }),
  });
  return seen;
}

function observe(): {
  observer: InformerObserver;
  lists: string[];
  failures: number;
  handlerFailures: number;
} {
  const state = {
    lists: [] as string[],
    failures: 0,
    handlerFailures: 0,
    observer: {} as InformerObserver,
  };
  state.observer = {
    listed: (info) => state.lists.push(info.reason),
    failed: () => {
      state.failures++;
    },
    handlerFailed: () => {
      state.handlerFailures++;
    },
  };
  return state;
}

describe("Informer against the real API server", () => {
  const { kubeConfig: kc, core } = kubeClients();
  const namespace = uniqueName("informer");
  const cleanups: Array<() => Promise<void>> = [];
  const namespaces = new ScratchNamespaces(core);

  beforeAll(async () => {
    await core.createNamespace({ body: { metadata: { name: namespace } } });
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await core.deleteNamespace({ name: namespace });
    await namespaces.deleteAll();
  });

  const configMap = (ns: string, name: string, data: Record<string, string> = {}): V1ConfigMap => ({
    metadata: { name, namespace: ns },
    data,
  });

  /**
   * A started informer on ns that reaches the API server through a fault proxy, synced and with its
   * watch given time to connect (otherwise a partition would only test the first connection).
   */
  async function syncedThroughProxy(ns: string, resource: ResourceType) {
    const proxy = await FaultProxy.start(apiServerAddress());
    cleanups.push(() => proxy.close());
    const state = observe();
    const informer = new Informer({
      kubeConfig: kubeConfigThrough(proxy, ns),
      resource,
      namespace: ns,
      backoff: { initialMs: 100, maxMs: 400 },
      observer: state.observer,
    });
    cleanups.push(() => informer.stop());
    const seen = record(informer);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(10_000));
    await new Promise((resolve) => setTimeout(resolve, 500));
    return { proxy, state, informer, seen };
  }

  /** Cuts the informer off until proxy.refuse(false); returns once it has failed to reconnect twice. */
  async function partition(proxy: FaultProxy, state: ReturnType<typeof observe>): Promise<void> {
    proxy.refuse(true);
    proxy.cutConnections();
    await eventuallyPasses(
      "two failed reconnects",
      () => expect(state.failures).toBeGreaterThanOrEqual(2),
      WAIT_MS,
    );
  }

  it("lists every page: more objects than one page holds all reach the store", async () => {
    const ns = await namespaces.create("paged");
    for (let i = 0; i < 7; i++)
      await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, `page-${i}`) });
    const informer = new Informer({ kubeConfig: kc, resource: configMaps, namespace: ns, pageSize: 2 });
    cleanups.push(() => informer.stop());
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(10_000));
    // 7 ConfigMaps plus the namespace's kube-root-ca.crt (absent here: no controller-manager) in pages of 2.
    expect(
      informer
        .keys()
        .filter((k) => k.includes("/page-"))
        .sort(),
    ).toEqual(Array.from({ length: 7 }, (_, i) => `${ns}/page-${i}`));
  });

  it("lists, then sees adds, updates and deletes; failing handlers do not stop it", async () => {
    const ns = namespace;
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "before", { v: "0" }) });
    const state = observe();
    const informer = new Informer({
      kubeConfig: kc,
      resource: configMaps,
      namespace: ns,
      observer: state.observer,
    });
    cleanups.push(() => informer.stop());
    const seen = record(informer);
    expect(informer.hasSynced()).toBe(false);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(10_000));
    expect(informer.hasSynced()).toBe(true);
    expect(state.lists).toEqual(["initial"]);
    expect(seen).toEqual([
      {
        type: "add",
        key: `${ns}/before`,
        resourceVersion: informer.get(`${ns}/before`)?.metadata?.resourceVersion,
      },
    ]);
    // Listed objects carry kind and apiVersion like watched ones.
    expect(informer.get(`${ns}/before`)).toMatchObject({
      kind: "ConfigMap",
      apiVersion: "v1",
      data: { v: "0" },
    });

    const created = await core.createNamespacedConfigMap({
      namespace: ns,
      body: configMap(ns, "orders", { v: "1" }),
    });
    const updated = await core.patchNamespacedConfigMap(
      { namespace: ns, name: "orders", body: { data: { v: "2" } } },
      mergePatch,
    );
    await core.deleteNamespacedConfigMap({ namespace: ns, name: "orders" });
    await eventuallyPasses(
      "the add, update and delete of orders",
      async () => {
        expect(seen.slice(1)).toEqual([
          { type: "add", key: `${ns}/orders`, resourceVersion: created.metadata?.resourceVersion },
          {
            type: "update",
            key: `${ns}/orders`,
            resourceVersion: updated.metadata?.resourceVersion,
            oldResourceVersion: created.metadata?.resourceVersion,
          },
          { type: "delete", key: `${ns}/orders`, finalStateUnknown: false },
        ]);
      },
      WAIT_MS,
    );
    expect(informer.get(`${ns}/orders`)).toBeUndefined();
    expect(informer.list(ns).map(objectKey)).toEqual([`${ns}/before`]);
    // Two adds and one update reached the broken handlers; each failure was reported and contained.
    await eventuallyPasses("three handler failures", () => expect(state.handlerFailures).toBe(3), WAIT_MS);
    expect(state.failures).toBe(0);

    // A handler added late first receives the objects already known.
    const late: string[] = [];
    informer.on({ add: (o) => late.push(objectKey(o)) });
    expect(late).toEqual([`${ns}/before`]);
    await informer.stop();
  });

  it("reconnects with backoff after a network partition and misses nothing made meanwhile", async () => {
    const ns = await namespaces.create("informer-cut");
    for (const name of ["kept", "changed", "removed"]) {
      await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, name, { v: "0" }) });
    }
    const { proxy, state, informer, seen } = await syncedThroughProxy(ns, configMaps);
    await partition(proxy, state);
    await core.patchNamespacedConfigMap(
      { namespace: ns, name: "changed", body: { data: { v: "1" } } },
      mergePatch,
    );
    await core.deleteNamespacedConfigMap({ namespace: ns, name: "removed" });
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "added", { v: "1" }) });
    await compactEtcd();
    proxy.refuse(false);

    await eventuallyPasses(
      "the informer's cache to match the API server",
      async () => {
        const truth = await core.listNamespacedConfigMap({ namespace: ns });
        expect(informer.keys().sort()).toEqual(truth.items.map((c) => `${ns}/${c.metadata?.name}`).sort());
        expect(informer.get(`${ns}/changed`)?.metadata?.resourceVersion).toBe(
          truth.items.find((c) => c.metadata?.name === "changed")?.metadata?.resourceVersion,
        );
      },
      WAIT_MS,
    );
    const afterSync = seen.slice(3).map(({ type, key }) => ({ type, key }));
    expect(afterSync).toEqual(
      expect.arrayContaining([
        { type: "update", key: `${ns}/changed` },
        { type: "delete", key: `${ns}/removed` },
        { type: "add", key: `${ns}/added` },
      ]),
    );
    expect(afterSync).toHaveLength(3);
    await informer.stop();
  });

  it("relists after 410 Gone from a compacted resourceVersion and emits the deletes it missed", async () => {
    // Events, because the API server serves them without its watch cache (kube-apiserver's default
    // watch-cache sizes disable it for events), so a watch from a compacted resourceVersion reaches
    // etcd and is answered 410. ConfigMaps are served from the watch cache, which keeps history
    // back to the API server's start and answers such a watch from memory, as the test above shows.
    const ns = await namespaces.create("informer-gone");
    const event = (name: string, message: string): CoreV1Event => ({
      metadata: { name, namespace: ns },
      involvedObject: { apiVersion: "v1", kind: "ConfigMap", name: "orders", namespace: ns },
      reason: "Tested",
      message,
      type: "Normal",
    });
    for (const name of ["kept", "changed", "removed"]) {
      await core.createNamespacedEvent({ namespace: ns, body: event(name, "first") });
    }
    const { proxy, state, informer, seen } = await syncedThroughProxy(ns, events);
    const staleVersion = informer.resourceVersion;
    await partition(proxy, state);
    await core.patchNamespacedEvent(
      { namespace: ns, name: "changed", body: { message: "second" } },
      mergePatch,
    );
    await core.deleteNamespacedEvent({ namespace: ns, name: "removed" });
    await core.createNamespacedEvent({ namespace: ns, body: event("added", "first") });
    const compactedAt = await compactEtcd();
    expect(Number(compactedAt)).toBeGreaterThan(Number(staleVersion));
    proxy.refuse(false);

    await eventuallyPasses(
      "a relist after 410 Gone",
      () => expect(state.lists).toEqual(["initial", "expired"]),
      WAIT_MS,
    );
    const truth = await core.listNamespacedEvent({ namespace: ns });
    expect(informer.keys().sort()).toEqual(truth.items.map((e) => `${ns}/${e.metadata?.name}`).sort());
    expect((informer.get(`${ns}/changed`) as CoreV1Event | undefined)?.message).toBe("second");
    expect(seen.slice(3)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ type: "update", key: `${ns}/changed` }),
        { type: "delete", key: `${ns}/removed`, finalStateUnknown: true },
        expect.objectContaining({ type: "add", key: `${ns}/added` }),
      ]),
    );
    expect(seen.slice(3)).toHaveLength(3);
    expect(informer.resourceVersion).not.toBe(staleVersion);
    await informer.stop();
  });
});
