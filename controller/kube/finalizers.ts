import type { KubernetesObject } from "@kubernetes/client-node";

export function hasFinalizer(object: KubernetesObject, finalizer: string): boolean {
  return object.metadata?.finalizers?.includes(finalizer) ?? false;
}

/** True once deletion was requested; finalizers then hold the object until they are removed. */
export function isBeingDeleted(object: KubernetesObject): boolean {
  return Boolean(object.metadata?.deletionTimestamp);
}

/** The object's finalizers with `finalizer` added (unchanged if present). */
export function finalizersWith(object: KubernetesObject, finalizer: string): string[] {
  const current = object.metadata?.finalizers ?? [];
  return current.includes(finalizer) ? [...current] : [...current, finalizer];
}

/** The object's finalizers without `finalizer`. */
export function finalizersWithout(object: KubernetesObject, finalizer: string): string[] {
  return (object.metadata?.finalizers ?? []).filter((f) => f !== finalizer);
}

/**
 * A JSON merge patch that sets the finalizer list, guarded by the object's resourceVersion: a merge
 * patch replaces arrays whole, so without the guard a finalizer another controller added since the
 * read would be lost. A stale read then fails with 409 Conflict and the reconcile retries.
 */
export function finalizersPatch(
  object: KubernetesObject,
  finalizers: string[],
): { metadata: { finalizers: string[]; resourceVersion?: string } } {
  const resourceVersion = object.metadata?.resourceVersion;
  return { metadata: resourceVersion ? { finalizers, resourceVersion } : { finalizers } };
}
