import type { AdmittedPolicy } from "../api/syncrun.ts";
import type { EffectivePolicy } from "./effective.ts";

/**
 * What a run's status records of its job's effective policy when the scheduler admits it: the
 * matching policies, the masking they require and their breaker bounds. Policy is decided once, by
 * the controller; the runner enforces the record and never lists SyncPolicies.
 */
export function admittedPolicy(effective: EffectivePolicy): AdmittedPolicy {
  return {
    policies: [...effective.policies],
    requiredMasking: effective.requiredMasking.map((r) => ({
      policy: r.policy ?? "",
      columnPattern: r.columnPattern,
      transforms: [...r.transforms],
    })),
    breaker: effective.breaker as AdmittedPolicy["breaker"],
    ...(effective.hashKeyRequired ? { hashKeyRequired: true } : {}),
  };
}
