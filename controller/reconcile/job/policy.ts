import type { SyncJobStatus } from "../../api/syncjob.ts";
import { describeErrors, type FieldError } from "../../api/validate.ts";
import type { EffectivePolicy } from "../../policy/effective.ts";
import type { ConditionLedger } from "./ledger.ts";

export const VALID = "Valid";
export const POLICY_COMPLIANT = "PolicyCompliant";

/** The Valid condition of an invalid spec, naming every field and reason; the job's phase is Invalid. */
export function decideInvalid(
  errors: readonly FieldError[],
  generation: number,
  ledger: ConditionLedger,
): void {
  const message = describeErrors([...errors]);
  ledger.set(
    { type: VALID, status: "False", reason: "InvalidSpec", message, observedGeneration: generation },
    () => ({
      type: "Warning",
      reason: "InvalidSpec",
      note: `The spec is invalid: ${message}`,
    }),
  );
}

/**
 * A valid spec's conditions (Valid, PolicyCompliant with the verdict of its matching policies) and
 * the effectivePolicy status that shows what the policies make of the job.
 */
export function decidePolicyVerdict(
  effective: EffectivePolicy,
  generation: number,
  ledger: ConditionLedger,
): SyncJobStatus["effectivePolicy"] {
  ledger.set(
    {
      type: VALID,
      status: "True",
      reason: "SpecValid",
      message: "The spec passed validation.",
      observedGeneration: generation,
    },
    () => ({ type: "Normal", reason: "SpecValid", note: "The spec passed validation." }),
  );
  const violations = effective.violations.map((v) => `${v.policy}/${v.rule}: ${v.message}`);
  const violationText = violations.join("; ");
  if (effective.verdict === "Admit") {
    ledger.set(
      {
        type: POLICY_COMPLIANT,
        status: "True",
        reason: "Compliant",
        message: `Complies with ${effective.policies.length} matching policies.`,
        observedGeneration: generation,
      },
      (prev) =>
        prev && prev.status !== "True"
          ? { type: "Normal", reason: "Compliant", note: "The job now complies with its policies." }
          : undefined,
    );
  } else {
    const reason =
      effective.verdict === "Block"
        ? "Blocked"
        : effective.verdict === "Warn"
          ? "PolicyWarning"
          : "PolicyAudit";
    ledger.set(
      {
        type: POLICY_COMPLIANT,
        status: "False",
        reason,
        message: violationText,
        observedGeneration: generation,
      },
      () => ({
        type: effective.verdict === "Audit" ? "Normal" : "Warning",
        reason,
        note:
          effective.verdict === "Block"
            ? `Blocked by policy: ${violationText}`
            : effective.verdict === "Warn"
              ? `Admitted with warnings: ${violationText}`
              : `Policy violation recorded (audit): ${violationText}`,
      }),
    );
  }
  return {
    policies: effective.policies,
    ...(effective.violations.length > 0 ? { enforcement: enforcementOf(effective.verdict) } : {}),
    ...(effective.maxRunsPerNamespace !== undefined
      ? { maxRunsPerNamespace: effective.maxRunsPerNamespace }
      : {}),
    ...(effective.maxRunsPerTarget !== undefined ? { maxRunsPerTarget: effective.maxRunsPerTarget } : {}),
    ...(effective.maxRunsGlobal !== undefined ? { maxRunsGlobal: effective.maxRunsGlobal } : {}),
    ...(effective.ttlSecondsAfterFinished !== undefined
      ? { ttlSecondsAfterFinished: effective.ttlSecondsAfterFinished }
      : {}),
    failedValidationsBeforeShadow: effective.failedValidationsBeforeShadow,
    violations,
  };
}

function enforcementOf(verdict: EffectivePolicy["verdict"]): "Enforce" | "Warn" | "Audit" {
  return verdict === "Block" ? "Enforce" : verdict === "Warn" ? "Warn" : "Audit";
}
