import { describe, expect, it } from "vitest";
import { registryKey } from "../registry/registry.ts";
import { keyText, parseKey, SCHEDULER_KEY } from "./reconciler.ts";

describe("reconcile keys", () => {
  it.each([
    [{ kind: "SyncJob", namespace: "shop", name: "orders" }, "SyncJob/shop/orders"],
    [{ kind: "SyncPolicy", name: "baseline" }, "SyncPolicy/baseline"],
    [SCHEDULER_KEY, "Scheduler/admission"],
  ] as const)("%o is %s both ways, as the registry writes it", (key, text) => {
    expect(keyText(key)).toBe(text);
    expect(parseKey(text)).toEqual(key);
    if (key.kind !== "Scheduler") expect(registryKey(key)).toBe(text);
  });

  it("refuses a kind it does not reconcile", () => {
    expect(() => parseKey("SyncRun/shop/r1")).toThrow("not a reconcile key");
  });
});
