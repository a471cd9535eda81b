import type { KubernetesObject } from "@kubernetes/client-node";
import { semanticErrors } from "../api/semantics.ts";
import type { SyncJob } from "../api/syncjob.ts";
import { type FieldError, validateSyncJob } from "../api/validate.ts";
import {
  type EffectivePolicy,
  effectivePolicy,
  type NamedPolicy,
  type NamespaceSubject,
} from "./effective.ts";

/**
 * What the spec and the matching policies make of a job, apart from time and runs: the parsed job
 * and its effective policy, or the spec's errors. The admission scheduler needs only this, and it
 * changes only with the object, the policies or the namespace, so callers may keep it per object.
 */
export interface JobPolicyView {
  readonly job?: SyncJob;
  readonly errors: FieldError[];
  readonly effective?: EffectivePolicy;
}

export function jobPolicyView(
  object: KubernetesObject,
  policies: readonly NamedPolicy[],
  namespace: NamespaceSubject,
): JobPolicyView {
  const parsed = validateSyncJob(object);
  const errors = parsed.ok
    ? semanticErrors(parsed.value.spec, { namespace: object.metadata?.namespace })
    : parsed.errors;
  if (!parsed.ok || errors.length > 0) return { errors };
  const job = parsed.value;
  const effective = effectivePolicy(
    policies,
    {
      namespace: object.metadata?.namespace ?? "",
      name: object.metadata?.name ?? "",
      labels: object.metadata?.labels ?? {},
      spec: job.spec,
      object,
    },
    namespace,
  );
  return { job, errors, effective };
}
