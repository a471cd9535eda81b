import type { KubernetesObject } from "@kubernetes/client-node";
import { ClusterCache } from "../../controller/cache/cluster.ts";
import { type StoredKind, stored } from "../../controller/cache/objects.ts";
import type { EventRecord } from "../../controller/kube/events.ts";
import type { KubeWrites, StatusWrite } from "../../controller/kube/writes.ts";

/** An API error as client-node raises it: statusCodeOf() reads `code`. */
class FakeApiError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * KubeWrites in memory, for the controllers' unit tests (never for integration tests): it keeps the
 * objects it was given and what was written, answers as the API server would (409 on a create of an
 * existing name or a stale resourceVersion, 404 on a status write to a missing object), and bumps
 * resourceVersion on every write.
 */
export class FakeKubeWrites implements KubeWrites {
  readonly objects = new Map<string, KubernetesObject>();
  readonly created: KubernetesObject[] = [];
  readonly deleted: string[] = [];
  readonly statusWrites: StatusWrite[] = [];
  readonly events: { regarding: string; event: EventRecord }[] = [];
  #version = 1000;

  constructor(objects: readonly KubernetesObject[] = []) {
    for (const o of objects)
      this.objects.set(keyOf(o.kind ?? "", o.metadata?.namespace, o.metadata?.name ?? ""), o);
  }

  async createRun(namespace: string, run: KubernetesObject): Promise<KubernetesObject | undefined> {
    const key = keyOf("SyncRun", namespace, run.metadata?.name ?? "");
    if (this.objects.has(key)) return undefined;
    const stored = {
      ...run,
      metadata: {
        ...run.metadata,
        namespace,
        resourceVersion: String(++this.#version),
        creationTimestamp: "2026-01-01T00:00:00Z",
      },
    } as unknown as KubernetesObject;
    this.objects.set(key, stored);
    this.created.push(stored);
    return stored;
  }

  async deleteRun(namespace: string, name: string): Promise<void> {
    this.objects.delete(keyOf("SyncRun", namespace, name));
    this.deleted.push(`${namespace}/${name}`);
  }

  async patchStatus(write: StatusWrite): Promise<KubernetesObject> {
    const kind =
      { syncjobs: "SyncJob", syncruns: "SyncRun", syncpolicies: "SyncPolicy" }[write.resource.plural] ?? "";
    const key = keyOf(kind, write.namespace, write.name);
    const current = this.objects.get(key);
    if (!current) throw new FakeApiError(404, `${key} not found`);
    if (write.resourceVersion !== undefined && write.resourceVersion !== current.metadata?.resourceVersion)
      throw new FakeApiError(409, `${key} was modified`);
    this.statusWrites.push(write);
    const status = mergePatch((current as { status?: unknown }).status ?? {}, write.status);
    const next = {
      ...current,
      metadata: { ...current.metadata, resourceVersion: String(++this.#version) },
      status,
    };
    this.objects.set(key, next);
    return next;
  }

  async recordEvent(regarding: KubernetesObject, event: EventRecord): Promise<void> {
    this.events.push({
      regarding: `${regarding.metadata?.namespace ?? ""}/${regarding.metadata?.name ?? ""}`,
      event,
    });
  }

  /** The status written last to the object, merged as the API server keeps it. */
  statusOf(kind: string, namespace: string | undefined, name: string): Record<string, unknown> | undefined {
    return (
      this.objects.get(keyOf(kind, namespace, name)) as { status?: Record<string, unknown> } | undefined
    )?.status;
  }
}

function keyOf(kind: string, namespace: string | undefined, name: string): string {
  return namespace ? `${kind}/${namespace}/${name}` : `${kind}/${name}`;
}

/** A cluster cache holding the given objects, as the informers would have delivered them. */
export function cacheOf(objects: readonly KubernetesObject[]): ClusterCache {
  const cache = new ClusterCache();
  cache.apply(objects.map((o) => ({ type: "ADDED" as const, object: stored(o.kind as StoredKind, o) })));
  return cache;
}

/** RFC 7386 JSON merge patch, as the API server applies a status write. */
function mergePatch(target: unknown, patch: unknown): Record<string, unknown> {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch))
    return patch as Record<string, unknown>;
  const out: Record<string, unknown> =
    target !== null && typeof target === "object" && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = typeof v === "object" && !Array.isArray(v) ? mergePatch(out[k], v) : v;
  }
  return out;
}
