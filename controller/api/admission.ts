/**
 * The ValidatingAdmissionPolicy that ships with the CRDs (crds/, `syncgov crds apply`) and guards who
 * may approve a shadow-table swap or a rollback (docs/security.md, "Shadow approvals"). A request is
 * an annotation on the SyncJob, and whoever may edit the job may set annotations, so the API server
 * itself checks them:
 *
 * - a new value of syncgov.io/approve-swap needs the RBAC verb `approve` on syncjobs.syncgov.io (and
 *   syncgov.io/rollback the verb `rollback`), checked with the CEL `authorizer` against the user
 *   making the change; editing the job (`update`/`patch`) is not enough;
 * - syncgov.io/requested-by must name that user whenever a request is set or it changes, so the
 *   controller can record who approved in the event and the status, and nobody can write another's
 *   name.
 *
 * Clearing a request annotation needs nothing: removing one never acts (shadow/state.ts). The
 * controller honours requests only while this policy and its binding are installed as built here
 * (shadow/request-policy.ts), so a cluster without them fails closed instead of trusting any editor.
 */

import { GROUP } from "./common.ts";

/** Set to a new value to approve the pending swap: `syncgov approve <ns>/<job>` does it. */
export const APPROVE_SWAP_ANNOTATION = "syncgov.io/approve-swap";
/** Set to a new value to swap the retired table back in: `syncgov rollback <ns>/<job>` does it. */
export const ROLLBACK_ANNOTATION = "syncgov.io/rollback";
/** The user who made the request, set with it; the policy lets only that user write it. */
export const REQUESTED_BY_ANNOTATION = "syncgov.io/requested-by";
/** Name of the ValidatingAdmissionPolicy and of its binding. */
export const REQUEST_POLICY_NAME = "syncgov-shadow-requests";
/** RBAC verbs on syncjobs.syncgov.io (ClusterRole syncgov-shadow-approver in the chart grants both). */
export const APPROVE_VERB = "approve";
export const ROLLBACK_VERB = "rollback";

/** A CEL expression for the value of annotation `key` of `obj`, '' when absent (or obj is null). */
function annotation(obj: "object" | "oldObject", key: string): string {
  const guard = obj === "oldObject" ? "oldObject != null && " : "";
  return `(${guard}has(${obj}.metadata.annotations) && '${key}' in ${obj}.metadata.annotations ? ${obj}.metadata.annotations['${key}'] : '')`;
}

function permission(verb: string): string {
  return `authorizer.group('${GROUP}').resource('syncjobs').namespace(object.metadata.namespace).name(object.metadata.name).check('${verb}').allowed()`;
}

/** The ValidatingAdmissionPolicy guarding request annotations, and its binding. */
export function requestPolicyObjects(): Record<string, unknown>[] {
  const labels = { "app.kubernetes.io/name": "syncgov", "app.kubernetes.io/component": "admission" };
  const values = (name: string, key: string) => [
    { name, expression: annotation("object", key) },
    { name: `old${name[0]!.toUpperCase()}${name.slice(1)}`, expression: annotation("oldObject", key) },
  ];
  /** The request `name` is set to a new value (clearing it is not a request). */
  const set = (name: string) =>
    `(variables.${name} != '' && variables.${name} != variables.old${name[0]!.toUpperCase()}${name.slice(1)})`;
  const policy = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingAdmissionPolicy",
    metadata: { name: REQUEST_POLICY_NAME, labels },
    spec: {
      failurePolicy: "Fail",
      matchConstraints: {
        resourceRules: [
          {
            apiGroups: [GROUP],
            apiVersions: ["*"],
            operations: ["CREATE", "UPDATE"],
            resources: ["syncjobs"],
          },
        ],
      },
      variables: [
        ...values("approve", APPROVE_SWAP_ANNOTATION),
        ...values("rollback", ROLLBACK_ANNOTATION),
        ...values("requester", REQUESTED_BY_ANNOTATION),
      ],
      validations: [
        {
          expression: `!${set("approve")} || ${permission(APPROVE_VERB)}`,
          reason: "Forbidden",
          message: `setting ${APPROVE_SWAP_ANNOTATION} approves a shadow-table swap: it needs the RBAC verb '${APPROVE_VERB}' on syncjobs.${GROUP} (ClusterRole syncgov-shadow-approver), which editing the job does not give`,
        },
        {
          expression: `!${set("rollback")} || ${permission(ROLLBACK_VERB)}`,
          reason: "Forbidden",
          message: `setting ${ROLLBACK_ANNOTATION} rolls a swap back: it needs the RBAC verb '${ROLLBACK_VERB}' on syncjobs.${GROUP} (ClusterRole syncgov-shadow-approver), which editing the job does not give`,
        },
        {
          expression: `!(${set("approve")} || ${set("rollback")} || ${set("requester")}) || variables.requester == request.userInfo.username`,
          reason: "Forbidden",
          messageExpression: `'${REQUESTED_BY_ANNOTATION} must name the user making the request (' + request.userInfo.username + '), set in the same change as the request annotation'`,
        },
      ],
    },
  };
  const binding = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingAdmissionPolicyBinding",
    metadata: { name: REQUEST_POLICY_NAME, labels },
    spec: { policyName: REQUEST_POLICY_NAME, validationActions: ["Deny"] },
  };
  return [policy, binding];
}
