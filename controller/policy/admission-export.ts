import type {
  V1LabelSelector,
  V1LabelSelectorRequirement,
  V1MatchResources,
  V1ValidatingAdmissionPolicy,
  V1ValidatingAdmissionPolicyBinding,
} from "@kubernetes/client-node";
import { stringify } from "yaml";
import { GROUP, type LabelSelector, VERSION } from "../api/common.ts";
import type { Enforcement, SyncPolicySpec } from "../api/syncpolicy.ts";
import type { NamedPolicy } from "./effective.ts";

/**
 * `syncgov policy export`: a SyncPolicy as a ValidatingAdmissionPolicy and its binding, so that the
 * API server itself rejects (or warns about, or audits) a violating SyncJob at apply time, with no
 * webhook to run. The CEL rules carry over unchanged: Kubernetes binds the same `object` and
 * `namespaceObject`. The masking and shadow requirements become CEL rules with the semantics
 * effectivePolicy() gives them.
 */

/** Names of the exported objects: `syncgov-<policy>`. */
export const ADMISSION_POLICY_PREFIX = "syncgov-";
export const POLICY_ANNOTATION = `${GROUP}/policy`;

/** A CEL check of a policy, named as effectivePolicy() names its violations. */
export interface AdmissionRule {
  name: string;
  expression: string;
  message: string;
}

export interface AdmissionPolicyPair {
  policy: V1ValidatingAdmissionPolicy;
  binding: V1ValidatingAdmissionPolicyBinding;
}

const VALIDATION_ACTIONS: Record<Enforcement, string[]> = {
  Enforce: ["Deny"],
  Warn: ["Warn"],
  Audit: ["Audit"],
};

/**
 * Updates that change neither the spec nor the labels are not judged again: the controller adds
 * finalizers and annotations to jobs that may predate a policy, and a policy must not block those
 * (nor a deletion waiting on its finalizer). Status writes go to the status subresource, which the
 * policy does not match at all.
 */
export const SPEC_OR_LABELS_CHANGED =
  "request.operation != 'UPDATE' || object.spec != oldObject.spec" +
  " || has(object.metadata.labels) != has(oldObject.metadata.labels)" +
  " || (has(object.metadata.labels) && object.metadata.labels != oldObject.metadata.labels)";

/** The CEL rules, then one rule per masking requirement, the hash key, then the shadow requirement. */
export function admissionRules(spec: SyncPolicySpec): AdmissionRule[] {
  const rules: AdmissionRule[] = (spec.rules ?? []).map((r) => ({ ...r }));
  for (const req of spec.masking?.requiredFor ?? []) {
    const transforms = req.transforms.map(celString).join(", ");
    rules.push({
      name: "masking",
      // The columns effectivePolicy() checks: keys, masked columns, file fields, the version column.
      // `(?i:...)` is case-insensitive in RE2 and in JavaScript alike.
      expression:
        `(${WRITTEN_COLUMNS}).all(c, !c.matches(${celString(`(?i:${req.columnPattern})`)}) ||` +
        ` (has(object.spec.masking) && object.spec.masking.exists(m, m.column == c && m.transform in [${transforms}])))`,
      message: `columns matching /${req.columnPattern}/ must be masked with ${req.transforms.join(" or ")}`,
    });
  }
  if (spec.masking?.requireHashKey) {
    rules.push({
      name: "masking-key",
      expression:
        "has(object.spec.maskingKeySecretRef) || !has(object.spec.masking) || !object.spec.masking.exists(m, m.transform == 'hash')",
      message: "spec.maskingKeySecretRef: hash masking must be keyed (HMAC-SHA256 with a key from a Secret)",
    });
  }
  if (spec.shadow?.required) {
    rules.push({
      name: "shadow",
      expression:
        "!has(object.spec.shadow) || !has(object.spec.shadow.enabled) || object.spec.shadow.enabled",
      message: "the shadow-table fallback must stay enabled",
    });
  }
  return rules;
}

const WRITTEN_COLUMNS = [
  "object.spec.target.sql.keyColumns",
  "(has(object.spec.masking) ? object.spec.masking.map(m, m.column) : [])",
  "(has(object.spec.source.file) ? object.spec.source.file.fields.map(f, f.name) : [])",
  "(has(object.spec.target.sql.versionColumn) ? [object.spec.target.sql.versionColumn] : [])",
].join(" + ");

/** A CEL string literal; JSON's escapes are all valid CEL escapes. */
function celString(text: string): string {
  return JSON.stringify(text);
}

/** Kubernetes rejects validation messages with line breaks; YAML block scalars often end in one. */
function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

/** The ValidatingAdmissionPolicy and binding that enforce a SyncPolicy in the API server. */
export function admissionPolicyFor(source: NamedPolicy): AdmissionPolicyPair {
  const name = `${ADMISSION_POLICY_PREFIX}${source.name}`;
  if (name.length > 253) throw new Error(`SyncPolicy ${source.name}: the name is too long for ${name}`);
  const metadata = {
    name,
    labels: { "app.kubernetes.io/managed-by": "syncgov" },
    annotations: { [POLICY_ANNOTATION]: source.name },
  };
  const policy: V1ValidatingAdmissionPolicy = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingAdmissionPolicy",
    metadata,
    spec: {
      failurePolicy: "Fail",
      matchConstraints: {
        resourceRules: [
          {
            apiGroups: [GROUP],
            apiVersions: [VERSION],
            operations: ["CREATE", "UPDATE"],
            resources: ["syncjobs"],
          },
        ],
      },
      matchConditions: [{ name: "spec-or-labels-changed", expression: SPEC_OR_LABELS_CHANGED }],
      validations: admissionRules(source.spec).map((r) => ({
        expression: r.expression,
        message: oneLine(`${r.name}: ${r.message}`),
      })),
    },
  };
  const binding: V1ValidatingAdmissionPolicyBinding = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingAdmissionPolicyBinding",
    metadata,
    spec: {
      policyName: name,
      validationActions: VALIDATION_ACTIONS[source.spec.enforcement],
      ...bindingMatch(source.spec),
    },
  };
  return { policy, binding };
}

/**
 * The policy's match as the binding's matchResources: the namespace list becomes a requirement on
 * the `kubernetes.io/metadata.name` label the API server sets on every namespace, ANDed with the
 * namespace selector; the job selector becomes the object selector.
 */
function bindingMatch(spec: SyncPolicySpec): { matchResources?: V1MatchResources } {
  const match = spec.match;
  const namespaces = match?.namespaces ?? [];
  const byName: V1LabelSelectorRequirement[] =
    namespaces.length > 0
      ? [{ key: "kubernetes.io/metadata.name", operator: "In", values: [...namespaces] }]
      : [];
  const namespaceSelector = selector(match?.namespaceSelector, byName);
  const objectSelector = selector(match?.jobSelector, []);
  if (!namespaceSelector && !objectSelector) return {};
  return {
    matchResources: {
      ...(namespaceSelector ? { namespaceSelector } : {}),
      ...(objectSelector ? { objectSelector } : {}),
    },
  };
}

function selector(
  from: LabelSelector | undefined,
  extra: V1LabelSelectorRequirement[],
): V1LabelSelector | undefined {
  const matchLabels = from?.matchLabels ?? {};
  const matchExpressions = [...(from?.matchExpressions ?? []).map((e) => ({ ...e })), ...extra];
  if (Object.keys(matchLabels).length === 0 && matchExpressions.length === 0) return undefined;
  return {
    ...(Object.keys(matchLabels).length > 0 ? { matchLabels: { ...matchLabels } } : {}),
    ...(matchExpressions.length > 0 ? { matchExpressions } : {}),
  };
}

/** All pairs as one multi-document YAML stream, in the order of the policies. */
export function admissionPoliciesYaml(policies: readonly NamedPolicy[]): string {
  return policies
    .flatMap((p) => {
      const { policy, binding } = admissionPolicyFor(p);
      // Long expressions stay on one line each: folded, they are hard to read and to diff.
      return [
        `# SyncPolicy ${p.name}, exported by syncgov policy export\n${stringify(policy, { lineWidth: 0 })}`,
        stringify(binding, { lineWidth: 0 }),
      ];
    })
    .join("---\n");
}
