import {
  EventsV1Api,
  type EventsV1Event,
  type KubeConfig,
  type KubernetesObject,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
  type V1ObjectReference,
} from "@kubernetes/client-node";
import { isNotFound } from "./resource.ts";

export type EventType = "Normal" | "Warning";

export interface EventRecord {
  type: EventType;
  /** CamelCase word a script can match, e.g. "Blocked", "BreakerOpened". */
  reason: string;
  /** What the controller did, e.g. "Admit", "Divert"; defaults to the reason. */
  action?: string;
  /**
   * A sentence a person can act on. It is stored as given (cut to the API's 1 kB limit): callers
   * never put connection strings, credentials or row data in it, and the recorder adds nothing
   * from the object beyond its identity.
   */
  note: string;
}

export interface EventRecorderOptions {
  kubeConfig: KubeConfig;
  /** The controller's name, e.g. "syncgov.io/controller" (events.k8s.io reportingController). */
  controller: string;
  /** This replica, e.g. the pod name (reportingInstance). */
  instance: string;
  /** Identical events within this time of the last one extend its series. Default 10 minutes. */
  windowMs?: number;
  /** How many distinct events are remembered for de-duplication. Default 4096. */
  maxTracked?: number;
  /** Wall clock in ms; injectable for tests. */
  now?: () => number;
  /** Called when an event could not be written; recording never throws. */
  onError?(error: unknown, event: EventRecord): void;
}

interface Series {
  namespace: string;
  name: string;
  count: number;
  lastSeen: number;
}

const NOTE_LIMIT = 1024;

/**
 * Records events.k8s.io/v1 Events about objects, for `kubectl describe` and `kubectl events`. An
 * event identical to a recent one (same object, type, reason, action and note, within the window)
 * does not create a new Event: the existing one's series count and lastObservedTime move on, as
 * client-go's event recorder does, so a reconcile loop that repeats a decision shows "x5" instead
 * of five lines.
 */
export class EventRecorder {
  readonly #api: EventsV1Api;
  readonly #options: EventRecorderOptions;
  readonly #series = new Map<string, Series>();
  /** Per-key chains, so that concurrent identical events create one Event and then count. */
  readonly #pending = new Map<string, Promise<void>>();

  constructor(options: EventRecorderOptions) {
    this.#options = options;
    this.#api = options.kubeConfig.makeApiClient(EventsV1Api);
  }

  /** Records an event about `regarding`; resolves when written (or failed, reported to onError). */
  record(regarding: KubernetesObject, event: EventRecord): Promise<void> {
    let reference: V1ObjectReference;
    try {
      reference = referenceTo(regarding);
    } catch (error) {
      this.#report(error, event);
      return Promise.resolve();
    }
    const note = limitNote(event.note);
    const action = event.action ?? event.reason;
    const key = JSON.stringify([
      reference.uid ?? "",
      reference.apiVersion,
      reference.kind,
      reference.namespace ?? "",
      reference.name,
      event.type,
      event.reason,
      action,
      note,
    ]);
    const previous = this.#pending.get(key) ?? Promise.resolve();
    const next = previous.then(() =>
      this.#write(key, reference, { ...event, action, note }).catch((error: unknown) =>
        this.#report(error, event),
      ),
    );
    this.#pending.set(key, next);
    void next.then(() => {
      if (this.#pending.get(key) === next) this.#pending.delete(key);
    });
    return next;
  }

  async #write(
    key: string,
    regarding: V1ObjectReference,
    event: Required<Pick<EventRecord, "action">> & EventRecord,
  ): Promise<void> {
    const now = (this.#options.now ?? Date.now)();
    const windowMs = this.#options.windowMs ?? 10 * 60_000;
    const series = this.#series.get(key);
    if (series && now - series.lastSeen <= windowMs) {
      try {
        await this.#api.patchNamespacedEvent(
          {
            namespace: series.namespace,
            name: series.name,
            body: { series: { count: series.count + 1, lastObservedTime: new V1MicroTime(now) } },
          },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        );
        series.count += 1;
        series.lastSeen = now;
        this.#touch(key, series);
        return;
      } catch (error) {
        // The Event expired (the API server keeps them for an hour) or was deleted: start anew.
        if (!isNotFound(error)) throw error;
      }
    }
    // Cluster-scoped objects get their events in "default", as client-go does.
    const namespace = regarding.namespace || "default";
    const body: EventsV1Event = {
      metadata: { name: eventName(regarding.name ?? "", now), namespace },
      eventTime: new V1MicroTime(now),
      reportingController: this.#options.controller,
      reportingInstance: this.#options.instance,
      action: event.action,
      reason: event.reason,
      type: event.type,
      note: event.note,
      regarding,
    };
    const created = await this.#api.createNamespacedEvent({ namespace, body });
    this.#touch(key, { namespace, name: created.metadata?.name ?? "", count: 1, lastSeen: now });
  }

  #report(error: unknown, event: EventRecord): void {
    try {
      this.#options.onError?.(error, event);
    } catch {
      // Recording is best effort; a failing error hook changes nothing.
    }
  }

  /** Remembers the series as most recently used, forgetting the least recently used beyond the limit. */
  #touch(key: string, series: Series): void {
    this.#series.delete(key);
    this.#series.set(key, series);
    const limit = this.#options.maxTracked ?? 4096;
    while (this.#series.size > limit) {
      const oldest = this.#series.keys().next().value;
      if (oldest === undefined) break;
      this.#series.delete(oldest);
    }
  }
}

/** The API limits a note to 1 kB (bytes of UTF-8); longer notes are cut at a character boundary. */
function limitNote(note: string): string {
  if (Buffer.byteLength(note) <= NOTE_LIMIT) return note;
  const cut = Buffer.from(note)
    .subarray(0, NOTE_LIMIT - 3)
    .toString("utf8")
    .replace(/\uFFFD+$/, "");
  return `${cut}...`;
}

/**
 * client-go names events "<object>.<unix nanoseconds in hex>"; the sub-millisecond digits are random
 * here, so two events about one object in the same millisecond do not collide.
 */
function eventName(objectName: string, nowMs: number): string {
  const nanos = BigInt(nowMs) * 1_000_000n + BigInt(Math.floor(Math.random() * 1_000_000));
  return `${objectName.slice(0, 253 - 17)}.${nanos.toString(16)}`;
}

/** An ObjectReference naming `object`; its content is identity only, never spec or data. */
export function referenceTo(object: KubernetesObject): V1ObjectReference {
  const { apiVersion, kind, metadata } = object;
  if (!apiVersion || !kind || !metadata?.name) {
    throw new Error("an event needs an object with apiVersion, kind and metadata.name");
  }
  const reference: V1ObjectReference = { apiVersion, kind, name: metadata.name };
  if (metadata.namespace) reference.namespace = metadata.namespace;
  if (metadata.uid) reference.uid = metadata.uid;
  if (metadata.resourceVersion) reference.resourceVersion = metadata.resourceVersion;
  return reference;
}
