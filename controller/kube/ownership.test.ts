import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import {
  finalizersPatch,
  finalizersWith,
  finalizersWithout,
  hasFinalizer,
  isBeingDeleted,
} from "./finalizers.ts";
import {
  AlreadyOwnedError,
  controllerOf,
  controllerReference,
  isControlledBy,
  withControllerReference,
} from "./ownership.ts";

const job: KubernetesObject = {
  apiVersion: "syncgov.io/v1alpha1",
  kind: "SyncJob",
  metadata: { name: "orders-to-warehouse", namespace: "payments", uid: "uid-job" },
};
const run: KubernetesObject = {
  apiVersion: "syncgov.io/v1alpha1",
  kind: "SyncRun",
  metadata: { name: "orders-to-warehouse-1", namespace: "payments", uid: "uid-run" },
};

describe("owner references", () => {
  it("makes the owner the controller, idempotently, and keeps other owners", () => {
    const labelled: KubernetesObject = {
      ...run,
      metadata: {
        ...run.metadata,
        ownerReferences: [{ apiVersion: "v1", kind: "ConfigMap", name: "extra", uid: "uid-cm" }],
      },
    };
    const owned = withControllerReference(labelled, job);
    expect(owned.metadata?.ownerReferences).toEqual([
      { apiVersion: "v1", kind: "ConfigMap", name: "extra", uid: "uid-cm" },
      {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncJob",
        name: "orders-to-warehouse",
        uid: "uid-job",
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(withControllerReference(owned, job)).toEqual(owned);
    expect(labelled.metadata?.ownerReferences).toHaveLength(1);
    expect(isControlledBy(owned, job)).toBe(true);
    expect(isControlledBy(owned, run)).toBe(false);
    expect(controllerOf(owned)?.uid).toBe("uid-job");
    expect(controllerOf(run)).toBeUndefined();
  });

  it("upgrades a plain reference to the same owner into the controller reference", () => {
    const plain = {
      ...run,
      metadata: { ...run.metadata, ownerReferences: [{ ...controllerReference(job), controller: false }] },
    };
    const owned = withControllerReference(plain, job);
    expect(owned.metadata?.ownerReferences).toEqual([controllerReference(job)]);
  });

  it("refuses a second controller and references the garbage collector would reject", () => {
    const owned = withControllerReference(run, job);
    const otherJob = { ...job, metadata: { ...job.metadata, name: "other", uid: "uid-other" } };
    expect(() => withControllerReference(owned, otherJob)).toThrow(AlreadyOwnedError);
    const elsewhere = { ...run, metadata: { ...run.metadata, namespace: "billing" } };
    expect(() => withControllerReference(elsewhere, job)).toThrow(/namespace payments, not billing/);
    const clusterScoped = {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: "p", uid: "u" },
    };
    expect(() => withControllerReference(clusterScoped, job)).toThrow(/cluster-scoped/);
    // A cluster-scoped owner may own a namespaced object.
    expect(isControlledBy(withControllerReference(run, clusterScoped), clusterScoped)).toBe(true);
    expect(() => controllerReference({ kind: "SyncJob", metadata: { name: "x" } })).toThrow(/uid/);
  });
});

describe("finalizers", () => {
  it("adds and removes a finalizer without touching others", () => {
    const object: KubernetesObject = { ...job, metadata: { ...job.metadata, finalizers: ["other.io/keep"] } };
    expect(hasFinalizer(object, "syncgov.io/cleanup")).toBe(false);
    const added = finalizersWith(object, "syncgov.io/cleanup");
    expect(added).toEqual(["other.io/keep", "syncgov.io/cleanup"]);
    const withIt = { ...object, metadata: { ...object.metadata, finalizers: added } };
    expect(hasFinalizer(withIt, "syncgov.io/cleanup")).toBe(true);
    expect(finalizersWith(withIt, "syncgov.io/cleanup")).toEqual(added);
    expect(finalizersWithout(withIt, "syncgov.io/cleanup")).toEqual(["other.io/keep"]);
    expect(finalizersWithout(job, "syncgov.io/cleanup")).toEqual([]);
  });

  it("guards the finalizer patch with the resourceVersion that was read", () => {
    const read = { ...job, metadata: { ...job.metadata, resourceVersion: "4711" } };
    expect(finalizersPatch(read, ["syncgov.io/cleanup"])).toEqual({
      metadata: { finalizers: ["syncgov.io/cleanup"], resourceVersion: "4711" },
    });
    expect(finalizersPatch(job, [])).toEqual({ metadata: { finalizers: [] } });
  });

  it("tells an object being deleted by its deletionTimestamp", () => {
    expect(isBeingDeleted(job)).toBe(false);
    expect(isBeingDeleted({ ...job, metadata: { ...job.metadata, deletionTimestamp: new Date() } })).toBe(
      true,
    );
  });
});
