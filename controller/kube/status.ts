import { type CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { Condition } from "../api/common.ts";
import type { ResourceType } from "./resource.ts";

/** A condition to set; `lastTransitionTime` is filled in (or kept) by `setCondition`. */
export type ConditionUpdate = Omit<Condition, "lastTransitionTime"> & { lastTransitionTime?: string };

/** RFC 3339 at second precision, as the API server writes metav1.Time. */
export function kubeTime(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === "True";
}

/**
 * Sets one condition (apimachinery's meta.SetStatusCondition) and returns the new list, leaving the
 * input untouched. `lastTransitionTime` moves to `now` only when the status flips (or the condition
 * is new); reason, message and observedGeneration always take the new values. `changed` is false
 * when nothing differs, so that a reconciler can skip a no-op status write.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  update: ConditionUpdate,
  now: Date,
): { conditions: Condition[]; changed: boolean } {
  const list = conditions ?? [];
  const index = list.findIndex((c) => c.type === update.type);
  const existing = index >= 0 ? list[index] : undefined;
  if (!existing) {
    const created = normalize({ ...update, lastTransitionTime: update.lastTransitionTime ?? kubeTime(now) });
    return { conditions: [...list, created], changed: true };
  }
  const lastTransitionTime =
    existing.status === update.status
      ? existing.lastTransitionTime
      : (update.lastTransitionTime ?? kubeTime(now));
  const next = normalize({ ...update, lastTransitionTime });
  if (sameCondition(existing, next)) return { conditions: [...list], changed: false };
  const replaced = [...list];
  replaced[index] = next;
  return { conditions: replaced, changed: true };
}

/** Removes the condition of a type, if present. */
export function removeCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): { conditions: Condition[]; changed: boolean } {
  const list = conditions ?? [];
  const kept = list.filter((c) => c.type !== type);
  return { conditions: kept, changed: kept.length !== list.length };
}

/** Drops absent optional fields so that comparisons and patches do not see `undefined` keys. */
function normalize(condition: Condition): Condition {
  const out: Condition = {
    type: condition.type,
    status: condition.status,
    reason: condition.reason,
    lastTransitionTime: condition.lastTransitionTime,
  };
  if (condition.message !== undefined) out.message = condition.message;
  if (condition.observedGeneration !== undefined) out.observedGeneration = condition.observedGeneration;
  return out;
}

function sameCondition(a: Condition, b: Condition): boolean {
  return (
    a.type === b.type &&
    a.status === b.status &&
    a.reason === b.reason &&
    (a.message ?? "") === (b.message ?? "") &&
    a.observedGeneration === b.observedGeneration &&
    a.lastTransitionTime === b.lastTransitionTime
  );
}

/** The object whose status is written. */
export interface StatusTarget {
  resource: ResourceType;
  /** Required for namespaced resources, ignored otherwise. */
  namespace?: string;
  name: string;
}

export interface PatchStatusOptions {
  /**
   * Write only if the object is still at this resourceVersion (optimistic concurrency); otherwise the
   * API server answers 409 Conflict.
   */
  resourceVersion?: string;
  fieldManager?: string;
}

/**
 * Writes `status` through the status subresource as a JSON merge patch (RFC 7386): fields given
 * replace the stored ones, arrays (such as conditions) are replaced whole, `null` deletes a field,
 * and fields not given stay as they are. Returns the object as the API server stored it.
 *
 * client-node 2.x picks the first content type the OpenAPI lists for a PATCH, which is JSON Patch;
 * the merge-patch Content-Type is set with a request middleware (`setHeaderOptions`).
 */
export async function patchStatus(
  api: CustomObjectsApi,
  target: StatusTarget,
  status: Record<string, unknown>,
  options: PatchStatusOptions = {},
): Promise<Record<string, unknown>> {
  const { group, version, plural, namespaced } = target.resource;
  if (group === "") throw new Error("patchStatus writes custom resources; core types have their own clients");
  const body: Record<string, unknown> = { status };
  if (options.resourceVersion) body.metadata = { resourceVersion: options.resourceVersion };
  const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
  const common = { group, version, plural, name: target.name, body, fieldManager: options.fieldManager };
  if (namespaced) {
    if (!target.namespace)
      throw new Error(`${plural}/${target.name}: a namespaced status target needs a namespace`);
    return api.patchNamespacedCustomObjectStatus({ ...common, namespace: target.namespace }, mergePatch);
  }
  return api.patchClusterCustomObjectStatus(common, mergePatch);
}
