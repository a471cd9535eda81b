import {
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Condition } from "../../controller/api/common.ts";
import { describeApiError, statusCodeOf } from "../../controller/kube/resource.ts";
import { patchStatus, setCondition } from "../../controller/kube/status.ts";
import { kubeConfig, uniqueName } from "../support/env.ts";

/** A throwaway CRD with a status subresource, so that the test does not depend on syncgov's CRDs. */
const group = "status-test.syncgov.io";
const widgets = { group, version: "v1", plural: "widgets", namespaced: true };
const crd: V1CustomResourceDefinition = {
  metadata: { name: `widgets.${group}` },
  spec: {
    group,
    scope: "Namespaced",
    names: { plural: "widgets", singular: "widget", kind: "Widget", listKind: "WidgetList" },
    versions: [
      {
        name: "v1",
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: "object",
            properties: {
              spec: { type: "object", x_kubernetes_preserve_unknown_fields: true },
              status: { type: "object", x_kubernetes_preserve_unknown_fields: true },
            },
          },
        },
      },
    ],
  },
};

interface Widget {
  metadata: { name: string; generation: number; resourceVersion: string };
  spec?: { size?: number };
  status?: { phase?: string; observedGeneration?: number; conditions?: Condition[] };
}

describe("status writes through the status subresource", () => {
  const kc = kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const extensions = kc.makeApiClient(ApiextensionsV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const namespace = uniqueName("status");

  beforeAll(async () => {
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await extensions.createCustomResourceDefinition({ body: crd });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const read = await extensions.readCustomResourceDefinition({ name: crd.metadata!.name! });
      if (read.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) break;
      if (Date.now() > deadline) throw new Error("CRD not established");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    await extensions.deleteCustomResourceDefinition({ name: crd.metadata!.name! });
    await core.deleteNamespace({ name: namespace });
  });

  const create = async (name: string): Promise<Widget> => {
    const body = { apiVersion: `${group}/v1`, kind: "Widget", metadata: { name }, spec: { size: 1 } };
    // Creating through the main resource drops status; a status exists only once it is written.
    return (await custom.createNamespacedCustomObject({
      group,
      version: "v1",
      namespace,
      plural: "widgets",
      body,
    })) as Widget;
  };

  it("merge-patches status: conditions are written, other status fields kept, spec untouched", async () => {
    const widget = await create("merge");
    const now = new Date("2026-03-01T02:00:00Z");
    const ready = setCondition(
      undefined,
      {
        type: "Ready",
        status: "False",
        reason: "Queued",
        message: "3/3 running in namespace payments",
        observedGeneration: widget.metadata.generation,
      },
      now,
    ).conditions;
    const first = (await patchStatus(
      custom,
      { resource: widgets, namespace, name: "merge" },
      { phase: "Queued", observedGeneration: widget.metadata.generation, conditions: ready },
      { fieldManager: "syncgov" },
    )) as unknown as Widget;
    expect(first.status).toEqual({
      phase: "Queued",
      observedGeneration: 1,
      conditions: [
        {
          type: "Ready",
          status: "False",
          reason: "Queued",
          message: "3/3 running in namespace payments",
          observedGeneration: 1,
          lastTransitionTime: "2026-03-01T02:00:00Z",
        },
      ],
    });

    // Only phase is sent: a merge patch keeps the conditions that are not mentioned.
    const second = (await patchStatus(
      custom,
      { resource: widgets, namespace, name: "merge" },
      { phase: "Running" },
    )) as unknown as Widget;
    expect(second.status?.phase).toBe("Running");
    expect(second.status?.conditions).toEqual(first.status?.conditions);
    expect(second.spec).toEqual({ size: 1 });
    expect(second.metadata.generation).toBe(1);

    // null deletes a field.
    const third = (await patchStatus(
      custom,
      { resource: widgets, namespace, name: "merge" },
      { phase: null },
    )) as unknown as Widget;
    expect(third.status).not.toHaveProperty("phase");
  });

  it("refuses a write based on a stale resourceVersion with 409 Conflict", async () => {
    const widget = await create("stale");
    const target = { resource: widgets, namespace, name: "stale" };
    await patchStatus(
      custom,
      target,
      { phase: "Queued" },
      { resourceVersion: widget.metadata.resourceVersion },
    );
    const error = await patchStatus(
      custom,
      target,
      { phase: "Running" },
      { resourceVersion: widget.metadata.resourceVersion },
    ).catch((e: unknown) => e);
    expect(statusCodeOf(error)).toBe(409);
    const stored = (await custom.getNamespacedCustomObject({
      group,
      version: "v1",
      namespace,
      plural: "widgets",
      name: "stale",
    })) as Widget;
    expect(stored.status?.phase).toBe("Queued");
  });

  it("needs the merge-patch content type: client-node's default for this call is JSON Patch", async () => {
    await create("default-content-type");
    const error = await custom
      .patchNamespacedCustomObjectStatus({
        group,
        version: "v1",
        namespace,
        plural: "widgets",
        name: "default-content-type",
        body: { status: { phase: "Running" } },
      })
      .catch((e: unknown) => e);
    // A JSON Patch must be an array of operations; the API server rejects the object.
    expect(statusCodeOf(error)).toBe(400);
    expect(describeApiError(error)).toMatch(/jsonPatchOp/);
  });
});
