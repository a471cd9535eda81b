import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { relistDelta } from "./informer.ts";
import { collectionPath, objectKey, splitKey } from "./resource.ts";

const cm = (name: string, resourceVersion: string, namespace = "payments"): KubernetesObject => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, namespace, resourceVersion },
});

describe("relistDelta", () => {
  it("emits adds, updates and deletes, and nothing for objects that did not change", () => {
    const known = new Map([
      ["payments/kept", cm("kept", "10")],
      ["payments/changed", cm("changed", "11")],
      ["payments/gone", cm("gone", "12")],
    ]);
    const listed = [cm("kept", "10"), cm("changed", "20"), cm("new", "21")];
    const delta = relistDelta(known, listed);
    expect(delta.added.map(objectKey)).toEqual(["payments/new"]);
    expect(
      delta.updated.map((u) => [
        u.oldObject.metadata?.resourceVersion,
        u.newObject.metadata?.resourceVersion,
      ]),
    ).toEqual([["11", "20"]]);
    expect(delta.deleted).toEqual([cm("gone", "12")]);
    expect([...delta.store.keys()].sort()).toEqual(["payments/changed", "payments/kept", "payments/new"]);
    expect(known.size).toBe(3);
  });

  it("treats an empty list as the deletion of everything known", () => {
    const delta = relistDelta(new Map([["a", cm("a", "1", "")]]), []);
    expect(delta.deleted.map(objectKey)).toEqual(["a"]);
    expect(delta.store.size).toBe(0);
  });
});

describe("resource paths and keys", () => {
  it("builds collection paths for core and custom, namespaced and cluster-scoped types", () => {
    const configmaps = { group: "", version: "v1", plural: "configmaps", namespaced: true };
    const policies = { group: "syncgov.io", version: "v1alpha1", plural: "syncpolicies", namespaced: false };
    expect(collectionPath(configmaps, "payments")).toBe("/api/v1/namespaces/payments/configmaps");
    expect(collectionPath(configmaps)).toBe("/api/v1/configmaps");
    expect(collectionPath(policies, "ignored")).toBe("/apis/syncgov.io/v1alpha1/syncpolicies");
  });

  it("keys objects as namespace/name and splits keys back", () => {
    expect(objectKey(cm("a", "1"))).toBe("payments/a");
    expect(objectKey({ metadata: { name: "baseline" } })).toBe("baseline");
    expect(splitKey("payments/a")).toEqual({ namespace: "payments", name: "a" });
    expect(splitKey("baseline")).toEqual({ name: "baseline" });
  });
});
