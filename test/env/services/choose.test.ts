import { describe, expect, it } from "vitest";
import { chooseProvider, type ProviderFacts } from "./choose.ts";

const allLocal = { kube: undefined, kafka: undefined, postgres: undefined };

function facts(over: Partial<ProviderFacts> = {}): ProviderFacts {
  return { env: {}, localMissing: allLocal, dockerAvailable: false, ...over };
}

describe("chooseProvider", () => {
  it("uses an address from the environment first", () => {
    const f = facts({
      env: { KAFKA_BROKERS: "10.1.2.3:9092", DATABASE_URL: "postgres://x@db/y" },
      dockerAvailable: true,
    });
    expect(chooseProvider("kafka", f)).toEqual({
      component: "kafka",
      kind: "address",
      address: "10.1.2.3:9092",
    });
    expect(chooseProvider("postgres", f)).toEqual({
      component: "postgres",
      kind: "address",
      address: "postgres://x@db/y",
    });
  });

  it("uses KUBECONFIG only with USE_EXISTING_CLUSTER=true", () => {
    expect(chooseProvider("kube", facts({ env: { KUBECONFIG: "/home/me/.kube/config" } })).kind).toBe(
      "local",
    );
    expect(
      chooseProvider("kube", facts({ env: { KUBECONFIG: "/k", USE_EXISTING_CLUSTER: "true" } })),
    ).toEqual({ component: "kube", kind: "address", address: "/k" });
  });

  it("ignores a blank address", () => {
    expect(chooseProvider("postgres", facts({ env: { DATABASE_URL: "  " } })).kind).toBe("local");
  });

  it("prefers a local process over testcontainers", () => {
    expect(chooseProvider("kafka", facts({ dockerAvailable: true })).kind).toBe("local");
  });

  it("falls back to testcontainers when the local toolchain is missing and Docker answers", () => {
    const f = facts({ localMissing: { ...allLocal, kube: "go" }, dockerAvailable: true });
    expect(chooseProvider("kube", f).kind).toBe("testcontainers");
    expect(chooseProvider("kafka", f).kind).toBe("local");
  });

  it("explains what is missing when nothing can provide the component", () => {
    const choice = chooseProvider("kafka", facts({ localMissing: { ...allLocal, kafka: "java" } }));
    expect(choice.kind).toBe("unavailable");
    expect(choice.kind === "unavailable" && choice.reason).toMatch(
      /needs 'java'.*no Docker engine.*KAFKA_BROKERS/,
    );
  });

  it("honours SYNCGOV_SERVICES", () => {
    const docker = facts({ dockerAvailable: true, env: { SYNCGOV_SERVICES: "testcontainers" } });
    expect(chooseProvider("postgres", docker).kind).toBe("testcontainers");
    const noDocker = facts({ env: { SYNCGOV_SERVICES: "testcontainers" } });
    const choice = chooseProvider("postgres", noDocker);
    expect(choice.kind === "unavailable" && choice.reason).toMatch(/no Docker engine answers/);
    const localOnly = facts({
      dockerAvailable: true,
      localMissing: { ...allLocal, kafka: "mvn" },
      env: { SYNCGOV_SERVICES: "local" },
    });
    expect(chooseProvider("kafka", localOnly).kind).toBe("unavailable");
    expect(() => chooseProvider("kafka", facts({ env: { SYNCGOV_SERVICES: "docker" } }))).toThrow(
      /auto, local or testcontainers/,
    );
  });
});
