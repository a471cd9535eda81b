import type { KubernetesObject, V1OwnerReference } from "@kubernetes/client-node";

/** The object already has a different controller; an object has at most one. */
export class AlreadyOwnedError extends Error {
  override readonly name = "AlreadyOwnedError";
}

/**
 * The owner reference that makes `owner` the controller of a dependent (controllerutil's
 * SetControllerReference): the garbage collector deletes the dependent with its owner, and
 * blockOwnerDeletion makes foreground deletion wait for it.
 */
export function controllerReference(owner: KubernetesObject): V1OwnerReference {
  const { apiVersion, kind, metadata } = owner;
  if (!apiVersion || !kind || !metadata?.name || !metadata.uid) {
    throw new Error("an owner needs apiVersion, kind, metadata.name and metadata.uid");
  }
  return {
    apiVersion,
    kind,
    name: metadata.name,
    uid: metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The reference to the object's controller, if it has one. */
export function controllerOf(object: KubernetesObject): V1OwnerReference | undefined {
  return object.metadata?.ownerReferences?.find((r) => r.controller === true);
}

export function isControlledBy(object: KubernetesObject, owner: KubernetesObject): boolean {
  const controller = controllerOf(object);
  return controller !== undefined && controller.uid === owner.metadata?.uid;
}

/**
 * Returns a copy of `object` controlled by `owner`. Idempotent for the same owner; a reference to
 * the same owner that is not yet marked controller is upgraded in place.
 *
 * Throws AlreadyOwnedError if another object controls it, and an Error for references the garbage
 * collector would reject: a namespaced owner must be in the dependent's namespace, and a
 * cluster-scoped dependent cannot have a namespaced owner.
 */
export function withControllerReference<T extends KubernetesObject>(object: T, owner: KubernetesObject): T {
  const reference = controllerReference(owner);
  const ownerNamespace = owner.metadata?.namespace;
  const namespace = object.metadata?.namespace;
  if (ownerNamespace && ownerNamespace !== namespace) {
    throw new Error(
      namespace
        ? `owner ${reference.kind}/${reference.name} is in namespace ${ownerNamespace}, not ${namespace}`
        : `a cluster-scoped object cannot be owned by namespaced ${reference.kind}/${reference.name}`,
    );
  }
  const existing = controllerOf(object);
  if (existing && existing.uid !== reference.uid) {
    throw new AlreadyOwnedError(
      `${object.metadata?.name ?? "object"} is already controlled by ${existing.kind}/${existing.name}`,
    );
  }
  const others = (object.metadata?.ownerReferences ?? []).filter((r) => r.uid !== reference.uid);
  return { ...object, metadata: { ...object.metadata, ownerReferences: [...others, reference] } };
}
