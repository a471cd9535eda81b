import {
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  type RequestContext,
  type ResponseContext,
  Watch,
} from "@kubernetes/client-node";
import { collectionPath, isExpired, objectKey, type ResourceType, statusCodeOf } from "./resource.ts";

/**
 * Event handlers for an informer. They run synchronously in event order (a returned promise is not
 * awaited); a handler that throws or rejects is reported to the observer and does not affect the
 * informer or the other handlers.
 * Objects are the API server's JSON as is (timestamps are strings, not Dates).
 */
export interface InformerHandlers<T extends KubernetesObject> {
  add?(object: T): unknown;
  update?(oldObject: T, newObject: T): unknown;
  /**
   * `finalStateUnknown` is true for a deletion learned by relisting (client-go's
   * DeletedFinalStateUnknown tombstone): `object` is the last state the informer saw, not the
   * object's state when it was deleted.
   */
  delete?(object: T, info: { finalStateUnknown: boolean }): unknown;
}

export type InformerEventType = "add" | "update" | "delete";

/** What an informer reports about itself, for logs and metrics. */
export interface InformerObserver {
  /** A full list replaced the store: the first one, or one after the watch expired (410 Gone). */
  listed?(info: { reason: "initial" | "expired"; resourceVersion: string; objects: number }): void;
  /** A list or watch failed; the informer tries again after `retryInMs`. */
  failed?(error: unknown, info: { phase: "list" | "watch"; retryInMs: number }): void;
  handlerFailed?(error: unknown, info: { event: InformerEventType; key: string }): void;
}

export interface InformerOptions {
  kubeConfig: KubeConfig;
  resource: ResourceType;
  /** Watch one namespace of a namespaced type; all namespaces when absent. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Objects per list page. Default 500. */
  pageSize?: number;
  /** Backoff between failed attempts: doubling from initialMs up to maxMs. Default 800 ms to 30 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /**
   * How long the API server keeps one watch open before closing it (the informer then resumes from
   * the last resourceVersion). Default: random between 5 and 10 minutes, as client-go, so that many
   * informers do not reconnect in step.
   */
  watchTimeoutSeconds?: number;
  observer?: InformerObserver;
}

/** What a relist changes, computed against the store it replaces. */
export interface RelistDelta<T extends KubernetesObject> {
  added: T[];
  updated: Array<{ oldObject: T; newObject: T }>;
  /** Known objects missing from the list: deleted while the informer was not watching. */
  deleted: T[];
  store: Map<string, T>;
}

/**
 * Compares a fresh list with the store. An object whose resourceVersion is unchanged yields no
 * event: a relist must not look like a burst of updates.
 */
export function relistDelta<T extends KubernetesObject>(
  known: ReadonlyMap<string, T>,
  listed: readonly T[],
): RelistDelta<T> {
  const store = new Map<string, T>();
  const added: T[] = [];
  const updated: Array<{ oldObject: T; newObject: T }> = [];
  for (const object of listed) {
    const key = objectKey(object);
    store.set(key, object);
    const previous = known.get(key);
    if (!previous) added.push(object);
    else if (previous.metadata?.resourceVersion !== object.metadata?.resourceVersion) {
      updated.push({ oldObject: previous, newObject: object });
    }
  }
  const deleted = [...known].filter(([key]) => !store.has(key)).map(([, object]) => object);
  return { added, updated, deleted, store };
}

interface ListPage<T> {
  apiVersion?: string;
  kind?: string;
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[];
}

/**
 * Lists any resource as raw JSON over client-node's transport (auth, TLS, middleware). The typed
 * clients deserialize into model classes (Dates, dropped unknown fields) and would disagree with
 * the raw objects the watch delivers; KubernetesObjectApi.list needs a kind and discovery.
 */
class RawListClient extends KubernetesObjectApi {
  listPage<T>(path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage<T>> {
    const context: RequestContext = this.configuration.baseServer.makeRequestContext(path, "GET");
    context.setHeaderParam("Accept", "application/json");
    context.setSignal(signal);
    for (const [name, value] of Object.entries(query)) context.setQueryParam(name, value);
    return this.requestPromise(context, RAW_JSON) as Promise<ListPage<T>>;
  }

  /**
   * A successful list is handed back as the server's JSON, untouched: client-node's deserializer
   * (even for type "any") goes through KubernetesObject.fromUnknown, which drops list metadata such as
   * `continue`, so every list would stop after its first page.
   */
  protected override async processResponse<R extends KubernetesObject>(
    response: ResponseContext,
    type?: string,
  ): Promise<R> {
    if (type === RAW_JSON && response.httpStatusCode >= 200 && response.httpStatusCode <= 299) {
      return JSON.parse(await response.body.text()) as R;
    }
    return super.processResponse<R>(response, type);
  }
}

const RAW_JSON = "syncgov:raw-json";

/** Raised inside the watch loop for a watch ERROR event that is not a 410. */
class WatchStatusError extends Error {
  readonly code: number | undefined;
  constructor(status: { code?: number; message?: string; reason?: string }) {
    super(status.message ?? status.reason ?? "watch error event");
    this.code = status.code;
  }
}

type WatchOutcome = "expired" | "closed" | "empty";

/**
 * An informer (client-go's reflector + store + handlers) for one resource type: it lists, then
 * watches from the list's resourceVersion with bookmarks, keeps an in-memory store, and calls
 * handlers for adds, updates and deletes.
 *
 * It is hand-written rather than client-node's makeInformer/ListWatch because ListWatch stops for
 * good on any list or watch error other than 410 (it only emits "error" and leaves restarting to
 * the caller), has no hasSynced, and lets a throwing handler break its event loop. Here:
 * - 410 Gone (HTTP status or ERROR event) → relist, and emit the difference: adds, updates, and
 *   deletes (with finalStateUnknown) for objects that vanished meanwhile;
 * - any other error, or a watch that closes without delivering anything → retry with capped
 *   exponential backoff, resuming from the last resourceVersion;
 * - a watch the server closes after its timeout → resume at once.
 */
export class Informer<T extends KubernetesObject = KubernetesObject> {
  readonly #options: InformerOptions;
  readonly #path: string;
  readonly #watch: Watch;
  readonly #lister: RawListClient;
  readonly #handlers = new Set<InformerHandlers<T>>();
  #store = new Map<string, T>();
  #resourceVersion = "";
  #synced = false;
  readonly #syncWaiters = new Set<{ resolve: () => void; reject: (error: Error) => void }>();
  readonly #stop = new AbortController();
  #currentWatch: AbortController | undefined;
  #running: Promise<void> | undefined;

  constructor(options: InformerOptions) {
    if (options.namespace && !options.resource.namespaced) {
      throw new Error(`${options.resource.plural} is cluster-scoped; it has no namespace to watch`);
    }
    this.#options = options;
    this.#path = collectionPath(options.resource, options.namespace);
    this.#watch = new Watch(options.kubeConfig);
    this.#lister = options.kubeConfig.makeApiClient(RawListClient);
  }

  /**
   * Registers handlers and returns a function that removes them. Handlers added after the informer
   * has objects first receive an add for each of them, as in client-go.
   */
  on(handlers: InformerHandlers<T>): () => void {
    this.#handlers.add(handlers);
    for (const object of this.#store.values()) this.#emitTo(handlers, "add", object, (h) => h.add?.(object));
    return () => this.#handlers.delete(handlers);
  }

  /** Starts listing and watching in the background; call once. */
  start(): void {
    if (this.#running) throw new Error("informer already started");
    this.#running = this.#run();
  }

  /** Stops watching; resolves once the background loop has ended. The store keeps its last state. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#currentWatch?.abort();
    for (const waiter of this.#syncWaiters) waiter.reject(new Error("informer stopped before it synced"));
    this.#syncWaiters.clear();
    await this.#running;
  }

  /** True once the first list has been stored and its adds delivered to the handlers. */
  hasSynced(): boolean {
    return this.#synced;
  }

  /** Resolves when the informer has synced; rejects if `signal` aborts or the informer stops first. */
  waitForSync(signal?: AbortSignal): Promise<void> {
    if (this.#synced) return Promise.resolve();
    if (this.#stop.signal.aborted) return Promise.reject(new Error("informer stopped before it synced"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject,
      };
      const onAbort = () => {
        this.#syncWaiters.delete(waiter);
        reject(new Error("gave up waiting for the informer to sync"));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#syncWaiters.add(waiter);
    });
  }

  /** The stored object for a key ("namespace/name", or "name" if cluster-scoped). */
  get(key: string): T | undefined {
    return this.#store.get(key);
  }

  list(namespace?: string): T[] {
    const all = [...this.#store.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata?.namespace === namespace);
  }

  keys(): string[] {
    return [...this.#store.keys()];
  }

  /** The resourceVersion the informer is current to ("" before the first list). */
  get resourceVersion(): string {
    return this.#resourceVersion;
  }

  async #run(): Promise<void> {
    const initialMs = this.#options.backoff?.initialMs ?? 800;
    const maxMs = this.#options.backoff?.maxMs ?? 30_000;
    let needList = true;
    let listReason: "initial" | "expired" = "initial";
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      let phase: "list" | "watch" = needList ? "list" : "watch";
      try {
        if (needList) {
          await this.#relist(listReason);
          needList = false;
          failures = 0;
          phase = "watch";
        }
        const outcome = await this.#watchOnce();
        if (outcome === "expired") {
          needList = true;
          listReason = "expired";
          failures = 0;
        } else if (outcome === "closed") {
          failures = 0;
        } else {
          throw new Error("watch closed without delivering any event");
        }
      } catch (error) {
        if (this.#stop.signal.aborted) break;
        if (isExpired(error)) {
          needList = true;
          listReason = "expired";
          continue;
        }
        failures += 1;
        const backoff = Math.min(maxMs, initialMs * 2 ** (failures - 1));
        const retryInMs = Math.round(backoff * (1 + Math.random() * 0.1));
        try {
          this.#options.observer?.failed?.(error, { phase, retryInMs });
        } catch {
          // Observers are for logging; their failures do not matter here.
        }
        await this.#sleep(retryInMs);
      }
    }
  }

  async #relist(reason: "initial" | "expired"): Promise<void> {
    const { items, resourceVersion } = await this.#listAll(true);
    if (this.#stop.signal.aborted) return;
    const delta = relistDelta(this.#store, items);
    this.#store = delta.store;
    this.#resourceVersion = resourceVersion;
    for (const object of delta.deleted) {
      this.#emit("delete", object, (h) => h.delete?.(object, { finalStateUnknown: true }));
    }
    for (const object of delta.added) this.#emit("add", object, (h) => h.add?.(object));
    for (const { oldObject, newObject } of delta.updated) {
      this.#emit("update", newObject, (h) => h.update?.(oldObject, newObject));
    }
    try {
      this.#options.observer?.listed?.({ reason, resourceVersion, objects: items.length });
    } catch {
      // See above.
    }
    if (!this.#synced) {
      this.#synced = true;
      for (const waiter of this.#syncWaiters) waiter.resolve();
      this.#syncWaiters.clear();
    }
  }

  /**
   * Lists every page. A continue token can expire (410) between pages when etcd compacts; then the
   * whole list is redone in one unpaginated request, as client-go's pager does.
   */
  async #listAll(paginate: boolean): Promise<{ items: T[]; resourceVersion: string }> {
    const items: T[] = [];
    let resourceVersion = "";
    let token: string | undefined;
    do {
      const query: Record<string, string> = {};
      if (paginate) query.limit = String(this.#options.pageSize ?? 500);
      if (token) query.continue = token;
      if (this.#options.labelSelector) query.labelSelector = this.#options.labelSelector;
      if (this.#options.fieldSelector) query.fieldSelector = this.#options.fieldSelector;
      let page: ListPage<T>;
      try {
        // A page that takes a minute is a hung connection, not a slow server: give up and retry.
        const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(60_000)]);
        page = await this.#lister.listPage<T>(this.#path, query, signal);
      } catch (error) {
        if (token && isExpired(error)) return this.#listAll(false);
        throw error;
      }
      // Items of a list carry no kind/apiVersion for built-in types; fill them in so that listed
      // objects look like watched ones.
      const kind = page.kind?.replace(/List$/, "");
      for (const item of page.items ?? []) {
        if (!item.kind && kind) item.kind = kind;
        if (!item.apiVersion && page.apiVersion) item.apiVersion = page.apiVersion;
        items.push(item);
      }
      resourceVersion = page.metadata?.resourceVersion ?? "";
      token = paginate ? page.metadata?.continue || undefined : undefined;
    } while (token && !this.#stop.signal.aborted);
    return { items, resourceVersion };
  }

  /** One watch connection, from the current resourceVersion until it ends. */
  #watchOnce(): Promise<WatchOutcome> {
    const timeoutSeconds = this.#options.watchTimeoutSeconds ?? Math.floor(300 * (1 + Math.random()));
    const query: Record<string, string | number | boolean> = {
      resourceVersion: this.#resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds,
    };
    if (this.#options.labelSelector) query.labelSelector = this.#options.labelSelector;
    if (this.#options.fieldSelector) query.fieldSelector = this.#options.fieldSelector;

    return new Promise<WatchOutcome>((resolve, reject) => {
      let expired = false;
      let failure: unknown;
      let delivered = 0;
      let ended = false;
      const begun = performance.now();
      const onEvent = (type: string, object: unknown) => {
        if (expired || failure !== undefined || this.#stop.signal.aborted) return;
        if (type === "ERROR") {
          const status = (object ?? {}) as { code?: number; message?: string; reason?: string };
          if (status.code === 410) expired = true;
          else failure = new WatchStatusError(status);
          // The server ends the stream after an ERROR event anyway; do not wait for it.
          this.#currentWatch?.abort();
          return;
        }
        delivered += 1;
        this.#apply(type, object as T);
      };
      const onDone = (error: unknown) => {
        ended = true;
        this.#currentWatch = undefined;
        if (expired || statusCodeOf(error) === 410) resolve("expired");
        else if (this.#stop.signal.aborted) resolve("closed");
        else if (failure !== undefined) reject(failure);
        // client-node's Watch aborts a connection that has been silent for 30 s; bookmarks make that
        // rare, and resuming at once is right (the silence itself was the wait).
        else if (error instanceof Error && error.name === "TimeoutError") resolve("closed");
        else if (error) reject(error);
        else resolve(delivered > 0 || performance.now() - begun >= 1000 ? "closed" : "empty");
      };
      this.#watch.watch(this.#path, query, onEvent, onDone).then(
        (controller) => {
          if (ended || expired || failure !== undefined || this.#stop.signal.aborted) controller.abort();
          else this.#currentWatch = controller;
        },
        (error: unknown) => reject(error),
      );
    });
  }

  #apply(type: string, object: T): void {
    const resourceVersion = object?.metadata?.resourceVersion;
    if (type === "BOOKMARK") {
      if (resourceVersion) this.#resourceVersion = resourceVersion;
      return;
    }
    if (!object?.metadata?.name) return;
    const key = objectKey(object);
    if (type === "ADDED" || type === "MODIFIED") {
      const previous = this.#store.get(key);
      this.#store.set(key, object);
      if (resourceVersion) this.#resourceVersion = resourceVersion;
      if (previous) this.#emit("update", object, (h) => h.update?.(previous, object));
      else this.#emit("add", object, (h) => h.add?.(object));
    } else if (type === "DELETED") {
      this.#store.delete(key);
      if (resourceVersion) this.#resourceVersion = resourceVersion;
      this.#emit("delete", object, (h) => h.delete?.(object, { finalStateUnknown: false }));
    }
  }

  #emit(event: InformerEventType, object: T, call: (handlers: InformerHandlers<T>) => unknown): void {
    for (const handlers of this.#handlers) this.#emitTo(handlers, event, object, call);
  }

  #emitTo(
    handlers: InformerHandlers<T>,
    event: InformerEventType,
    object: T,
    call: (handlers: InformerHandlers<T>) => unknown,
  ): void {
    const report = (error: unknown) => {
      try {
        this.#options.observer?.handlerFailed?.(error, { event, key: objectKey(object) });
      } catch {
        // See above.
      }
    };
    try {
      const result = call(handlers);
      if (result instanceof Promise) result.catch(report);
    } catch (error) {
      report(error);
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#stop.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#stop.signal.addEventListener("abort", done, { once: true });
    });
  }
}
