import { connect, createServer, type Server, type Socket } from "node:net";
import {
  CoreV1Api,
  type CoreV1Event,
  KubeConfig,
  type KubernetesObject,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Informer, type InformerObserver } from "../../controller/kube/informer.ts";
import { objectKey } from "../../controller/kube/resource.ts";
import { kubeConfig, testEnv, uniqueName } from "../support/env.ts";

const configMaps = { group: "", version: "v1", plural: "configmaps", namespaced: true };
const events = { group: "", version: "v1", plural: "events", namespaced: true };

/** Polls until `check` stops throwing, or fails with its last error. */
async function eventually(check: () => void | Promise<void>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * A TCP relay between a client and the API server that the test can cut: a real network partition
 * for the client (TLS passes through untouched; the server certificate names 127.0.0.1).
 */
class Partition {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #cut = false;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async between(target: URL): Promise<Partition> {
    const server = createServer();
    const partition = new Partition(server);
    server.on("connection", (client) => partition.#relay(client, target));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return partition;
  }

  get url(): string {
    const address = this.#server.address();
    if (typeof address !== "object" || address === null) throw new Error("relay not listening");
    return `https://127.0.0.1:${address.port}`;
  }

  /** A KubeConfig like `base` whose cluster is reached through this relay. */
  kubeConfig(base: KubeConfig): KubeConfig {
    const cluster = base.getCurrentCluster();
    if (!cluster) throw new Error("no current cluster");
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ ...cluster, server: this.url }],
      users: base.users,
      contexts: base.contexts,
      currentContext: base.getCurrentContext(),
    });
    return kc;
  }

  /** Drops every open connection and refuses new ones until heal(). */
  sever(): void {
    this.#cut = true;
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
  }

  heal(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    this.sever();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #relay(client: Socket, target: URL): void {
    if (this.#cut) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

/** Compacts etcd at its current revision: every older resourceVersion is gone from etcd. */
async function compactEtcd(): Promise<string> {
  const etcd = testEnv().etcd;
  const range = await fetch(`${etcd}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: "AA==" }) });
  const revision = ((await range.json()) as { header: { revision: string } }).header.revision;
  const compaction = await fetch(`${etcd}/v3/kv/compaction`, {
    method: "POST",
    body: JSON.stringify({ revision, physical: true }),
  });
  expect(compaction.status).toBe(200);
  return revision;
}

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
  const kc = kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = uniqueName("informer");
  const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    await core.createNamespace({ body: { metadata: { name: namespace } } });
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await core.deleteNamespace({ name: namespace });
  });

  const configMap = (ns: string, name: string, data: Record<string, string> = {}): V1ConfigMap => ({
    metadata: { name, namespace: ns },
    data,
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
    await eventually(() =>
      expect(seen.slice(1)).toEqual([
        { type: "add", key: `${ns}/orders`, resourceVersion: created.metadata?.resourceVersion },
        {
          type: "update",
          key: `${ns}/orders`,
          resourceVersion: updated.metadata?.resourceVersion,
          oldResourceVersion: created.metadata?.resourceVersion,
        },
        { type: "delete", key: `${ns}/orders`, finalStateUnknown: false },
      ]),
    );
    expect(informer.get(`${ns}/orders`)).toBeUndefined();
    expect(informer.list(ns).map(objectKey)).toEqual([`${ns}/before`]);
    // Two adds and one update reached the broken handlers; each failure was reported and contained.
    await eventually(() => expect(state.handlerFailures).toBe(3));
    expect(state.failures).toBe(0);

    // A handler added late first receives the objects already known.
    const late: string[] = [];
    informer.on({ add: (o) => late.push(objectKey(o)) });
    expect(late).toEqual([`${ns}/before`]);
    await informer.stop();
  });

  it("reconnects with backoff after a network partition and misses nothing made meanwhile", async () => {
    const ns = uniqueName("informer-cut");
    await core.createNamespace({ body: { metadata: { name: ns } } });
    cleanups.push(async () => {
      await core.deleteNamespace({ name: ns });
    });
    for (const name of ["kept", "changed", "removed"]) {
      await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, name, { v: "0" }) });
    }
    const partition = await Partition.between(new URL(kc.getCurrentCluster()!.server));
    cleanups.push(() => partition.close());
    const state = observe();
    const informer = new Informer({
      kubeConfig: partition.kubeConfig(kc),
      resource: configMaps,
      namespace: ns,
      backoff: { initialMs: 100, maxMs: 400 },
      observer: state.observer,
    });
    cleanups.push(() => informer.stop());
    const seen = record(informer);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(10_000));
    // Let the watch connect before the partition: otherwise this only tests the first connection.
    await new Promise((resolve) => setTimeout(resolve, 500));

    partition.sever();
    await eventually(() => expect(state.failures).toBeGreaterThanOrEqual(2));
    await core.patchNamespacedConfigMap(
      { namespace: ns, name: "changed", body: { data: { v: "1" } } },
      mergePatch,
    );
    await core.deleteNamespacedConfigMap({ namespace: ns, name: "removed" });
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "added", { v: "1" }) });
    await compactEtcd();
    partition.heal();

    await eventually(async () => {
      const truth = await core.listNamespacedConfigMap({ namespace: ns });
      expect(informer.keys().sort()).toEqual(truth.items.map((c) => `${ns}/${c.metadata?.name}`).sort());
      expect(informer.get(`${ns}/changed`)?.metadata?.resourceVersion).toBe(
        truth.items.find((c) => c.metadata?.name === "changed")?.metadata?.resourceVersion,
      );
    });
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
    const ns = uniqueName("informer-gone");
    await core.createNamespace({ body: { metadata: { name: ns } } });
    cleanups.push(async () => {
      await core.deleteNamespace({ name: ns });
    });
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
    const partition = await Partition.between(new URL(kc.getCurrentCluster()!.server));
    cleanups.push(() => partition.close());
    const state = observe();
    const informer = new Informer({
      kubeConfig: partition.kubeConfig(kc),
      resource: events,
      namespace: ns,
      backoff: { initialMs: 100, maxMs: 400 },
      observer: state.observer,
    });
    cleanups.push(() => informer.stop());
    const seen = record(informer);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(10_000));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const staleVersion = informer.resourceVersion;

    partition.sever();
    await eventually(() => expect(state.failures).toBeGreaterThanOrEqual(2));
    await core.patchNamespacedEvent(
      { namespace: ns, name: "changed", body: { message: "second" } },
      mergePatch,
    );
    await core.deleteNamespacedEvent({ namespace: ns, name: "removed" });
    await core.createNamespacedEvent({ namespace: ns, body: event("added", "first") });
    const compactedAt = await compactEtcd();
    expect(Number(compactedAt)).toBeGreaterThan(Number(staleVersion));
    partition.heal();

    await eventually(() => expect(state.lists).toEqual(["initial", "expired"]));
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
