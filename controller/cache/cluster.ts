/**
 * The controller's read side: the registry of every object the informers deliver (one consistent
 * snapshot per read, docs/architecture.md), plus what the reconcilers derive from it per object and
 * keep while its inputs stay the same — a job's runs, the parsed SyncPolicies, a namespace's labels,
 * a job's policy view. Writers are the informers' batches and the controllers' own writes (apply),
 * which go in before their watch events arrive so that the next reconcile of a key does not decide
 * on the status it just replaced.
 */

import type { KubernetesObject } from "@kubernetes/client-node";
import { SyncPolicySpec } from "../api/syncpolicy.ts";
import type { SyncRunStatus } from "../api/syncrun.ts";
import type { NamedPolicy, NamespaceSubject } from "../policy/effective.ts";
import { type JobPolicyView, jobPolicyView } from "../policy/job-view.ts";
import type { RegistryEvent, RegistrySnapshot } from "../registry/registry.ts";
import {
  keyOf,
  newRegistry,
  type RunSummary,
  type StoredKind,
  type StoredObject,
  type SyncRegistry,
  stored,
} from "./objects.ts";

export class ClusterCache {
  readonly registry: SyncRegistry;
  /** SyncRun keys by "namespace/job", kept in the same synchronous step as each registry commit. */
  readonly #runsByJob = new Map<string, Set<string>>();
  readonly #policyCache = new Map<
    string,
    { rv: string | undefined; policy: NamedPolicy | undefined; requiresMasking: boolean }
  >();
  readonly #jobViews = new WeakMap<
    object,
    { policies: readonly NamedPolicy[]; labels: string; view: JobPolicyView }
  >();

  constructor(registry: SyncRegistry = newRegistry()) {
    this.registry = registry;
  }

  snapshot(): RegistrySnapshot<StoredObject> {
    return this.registry.snapshot();
  }

  /** Commits events to the registry as one version and keeps the runs-by-job lookup in step. */
  apply(events: readonly RegistryEvent<StoredObject>[]): void {
    this.registry.applyBatch([...events]);
    for (const { type, object: e } of events) {
      if (e.kind !== "SyncRun" || !e.jobName) continue;
      const job = `${e.namespace}/${e.jobName}`;
      const key = keyOf("SyncRun", e.namespace, e.name);
      let runs = this.#runsByJob.get(job);
      if (type === "DELETED") {
        runs?.delete(key);
        if (runs?.size === 0) this.#runsByJob.delete(job);
      } else {
        if (!runs) {
          runs = new Set();
          this.#runsByJob.set(job, runs);
        }
        runs.add(key);
      }
    }
  }

  /** Stores an object the controller itself just wrote (created or patched). */
  wrote(kind: StoredKind, object: KubernetesObject, type: "ADDED" | "MODIFIED" = "MODIFIED"): void {
    this.apply([{ type, object: stored(kind, object) }]);
  }

  /** The job's runs as the job deciders read them, from one snapshot. */
  runsOf(namespace: string, job: string): RunSummary[] {
    const snap = this.snapshot();
    return [...(this.#runsByJob.get(`${namespace}/${job}`) ?? [])]
      .map((key) => snap.get(key))
      .filter((r): r is StoredObject => r !== undefined && r.jobName === job)
      .map((r) => {
        const status = (r.object as { status?: SyncRunStatus & { breaker?: RunSummary["breaker"] } }).status;
        return {
          name: r.name,
          phase: r.phase,
          type: r.runType,
          createdAt: Date.parse(String(r.object.metadata?.creationTimestamp ?? "")) || 0,
          completionTime: status?.completionTime,
          validation: status?.validation,
          breaker: status?.breaker,
        };
      });
  }

  /**
   * SyncPolicies of the snapshot, their specs parsed once per resourceVersion; invalid ones are left
   * out (their status says why), and those of them that require masking are listed by
   * invalidMaskingPolicies(), since leaving a masking requirement out would fail open.
   */
  policies(): NamedPolicy[] {
    return this.#parsedPolicies().flatMap((p) => (p.policy ? [p.policy] : []));
  }

  /**
   * Invalid SyncPolicies whose spec has a masking section (required columns or a required hash key):
   * what they protect cannot be known.
   */
  invalidMaskingPolicies(): string[] {
    return this.#parsedPolicies().flatMap((p) => (p.policy || !p.requiresMasking ? [] : [p.name]));
  }

  #parsedPolicies(): { name: string; policy: NamedPolicy | undefined; requiresMasking: boolean }[] {
    const out: { name: string; policy: NamedPolicy | undefined; requiresMasking: boolean }[] = [];
    for (const e of this.snapshot().ofKind("SyncPolicy")) {
      let cached = this.#policyCache.get(e.name);
      if (!cached || cached.rv !== e.resourceVersion) {
        // The spec alone: a status this version does not know must not make a policy invalid.
        const raw = (e.object as { spec?: { masking?: unknown } }).spec;
        const parsed = SyncPolicySpec.safeParse(raw);
        cached = {
          rv: e.resourceVersion,
          policy: parsed.success ? { name: e.name, spec: parsed.data } : undefined,
          // Any masking section: required columns, or a required hash key (requireHashKey).
          requiresMasking: raw?.masking !== undefined && raw.masking !== null,
        };
        this.#policyCache.set(e.name, cached);
      }
      out.push({ name: e.name, policy: cached.policy, requiresMasking: cached.requiresMasking });
    }
    return out;
  }

  /** A namespace as policies select it: its labels, with the name label Kubernetes sets. */
  namespace(name: string): NamespaceSubject {
    const ns = this.snapshot().get(keyOf("Namespace", undefined, name));
    return { name, labels: { "kubernetes.io/metadata.name": name, ...(ns?.object.metadata?.labels ?? {}) } };
  }

  /**
   * The job's policy view, kept per stored object while the policies and the namespace's labels
   * stay the same: validation and CEL rules then run once per change of the job, not once per
   * admission pass and reconcile (an admission pass asks for every job with a waiting run).
   */
  jobView(entry: StoredObject, policies: readonly NamedPolicy[] = this.policies()): JobPolicyView {
    const namespace = this.namespace(entry.namespace ?? "");
    const labels = JSON.stringify(namespace.labels);
    const kept = this.#jobViews.get(entry.object);
    if (
      kept &&
      kept.labels === labels &&
      kept.policies.length === policies.length &&
      kept.policies.every((p, i) => p === policies[i])
    ) {
      return kept.view;
    }
    const view = jobPolicyView(entry.object, policies, namespace);
    this.#jobViews.set(entry.object, { policies: [...policies], labels, view });
    return view;
  }
}
