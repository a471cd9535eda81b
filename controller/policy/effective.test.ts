import { describe, expect, it } from "vitest";
import { loadYaml } from "../../test/support/manifests.ts";
import { SyncJob } from "../api/syncjob.ts";
import { SyncPolicySpec } from "../api/syncpolicy.ts";
import { admittedPolicy } from "./admitted.ts";
import { effectivePolicy, type NamedPolicy } from "./effective.ts";

const job = SyncJob.parse({
  ...loadYaml("test/examples/batch-customers.yaml")[0],
  metadata: { name: "customers-nightly", namespace: "crm", labels: { tier: "silver" } },
});
const subject = {
  namespace: "crm",
  name: "customers-nightly",
  labels: { tier: "silver" },
  spec: job.spec,
  object: job,
};
const ns = { name: "crm", labels: { team: "crm" } };
const policy = (name: string, spec: Record<string, unknown>): NamedPolicy => ({
  name,
  spec: SyncPolicySpec.parse({ match: { namespaces: ["crm"] }, ...spec }),
});

describe("effectivePolicy: what admission records for the runner", () => {
  it.each([
    ["no policy", [], [], {}],
    [
      "an Enforce policy's masking requirement is recorded; an Audit or Warn one's is not",
      [
        policy("enforced", {
          enforcement: "Enforce",
          masking: { requiredFor: [{ columnPattern: "email" }] },
        }),
        policy("audited", { enforcement: "Audit", masking: { requiredFor: [{ columnPattern: "phone" }] } }),
        policy("warned", { enforcement: "Warn", masking: { requiredFor: [{ columnPattern: "ssn" }] } }),
      ],
      [{ policy: "enforced", columnPattern: "email", transforms: ["hash", "redact"] }],
      {},
    ],
    [
      "breaker settings of every matching policy, Audit included, combine into bounds",
      [
        policy("a", {
          enforcement: "Audit",
          breaker: { slowCallDurationThresholdMs: 300, waitDurationInOpenStateMs: 5000 },
        }),
        policy("b", {
          enforcement: "Enforce",
          breaker: { slowCallDurationThresholdMs: 800, waitDurationInOpenStateMs: 60_000 },
        }),
      ],
      [],
      { slowCallDurationThresholdMs: 300, waitDurationInOpenStateMs: 60_000 },
    ],
    [
      "a policy that does not match the job adds nothing",
      [policy("other", { match: { namespaces: ["payments"] }, breaker: { failureRateThreshold: 5 } })],
      [],
      {},
    ],
  ] as const)("%s", (_, policies, masking, breaker) => {
    const effective = effectivePolicy(policies as unknown as NamedPolicy[], subject, ns);
    const recorded = admittedPolicy(effective);
    expect(recorded.requiredMasking).toEqual(masking);
    expect(recorded.breaker).toEqual(breaker);
    expect(recorded.policies).toEqual(effective.policies);
  });

  it("a masking requirement whose pattern is not a regular expression blocks the jobs it matches, not admission as a whole", () => {
    const bad = policy("bad", {
      enforcement: "Audit",
      masking: { requiredFor: [{ columnPattern: "(ssn" }] },
    });
    const effective = effectivePolicy([bad], subject, ns);
    expect(effective.verdict).toBe("Block");
    expect(effective.violations[0]?.message).toContain("is not a valid regular expression");
  });
});

describe("effectivePolicy: keyed hash masking", () => {
  const hashing = (over: Record<string, unknown> = {}) => {
    const spec = SyncJob.shape.spec.parse({
      ...job.spec,
      masking: [
        { column: "email", transform: "redact" },
        { column: "phone", transform: "hash" },
      ],
      ...over,
    });
    return { ...subject, spec, object: { ...job, spec } };
  };
  const requiring = (enforcement: string) =>
    policy("keyed", { enforcement, masking: { requireHashKey: true } });

  it("blocks a job that hashes without a key, naming spec.maskingKeySecretRef and the rule", () => {
    const effective = effectivePolicy([requiring("Enforce")], hashing(), ns);
    expect(effective.verdict).toBe("Block");
    expect(effective.violations).toEqual([
      {
        policy: "keyed",
        rule: "masking-key",
        enforcement: "Enforce",
        message: expect.stringMatching(
          /^spec\.maskingKeySecretRef: hash masking must be keyed .*spec\.masking\[1\] \(column phone\) hashes without one/,
        ),
      },
    ]);
    expect(effective.hashKeyRequired).toBe(true);
    expect(admittedPolicy(effective).hashKeyRequired).toBe(true);
  });

  it("admits a job that names its key, or hashes nothing; a Warn policy records but does not require", () => {
    const keyed = hashing({ maskingKeySecretRef: { name: "pii-key" } });
    expect(keyed.spec.maskingKeySecretRef).toEqual({ name: "pii-key", key: "key" });
    expect(effectivePolicy([requiring("Enforce")], keyed, ns).verdict).toBe("Admit");
    expect(effectivePolicy([requiring("Enforce")], subject, ns).verdict).toBe("Admit");
    const warned = effectivePolicy([requiring("Warn")], hashing(), ns);
    expect(warned.verdict).toBe("Warn");
    expect(warned.hashKeyRequired).toBe(false);
    expect(admittedPolicy(warned).hashKeyRequired).toBeUndefined();
  });

  it("matches required column patterns with RE2: a lookaround pattern blocks (fails closed)", () => {
    const effective = effectivePolicy(
      [policy("look", { masking: { requiredFor: [{ columnPattern: "(?=email)" }] } })],
      subject,
      ns,
    );
    expect(effective.verdict).toBe("Block");
    expect(effective.violations[0]?.message).toContain("is not a valid regular expression for RE2");
  });
});
