/**
 * Whether the API server guards shadow requests: the ValidatingAdmissionPolicy of
 * api/admission.ts and its Deny binding, installed as this controller's version ships them. Without
 * them an approval cannot be attributed to anyone who may approve, so the controller refuses it.
 */

import { AdmissionregistrationV1Api, type KubeConfig } from "@kubernetes/client-node";
import { REQUEST_POLICY_NAME, requestPolicyObjects } from "../api/admission.ts";
import { statusCodeOf } from "../kube/resource.ts";
import type { RequestGuard } from "./state.ts";

/**
 * Reads the policy and its binding and compares them with requestPolicyObjects(): a missing,
 * changed or non-denying guard means requests cannot be attributed, and the controller refuses them.
 */
export async function requestGuardState(kc: KubeConfig): Promise<RequestGuard> {
  const api = kc.makeApiClient(AdmissionregistrationV1Api);
  const [wantPolicy] = requestPolicyObjects() as [{ spec: unknown }];
  const missing = `ValidatingAdmissionPolicy ${REQUEST_POLICY_NAME} and its binding are not installed as this controller's version ships them (install them with 'syncgov crds apply'), so nobody's request can be attributed`;
  try {
    const policy = await api.readValidatingAdmissionPolicy({ name: REQUEST_POLICY_NAME });
    const binding = await api.readValidatingAdmissionPolicyBinding({ name: REQUEST_POLICY_NAME });
    const same = (have: unknown, want: unknown) => canonical(have) === canonical(want);
    // The API server defaults fields of matchConstraints; validations and variables come back as sent.
    const wantSpec = wantPolicy.spec as { validations: unknown; variables: unknown };
    const policySame =
      same(policy.spec?.validations, wantSpec.validations) &&
      same(policy.spec?.variables, wantSpec.variables) &&
      policy.spec?.failurePolicy === "Fail";
    const bindingSame =
      binding.spec?.policyName === REQUEST_POLICY_NAME &&
      (binding.spec?.validationActions ?? []).includes("Deny") &&
      binding.spec?.matchResources === undefined &&
      binding.spec?.paramRef === undefined;
    return policySame && bindingSame ? { installed: true } : { installed: false, reason: missing };
  } catch (error) {
    if (statusCodeOf(error) === 404) return { installed: false, reason: missing };
    const code = statusCodeOf(error);
    return {
      installed: false,
      reason: `the controller could not read ValidatingAdmissionPolicy ${REQUEST_POLICY_NAME}${code ? ` (HTTP ${code})` : ""}, so nobody's request can be attributed`,
    };
  }
}

/** JSON with object keys sorted and undefined members gone: the typed client orders keys its own way. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}
