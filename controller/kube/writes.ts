/**
 * The one port through which the controllers change the cluster: create and delete SyncRuns, write
 * status, record events. Controllers take a KubeWrites and nothing else that writes, so each is
 * unit-tested table-driven against a fake (test/support/fake-kube.ts), as Kueue's reconcilers are
 * against controller-runtime's fake client; the implementation here is the only one that talks to
 * the API server. Errors are the API server's (statusCodeOf reads 404 and 409 from them).
 */

import type { CustomObjectsApi, KubernetesObject } from "@kubernetes/client-node";
import type { EventRecord, EventRecorder } from "./events.ts";
import { isNotFound, type ResourceType, SYNCRUNS, statusCodeOf } from "./resource.ts";
import { patchStatus } from "./status.ts";

export interface StatusWrite {
  readonly resource: ResourceType;
  /** Required for namespaced resources. */
  readonly namespace?: string | undefined;
  readonly name: string;
  /** Merge patch of the status subresource (null deletes a field). */
  readonly status: Record<string, unknown>;
  /** Write only if the object is still at this resourceVersion; else the API answers 409 Conflict. */
  readonly resourceVersion?: string | undefined;
}

export interface KubeWrites {
  /** Creates a SyncRun; undefined when one of that name exists already (an earlier attempt made it). */
  createRun(namespace: string, run: KubernetesObject): Promise<KubernetesObject | undefined>;
  /** Deletes a SyncRun (its dependents in the background); a run already gone is no error. */
  deleteRun(namespace: string, name: string): Promise<void>;
  /** Writes status; resolves with the object as stored. Throws 404 when it is gone, 409 on a stale resourceVersion. */
  patchStatus(write: StatusWrite): Promise<KubernetesObject>;
  /** Records an event about the object (folded into a series when repeated); never throws. */
  recordEvent(regarding: KubernetesObject, event: EventRecord): Promise<void>;
}

/** KubeWrites against the API server, as the controller's field manager. */
export class ApiKubeWrites implements KubeWrites {
  readonly #custom: CustomObjectsApi;
  readonly #events: EventRecorder;
  readonly #fieldManager: string;

  constructor(custom: CustomObjectsApi, events: EventRecorder, fieldManager: string) {
    this.#custom = custom;
    this.#events = events;
    this.#fieldManager = fieldManager;
  }

  async createRun(namespace: string, run: KubernetesObject): Promise<KubernetesObject | undefined> {
    try {
      return (await this.#custom.createNamespacedCustomObject({
        group: SYNCRUNS.group,
        version: SYNCRUNS.version,
        plural: SYNCRUNS.plural,
        namespace,
        body: run,
      })) as KubernetesObject;
    } catch (err) {
      if (statusCodeOf(err) === 409) return undefined;
      throw err;
    }
  }

  async deleteRun(namespace: string, name: string): Promise<void> {
    try {
      await this.#custom.deleteNamespacedCustomObject({
        group: SYNCRUNS.group,
        version: SYNCRUNS.version,
        plural: SYNCRUNS.plural,
        namespace,
        name,
        propagationPolicy: "Background",
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async patchStatus(write: StatusWrite): Promise<KubernetesObject> {
    return (await patchStatus(
      this.#custom,
      {
        resource: write.resource,
        ...(write.namespace ? { namespace: write.namespace } : {}),
        name: write.name,
      },
      write.status,
      {
        fieldManager: this.#fieldManager,
        ...(write.resourceVersion ? { resourceVersion: write.resourceVersion } : {}),
      },
    )) as KubernetesObject;
  }

  recordEvent(regarding: KubernetesObject, event: EventRecord): Promise<void> {
    return this.#events.record(regarding, event);
  }
}
